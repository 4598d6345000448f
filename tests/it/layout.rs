//! The source layout docs/design.md describes, checked: modules import
//! one another without a cycle, the data model touches nothing on the host, and no
//! source file grows past 500 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module of a file under src/ (`scan/pci.rs` -> `scan`), and its text
/// without `#[cfg(test)]` parts (tests may reach anywhere).
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let name = top.trim_end_matches(".rs").to_string();
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap().to_string();
        m.entry(name).or_default().push_str(&code);
    }
    m
}

/// `crate::X` names used in code (not in comments).
fn uses(code: &str) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for part in line.split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                v.insert(name);
            }
        }
    }
    v
}

#[test]
fn no_import_cycle_among_modules() {
    let m = modules();
    let graph: BTreeMap<&str, BTreeSet<String>> = m
        .iter()
        .map(|(k, code)| {
            let mut u = uses(code);
            u.remove(k);
            (k.as_str(), u)
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<&str, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = stack.iter().position(|s| *s == n) {
            panic!("import cycle: {:?} -> {n}", &stack[i..]);
        }
        stack.push(n);
        for next in g.get(n).into_iter().flatten() {
            if let Some((k, _)) = g.get_key_value(next.as_str()) {
                visit(k, g, stack, done);
            }
        }
        stack.pop();
        done.insert(n);
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.len() >= 15, "{:?}", graph.keys());
}

#[test]
fn the_model_is_plain_data() {
    let m = modules();
    let model = &m["model"];
    assert!(uses(model).is_empty(), "{:?}", uses(model));
    for host in ["rustix", "std::fs", "std::io", "Root"] {
        assert!(!model.contains(host), "model mentions {host}");
    }
    // The composing side never touches the filesystem either.
    for pure in [
        "state", "features", "render", "label", "frigate", "parse", "metrics",
    ] {
        let u = uses(&m[pure]);
        assert!(!u.contains("root") && !u.contains("scan"), "{pure}: {u:?}");
        assert!(!m[pure].contains("std::fs"), "{pure} uses std::fs");
    }
}

#[test]
fn no_source_file_over_500_lines() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for f in files {
        let n = fs::read_to_string(&f).unwrap().lines().count();
        assert!(n <= 500, "{} has {n} lines", f.display());
    }
}

//! Helpers shared by the integration tests: running the binary, building dev roots with
//! mknod, and an NFD feature-file parser written from the NFD rules (not from the code
//! under test).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build, or `CORAL_NFD_BIN` (to show a test failing on
/// another build, e.g. the one before a fix).
pub fn bin() -> String {
    std::env::var("CORAL_NFD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_coral-nfd").into())
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every scenario directory under tests/fixtures, sorted.
pub fn scenarios() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("sys").is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Runs coral-nfd with `args`, killing it (and failing) if it takes longer than `limit`.
pub fn run_with_limit(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "coral-nfd {args:?} hung for more than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(args: &[&str]) -> Output {
    run_with_limit(args, Duration::from_secs(20))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Creates a device node; `None` when the kernel refuses (not root, or a user
/// namespace without the capability).
pub fn mknod(path: &Path, kind: char, major: u32, minor: u32, mode: u32) -> Option<()> {
    use rustix::fs::{FileType, Mode, mknodat};
    let ft = match kind {
        'c' => FileType::CharacterDevice,
        'b' => FileType::BlockDevice,
        'p' => FileType::Fifo,
        _ => panic!("unknown node type {kind}"),
    };
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let dev = rustix::fs::makedev(major, minor);
    match mknodat(rustix::fs::CWD, path, ft, Mode::from_raw_mode(mode), dev) {
        Ok(()) => {
            // mknod applies the umask; set the mode the list asks for.
            rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
            Some(())
        }
        Err(rustix::io::Errno::PERM) | Err(rustix::io::Errno::ACCESS) => None,
        Err(e) => panic!("mknod {}: {e}", path.display()),
    }
}

/// Says loudly that device nodes could not be made, then fails unless the person
/// running the tests chose to skip such tests (CORAL_NFD_ALLOW_NO_MKNOD=1).
pub fn no_mknod(what: &str) -> bool {
    let msg = format!(
        "\n*** {what}: mknod is not permitted here (run the tests as root). \
         Device-node tests cannot run. ***\n"
    );
    if std::env::var_os("CORAL_NFD_ALLOW_NO_MKNOD").is_some() {
        eprintln!("{msg}*** SKIPPED because CORAL_NFD_ALLOW_NO_MKNOD is set. ***\n");
        true
    } else {
        panic!("{msg}Set CORAL_NFD_ALLOW_NO_MKNOD=1 to skip them knowingly.");
    }
}

/// Builds a dev root from a `dev.list` (type major:minor mode uid gid path).
/// Returns `None` (after saying so) when mknod is refused.
pub fn dev_root_from_list(list: &str, into: &Path) -> Option<()> {
    for line in list.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "bad dev.list line {line:?}");
        let kind = f[0].chars().next().unwrap();
        let (major, minor) = f[1].split_once(':').unwrap();
        let mode = u32::from_str_radix(f[2], 8).unwrap();
        let path = into.join(f[5]);
        mknod(
            &path,
            kind,
            major.parse().unwrap(),
            minor.parse().unwrap(),
            mode,
        )?;
        let (uid, gid): (u32, u32) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        rustix::fs::chown(
            &path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    Some(())
}

/// The dev root of a fixture scenario, in a fresh temporary directory; `None` (after
/// saying so loudly, see [`no_mknod`]) when device nodes cannot be made here.
pub fn fixture_dev_root(scenario: &str) -> Option<tempfile::TempDir> {
    let list = fs::read_to_string(fixtures_dir().join(scenario).join("dev.list")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    if dev_root_from_list(&list, dir.path()).is_none() {
        no_mknod(scenario);
        return None;
    }
    Some(dir)
}

/// Copies a tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_symlink() {
            symlink(fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

// --- NFD's reading of a feature file (source/local/local.go, v0.19) ----------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfdLine {
    pub key: String,
    pub value: String,
    /// Preceded by `# +no-label`: a feature only.
    pub no_label: bool,
    pub expiry: Option<String>,
}

/// Parses a feature file the way nfd-worker does, and checks everything coral-nfd
/// promises on top: every label valid by Kubernetes rules, raw-feature keys of the same
/// form, no unknown directives, comments never starting with `# +`, size under 64 KiB.
pub fn parse_nfd(content: &str) -> Result<Vec<NfdLine>, String> {
    if content.len() > 65536 {
        return Err(format!("file is {} bytes, NFD skips it", content.len()));
    }
    let mut out = Vec::new();
    let mut no_label = false;
    let mut expiry = None;
    for raw in content.split('\n') {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(directive) = line.strip_prefix("# +") {
            if directive == "no-label" {
                no_label = true;
            } else if let Some(t) = directive.strip_prefix("expiry-time=") {
                if !is_rfc3339_utc(t) {
                    return Err(format!("bad expiry time {t:?}"));
                }
                expiry = Some(t.to_string());
            } else {
                return Err(format!("unknown directive {line:?}"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if raw != line {
            return Err(format!("line has outer whitespace: {raw:?}"));
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => return Err(format!("line without '=': {line:?}")),
        };
        if !k8s_qualified_name(&key) {
            return Err(format!("invalid key {key:?}"));
        }
        if no_label {
            if value.is_empty() || value.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("bad raw feature value {value:?}"));
            }
        } else if !k8s_label_value(&value) {
            return Err(format!("invalid label value {key}={value:?}"));
        }
        out.push(NfdLine {
            key,
            value,
            no_label,
            expiry: expiry.clone(),
        });
        no_label = false;
    }
    if no_label {
        return Err("dangling # +no-label at end of file".into());
    }
    Ok(out)
}

fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn name_part(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let first = s.chars().next();
    let last = s.chars().last();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(ok_char)
        && first.is_some_and(|c| c.is_ascii_alphanumeric())
        && last.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

pub fn k8s_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((p, n)) => dns_subdomain(p) && name_part(n),
        None => name_part(s),
    }
}

pub fn k8s_label_value(s: &str) -> bool {
    s.is_empty() || name_part(s)
}

/// `coral-nfd snapshot` of `sys` and `dev` into `out`, then `extra`.
pub fn take_snapshot(sys: &Path, dev: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "snapshot",
        "--output",
        out.to_str().unwrap(),
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        dev.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

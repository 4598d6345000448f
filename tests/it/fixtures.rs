//! Every fixture scenario through the binary: golden output, NFD validity, and the
//! readiness each scenario stands for.

use crate::util::*;
use coral_nfd::label::Prefix;
use coral_nfd::root::{Resolver, Root};
use std::fs;

/// Runs one scenario; `None` when device nodes cannot be made here.
fn scenario_output(name: &str) -> Option<(String, String)> {
    let dev = fixture_dev_root(name)?;
    let sys = fixtures_dir().join(name).join("sys");
    let out = run(&[
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        dev.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    Some((stdout(&out), stderr(&out)))
}

#[test]
fn golden_output_of_every_scenario() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let names = scenarios();
    assert!(names.len() >= 15, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let Some((out, err)) = scenario_output(name) else {
            continue;
        };
        // The fixtures are clean trees: nothing in them deserves a warning.
        assert_eq!(err, "", "{name}: unexpected warnings");
        let golden = fixtures_dir().join(name).join("expected");
        if update {
            fs::write(&golden, &out).unwrap();
            continue;
        }
        let want = fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{name}: no golden file; run UPDATE_GOLDEN=1 cargo test"));
        if out != want {
            failures.push(format!("--- {name}: expected\n{want}--- got\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_scenario_is_a_valid_nfd_feature_file() {
    for name in scenarios() {
        let Some((out, _)) = scenario_output(&name) else {
            continue;
        };
        let lines = parse_nfd(&out).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
        for l in &lines {
            assert!(
                l.key.starts_with("feature.node.kubernetes.io/coral-tpu."),
                "{name}: {}",
                l.key
            );
            // Every per-device detail is a raw feature; only the documented keys are labels.
            let label_keys = [
                "present",
                "count",
                "ready",
                "ready.count",
                "pcie.count",
                "pcie.ready.count",
                "usb.count",
                "usb.ready.count",
                "driver.loaded",
                "driver.version",
            ];
            let short = l
                .key
                .trim_start_matches("feature.node.kubernetes.io/coral-tpu.");
            let is_apex_ready = (short.starts_with("apex_")
                || short.starts_with("libedgetpu.pci."))
                && short.ends_with(".ready");
            assert_eq!(
                l.no_label,
                !(label_keys.contains(&short) || is_apex_ready),
                "{name}: {} is marked wrongly",
                l.key
            );
            assert!(
                !short.contains("temp"),
                "{name}: temperatures churn: {}",
                l.key
            );
        }
    }
}

/// (scenario, (ready.count, count) or no lines at all, per-apex readiness, pcie.0.state)
type Expectation = (
    &'static str,
    Option<(u32, u32)>,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

/// The readiness each scenario stands for, written down by hand (not from the golden).
#[test]
fn scenarios_mean_what_their_names_say() {
    let table: &[Expectation] = &[
        ("no-coral", None, &[], None),
        ("server-no-coral", None, &[], None),
        ("driver-no-device", Some((0, 0)), &[], None),
        (
            "pcie-ready",
            Some((1, 1)),
            &[("apex_0", "true")],
            Some("ready"),
        ),
        (
            "pcie-dual",
            Some((2, 2)),
            &[("apex_0", "true"), ("apex_1", "true")],
            Some("ready"),
        ),
        (
            "pcie-no-driver",
            Some((0, 1)),
            &[],
            Some("driver-not-loaded"),
        ),
        ("pcie-probe-failed", Some((0, 1)), &[], Some("not-bound")),
        (
            "pcie-node-missing",
            Some((0, 1)),
            &[("apex_0", "false")],
            Some("node-missing"),
        ),
        (
            "pcie-node-mismatch",
            Some((0, 1)),
            &[("apex_0", "false")],
            Some("node-mismatch"),
        ),
        (
            "pcie-lamed",
            Some((0, 1)),
            &[("apex_0", "false")],
            Some("status-lamed"),
        ),
        (
            "pcie-not-answering",
            Some((0, 1)),
            &[("apex_0", "false")],
            Some("not-answering"),
        ),
        (
            "pcie-throttled",
            Some((1, 1)),
            &[("apex_0", "true")],
            Some("ready"),
        ),
        (
            "pcie-staging-driver",
            Some((0, 1)),
            &[("apex_0", "false")],
            Some("staging-driver"),
        ),
        ("pcie-vfio", Some((0, 1)), &[], Some("other-driver")),
        (
            "devboard",
            Some((1, 1)),
            &[("apex_0", "true")],
            Some("ready"),
        ),
        (
            "rpi5-switch",
            Some((1, 1)),
            &[("apex_0", "true")],
            Some("ready"),
        ),
        ("usb-dfu-usb3", Some((1, 1)), &[], None),
        ("usb-app-usb2", Some((1, 1)), &[], None),
        (
            "pcie-and-usb",
            Some((2, 2)),
            &[("apex_0", "true")],
            Some("ready"),
        ),
    ];
    let p = "feature.node.kubernetes.io/coral-tpu.";
    for (name, counts, apex, state) in table {
        let Some((out, _)) = scenario_output(name) else {
            continue;
        };
        let lines = parse_nfd(&out).unwrap();
        let all: std::collections::BTreeMap<_, _> = lines
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect();
        let get = |k: &str| all.get(&format!("{p}{k}")).map(String::as_str);
        match counts {
            None => assert!(
                lines.is_empty(),
                "{name}: a node without Coral gets no lines"
            ),
            Some((ready, count)) => {
                assert_eq!(
                    get("ready.count"),
                    Some(ready.to_string().as_str()),
                    "{name}"
                );
                assert_eq!(get("count"), Some(count.to_string().as_str()), "{name}");
                assert_eq!(
                    get("ready"),
                    Some(if *ready > 0 { "true" } else { "false" }),
                    "{name}"
                );
                assert_eq!(
                    get("present"),
                    Some(if *count > 0 { "true" } else { "false" }),
                    "{name}"
                );
            }
        }
        for (a, v) in *apex {
            assert_eq!(get(&format!("{a}.ready")), Some(*v), "{name} {a}");
        }
        let apex_labels = lines
            .iter()
            .filter(|l| l.key.ends_with(".ready") && l.key.contains("apex_"))
            .count();
        assert_eq!(
            apex_labels,
            apex.len(),
            "{name}: one apex_N.ready per class device"
        );
        assert_eq!(get("pcie.0.state"), *state, "{name}");
    }
}

/// The openat2 resolver and the userspace walk give the same bytes on every fixture.
#[test]
fn both_resolvers_agree() {
    for name in scenarios() {
        let Some(dev) = fixture_dev_root(&name) else {
            continue;
        };
        let sys_path = fixtures_dir().join(&name).join("sys");
        let mut outputs = Vec::new();
        for r in [Resolver::Openat2, Resolver::Walk] {
            let sys = Root::open(&sys_path).with_resolver(r);
            let devr = Root::open(dev.path()).with_resolver(r);
            outputs.push(coral_nfd::labeler::body(&sys, &devr, &Prefix::default()));
        }
        assert_eq!(outputs[0], outputs[1], "{name}");
    }
}

#[test]
fn label_prefix_is_applied_to_every_key() {
    let Some(dev) = fixture_dev_root("pcie-and-usb") else {
        return;
    };
    let sys = fixtures_dir().join("pcie-and-usb/sys");
    let out = run(&[
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        dev.path().to_str().unwrap(),
        "--label-prefix",
        "coral.example.com/",
    ]);
    let lines = parse_nfd(&stdout(&out)).unwrap();
    assert!(lines.len() > 10);
    assert!(
        lines
            .iter()
            .all(|l| l.key.starts_with("coral.example.com/coral-tpu."))
    );
}

#[test]
fn runs_on_this_machine() {
    // The real /sys and /dev of the test machine: exit 0, a well-formed file.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("# coral-nfd "), "{text}");
    parse_nfd(&text).unwrap();
}

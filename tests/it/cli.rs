//! The command-line contract: flags, environment variables, exit codes.

use crate::util::*;
use std::process::Command;

fn code(args: &[&str]) -> (Option<i32>, String) {
    let o = run(args);
    (o.status.code(), stderr(&o))
}

#[test]
fn usage_errors_exit_2() {
    for (args, says) in [
        (&["--label-prefix", "kubernetes.io/"][..], "denies"),
        (&["--label-prefix", "node.kubernetes.io/"][..], "denies"),
        (&["--label-prefix", "Example.com/"][..], "DNS subdomain"),
        (&["--label-prefix", "example.com"][..], "must end with '/'"),
        (&["--sleep-interval", "60s"][..], "--output-file"),
        (
            &["--output-file", "/tmp/x", "--sleep-interval", "0s"][..],
            "longer than 0",
        ),
        (
            &["--output-file", "/tmp/x", "--sleep-interval", "sixty"][..],
            "expected e.g. 60s",
        ),
        (&["--expiry=-1s"][..], "expected e.g. 60s"),
        (&["--remove-on-exit"][..], "--sleep-interval"),
        (&["--no-such-flag"][..], "unexpected argument"),
    ] {
        let (c, err) = code(args);
        assert_eq!(c, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn allowed_prefixes() {
    for p in [
        "profile.node.kubernetes.io/",
        "sub.feature.node.kubernetes.io/",
        "coral.ai/",
    ] {
        assert_eq!(
            code(&["--label-prefix", p, "--sysfs-root", "/nonexistent"]).0,
            Some(0),
            "{p}"
        );
    }
}

#[test]
fn version_and_help() {
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("coral-nfd {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = stdout(&run(&["--help"]));
    for needle in [
        "--sysfs-root",
        "CORAL_NFD_SYSFS_ROOT",
        "[default: /sys]",
        "--dev-root",
        "CORAL_NFD_DEV_ROOT",
        "[default: /dev]",
        "--label-prefix",
        "CORAL_NFD_LABEL_PREFIX",
        "[default: feature.node.kubernetes.io/]",
        "--output-file",
        "CORAL_NFD_OUTPUT_FILE",
        "--sleep-interval",
        "CORAL_NFD_SLEEP_INTERVAL",
        "--expiry",
        "CORAL_NFD_EXPIRY",
        "--remove-on-exit",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn environment_variables_set_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let sys = fixtures_dir().join("pcie-no-driver/sys");
    let o = Command::new(bin())
        .env_clear()
        .env("CORAL_NFD_SYSFS_ROOT", &sys)
        .env("CORAL_NFD_DEV_ROOT", dir.path())
        .env("CORAL_NFD_LABEL_PREFIX", "coral.example.com/")
        .env("CORAL_NFD_OUTPUT_FILE", &out)
        .env("CORAL_NFD_EXPIRY", "1h")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines = parse_nfd(&text).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.key == "coral.example.com/coral-tpu.present" && l.value == "true")
    );
    assert!(lines.iter().all(|l| l.expiry.is_some()));
    // An env interval without an output file is the same usage error as the flag.
    let o = Command::new(bin())
        .env_clear()
        .env("CORAL_NFD_SLEEP_INTERVAL", "5s")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn broken_stdout_exits_1() {
    // A full disk behind stdout: the output could not be written.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(bin())
        .args([
            "--sysfs-root",
            fixtures_dir().join("pcie-no-driver/sys").to_str().unwrap(),
        ])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write to stdout"));
}

#[test]
fn missing_roots_are_not_an_error() {
    let o = run(&[
        "--sysfs-root",
        "/nonexistent/sys",
        "--dev-root",
        "/nonexistent/dev",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(parse_nfd(&stdout(&o)).unwrap(), vec![]);
}

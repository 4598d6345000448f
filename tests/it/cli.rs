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
            "between 1s and 1day",
        ),
        (
            &["--output-file", "/tmp/x", "--sleep-interval", "999ms"][..],
            "between 1s and 1day",
        ),
        (
            &["--output-file", "/tmp/x", "--sleep-interval", "1ms"][..],
            "between 1s and 1day",
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
        let sys = fixtures_dir().join("no-coral/sys");
        let o = run(&["--label-prefix", p, "--sysfs-root", sys.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{p}: {}", stderr(&o));
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

/// A root that is missing, not a directory, or not a sysfs tree is a usage error in
/// every mode, naming the path: a typo'd hostPath must not look like "no Coral here".
#[test]
fn wrong_roots_are_usage_errors_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let good_sys = fixtures_dir().join("no-coral/sys");
    let out = dir.path().join("features.d/coral-nfd");
    let snap = dir.path().join("snap");
    let modes: [&[&str]; 5] = [
        &[],
        &[
            "--output-file",
            out.to_str().unwrap(),
            "--sleep-interval",
            "1h",
        ],
        &["doctor"],
        &["frigate-config"],
        &["snapshot", "--output", snap.to_str().unwrap()],
    ];
    let cases = [
        ("/nonexistent/sys", "/dev", "/nonexistent/sys"),
        (empty.to_str().unwrap(), "/dev", "neither bus/pci/devices"),
        (file.to_str().unwrap(), "/dev", "not a directory"),
        (
            good_sys.to_str().unwrap(),
            "/nonexistent/dev",
            "/nonexistent/dev",
        ),
    ];
    for mode in modes {
        for (sys, dev, says) in cases {
            let mut args = vec!["--sysfs-root", sys, "--dev-root", dev];
            args.extend_from_slice(mode);
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
            assert_eq!(o.stdout, b"", "{args:?}");
        }
    }
    assert!(!out.exists() && !snap.exists(), "nothing written");
}

/// Durations: no value makes coral-nfd panic; out-of-bounds values are usage errors
/// that say the bounds; an expiry too short for the interval is refused with the rule.
#[test]
fn durations_are_bounded() {
    let sys = fixtures_dir().join("no-coral/sys");
    let sys = sys.to_str().unwrap();
    for (args, says) in [
        (&["--expiry", "8000y"][..], "between 1s and"),
        (&["--expiry", "300000000000y"][..], "between 1s and 1year"),
        (&["--expiry", "1ns"][..], "between 1s and"),
        (&["--expiry", "500ms"][..], "between 1s and"),
        (
            &["--output-file", "/tmp/x", "--sleep-interval", "3000y"][..],
            "between 1s and",
        ),
        (
            &[
                "--output-file",
                "/tmp/x",
                "--sleep-interval",
                "3s",
                "--expiry",
                "1s",
            ][..],
            "at least 11s",
        ),
        (
            &[
                "--output-file",
                "/tmp/x",
                "--sleep-interval",
                "60s",
                "--expiry",
                "2m",
            ][..],
            "at least 2m 5s",
        ),
        // A write gap beyond the default delays the refresh: twice its excess on top.
        (
            &[
                "--output-file",
                "/tmp/x",
                "--sleep-interval",
                "10s",
                "--expiry",
                "30s",
                "--write-gap",
                "11100ms",
            ][..],
            "at least 45s",
        ),
    ] {
        let mut a = vec!["--sysfs-root", sys];
        a.extend_from_slice(args);
        let (c, err) = code(&a);
        assert_eq!(c, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The largest accepted values work, in one-shot mode too.
    let o = run(&["--sysfs-root", sys, "--expiry", "1y"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["--sysfs-root", sys, "--expiry", "1s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// The labeler's variables in the environment (a DaemonSet's) do not stop a subcommand
/// run with `kubectl exec`; the same values given as flags still do.
#[test]
fn labeler_variables_are_ignored_by_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let sys = fixtures_dir().join("no-coral/sys");
    let snap = dir.path().join("snap");
    for sub in [
        vec!["doctor"],
        vec!["frigate-config"],
        vec!["snapshot", "--output", snap.to_str().unwrap()],
        vec!["completions", "bash"],
    ] {
        let _ = std::fs::remove_dir_all(&snap);
        let o = Command::new(bin())
            .env_clear()
            .env("CORAL_NFD_SYSFS_ROOT", &sys)
            .env("CORAL_NFD_DEV_ROOT", dir.path())
            .env("CORAL_NFD_SLEEP_INTERVAL", "60s")
            .env("CORAL_NFD_EXPIRY", "garbage")
            .env("CORAL_NFD_LABEL_PREFIX", "kubernetes.io/")
            .env("CORAL_NFD_LOG_FORMAT", "yaml")
            .args(&sub)
            .output()
            .unwrap();
        assert!(
            [0, 3].contains(&o.status.code().unwrap()),
            "{sub:?}: {}",
            stderr(&o)
        );
    }
    let o = run(&["--label-prefix", "example.com/", "doctor"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is for the labeler"));
}

#[test]
fn newcomer_edges() {
    // Help lines wrap (no terminal: at most 100 columns), unset variables show no '='.
    let help = stdout(&run(&["--help"]));
    for line in help.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
    assert!(!help.contains("[env: CORAL_NFD_OUTPUT_FILE=]"), "{help}");
    assert!(help.contains("[env: CORAL_NFD_OUTPUT_FILE]"), "{help}");
    // Subcommands know the version.
    for sub in ["doctor", "frigate-config", "snapshot"] {
        let o = run(&[sub, "-V"]);
        assert_eq!(o.status.code(), Some(0), "{sub}: {}", stderr(&o));
        assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
    }
    // Completions for the usual shells, and a man page.
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("--sleep-interval"), "{shell}");
    }
    let man = run(&["man"]);
    assert_eq!(man.status.code(), Some(0));
    let man = stdout(&man);
    assert!(
        man.starts_with(".ie") || man.contains(".TH coral-nfd"),
        "{man}"
    );
    assert!(man.contains(r"sleep\-interval"), "{man}");
}

/// A bad value from the environment names the variable it came from: in a DaemonSet
/// nobody typed the flag. The same value on the command line still names the flag.
#[test]
fn a_bad_variable_is_named() {
    let sys = fixtures_dir().join("no-coral/sys");
    for (var, value, args) in [
        (
            "CORAL_NFD_SLEEP_INTERVAL",
            "garbage",
            &["--output-file", "/tmp/x"][..],
        ),
        ("CORAL_NFD_EXPIRY", "soon", &[][..]),
        ("CORAL_NFD_LABEL_PREFIX", "Bad_Prefix/", &[][..]),
        ("CORAL_NFD_LOG_FORMAT", "xml", &[][..]),
        (
            "CORAL_NFD_METRICS_ADDRESS",
            "nowhere",
            &["--output-file", "/tmp/x", "--sleep-interval", "1m"][..],
        ),
    ] {
        let o = Command::new(bin())
            .args(["--sysfs-root", sys.to_str().unwrap()])
            .args(args)
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{var}: {err}");
        assert!(err.contains(var), "{var}: {err}");
        assert!(err.contains(value), "{var}: {err}");
    }
    let o = run(&["--sysfs-root", sys.to_str().unwrap(), "--expiry", "soon"]);
    let err = stderr(&o);
    assert!(
        err.contains("'--expiry") && !err.contains("CORAL_NFD_EXPIRY"),
        "{err}"
    );
}

/// Output that cannot be written is an error, also when stdout is closed (which Rust's
/// own stdout would swallow): the labeler exits 1; doctor and frigate-config exit 4,
/// since their 1 and 3 say something about the hardware; a closed pipe likewise.
#[test]
fn closed_stdout_is_an_error() {
    let sys = fixtures_dir().join("pcie-no-driver/sys");
    let sys = sys.to_str().unwrap();
    let closed = |args: &[&str]| {
        Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" >&-", &bin(), "--sysfs-root", sys])
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let o = closed(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write to stdout"),
        "{}",
        stderr(&o)
    );
    // /dev/null is not a closed stdout, however it was opened (Python's DEVNULL and
    // `1<>` open it read-write, as Rust's runtime does for a closed descriptor).
    for redirect in [">/dev/null", "1<>/dev/null"] {
        let script = format!("exec \"$0\" \"$@\" {redirect}");
        let o = Command::new("sh")
            .args(["-c", &script, &bin(), "--sysfs-root", sys])
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{redirect}: {}", stderr(&o));
    }
    for sub in ["doctor", "frigate-config"] {
        let o = closed(&[sub]);
        assert_eq!(o.status.code(), Some(4), "{sub}: {}", stderr(&o));
        // A reader that went away: the same code, not "a device has a problem". The read
        // end is closed before the child starts: closing it after spawn races the child's
        // write, which a loaded machine lets land in the pipe first (CI did: exit 3).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(bin())
            .args(["--sysfs-root", sys, sub])
            .env_clear()
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{sub}: {}", stderr(&o));
        assert!(stderr(&o).contains("Broken pipe"), "{sub}: {}", stderr(&o));
    }
}

/// The smaller edges of the command line: the hidden write gap is bounded like the
/// other durations, and `rules --help` says in full what its flag prints.
#[test]
fn write_gap_bounds_and_rules_help() {
    let sys = fixtures_dir().join("no-coral/sys");
    let sys = sys.to_str().unwrap();
    for gap in ["2m", "1y"] {
        let (c, err) = code(&["--sysfs-root", sys, "--write-gap", gap]);
        assert_eq!(c, Some(2), "{gap}: {err}");
        assert!(err.contains("between 0s and 1m"), "{gap}: {err}");
    }
    assert_eq!(code(&["--sysfs-root", sys, "--write-gap", "0s"]).0, Some(0));
    let help = stdout(&run(&["rules", "--help"]));
    let flag = help
        .split("--extended-resources")
        .nth(1)
        .unwrap_or_default()
        .split("-h, --help")
        .next()
        .unwrap_or_default();
    let flag = flag.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flag.contains("coral.ai/ready-tpus"), "{flag}");
    assert!(flag.trim_end().ends_with("the labelling rules"), "{flag}");
}

/// doctor with nothing found says what to check next, also when the apex driver is
/// loaded (no Coral function in this sysfs).
#[test]
fn doctor_with_nothing_found_gives_next_steps() {
    for fixture in ["no-coral", "driver-no-device"] {
        let sys = fixtures_dir().join(fixture).join("sys");
        let o = run(&["--sysfs-root", sys.to_str().unwrap(), "doctor"]);
        assert_eq!(o.status.code(), Some(3), "{fixture}");
        let text = stdout(&o);
        for says in [
            "Next steps",
            "lspci -nn -d 1ac1:",
            "lsusb -d 1a6e:",
            "lsusb -d 18d1:",
            "hostPath",
        ] {
            assert!(text.contains(says), "{fixture}: {says}\n{text}");
        }
        assert_eq!(
            text.contains("apex driver is loaded"),
            fixture == "driver-no-device",
            "{fixture}\n{text}"
        );
    }
}

/// The table errors name variables from is the flags' own `env =`, both ways.
#[test]
fn every_variable_is_in_the_origin_table() {
    use clap::CommandFactory;
    let cmd = coral_nfd::cli::Cli::command();
    let mut declared: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let var = a.get_env()?.to_str()?.to_string();
            Some((format!("--{}", a.get_long()?), var))
        })
        .collect();
    declared.sort();
    let mut table: Vec<(String, String)> = coral_nfd::origin::VARIABLES
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    table.sort();
    assert_eq!(declared, table);
}

/// A rule between two values broken by the environment names the variables, not flags
/// nobody typed; the same values as flags name the flags.
#[test]
fn rule_errors_name_the_variable_that_set_the_value() {
    let sys = fixtures_dir().join("no-coral/sys");
    let o = Command::new(bin())
        .args(["--sysfs-root", sys.to_str().unwrap()])
        .env("CORAL_NFD_OUTPUT_FILE", "/tmp/coral-nfd-origin-test")
        .env("CORAL_NFD_SLEEP_INTERVAL", "10s")
        .env("CORAL_NFD_EXPIRY", "20s")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("CORAL_NFD_EXPIRY (the environment's --expiry) 20s")
            && err
                .contains("with CORAL_NFD_SLEEP_INTERVAL (the environment's --sleep-interval) 10s"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args(["--sysfs-root", sys.to_str().unwrap()])
        .env("CORAL_NFD_OUTPUT_FILE", dir.path().join("f"))
        .env("CORAL_NFD_SLEEP_INTERVAL", "1h")
        .env("CORAL_NFD_METRICS_ADDRESS", &addr)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("for CORAL_NFD_METRICS_ADDRESS (the environment's --metrics-address)"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(bin())
        .args(["--sysfs-root", sys.to_str().unwrap(), "--expiry", "20s"])
        .env("CORAL_NFD_OUTPUT_FILE", "/tmp/coral-nfd-origin-test")
        .env("CORAL_NFD_SLEEP_INTERVAL", "10s")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("error: --expiry 20s"), "{}", stderr(&o));
}

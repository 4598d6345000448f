//! The subcommands for people: doctor, frigate-config, snapshot.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

fn args_for<'a>(sys: &'a str, dev: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--sysfs-root", sys, "--dev-root", dev];
    v.extend_from_slice(rest);
    v
}

/// Runs a subcommand on a fixture with its dev root.
fn on_fixture(name: &str, rest: &[&str]) -> Option<std::process::Output> {
    let dev = fixture_dev_root(name)?;
    let sys = fixtures_dir().join(name).join("sys");
    let (sys, devp) = (sys.to_str().unwrap(), dev.path().to_str().unwrap());
    Some(run(&args_for(sys, devp, rest)))
}

// --- doctor -------------------------------------------------------------------------

/// (scenario, exit code, finding codes that must appear, words a remedy must contain)
const DOCTOR: &[(&str, i32, &[&str], &str)] = &[
    ("no-coral", 3, &[], ""),
    ("server-no-coral", 3, &[], ""),
    ("driver-no-device", 3, &[], ""),
    ("pcie-ready", 0, &["ready"], ""),
    ("pcie-dual", 0, &["ready"], ""),
    ("devboard", 0, &["ready"], ""),
    ("rpi5-switch", 0, &["ready"], ""),
    ("pcie-and-usb", 0, &["ready"], ""),
    (
        "pcie-no-driver",
        1,
        &["driver-not-loaded"],
        "Key was rejected by service",
    ),
    ("pcie-probe-failed", 1, &["not-bound"], "pass-through"),
    ("pcie-vfio", 1, &["other-driver"], "vfio-pci"),
    ("pcie-node-missing", 1, &["node-missing"], "GROUP=\"apex\""),
    ("pcie-node-mismatch", 1, &["node-mismatch"], "stale node"),
    ("pcie-lamed", 1, &["status-lamed"], "MSI-X"),
    ("pcie-not-answering", 1, &["not-answering"], "Power-cycle"),
    ("pcie-throttled", 0, &["ready", "throttled"], "cooling"),
    ("pcie-staging-driver", 1, &["staging-driver"], "gasket-dkms"),
    ("usb-dfu-usb3", 0, &["ready", "dfu-mode"], ""),
    ("usb-app-usb2", 0, &["ready", "usb2"], "USB 3 port"),
];

#[test]
fn doctor_verdict_for_every_scenario() {
    let listed: Vec<&str> = DOCTOR.iter().map(|d| d.0).collect();
    for s in scenarios() {
        assert!(
            listed.contains(&s.as_str()),
            "no doctor expectation for {s}"
        );
    }
    for (name, code, findings, remedy) in DOCTOR {
        let Some(out) = on_fixture(name, &["doctor", "--json"]) else {
            continue;
        };
        assert_eq!(out.status.code(), Some(*code), "{name}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        check_doctor_shape(&v);
        assert_eq!(v["exit_code"], *code, "{name}");
        let codes: Vec<&str> = v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["findings"].as_array().unwrap())
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        for f in *findings {
            assert!(codes.contains(f), "{name}: {f} not in {codes:?}");
        }
        let remedies = v.to_string();
        assert!(
            remedies.contains(&remedy.replace('"', "\\\"")),
            "{name}: no remedy with {remedy:?}"
        );

        // The text form says the same, in at most 80 columns and without colour
        // (stdout is not a terminal here).
        let text = stdout(&on_fixture(name, &["doctor"]).unwrap());
        assert!(
            text.lines().all(|l| l.chars().count() <= 80),
            "{name}:\n{text}"
        );
        assert!(!text.contains('\x1b'));
        for f in *findings {
            if *f != "ready" && !f.ends_with("-mode") && *f != "usb2" && *f != "throttled" {
                assert!(text.contains(&format!("PROBLEM ({f})")), "{name}:\n{text}");
            }
        }
        if *code == 3 {
            assert!(text.contains("No Coral Edge TPU found."));
            assert!(
                text.contains("PCI functions and"),
                "what was searched is said"
            );
        }
    }
}

/// The documented shape of `doctor --json` (docs/command-line.md, "doctor --json").
fn check_doctor_shape(v: &Value) {
    let obj = |v: &Value, keys: &[(&str, &str)]| {
        let m = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"));
        for (k, t) in keys {
            let x = m.get(*k).unwrap_or_else(|| panic!("missing {k} in {v}"));
            let ok = match *t {
                "int" => x.is_u64(),
                "str" => x.is_string(),
                "bool" => x.is_boolean(),
                "arr" => x.is_array(),
                "obj" => x.is_object(),
                "num" => x.is_number(),
                "str?" => x.is_string() || x.is_null(),
                "int?" => x.is_u64() || x.is_null(),
                "obj?" => x.is_object() || x.is_null(),
                _ => unreachable!(),
            };
            assert!(ok, "{k} should be {t}: {x}");
        }
    };
    obj(
        v,
        &[
            ("schema_version", "int"),
            ("coral_nfd_version", "str"),
            ("searched", "obj"),
            ("driver", "obj"),
            ("devices", "arr"),
            ("ready_count", "int"),
            ("problem_count", "int"),
            ("exit_code", "int"),
            ("warnings", "arr"),
            ("unreadable", "arr"),
            ("next_steps", "arr"),
        ],
    );
    assert_eq!(v["schema_version"], 1);
    obj(
        &v["searched"],
        &[
            ("sysfs_root", "str"),
            ("dev_root", "str"),
            ("pci_functions", "int"),
            ("usb_devices", "int"),
        ],
    );
    obj(
        &v["driver"],
        &[
            ("loaded", "bool"),
            ("version", "str?"),
            ("gasket_version", "str?"),
        ],
    );
    for d in v["devices"].as_array().unwrap() {
        obj(
            d,
            &[
                ("kind", "str"),
                ("id", "str"),
                ("vendor_id", "str"),
                ("product_id", "str"),
                ("product", "str"),
                ("ready", "bool"),
                ("verdict", "str"),
                ("state", "str"),
                ("driver", "str?"),
                ("apex", "str?"),
                ("status", "str?"),
                ("temperature", "obj?"),
                ("driver_version", "str?"),
                ("framework_version", "str?"),
                ("usb_speed_mbps", "str?"),
                ("usb_mode", "str?"),
                ("node", "obj?"),
                ("findings", "arr"),
            ],
        );
        assert!(["pcie", "usb"].contains(&d["kind"].as_str().unwrap()));
        assert!(["ok", "note", "warning", "problem"].contains(&d["verdict"].as_str().unwrap()));
        if let Some(t) = d["temperature"].as_object() {
            assert!(
                t["celsius"].is_number()
                    && t["trip_points_celsius"].is_array()
                    && t["clock_mhz"].is_number()
            );
        }
        if d["node"].is_object() {
            obj(
                &d["node"],
                &[
                    ("path", "str"),
                    ("exists", "bool"),
                    ("char_device", "bool"),
                    ("rdev", "str?"),
                    ("expected", "str?"),
                    ("matches", "bool"),
                    ("mode", "str?"),
                    ("uid", "int?"),
                    ("gid", "int?"),
                ],
            );
        }
        for f in d["findings"].as_array().unwrap() {
            obj(
                f,
                &[
                    ("level", "str"),
                    ("code", "str"),
                    ("message", "str"),
                    ("remedies", "arr"),
                ],
            );
        }
    }
}

#[test]
fn doctor_reports_node_ownership() {
    let Some(out) = on_fixture("pcie-ready", &["doctor", "--json"]) else {
        return;
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &v["devices"][0]["node"];
    assert_eq!(node["path"], "/dev/apex_0");
    assert_eq!(node["rdev"], "120:0");
    assert_eq!(node["matches"], true);
    assert_eq!(node["mode"], "0660");
    assert_eq!(node["gid"], 999);
    assert_eq!(v["devices"][0]["temperature"]["clock_mhz"], 500.0);
}

/// With temperature polling off the driver never slows the clock, however hot the
/// reading: doctor must not say "throttled" (the metric agrees, see metrics::tests).
#[test]
fn doctor_no_throttling_when_polling_is_off() {
    let Some(b) = crate::bed::Bed::new("pcie-throttled") else {
        return;
    };
    let apex = b
        .sys
        .join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0");
    let codes = |b: &crate::bed::Bed| {
        let out = b.run(&b.args(&["doctor", "--json"]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let clock = v["devices"][0]["temperature"]["clock_mhz"].clone();
        let codes: Vec<String> = v["devices"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect();
        (clock, codes)
    };
    let (clock, hot) = codes(&b);
    assert_eq!(clock, 250.0);
    assert!(hot.contains(&"throttled".to_string()), "{hot:?}");
    fs::write(apex.join("temp_poll_interval"), "0\n").unwrap();
    let (clock, off) = codes(&b);
    assert_eq!(clock, 500.0);
    assert!(!off.contains(&"throttled".to_string()), "{off:?}");
}

#[test]
fn doctor_on_this_machine() {
    for json in [false, true] {
        let mut args = vec!["doctor"];
        if json {
            args.push("--json");
        }
        let out = run(&args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        // This machine has no Coral; a machine that has one gives 0 or 1.
        let code = out.status.code().unwrap();
        assert!([0, 1, 3].contains(&code), "{code}: {err}");
        if json {
            check_doctor_shape(&serde_json::from_slice(&out.stdout).unwrap());
        }
    }
}

#[test]
fn doctor_colour_only_on_a_terminal() {
    // script(1) gives the command a terminal. The environment is set for each run: CI
    // (set by CI systems) and CLICOLOR_FORCE force colour in anstream, TERM decides it.
    let sys = fixtures_dir().join("pcie-lamed/sys");
    let cmd = format!("{} doctor --sysfs-root {}", bin(), sys.display());
    let on_tty = |env: &[(&str, &str)]| -> Option<bool> {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env_remove("CI")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().ok()?;
        Some(String::from_utf8_lossy(&o.stdout).contains("\x1b["))
    };
    let Some(plain) = on_tty(&[]) else {
        eprintln!("*** script(1) not available: colour test not run ***");
        return;
    };
    assert!(plain, "colour on a terminal");
    assert_eq!(
        on_tty(&[("NO_COLOR", "1")]),
        Some(false),
        "NO_COLOR respected"
    );
    // no-color.org: only a non-empty NO_COLOR turns colour off; TERM=dumb does too.
    assert_eq!(
        on_tty(&[("NO_COLOR", "")]),
        Some(true),
        "an empty NO_COLOR keeps colour"
    );
    assert_eq!(
        on_tty(&[("TERM", "dumb")]),
        Some(false),
        "TERM=dumb has no colour"
    );
}

// --- frigate-config -----------------------------------------------------------------

#[test]
fn frigate_config_golden_and_yaml() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for name in scenarios() {
        let Some(out) = on_fixture(&name, &["frigate-config"]) else {
            continue;
        };
        let text = stdout(&out);
        let docs =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        // No TPU ready: no detectors key at all (an empty mapping crashes Frigate).
        let none = yaml_rust2::Yaml::BadValue;
        let det = docs.first().map_or(&none, |d| &d["detectors"]);
        let empty = yaml_rust2::yaml::Hash::new();
        let map = if det.is_badvalue() {
            assert_eq!(out.status.code(), Some(3), "{name}");
            assert!(!text.lines().any(|l| l.starts_with("detectors")), "{name}");
            // Said on stderr too, for whoever redirected stdout into a file.
            assert!(
                stderr(&out).contains("no Coral TPU is ready"),
                "{name}: {}",
                stderr(&out)
            );
            &empty
        } else {
            let map = det
                .as_hash()
                .unwrap_or_else(|| panic!("{name}: detectors is not a mapping"));
            assert!(!map.is_empty(), "{name}: an empty detectors mapping");
            assert_eq!(out.status.code(), Some(0), "{name}");
            map
        };
        let mut pci = 0;
        let mut usb = 0;
        for (k, v) in map {
            let k = k.as_str().unwrap();
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{k}"
            );
            assert_eq!(v["type"].as_str(), Some("edgetpu"));
            let device = v["device"].as_str().unwrap();
            if device.starts_with("pci:") {
                assert_eq!(device, format!("pci:{pci}"), "{name}");
                pci += 1;
            } else {
                assert_eq!(device, format!("usb:{usb}"), "{name}");
                usb += 1;
            }
        }
        // As many detectors as ready devices, by the labeler's own count.
        let features = stdout(&on_fixture(&name, &[]).unwrap());
        let ready = features
            .lines()
            .find_map(|l| l.strip_prefix("feature.node.kubernetes.io/coral-tpu.ready.count="))
            .unwrap_or("0");
        assert_eq!((pci + usb).to_string(), ready, "{name}");
        let golden = fixtures_dir().join(&name).join("frigate.yaml");
        if update {
            fs::write(&golden, &text).unwrap();
        } else {
            assert_eq!(
                text,
                fs::read_to_string(&golden).unwrap(),
                "{name}: frigate.yaml golden"
            );
        }
        // Round trip: what the YAML says is exactly what was printed.
        if docs.is_empty() {
            continue;
        }
        let mut again = String::new();
        yaml_rust2::YamlEmitter::new(&mut again)
            .dump(&docs[0])
            .unwrap();
        let reparsed = YamlLoader::load_from_str(&again).unwrap();
        assert_eq!(reparsed[0], docs[0]);
        assert!(matches!(docs[0], Yaml::Hash(_)));
    }
}

// --- snapshot -----------------------------------------------------------------------

fn features(sys: &Path, dev: &Path) -> String {
    let out = run(&[
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        dev.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    stdout(&out)
}

#[test]
fn snapshot_replays_byte_for_byte() {
    for name in scenarios() {
        let Some(dev) = fixture_dev_root(&name) else {
            continue;
        };
        let sys = fixtures_dir().join(&name).join("sys");
        let snap = tempfile::tempdir().unwrap();
        let out = take_snapshot(&sys, dev.path(), snap.path(), &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let live = features(&sys, dev.path());
        // The nodes the snapshot recreated, and the ones the harness rebuilds from the
        // manifest, both replay the same.
        assert_eq!(
            features(&snap.path().join("sys"), &snap.path().join("dev")),
            live,
            "{name}"
        );
        let rebuilt = tempfile::tempdir().unwrap();
        let manifest = fs::read_to_string(snap.path().join("dev.manifest")).unwrap();
        dev_root_from_list(&manifest, rebuilt.path()).unwrap();
        assert_eq!(
            features(&snap.path().join("sys"), rebuilt.path()),
            live,
            "{name}"
        );
        // doctor sees the same devices and counts too.
        let d = |sys: &Path, dev: &Path| {
            let o = run(&[
                "doctor",
                "--json",
                "--sysfs-root",
                sys.to_str().unwrap(),
                "--dev-root",
                dev.to_str().unwrap(),
            ]);
            let mut v: Value = serde_json::from_slice(&o.stdout).unwrap();
            v["searched"]["sysfs_root"] = Value::Null;
            v["searched"]["dev_root"] = Value::Null;
            // They name the roots searched, too.
            v["next_steps"] = Value::Null;
            v
        };
        assert_eq!(
            d(&snap.path().join("sys"), rebuilt.path()),
            d(&sys, dev.path()),
            "{name}: doctor"
        );
        let readme = fs::read_to_string(snap.path().join("README")).unwrap();
        assert!(readme.contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn snapshot_of_this_machine() {
    let snap = tempfile::tempdir().unwrap();
    let out = take_snapshot(Path::new("/sys"), Path::new("/dev"), snap.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        features(&snap.path().join("sys"), &snap.path().join("dev")),
        features(Path::new("/sys"), Path::new("/dev"))
    );
}

#[test]
fn snapshot_refuses_a_non_empty_directory() {
    let Some(dev) = fixture_dev_root("pcie-ready") else {
        return;
    };
    let sys = fixtures_dir().join("pcie-ready/sys");
    // Someone's own directory, with a sys/ and a README of theirs: refused with and
    // without --force, nothing touched.
    let mine = tempfile::tempdir().unwrap();
    fs::write(mine.path().join("notes.txt"), "mine").unwrap();
    fs::create_dir(mine.path().join("sys")).unwrap();
    fs::write(mine.path().join("sys/keep"), "mine").unwrap();
    fs::write(mine.path().join("README"), "my readme").unwrap();
    let out = take_snapshot(&sys, dev.path(), mine.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = take_snapshot(&sys, dev.path(), mine.path(), &["--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no earlier snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(mine.path().join("sys/keep")).unwrap(),
        "mine"
    );
    assert_eq!(
        fs::read_to_string(mine.path().join("README")).unwrap(),
        "my readme"
    );
    assert!(!mine.path().join("dev.manifest").exists());
    // An earlier snapshot is replaced by --force; a file beside it stays.
    let snap = tempfile::tempdir().unwrap();
    let out = take_snapshot(&sys, dev.path(), snap.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::write(snap.path().join("notes.txt"), "mine").unwrap();
    let out = take_snapshot(&sys, dev.path(), snap.path(), &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(snap.path().join("notes.txt")).unwrap(),
        "mine"
    );
    // Twice with --force gives the same tree again (old sys/ replaced, not merged).
    let out = take_snapshot(&sys, dev.path(), snap.path(), &["--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        features(&snap.path().join("sys"), &snap.path().join("dev")),
        features(&sys, dev.path())
    );
}

/// `--force` never writes through a symlink planted in DIR, and the replayed nodes keep
/// their owner.
#[test]
fn snapshot_force_stays_in_dir_and_keeps_owners() {
    let Some(dev) = fixture_dev_root("pcie-ready") else {
        return;
    };
    let sys = fixtures_dir().join("pcie-ready/sys");
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "not yours\n").unwrap();
    fs::create_dir(outside.path().join("dir")).unwrap();
    // A dev.manifest planted as a link does not count as an earlier snapshot.
    let planted = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&victim, planted.path().join("dev.manifest")).unwrap();
    let out = take_snapshot(&sys, dev.path(), planted.path(), &["--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // In an earlier snapshot, links planted where its parts were are replaced, never
    // followed.
    let snap = tempfile::tempdir().unwrap();
    let out = take_snapshot(&sys, dev.path(), snap.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in ["README", "sys", "dev"] {
        let p = snap.path().join(name);
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    std::os::unix::fs::symlink(&victim, snap.path().join("README")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), snap.path().join("sys")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), snap.path().join("dev")).unwrap();
    let out = take_snapshot(&sys, dev.path(), snap.path(), &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "not yours\n");
    assert_eq!(fs::read_dir(outside.path().join("dir")).unwrap().count(), 0);
    for name in ["README", "dev.manifest", "sys", "dev"] {
        let m = fs::symlink_metadata(snap.path().join(name)).unwrap();
        assert!(!m.file_type().is_symlink(), "{name} is still a link");
    }
    // apex_0 is uid 0, gid 999 in the fixture: the replay keeps both, and doctor says so.
    use std::os::unix::fs::MetadataExt;
    let node = fs::metadata(snap.path().join("dev/apex_0")).unwrap();
    assert_eq!(
        (node.uid(), node.gid(), node.mode() & 0o777),
        (0, 999, 0o660)
    );
    let replay = run(&args_for(
        snap.path().join("sys").to_str().unwrap(),
        snap.path().join("dev").to_str().unwrap(),
        &["doctor", "--json"],
    ));
    let v: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(v["devices"][0]["node"]["gid"], 999);
}

/// Every `apex_N.ready=false` label has a doctor entry with a cause and a remedy: on
/// every fixture, and on trees whose class devices lead nowhere.
#[test]
fn doctor_explains_every_not_ready_label() {
    fn check(sys: &Path, dev: &Path, what: &str) {
        let (s, d) = (sys.to_str().unwrap(), dev.to_str().unwrap());
        let labels = parse_nfd(&stdout(&run(&args_for(s, d, &[])))).unwrap();
        let doc: Value =
            serde_json::from_slice(&run(&args_for(s, d, &["doctor", "--json"])).stdout).unwrap();
        for l in labels.iter().filter(|l| !l.no_label && l.value == "false") {
            let Some(apex) = l
                .key
                .strip_suffix(".ready")
                .and_then(|k| k.rsplit_once("coral-tpu."))
                .map(|(_, a)| a)
                .filter(|a| a.starts_with("apex_"))
            else {
                continue;
            };
            let entries: Vec<&Value> = doc["devices"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["apex"] == apex)
                .chain(
                    doc["class_devices"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|c| c["name"] == apex),
                )
                .collect();
            assert_eq!(
                entries.len(),
                1,
                "{what}: {apex} is not ready; doctor has {entries:?}"
            );
            let problems: Vec<&Value> = entries[0]["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["level"] == "problem")
                .collect();
            assert!(!problems.is_empty(), "{what}: {apex}: no cause");
            assert!(
                problems
                    .iter()
                    .all(|f| !f["remedies"].as_array().unwrap().is_empty()
                        && !f["message"].as_str().unwrap().is_empty()),
                "{what}: {apex}: a problem without a remedy"
            );
        }
    }
    for name in scenarios() {
        let Some(dev) = fixture_dev_root(&name) else {
            return;
        };
        check(&fixtures_dir().join(&name).join("sys"), dev.path(), &name);
    }
    // A class device whose device link leads nowhere, and one that leads to a function
    // another apex_N already belongs to.
    let Some(b) = crate::bed::Bed::new("pcie-ready") else {
        return;
    };
    let apex0 = b
        .sys
        .join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0");
    let twin = b.sys.join("devices/virtual/apex/apex_1");
    fs::create_dir_all(&twin).unwrap();
    fs::write(twin.join("dev"), "120:1\n").unwrap();
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:1c.4/0000:03:00.0",
        twin.join("device"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/apex/apex_1",
        b.sys.join("class/apex/apex_1"),
    )
    .unwrap();
    mknod(&b.dev.join("apex_1"), 'c', 120, 1, 0o660).unwrap();
    check(&b.sys, &b.dev, "apex_1 sharing a function");
    fs::remove_file(apex0.join("device")).unwrap();
    std::os::unix::fs::symlink("../../nowhere", apex0.join("device")).unwrap();
    check(&b.sys, &b.dev, "dangling device link");
}

#[test]
fn snapshot_stays_inside_its_bounds() {
    let Some(dev) = fixture_dev_root("pcie-ready") else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    let sys = tree.path().join("sys");
    copy_tree(&fixtures_dir().join("pcie-ready/sys"), &sys);
    let apex = sys.join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0");
    std::os::unix::fs::symlink("../../../../../../../../../../etc", apex.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", apex.join("absolute")).unwrap();
    mknod(&apex.join("fifo"), 'p', 0, 0, 0o644).unwrap();
    fs::write(apex.join("huge"), vec![b'x'; 8 << 20]).unwrap();
    let snap = tempfile::tempdir().unwrap();
    let out = take_snapshot(&sys, dev.path(), snap.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copy = snap
        .path()
        .join("sys/devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0");
    assert!(
        copy.join("status").is_file(),
        "the normal attributes are there"
    );
    for gone in ["escape", "absolute", "fifo", "huge"] {
        assert!(
            copy.join(gone).symlink_metadata().is_err(),
            "{gone} was copied"
        );
    }
    let readme = fs::read_to_string(snap.path().join("README")).unwrap();
    assert!(
        readme.contains("huge") && readme.contains("fifo") && readme.contains("escape"),
        "{readme}"
    );
    // Nothing in the snapshot is larger than an attribute, or anything but a file,
    // directory, symlink or (under dev/) a device node.
    let mut stack = vec![snap.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                assert!(
                    e.metadata().unwrap().len() <= 4096 || e.file_name() == "README",
                    "{:?}",
                    e.path()
                );
            } else {
                assert!(
                    ft.is_symlink() || e.path().starts_with(snap.path().join("dev")),
                    "{:?}",
                    e.path()
                );
            }
        }
    }
    assert!(!snap.path().join("sys/etc").exists());
}

//! A sysfs that can be listed only in part (a reader that is not root, or one an LSM
//! confines): what decides which devices exist must be read whole, or nothing is
//! published. Root reads mode-000 directories anyway, so the binary runs as nobody
//! (setpriv) over a bed whose directories it may traverse.

use crate::bed::*;
use crate::util::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];
const CORAL_FN: &str = "devices/pci0000:00/0000:00:1c.4/0000:03:00.0";

/// A pcie-ready bed whose directories nobody may traverse, its features.d nobody's.
fn bed() -> Option<Bed> {
    let b = Bed::new("pcie-ready")?;
    let mut p = b.sys.as_path();
    while let Some(parent) = p.parent() {
        if parent == std::env::temp_dir() || parent == Path::new("/") {
            break;
        }
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
        p = parent;
    }
    let fd = b.dir().join("features.d");
    fs::create_dir_all(&fd).unwrap();
    std::os::unix::fs::chown(&fd, Some(65534), Some(65534)).unwrap();
    if !setpriv_works() {
        eprintln!("*** setpriv cannot drop to nobody here: incomplete-scan tests not run ***");
        return None;
    }
    Some(b)
}

fn setpriv_works() -> bool {
    Command::new("setpriv")
        .args(NOBODY)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

fn as_nobody(args: &[String]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(NOBODY).arg(bin()).args(args).env_clear();
    c
}

fn run_as_nobody(args: &[String]) -> Output {
    as_nobody(args).output().unwrap()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory the scan must list, made unreadable in turn: exit 1 naming the path
/// and the error, nothing on stdout; and a missing one is still absent hardware.
#[test]
fn an_unreadable_directory_that_decides_what_exists_publishes_nothing() {
    let Some(b) = bed() else { return };
    let all = run_as_nobody(&b.args(&[]));
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    assert!(stdout(&all).contains("coral-tpu.apex_0.ready=true"));
    for rel in [
        "bus/pci/devices",
        "class/apex",
        "bus/usb/devices",
        "module/apex",
        CORAL_FN,
    ] {
        let p = b.sys.join(rel);
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        chmod(&p, 0o000);
        let o = run_as_nobody(&b.args(&[]));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{rel}: {err}");
        assert!(o.stdout.is_empty(), "{rel}: partial truth printed");
        assert!(err.contains("scan incomplete"), "{rel}: {err}");
        assert!(err.contains("Permission denied"), "{rel}: {err}");
        assert!(
            err.contains(rel.split('/').next_back().unwrap()),
            "{rel}: {err}"
        );
        // frigate-config will not number TPUs from part of the hardware either, and
        // doctor says the scan was incomplete instead of "all ready" or "none found".
        let fc = run_as_nobody(&b.args(&["frigate-config"]));
        assert_eq!(fc.status.code(), Some(1), "{rel}: {}", stderr(&fc));
        let doc = run_as_nobody(&b.args(&["doctor", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
        assert_eq!(doc.status.code(), Some(1), "{rel}");
        assert_eq!(v["exit_code"], 1, "{rel}");
        assert!(!v["unreadable"].as_array().unwrap().is_empty(), "{rel}");
        assert_eq!(v["next_steps"].as_array().map(Vec::len), Some(0), "{rel}");
        // The person reading it is told the same, not "No Coral Edge TPU found."
        let doc = run_as_nobody(&b.args(&["doctor"]));
        let text = stdout(&doc);
        assert!(text.contains("the scan is incomplete"), "{rel}: {text}");
        assert!(!text.contains("Next steps"), "{rel}: {text}");
        chmod(&p, mode);
    }
    // A missing directory stays what it is: no such hardware (no USB bus here).
    fs::remove_dir_all(b.sys.join("bus/usb")).unwrap();
    let o = run_as_nobody(&b.args(&[]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("coral-tpu.usb.count=0"));
}

/// A sysfs root nobody may read is said to be unreadable, not "not a sysfs tree".
#[test]
fn an_unreadable_sysfs_root_says_permission_denied() {
    let Some(b) = bed() else { return };
    chmod(&b.sys, 0o000);
    let o = run_as_nobody(&b.args(&[]));
    chmod(&b.sys, 0o755);
    let err = stderr(&o);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!err.contains("not a sysfs tree"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
}

/// The daemon keeps the last file while the scan is incomplete, says so once (not at
/// every one-second tick), and writes again when it is whole.
#[test]
fn the_daemon_keeps_the_last_file_and_says_so_once() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = as_nobody(&b.file_args(&["--sleep-interval", "1s"]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("first write", PATIENCE, || {
        read(&out).contains("apex_0.ready=true")
    });
    let before = read(&out);
    let devices = b.sys.join("bus/pci/devices");
    chmod(&devices, 0o000);
    // Four ticks with the PCI bus unreadable, then the TPU goes LAMED meanwhile.
    std::thread::sleep(Duration::from_millis(4200));
    assert_eq!(read(&out), before, "a partial scan replaced the file");
    fs::write(b.sys.join(CORAL_FN).join("apex/apex_0/status"), "LAMED\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(&out), before, "a partial scan replaced the file");
    chmod(&devices, 0o755);
    wait_for("the LAMED state once whole", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });
    let log = stop_and_log(child);
    // Once per reason, not once per tick (five ticks went by). A chmod that lands in the
    // middle of a scan can fail that one scan on a path below the directory instead:
    // a second reason, said once too.
    let said: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("scan incomplete").map(|(_, why)| why))
        .collect();
    let reasons: std::collections::BTreeSet<&str> = said.iter().copied().collect();
    assert!(
        !said.is_empty() && said.len() == reasons.len() && said.len() <= 2,
        "rate-limited to one line a minute per reason:\n{log}"
    );
    assert!(
        log.contains("nothing written, keeping the last file"),
        "{log}"
    );
    assert!(log.contains("the scan is complete again"), "{log}");
}

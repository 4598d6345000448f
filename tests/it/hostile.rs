//! Odd and hostile sysfs content: never a panic, a hang or an invalid line; a clear
//! warning naming the path; the device not ready (or the detail absent).

use crate::bed::{Bed, PATIENCE, wait_for};
use crate::util::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

const APEX0: &str = "devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0";
const CORAL: &str = "devices/pci0000:00/0000:00:1c.4/0000:03:00.0";
const P: &str = "feature.node.kubernetes.io/coral-tpu.";

/// A writable copy of the `pcie-and-usb` scenario with its dev root.
fn bed() -> Option<Bed> {
    Bed::new("pcie-and-usb")
}

struct Outcome {
    values: std::collections::BTreeMap<String, String>,
    stderr: String,
}

impl Outcome {
    fn get(&self, k: &str) -> Option<&str> {
        self.values.get(&format!("{P}{k}")).map(String::as_str)
    }
}

/// Runs one-shot on the bed: must exit 0 within 10 s with a valid file.
fn scan(b: &Bed) -> Outcome {
    let out = run_with_limit(
        &[
            "--sysfs-root",
            b.sys.to_str().unwrap(),
            "--dev-root",
            b.dev.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let text = stdout(&out);
    let lines = parse_nfd(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Outcome {
        values: lines.into_iter().map(|l| (l.key, l.value)).collect(),
        stderr: err,
    }
}

fn write(b: &Bed, rel: &str, content: &[u8]) {
    let p = b.sys.join(rel);
    let _ = fs::remove_file(&p);
    fs::write(p, content).unwrap();
}

fn replace_with_fifo(path: &Path) {
    let _ = fs::remove_file(path);
    mknod(path, 'p', 0, 0, 0o644).expect("mkfifo");
}

fn assert_apex_state(o: &Outcome, state: &str) {
    assert_eq!(o.get("pcie.0.state"), Some(state), "stderr: {}", o.stderr);
    assert_eq!(o.get("apex_0.ready"), Some("false"));
    assert_eq!(o.get("pcie.ready.count"), Some("0"));
    // The USB stick is untouched by what happens to the PCIe card.
    assert_eq!(o.get("usb.ready.count"), Some("1"));
}

fn warned(o: &Outcome, path_end: &str, why: &str) {
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains(path_end))
        .unwrap_or_else(|| panic!("no warning about {path_end} in:\n{}", o.stderr));
    assert!(line.contains(why), "{line:?} does not say {why:?}");
    assert!(line.starts_with("coral-nfd: warning: "), "{line}");
}

#[test]
fn baseline_is_ready_and_quiet() {
    let Some(b) = bed() else { return };
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"));
    assert_eq!(o.stderr, "");
}

#[test]
fn fifo_status_does_not_block() {
    let Some(b) = bed() else { return };
    replace_with_fifo(&b.sys.join(APEX0).join("status"));
    let o = scan(&b);
    assert_apex_state(&o, "status-unreadable");
    warned(&o, "apex_0/status", "not a regular file");
}

#[test]
fn char_device_as_attribute_is_refused_unread() {
    let Some(b) = bed() else { return };
    let p = b.sys.join(APEX0).join("temp");
    fs::remove_file(&p).unwrap();
    // Behaves like /dev/zero: reading it would never end.
    mknod(&p, 'c', 1, 5, 0o644).unwrap();
    let o = scan(&b);
    assert_apex_state(&o, "temp-unreadable");
    warned(&o, "apex_0/temp", "not a regular file");
}

#[test]
fn huge_attribute_is_refused() {
    let Some(b) = bed() else { return };
    write(&b, &format!("{APEX0}/temp"), &vec![b'7'; 10 << 20]);
    let o = scan(&b);
    assert_apex_state(&o, "temp-unreadable");
    warned(&o, "apex_0/temp", "larger than any sysfs attribute");
}

#[test]
fn garbage_and_non_utf8_content() {
    let Some(b) = bed() else { return };
    write(&b, &format!("{APEX0}/status"), b"\xff\xfeALIVE\x00\n");
    let o = scan(&b);
    assert_apex_state(&o, "status-unreadable");
    warned(&o, "apex_0/status", "expected a status word");
    assert!(
        o.stderr.contains("\\xff\\xfe"),
        "content shown escaped: {}",
        o.stderr
    );
}

#[test]
fn empty_dev_file() {
    let Some(b) = bed() else { return };
    write(&b, &format!("{APEX0}/dev"), b"");
    let o = scan(&b);
    assert_apex_state(&o, "dev-unknown");
    warned(&o, "apex_0/dev", "expected a device number");
}

#[test]
fn negative_and_odd_numbers() {
    let Some(b) = bed() else { return };
    write(&b, &format!("{APEX0}/dev"), b"-120:0\n");
    let o = scan(&b);
    assert_apex_state(&o, "dev-unknown");
    write(&b, &format!("{APEX0}/dev"), b"120:0\n");
    write(&b, &format!("{APEX0}/temp"), b"99999999999999999999999\n");
    let o = scan(&b);
    assert_apex_state(&o, "temp-unreadable");
}

#[test]
fn garbage_vendor_of_another_device_is_only_a_warning() {
    let Some(b) = bed() else { return };
    write(&b, "devices/pci0000:00/0000:00:17.0/vendor", b"0x");
    write(&b, "devices/pci0000:00/0000:00:02.0/vendor", b"");
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"));
    warned(&o, "0000:00:17.0/vendor", "expected a hexadecimal ID");
    warned(&o, "0000:00:02.0/vendor", "expected a hexadecimal ID");
}

#[test]
fn directory_where_a_file_belongs() {
    let Some(b) = bed() else { return };
    let p = b.sys.join(APEX0).join("status");
    fs::remove_file(&p).unwrap();
    fs::create_dir(&p).unwrap();
    let o = scan(&b);
    assert_apex_state(&o, "status-unreadable");
    warned(&o, "apex_0/status", "not a regular file");
}

#[test]
fn file_where_a_directory_belongs() {
    let Some(b) = bed() else { return };
    fs::remove_dir_all(b.sys.join("class/apex")).unwrap();
    fs::write(b.sys.join("class/apex"), "not a directory").unwrap();
    let o = scan(&b);
    // No class device can be listed, so there is no apex_N.ready label at all.
    assert_eq!(o.get("pcie.0.state"), Some("no-apex-device"));
    assert_eq!(o.get("apex_0.ready"), None);
    assert_eq!(o.get("pcie.ready.count"), Some("0"));
    warned(&o, "class/apex", "not a directory");
}

#[test]
fn dangling_looping_and_escaping_links() {
    let Some(b) = bed() else { return };
    let devs = b.sys.join("bus/pci/devices");
    symlink("../../../devices/nowhere", devs.join("0000:00:1e.0")).unwrap();
    symlink("0000:00:1e.2", devs.join("0000:00:1e.1")).unwrap();
    symlink("0000:00:1e.1", devs.join("0000:00:1e.2")).unwrap();
    symlink(
        "../../../../../../../../../../../etc",
        devs.join("0000:00:1e.3"),
    )
    .unwrap();
    symlink("/etc", devs.join("0000:00:1e.4")).unwrap();
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"), "{}", o.stderr);
    warned(&o, "0000:00:1e.1/vendor", "loop");
    warned(&o, "0000:00:1e.3/vendor", "outside the root");
    warned(&o, "0000:00:1e.4/vendor", "outside the root");
    // A dangling entry is simply an entry with no vendor file: not worth a warning.
    assert!(!o.stderr.contains("0000:00:1e.0"), "{}", o.stderr);
}

#[test]
fn driver_link_leading_out_of_the_root() {
    let Some(b) = bed() else { return };
    let link = b.sys.join(CORAL).join("driver");
    fs::remove_file(&link).unwrap();
    symlink(
        "../../../../../../../../../../../sys/bus/pci/drivers/apex",
        &link,
    )
    .unwrap();
    let o = scan(&b);
    assert_apex_state(&o, "driver-unreadable");
    warned(&o, "0000:03:00.0/driver", "outside the root");
}

#[test]
fn apex_device_link_dangling() {
    let Some(b) = bed() else { return };
    let link = b.sys.join(APEX0).join("device");
    fs::remove_file(&link).unwrap();
    symlink("../../../0000:99:00.0", &link).unwrap();
    let o = scan(&b);
    assert_apex_state(&o, "no-apex-device");
    assert_eq!(o.get("apex_0.pci-address"), None);
}

#[test]
fn odd_class_names_are_skipped() {
    let Some(b) = bed() else { return };
    let class = b.sys.join("class/apex");
    symlink("apex_0", class.join("apex_x")).unwrap();
    symlink("apex_0", class.join("apex_00")).unwrap();
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"));
    warned(&o, "class/apex/apex_x", "not of the form apex_N");
    warned(&o, "class/apex/apex_00", "not of the form apex_N");
    assert!(
        !o.values
            .keys()
            .any(|k| k.contains("apex_x") || k.contains("apex_00"))
    );
}

#[test]
fn non_utf8_names() {
    use std::os::unix::ffi::OsStrExt;
    let Some(b) = bed() else { return };
    let name = std::ffi::OsStr::from_bytes(b"0000:00:1f.\xff");
    fs::create_dir(b.sys.join("bus/pci/devices").join(name)).unwrap();
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"));
    warned(&o, "bus/pci/devices", "not UTF-8");
}

#[test]
fn node_is_not_a_char_device() {
    let Some(b) = bed() else { return };
    let node = b.dev.join("apex_0");
    fs::remove_file(&node).unwrap();
    replace_with_fifo(&node);
    let o = scan(&b);
    assert_apex_state(&o, "node-not-char-device");
    fs::remove_file(&node).unwrap();
    fs::write(&node, "").unwrap();
    assert_apex_state(&scan(&b), "node-not-char-device");
}

#[test]
fn empty_dev_root() {
    // (A dev root that does not exist at all is a usage error: tests/it/cli.rs.)
    let Some(mut b) = bed() else { return };
    b.dev = b.dev.join("empty");
    fs::create_dir(&b.dev).unwrap();
    let o = scan(&b);
    assert_eq!(o.get("pcie.0.state"), Some("node-missing"));
    assert_eq!(o.get("usb.0.state"), Some("node-missing"));
    assert_eq!(o.get("ready.count"), Some("0"));
}

#[test]
fn usb_with_garbage_numbers() {
    let Some(b) = bed() else { return };
    let usb = "devices/pci0000:00/0000:00:14.0/usb2/2-4";
    write(&b, &format!("{usb}/busnum"), b"two\n");
    write(&b, &format!("{usb}/speed"), b"\xff");
    let o = scan(&b);
    assert_eq!(o.get("usb.0.state"), Some("dev-unknown"));
    assert_eq!(o.get("usb.0.speed"), None);
    assert_eq!(o.get("usb.ready.count"), Some("0"));
    warned(&o, "2-4/busnum", "expected a decimal number");
    warned(&o, "2-4/speed", "expected a speed");
}

#[test]
fn odd_driver_version_is_left_out() {
    let Some(b) = bed() else { return };
    write(&b, "module/apex/version", b"1.2-rc1+dirty\n");
    let o = scan(&b);
    assert_eq!(o.get("driver.version"), None);
    assert_eq!(o.get("ready.count"), Some("2"));
    assert!(o.stderr.contains("not a valid label value"), "{}", o.stderr);
}

#[test]
fn thousands_of_entries() {
    let Some(b) = bed() else { return };
    let devs = b.sys.join("bus/pci/devices");
    let host = b.sys.join("devices/pci0000:40");
    for i in 0..5000u32 {
        let addr = format!(
            "0000:{:02x}:{:02x}.{}",
            0x40 + (i >> 8) % 0x40,
            (i >> 3) & 0x1f,
            i & 7
        );
        let d = host.join(&addr);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("vendor"), "0x8086\n").unwrap();
        symlink(
            format!("../../../devices/pci0000:40/{addr}"),
            devs.join(&addr),
        )
        .unwrap();
    }
    let o = scan(&b);
    assert_eq!(o.get("ready.count"), Some("2"));
    assert_eq!(o.stderr, "");
}

#[test]
fn unreadable_files_as_another_user() {
    // Root reads mode-000 files anyway; run the scan as nobody where setpriv exists.
    let Some(b) = bed() else { return };
    let status = b.sys.join(APEX0).join("status");
    fs::set_permissions(&status, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Let nobody traverse the temporary directories.
    let mut p = b.sys.as_path();
    while let Some(parent) = p.parent() {
        if parent == std::env::temp_dir() || parent == Path::new("/") {
            break;
        }
        fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p = parent;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", &bin()])
        .args([
            "--sysfs-root",
            b.sys.to_str().unwrap(),
            "--dev-root",
            b.dev.to_str().unwrap(),
        ])
        .output();
    let Ok(out) = out else {
        eprintln!("*** setpriv not available: unreadable-file test not run ***");
        return;
    };
    let err = stderr(&out);
    if err.contains("setpriv:") {
        eprintln!("*** setpriv refused ({err}): unreadable-file test not run ***");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines = parse_nfd(&stdout(&out)).unwrap();
    let v: std::collections::BTreeMap<_, _> = lines.into_iter().map(|l| (l.key, l.value)).collect();
    assert_eq!(
        v.get(&format!("{P}pcie.0.state")).map(String::as_str),
        Some("status-unreadable")
    );
    assert!(
        err.contains("apex_0/status: cannot be read: Permission denied"),
        "{err}"
    );
}

/// Parts of the tree vanish and come back while scans run: every scan still succeeds.
#[test]
fn entries_vanishing_mid_scan() {
    use coral_nfd::label::Prefix;
    use coral_nfd::root::{Resolver, Root};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(b) = bed() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let sys = b.sys.clone();
    let churn = {
        let (stop, cycles) = (stop.clone(), cycles.clone());
        std::thread::spawn(move || {
            let apex = sys.join(APEX0);
            let moved = sys.join("devices/moved-apex");
            let link = sys.join("bus/pci/devices/0000:03:00.0");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&apex, &moved).unwrap();
                fs::remove_file(&link).unwrap();
                std::thread::yield_now();
                symlink(
                    "../../../devices/pci0000:00/0000:00:1c.4/0000:03:00.0",
                    &link,
                )
                .unwrap();
                fs::rename(&moved, &apex).unwrap();
                n += 1;
                cycles.store(n, Ordering::Relaxed);
            }
            n
        })
    };
    // The churn under way before the scans start (a thread not yet scheduled when 400
    // quick scans are over would test nothing).
    wait_for("the churn to start", PATIENCE, || {
        cycles.load(Ordering::Relaxed) > 0
    });
    let mut states = std::collections::BTreeSet::new();
    for i in 0..400 {
        let r = if i % 2 == 0 {
            Resolver::Openat2
        } else {
            Resolver::Walk
        };
        let (body, _warnings) = coral_nfd::labeler::body(
            &Root::open(&b.sys).with_resolver(r),
            &Root::open(&b.dev).with_resolver(r),
            &Prefix::default(),
        );
        parse_nfd(&body).unwrap();
        let ready = body.contains("coral-tpu.pcie.ready.count=1\n");
        states.insert(ready);
    }
    stop.store(true, Ordering::Relaxed);
    let flips = churn.join().unwrap();
    assert!(flips > 0);
    eprintln!("vanishing test: {flips} churn cycles, readiness states seen: {states:?}");
}

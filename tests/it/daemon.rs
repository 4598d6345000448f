//! The output path and daemon mode: atomic replacement, no churn, expiry refresh,
//! signals, and failures to write.

use crate::bed::*;
use crate::util::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn bed() -> Option<Bed> {
    Bed::new("pcie-ready")
}

fn expiry_of(content: &str) -> Option<String> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("# +expiry-time=").map(str::to_string))
}

#[test]
fn one_shot_file_is_complete_with_mode_0644_and_nothing_else_visible() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let o = b.run(&b.file_args(&[]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"", "file mode prints nothing to stdout");
    let content = read(&out);
    parse_nfd(&content).unwrap();
    assert_eq!(ready_in(&content), Some(true));
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o644);
    // NFD reads every non-hidden regular file in features.d: only ours is there.
    let visible: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, ["coral-nfd"]);
    assert!(
        expiry_of(&content).is_none(),
        "no expiry by default in one-shot mode"
    );
}

#[test]
fn one_shot_expiry_directive() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let o = b.run(&b.file_args(&["--expiry", "10m"]));
    assert_eq!(o.status.code(), Some(0));
    let content = read(&out);
    let lines = parse_nfd(&content).unwrap();
    let at = expiry_of(&content).expect("expiry directive");
    let t = humantime::parse_rfc3339(&at).unwrap();
    let left = t.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.expiry.as_deref() == Some(at.as_str()))
    );
}

#[test]
fn reader_never_sees_a_partial_file() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1h", "--expiry", "0"]);
    assert!(ready_in(&read(&out)).is_some(), "first write");

    // The two complete versions the file may hold.
    let ready_version = read(&out);
    b.set_apex_node(false);
    signal(&child, rustix::process::Signal::HUP);
    wait_for("not-ready version", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });
    let not_ready_version = read(&out);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), stop.clone());
        let versions = [ready_version.clone(), not_ready_version.clone()];
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = fs::read_to_string(&out).expect("the file never disappears");
                assert!(
                    versions.contains(&got),
                    "partial or unknown content:\n{got}"
                );
                reads += 1;
            }
            reads
        })
    };
    // Renames are paced 1.1 s apart for NFD: ten flips take about eleven seconds.
    let flips = 10;
    for i in 0..flips {
        let ready = i % 2 == 0;
        b.set_apex_node(ready);
        signal(&child, rustix::process::Signal::HUP);
        wait_for("flip", PATIENCE, || ready_in(&read(&out)) == Some(ready));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw only complete files");
    assert!(reads > flips, "reader ran {reads} times");
    stop_daemon(child);
}

#[test]
fn unchanged_node_causes_no_rewrite() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1s", "--expiry", "0"]);
    let before = fs::metadata(&out).unwrap();
    std::thread::sleep(Duration::from_millis(3500)); // three rescans
    let after = fs::metadata(&out).unwrap();
    assert_eq!(
        before.ino(),
        after.ino(),
        "file was replaced although nothing changed"
    );
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    // A change is picked up by the periodic rescan alone.
    b.set_apex_node(false);
    wait_for("periodic rescan", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });
    stop_daemon(child);
}

#[test]
fn expiry_is_refreshed_before_it_runs_out() {
    let Some(b) = bed() else { return };
    let out = b.out();
    // The shortest expiry a 1 s interval allows: 2 x 1s + 5s.
    let child = b.daemon(&["--sleep-interval", "1s", "--expiry", "7s"]);
    let first = expiry_of(&read(&out)).expect("expiry directive");
    let mut refreshed_at = None;
    wait_for("refreshed expiry", PATIENCE, || {
        let (content, written) = read_timed(&out);
        let newer = expiry_of(&content).is_some_and(|e| e > first);
        refreshed_at = newer.then_some(written);
        newer
    });
    // Before it ran out, by the file's own time (not by when this test got to look).
    let first = humantime::parse_rfc3339(&first).unwrap();
    let written = refreshed_at.unwrap();
    assert!(
        written < first,
        "refreshed at {written:?}, after the expiry {first:?}"
    );
    stop_daemon(child);
}

/// The file's content and when that content was written (its mtime), from one open
/// file, so both belong to the same version.
fn read_timed(p: &Path) -> (String, std::time::SystemTime) {
    use std::io::Read;
    let Ok(mut f) = fs::File::open(p) else {
        return (String::new(), std::time::UNIX_EPOCH);
    };
    let mut content = String::new();
    f.read_to_string(&mut content).unwrap();
    (content, f.metadata().unwrap().modified().unwrap())
}

/// The refresh comes when half the expiry is left, not at the first interval after
/// that: a 7 s interval and a 30 s expiry refresh at 15 s left (the first tick after
/// would be at 9 s left), and a rescan in between does not put it off.
#[test]
fn expiry_is_refreshed_when_half_is_left() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let child = b.daemon(&[
        "--sleep-interval",
        "7s",
        "--expiry",
        "30s",
        "--metrics-address",
        &metrics,
    ]);
    let (content, first_written) = read_timed(&out);
    let first = expiry_of(&content).expect("expiry directive");
    let first = humantime::parse_rfc3339(&first).unwrap();
    // A hotplug rescan early on that changes no label (a /dev/apex_9 that no class
    // device has), seen in the scan counter. At 5 s: the ticks of a loop that counts
    // from its last scan would then fall at 12 s (18 s left) and 19 s (11 s left).
    std::thread::sleep(Duration::from_secs(5));
    let scans = || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&metrics).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text.lines()
            .find(|l| l.starts_with("coral_nfd_scans_total{result=\"complete\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = scans();
    let _ = mknod(&b.dev.join("apex_9"), 'c', 120, 9, 0o600);
    wait_for("a rescan", PATIENCE, || scans() > before);
    let mut refreshed_at = None;
    wait_for("refreshed expiry", PATIENCE, || {
        let (content, written) = read_timed(&out);
        let newer =
            expiry_of(&content).is_some_and(|e| humantime::parse_rfc3339(&e).unwrap() > first);
        refreshed_at = newer.then_some(written);
        newer
    });
    // Timed by the files' own mtimes, so a slow test does not count against the daemon:
    // 15 s after the first write (the directive's whole seconds may take up to one off);
    // a refresh at the next tick would come at 21 s, one counted from the rescan at 19 s.
    let gap = refreshed_at
        .unwrap()
        .duration_since(first_written)
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_secs(13) && gap < Duration::from_secs(17),
        "refreshed {gap:?} after the first write"
    );
    stop_daemon(child);
}

#[test]
fn default_expiry_is_three_intervals() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let mut child = b.daemon(&["--sleep-interval", "1h"]);
    let at = humantime::parse_rfc3339(&expiry_of(&read(&out)).unwrap()).unwrap();
    let left = at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(3 * 3600 - 10) && left <= Duration::from_secs(3 * 3600));
    signal(&child, rustix::process::Signal::INT);
    assert!(wait_exit(&mut child, PATIENCE).success());
}

#[test]
fn sigterm_exits_promptly_and_keeps_the_file() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let mut child = b.daemon(&["--sleep-interval", "1h"]);
    signal(&child, rustix::process::Signal::TERM);
    // With an hour to the next tick, any exit within PATIENCE is the signal waking the
    // loop (a fixed second here measured the machine: a loaded kernel can take longer
    // to tear down the inotify instances than the daemon takes to stop).
    let st = wait_exit(&mut child, PATIENCE);
    assert_eq!(st.code(), Some(0));
    assert!(out.exists(), "a routine restart must not remove the labels");
}

#[test]
fn remove_on_exit_deletes_the_file() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let args = b.file_args(&["--sleep-interval", "1h", "--remove-on-exit"]);
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut child = spawn(&args);
        wait_for("first write", PATIENCE, || out.exists());
        signal(&child, sig);
        // The removal waits for the pacing gap after the first write, like a write.
        assert_eq!(wait_exit(&mut child, PATIENCE).code(), Some(0));
        assert!(!out.exists(), "{sig:?}");
        let left: Vec<_> = fs::read_dir(out.parent().unwrap()).unwrap().collect();
        assert!(left.is_empty(), "staging directory removed too: {left:?}");
    }
}

#[test]
fn sighup_rescans_at_once() {
    let Some(b) = bed() else { return };
    // A change in sysfs, which sends no inotify event: only SIGHUP (or the interval)
    // makes the daemon look again.
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1h"]);
    assert!(ready_in(&read(&out)) == Some(true), "first write");
    let status = b
        .sys
        .join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0/status");
    fs::write(&status, "LAMED\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ready_in(&read(&out)),
        Some(true),
        "no rescan before the signal"
    );
    signal(&child, rustix::process::Signal::HUP);
    wait_for("rescan after SIGHUP", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });
    stop_daemon(child);
}

/// Blocks the staging directory with a regular file: no write can succeed, even as root.
fn block_staging(out: &Path) -> PathBuf {
    let staging = staging(out);
    let _ = fs::remove_dir_all(&staging);
    fs::write(&staging, "in the way").unwrap();
    staging
}

#[test]
fn one_shot_write_failure_exits_1_and_keeps_the_old_file() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let args = b.file_args(&[]);
    assert_eq!(b.run(&args).status.code(), Some(0));
    let old = read(&out);
    b.set_apex_node(false);
    block_staging(&out);
    let o = b.run(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("coral-nfd: error:") && err.contains("staging"),
        "{err}"
    );
    assert_eq!(read(&out), old, "previous file intact");

    // Output path that is a directory; parent that is a regular file.
    let dir_out = b.dir().join("is-a-dir");
    fs::create_dir_all(dir_out.join("x")).unwrap();
    let o = b.run(&b.args(&["--output-file", dir_out.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(dir_out.join("x").is_dir(), "nothing the user had is lost");
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    assert!(!staging(&dir_out).exists(), "nothing left behind");

    let file_parent = b.dir().join("plain-file");
    fs::write(&file_parent, "keep me").unwrap();
    let bad = file_parent.join("coral-nfd");
    let o = b.run(&b.args(&["--output-file", bad.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(1));
    // It says what is wrong with the path, not "File exists".
    let want = format!(
        "cannot create it: {} is a regular file, not a directory",
        file_parent.display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_eq!(read(&file_parent), "keep me");
}

#[test]
fn daemon_retries_a_failed_write() {
    let Some(b) = bed() else { return };
    let out = b.out();
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    fs::write(&out, "old content\n").unwrap();
    let staging = block_staging(&out);
    let mut child = spawn(&b.file_args(&["--sleep-interval", "1s"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "daemon keeps running");
    assert_eq!(read(&out), "old content\n");
    fs::remove_file(&staging).unwrap();
    wait_for("retried write", PATIENCE, || {
        ready_in(&read(&out)) == Some(true)
    });
    signal(&child, rustix::process::Signal::TERM);
    let st = wait_exit(&mut child, PATIENCE);
    assert_eq!(st.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("coral-nfd: error:") && err.contains("retrying"),
        "{err}"
    );
}

#[test]
fn stale_temporary_files_are_cleaned_at_start() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let staging = staging(&out);
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("write-stale123"), "half a fi").unwrap();
    assert_eq!(b.run(&b.file_args(&[])).status.code(), Some(0));
    assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
}

// --- hotplug ---------------------------------------------------------------------------

/// Counts renames onto the output file (each is one published update).
struct RenameCounter {
    inotify: inotify::Inotify,
    name: std::ffi::OsString,
}

impl RenameCounter {
    fn new(out: &Path) -> Self {
        let inotify = inotify::Inotify::init().unwrap();
        inotify
            .watches()
            .add(out.parent().unwrap(), inotify::WatchMask::MOVED_TO)
            .unwrap();
        RenameCounter {
            inotify,
            name: out.file_name().unwrap().to_os_string(),
        }
    }

    fn count(&mut self) -> usize {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while let Ok(events) = self.inotify.read_events(&mut buf) {
            let got: Vec<_> = events
                .filter(|e| e.name == Some(self.name.as_os_str()))
                .collect();
            if got.is_empty() {
                break;
            }
            n += got.len();
        }
        n
    }
}

#[test]
fn apex_node_hotplug_is_seen_at_once() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1h"]);
    assert!(ready_in(&read(&out)) == Some(true), "first write");
    for round in 0..5 {
        b.set_apex_node(false);
        wait_for("node removal seen", PATIENCE, || {
            ready_in(&read(&out)) == Some(false)
        });
        b.set_apex_node(true);
        wait_for("node creation seen", PATIENCE, || {
            ready_in(&read(&out)) == Some(true)
        });
        eprintln!("hotplug round {round} seen");
    }
    stop_daemon(child);
}

#[test]
fn usb_bus_directories_may_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let sys = fixtures_dir().join("usb-dfu-usb3/sys");
    let dev = dir.path().join("dev");
    fs::create_dir_all(&dev).unwrap();
    let out = dir.path().join("features.d/coral-nfd");
    let args: Vec<String> = [
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        dev.to_str().unwrap(),
        "--output-file",
        out.to_str().unwrap(),
        "--sleep-interval",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let usb_ready = |c: &str| c.contains("coral-tpu.usb.ready.count=1\n");
    let mut child = spawn(&args);
    wait_for("first write", PATIENCE, || out.exists());
    assert!(!usb_ready(&read(&out)));
    // /dev/bus, /dev/bus/usb and /dev/bus/usb/002 do not exist yet: each level appears.
    for round in 0..3 {
        fs::create_dir(dev.join("bus")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        fs::create_dir(dev.join("bus/usb")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        fs::create_dir(dev.join("bus/usb/002")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if mknod(&dev.join("bus/usb/002/003"), 'c', 189, 130, 0o664).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            no_mknod("usb hotplug");
            return;
        }
        wait_for("usb node seen", PATIENCE, || usb_ready(&read(&out)));
        fs::remove_dir_all(dev.join("bus")).unwrap();
        wait_for("usb tree removal seen", PATIENCE, || {
            !usb_ready(&read(&out))
        });
        eprintln!("usb round {round} seen");
    }
    stop_daemon(child);
}

#[test]
fn a_burst_of_events_gives_one_write() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1h", "--expiry", "0"]);
    assert!(ready_in(&read(&out)) == Some(true), "first write");
    let mut renames = RenameCounter::new(&out);
    // Ten flips within a few milliseconds, ending not ready, plus noise in /dev.
    for i in 0..11 {
        b.set_apex_node(i % 2 == 1);
        fs::write(b.dev.join(format!("tty{i}")), "").unwrap();
    }
    wait_for("burst seen", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });
    std::thread::sleep(Duration::from_millis(300));
    let n = renames.count();
    assert!((1..=2).contains(&n), "{n} writes for one burst");
    stop_daemon(child);
}

//! Atomic replacement under torture: 10,000 daemon rewrites with a reader in a tight
//! loop, and `kill -9` at random moments over many runs.

use crate::bed::{Bed, PATIENCE, changed_at, staging};
use crate::util::*;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const STATUS: &str = "devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0/status";

fn bed() -> Option<Bed> {
    // On tmpfs where there is one: fsync costs nothing there, and what is tested is the
    // rename, not the disk.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        Bed::new_in("pcie-ready", shm)
    } else {
        Bed::new("pcie-ready")
    }
}

/// The daemon, silent (10,000 rewrites must not fill a pipe nobody reads).
fn daemon(b: &Bed) -> Child {
    Command::new(bin())
        .args(b.file_args(&[
            "--sleep-interval",
            "1h",
            "--expiry",
            "0",
            "--write-gap",
            "0s",
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// ALIVE or LAMED: the two versions of the file. Replaced by rename, so that the
/// daemon never reads a half-written attribute (a third, legitimate version).
fn set_alive(b: &Bed, alive: bool) {
    let status = b.sys.join(STATUS);
    let tmp = status.with_extension("new");
    fs::write(&tmp, if alive { "ALIVE\n" } else { "LAMED\n" }).unwrap();
    fs::rename(&tmp, &status).unwrap();
}

/// The complete file for each state, as a one-shot run writes it.
fn versions(b: &Bed) -> [String; 2] {
    let one = |alive| {
        set_alive(b, alive);
        stdout(&b.run(&b.args(&[])))
    };
    [one(true), one(false)]
}

fn hup(child: &Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::HUP,
    );
}

fn staging_files(out: &Path) -> usize {
    fs::read_dir(staging(out)).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn ten_thousand_rewrites_under_a_reader() {
    let Some(b) = bed() else { return };
    let versions = versions(&b);
    set_alive(&b, true);
    let mut child = daemon(&b);
    let start = Instant::now();
    while fs::read_to_string(b.out()).ok().as_ref() != Some(&versions[0]) {
        assert!(start.elapsed() < PATIENCE, "no first write");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (out, stop, reads, versions) = (b.out(), stop.clone(), reads.clone(), versions.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let got = fs::read_to_string(&out).expect("the file is always there");
                assert!(versions.contains(&got), "a partial or unknown file:\n{got}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let rewrites = 10_000;
    for i in 1..=rewrites {
        let alive = i % 2 == 0;
        set_alive(&b, alive);
        hup(&child);
        let want = &versions[if alive { 0 } else { 1 }];
        let t = Instant::now();
        while fs::read_to_string(b.out()).ok().as_ref() != Some(want) {
            assert!(t.elapsed() < PATIENCE, "rewrite {i} not seen");
            // Not a spin: the tests beside this one need the cores too.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw only complete files");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(staging_files(&b.out()), 0);
    eprintln!(
        "torture: {rewrites} rewrites in {:?}, {} reads, every one complete",
        start.elapsed(),
        reads.load(Ordering::Relaxed)
    );
}

#[test]
fn kill_9_at_random_moments() {
    let Some(b) = bed() else { return };
    let versions = versions(&b);
    let runs = 200;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut killed_with_stale = 0;
    for run_no in 0..runs {
        let before = changed_at(&b.out());
        let mut child = daemon(&b);
        // Its first write (at start) shows its SIGHUP handler is in place: a SIGHUP
        // before that would end it by the default action, not by the kill under test.
        let t = Instant::now();
        while changed_at(&b.out()) == before {
            assert!(t.elapsed() < PATIENCE, "run {run_no}: no first write");
            std::thread::sleep(Duration::from_micros(200));
        }
        // Keep the daemon rewriting until the kill.
        let deadline = Instant::now() + Duration::from_millis(2 + random(40));
        let mut alive = run_no % 2 == 0;
        while Instant::now() < deadline {
            alive = !alive;
            set_alive(&b, alive);
            hup(&child);
            std::thread::sleep(Duration::from_micros(300));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "run {run_no}: {status}");
        if let Ok(got) = fs::read_to_string(b.out()) {
            assert!(
                versions.contains(&got),
                "run {run_no}: partial file after kill -9:\n{got}"
            );
        }
        let stale = staging_files(&b.out());
        assert!(stale <= 1, "run {run_no}: {stale} temporary files");
        killed_with_stale += stale;
    }
    // The next start cleans up what the last kill left.
    let mut child = daemon(&b);
    let t = Instant::now();
    while staging_files(&b.out()) != 0 {
        assert!(t.elapsed() < PATIENCE, "stale temporary file not cleaned");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "kill -9: {runs} runs, the file always complete; {killed_with_stale} kills left a temporary file, cleaned at the next start"
    );
}

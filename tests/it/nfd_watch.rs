//! NFD sees every state coral-nfd writes last: the real binary, driven through the
//! sequences that lose updates with an unpaced writer, watched by the model of NFD
//! v0.19's notifier in [`crate::nfd_model`]. Each test ends by asserting that the model's
//! last event triggered a read and that this read is the file on disk.
//!
//! `CORAL_NFD_BIN=path cargo test --test it nfd_watch` runs them against another build
//! (how docs/nfd.md shows they fail on the unpaced writer).

use crate::bed::*;
use crate::nfd_model::NfdModel;
use crate::util::*;
use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

/// NFD's `features.d`, already watched, and the daemon started after it.
struct Watched {
    bed: Bed,
    model: NfdModel,
}

impl Watched {
    /// `fresh`: coral-nfd never ran on this node. Otherwise its staging directory is
    /// there already (kept from an earlier run), so that each test shows only the loss
    /// it is about.
    fn new(scenario: &str, fresh: bool) -> Option<Watched> {
        let bed = Bed::new(scenario)?;
        fs::create_dir_all(bed.out().parent().unwrap()).unwrap();
        if !fresh {
            fs::create_dir(staging(&bed.out())).unwrap();
        }
        let model = NfdModel::start(bed.out().parent().unwrap());
        // Start at a random phase of NFD's one-second tick.
        std::thread::sleep(Duration::from_millis(rand_ms(1000)));
        Some(Watched { bed, model })
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        spawn(&self.bed.file_args(extra))
    }

    /// Waits until the file shows `done`, then past one more tick and the gap, and
    /// checks that NFD read the final file. Returns how long NFD took to read it.
    fn settle(&self, since: Instant, done: impl Fn(&str) -> bool) -> Duration {
        let out = self.bed.out();
        wait_for("final state in the file", PATIENCE, || done(&read(&out)));
        std::thread::sleep(Duration::from_millis(1600));
        let last = read(&out);
        self.model.assert_saw("coral-nfd", &last);
        // From the first read of the final run of reads that show the final file (a
        // storm that ends where it began may need no write: then an earlier read does).
        let reads = self.model.reads();
        let first_of_run = reads
            .iter()
            .rposition(|r| r.files.get("coral-nfd") != Some(&last))
            .map_or(0, |i| i + 1);
        let seen = reads.get(first_of_run).expect("a read of the final file");
        let took = seen.at.saturating_duration_since(since);
        // The goal is 1.5 s (the benchmark measures it on an idle machine; the tests
        // print it). Here only a writer that waits for its interval (an hour in these
        // tests) is caught: a tighter bound failed on a loaded machine, not on the writer.
        assert!(took < PATIENCE, "NFD saw the change after {took:?}");
        took
    }
}

/// A number in 0..n, different on every call (no crate needed for test jitter).
fn rand_ms(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}

/// (a) nfd-worker runs before coral-nfd ever did: creating the staging directory is an
/// event, which must not swallow the first version.
#[test]
fn first_start_with_nfd_already_running() {
    for daemon in [true, false] {
        let Some(w) = Watched::new("pcie-ready", true) else {
            return;
        };
        let start = Instant::now();
        let child = if daemon {
            Some(w.spawn(&["--sleep-interval", "1h"]))
        } else {
            let o = w.bed.run(&w.bed.file_args(&[]));
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            None
        };
        w.settle(start, |c| ready_in(c) == Some(true));
        if let Some(c) = child {
            stop_daemon(c);
        }
    }
}

/// (b) A burst of node changes, as hotplug produces: the last state wins in NFD too.
#[test]
fn hotplug_storm() {
    let Some(w) = Watched::new("pcie-ready", false) else {
        return;
    };
    let child = w.spawn(&["--sleep-interval", "1h"]);
    w.settle(Instant::now(), |c| ready_in(c) == Some(true));
    for round in 0..3 {
        let flips = 5 + rand_ms(10) as usize;
        let mut present = true;
        for _ in 0..flips {
            present = !present;
            w.bed.set_apex_node(present);
            std::thread::sleep(Duration::from_millis(rand_ms(400)));
        }
        let took = w.settle(Instant::now(), |c| ready_in(c) == Some(present));
        eprintln!("storm {round}: {flips} flips, NFD read the final state after {took:?}");
        if !present {
            w.bed.set_apex_node(true);
            w.settle(Instant::now(), |c| ready_in(c) == Some(true));
        }
    }
    stop_daemon(child);
}

/// (b) A USB stick re-enumerating when its firmware loads: the DFU device (1a6e:089a,
/// node 002/003) goes and the application device (18d1:9302, node 002/004) comes a few
/// milliseconds later. NFD must end with the stick ready, not with the node missing.
#[test]
fn usb_stick_reenumerates() {
    let Some(w) = Watched::new("usb-dfu-usb3", false) else {
        return;
    };
    let usb_ready = |c: &str| c.contains("coral-tpu.usb.ready.count=1\n");
    let child = w.spawn(&["--sleep-interval", "1h"]);
    w.settle(Instant::now(), usb_ready);
    let stick = fs::canonicalize(w.bed.sys.join("bus/usb/devices/2-2")).unwrap();
    let start = Instant::now();
    fs::remove_file(w.bed.dev.join("bus/usb/002/003")).unwrap();
    std::thread::sleep(Duration::from_millis(5 + rand_ms(30)));
    for (attr, value) in [
        ("idVendor", "18d1\n"),
        ("idProduct", "9302\n"),
        ("devnum", "4\n"),
        ("dev", "189:131\n"),
    ] {
        fs::write(stick.join(attr), value).unwrap();
    }
    mknod(&w.bed.dev.join("bus/usb/002/004"), 'c', 189, 131, 0o664).unwrap();
    let took = w.settle(start, |c| usb_ready(c) && c.contains("usb.0.mode=app\n"));
    eprintln!("re-enumeration: NFD read app mode after {took:?}");
    stop_daemon(child);
}

/// (b) SIGHUP storms: each asks for a rewrite; NFD still reads the last one.
#[test]
fn sighup_storm() {
    let Some(w) = Watched::new("pcie-ready", false) else {
        return;
    };
    let child = w.spawn(&["--sleep-interval", "1h"]);
    w.settle(Instant::now(), |c| ready_in(c) == Some(true));
    for _ in 0..10 {
        signal(&child, rustix::process::Signal::HUP);
        std::thread::sleep(Duration::from_millis(rand_ms(150)));
    }
    // A state change right after the storm must not be lost behind it.
    w.bed.set_apex_node(false);
    w.settle(Instant::now(), |c| ready_in(c) == Some(false));
    stop_daemon(child);
}

/// Expiry refreshes are writes like any other: each must reach NFD.
#[test]
fn expiry_refreshes() {
    let Some(w) = Watched::new("pcie-ready", false) else {
        return;
    };
    let child = w.spawn(&["--sleep-interval", "1s", "--expiry", "7s"]);
    let out = w.bed.out();
    w.settle(Instant::now(), |c| ready_in(c) == Some(true));
    let first = read(&out);
    wait_for("a refresh", PATIENCE, || read(&out) != first);
    // A change just after a refresh waits for the gap, and is not lost.
    w.bed.set_apex_node(false);
    w.settle(Instant::now(), |c| ready_in(c) == Some(false));
    stop_daemon(child);
}

/// The model itself catches the bug it exists for: two renames within one tick.
#[test]
fn the_model_loses_a_second_write_within_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let model = NfdModel::start(dir.path());
    let file = dir.path().join("coral-nfd");
    let write = |content: &str| {
        let tmp = dir.path().join(".tmp");
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, &file).unwrap();
    };
    // Two writes at once, just after a tick; tried again should this thread have been
    // held up so long that they straddle a tick (then no drop is right).
    for attempt in 0.. {
        assert!(attempt < 5, "never two writes within one tick");
        let events = model.events().len();
        let next = model.tick_of(Instant::now()) + 1;
        while model.tick_of(Instant::now()) < next {
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        write("a=1\n");
        write("a=2\n");
        if model.tick_of(Instant::now()) != model.tick_of(start) {
            continue;
        }
        // Each write ends with the rename's event naming the file.
        wait_for("the model's events", PATIENCE, || {
            let all = model.events();
            all[events..]
                .iter()
                .filter(|e| e.name == "coral-nfd")
                .count()
                == 2
        });
        break;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.assert_saw("coral-nfd", "a=2\n")
    }));
    assert!(r.is_err(), "the model did not notice the lost write");
    assert!(model.dropped() >= 1);
}

//! Hardware change -> NFD has read it: the daemon on a fixture, watched by the model of
//! NFD v0.19's notifier the tests use (`tests/it/nfd_model.rs`), over 100 trials of
//! single changes and bursts at random phases of NFD's tick. Prints one row that
//! scripts/bench.py puts into its table. Needs root (mknod).
//!
//! `cargo bench --bench nfd_latency [-- TRIALS]`

// The test crate's helpers, shared as they are: this bench uses only part of them.
#[allow(dead_code)]
#[path = "../tests/it/bed.rs"]
mod bed;
#[allow(dead_code)]
#[path = "../tests/it/nfd_model.rs"]
mod nfd_model;
#[allow(dead_code)]
#[path = "../tests/it/util.rs"]
mod util;

use bed::Bed;
use nfd_model::NfdModel;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

fn rand_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}

fn main() {
    // `cargo test --all-targets` runs a harness-less bench as a test: only `cargo bench`
    // (which passes --bench) runs the four-minute measurement.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let Some(b) = Bed::new("pcie-ready") else {
        eprintln!("nfd_latency: mknod refused (run as root)");
        std::process::exit(1);
    };
    let out = b.out();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let model = NfdModel::start(out.parent().unwrap());
    let child = bed::spawn(&b.file_args(&["--sleep-interval", "1h", "--expiry", "0"]));
    let want = |ready: bool| format!("coral-tpu.apex_0.ready={ready}\n");
    bed::wait_for("first write", Duration::from_secs(5), || {
        bed::read(&out).contains(&want(true))
    });
    std::thread::sleep(Duration::from_millis(1500));

    let mut present = true;
    let mut latencies = Vec::with_capacity(trials);
    let (mut bursts, mut stale) = (0, 0);
    for _ in 0..trials {
        std::thread::sleep(Duration::from_millis(rand_below(1000)));
        let changes = if rand_below(2) == 0 {
            1
        } else {
            bursts += 1;
            3 + rand_below(6) as usize
        };
        let mut last_change = Instant::now();
        for i in 0..changes {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(rand_below(300)));
            }
            present = !present;
            b.set_apex_node(present);
            last_change = Instant::now();
        }
        let line = want(present);
        let deadline = last_change + Duration::from_secs(10);
        // NFD has it once its latest read shows the final state (a burst that ends
        // where it began may need no write at all: then its earlier read already does).
        let seen = loop {
            let last = model.reads().pop();
            if let Some(r) =
                last.filter(|r| r.files.get("coral-nfd").is_some_and(|c| c.contains(&line)))
            {
                break Some(r.at.saturating_duration_since(last_change));
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // Past one more tick and the gap: the last read must be the file on disk.
        std::thread::sleep(Duration::from_millis(1300));
        let last_ok = model.events().last().is_some_and(|e| e.triggered)
            && model.last_seen("coral-nfd") == Some(bed::read(&out));
        match seen {
            Some(d) if last_ok => latencies.push(d),
            _ => stale += 1,
        }
    }
    bed::stop_daemon(child);
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "nfd_latency\ttrials {trials} ({bursts} bursts)\tp50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, stale {stale}",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
}

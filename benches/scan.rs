//! In-process cost of one scan and one render, on trees made by scripts/bench.py
//! (`cargo bench --bench scan -- DIR...`, each DIR holding sys/ and dev/). Prints one
//! row per tree; scripts/bench.py puts the rows into its table.

use coral_nfd::label::Prefix;
use coral_nfd::root::Root;
use coral_nfd::{features, render, scan};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

/// Median time of `f` over batches lasting about 50 ms each.
fn measure(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(20) || n < 3 {
        f();
        n += 1;
    }
    let per_batch = ((n as f64) * 50.0 / start.elapsed().as_millis().max(1) as f64).ceil() as u32;
    let mut samples: Vec<Duration> = (0..11)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch.max(1) {
                f();
            }
            t.elapsed() / per_batch.max(1)
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dirs: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("tree\tpci\ttpus\tscan_us\trender_us\tns_per_pci");
    for dir in dirs {
        let dir = Path::new(&dir);
        let sys = Root::open(dir.join("sys"));
        let dev = Root::open(dir.join("dev"));
        let scan = scan::discover(&sys, &dev);
        let inv = scan.inventory.clone();
        let scan_t = measure(|| {
            black_box(scan::discover(&sys, &dev));
        });
        let prefix = Prefix::default();
        let render_t = measure(|| {
            let (f, _) = features::compose(black_box(&inv));
            let (body, _) = render::render_body(&f, &prefix);
            black_box(render::render(&body, None));
        });
        println!(
            "{}\t{}\t{}\t{:.1}\t{:.2}\t{:.0}",
            dir.file_name().unwrap().to_string_lossy(),
            inv.pci_scanned,
            inv.pcie.len(),
            scan_t.as_secs_f64() * 1e6,
            render_t.as_secs_f64() * 1e6,
            scan_t.as_secs_f64() * 1e9 / inv.pci_scanned.max(1) as f64,
        );
    }
}

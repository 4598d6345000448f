//! The labeler pipeline: scan -> compose -> render -> output, once or as a daemon. The
//! command line only fills in [`Options`]; the daemon loop and the tests call [`body`].

use crate::daemon::{self, ScanError, Scanned, Shared};
use crate::events;
use crate::features;
use crate::hotplug;
use crate::label::Prefix;
use crate::log::{self, Fatal};
use crate::metrics;
use crate::model::{Inventory, Warnings};
use crate::output::{self, AtomicFile, Sink};
use crate::render;
use crate::root::Root;
use crate::scan::{self, Depth, Scan};
use crate::serve;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Where the feature file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// stdout (no `--output-file`, or `--output-file -`).
    Stdout,
    File(PathBuf),
}

/// What the labeler's flags ask for, checked and with defaults applied.
#[derive(Debug, Clone)]
pub struct Options {
    pub prefix: Prefix,
    pub output: Output,
    /// `Some`: daemon mode.
    pub sleep_interval: Option<Duration>,
    /// The expiry to write, if any.
    pub expiry: Option<Duration>,
    pub remove_on_exit: bool,
    /// Least time between two renames of the file (NFD's watcher; tests shorten it).
    pub write_gap: Duration,
    /// `--metrics-address` (daemon mode only).
    pub metrics: Option<serve::Address>,
}

/// One scan composed: the body of the feature file (no header, no expiry), every
/// warning, and the inventory it came from.
fn compose(scan: Scan, prefix: &Prefix) -> (String, Warnings, Inventory) {
    let (features, compose_warnings) = features::compose(&scan.inventory);
    let (body, render_warnings) = render::render_body(&features, prefix);
    let mut all = scan.warnings;
    all.extend(compose_warnings);
    all.extend(render_warnings);
    (body, all, scan.inventory)
}

/// One scan: the body of the feature file (no header, no expiry) and every warning.
pub fn body(sys: &Root, dev: &Root, prefix: &Prefix) -> (String, Warnings) {
    let (body, warnings, _) = compose(scan::discover(sys, dev), prefix);
    (body, warnings)
}

/// What is said when a scan is incomplete and nothing is written.
fn nothing_written(why: &str) -> String {
    format!(
        "{why}; nothing written: without it the file could leave out a Coral that is there \
         (run as root, or let the container read the host's sysfs)"
    )
}

/// Runs the labeler: one scan to stdout or the file, or the daemon loop until a
/// SIGTERM/SIGINT. Roots that are not what they must be are a usage error (exit 2); a
/// scan that could not read what decides which devices exist writes nothing (exit 1).
pub fn run(opts: &Options, sys: &Root, dev: &Root) -> Result<(), Fatal> {
    scan::check_roots(sys, dev)?;
    // Bound before anything else starts: a taken or wrong address is a usage error.
    let metrics = match opts.metrics {
        Some(addr) => Some(serve::bind(addr).map_err(Fatal::usage)?),
        None => None,
    };
    let mut file = match &opts.output {
        Output::File(path) => {
            let mut f = AtomicFile::new(path, opts.write_gap).map_err(Fatal::failure)?;
            match f.prepare() {
                Ok(()) => {}
                // A daemon refuses to start only on what cannot pass (not a regular
                // file, another writer); a read-only or full filesystem is retried at
                // every tick, as a failed write is.
                Err(e) if opts.sleep_interval.is_some() && !e.is_final() => log::error(e),
                Err(e) => return Err(Fatal::failure(e.to_string())),
            }
            Some(f)
        }
        Output::Stdout => None,
    };
    if let Some(interval) = opts.sleep_interval {
        let sink: &mut dyn Sink = match &mut file {
            Some(f) => f,
            None => &mut output::Stdout,
        };
        return run_daemon(opts, interval, sink, sys, dev, metrics);
    }
    let scan = scan::discover(sys, dev);
    if let Some(why) = scan.incomplete() {
        log::warnings(&scan.warnings);
        return Err(Fatal::failure(nothing_written(&why)));
    }
    let (body, warnings, _) = compose(scan, &opts.prefix);
    log::warnings(&warnings);
    // The expiry counts from the moment of writing, after the pacing wait.
    if let Some(f) = &file {
        std::thread::sleep(f.due_in());
    }
    let content = render::render(&body, opts.expiry.map(|d| SystemTime::now() + d));
    match &mut file {
        Some(f) => f.write(&content).map_err(Fatal::failure),
        None => output::to_stdout(&content)
            .map_err(|e| Fatal::failure(format!("cannot write to stdout: {e}"))),
    }
}

fn run_daemon(
    opts: &Options,
    interval: Duration,
    out: &mut dyn Sink,
    sys: &Root,
    dev: &Root,
    metrics: Option<serve::Listener>,
) -> Result<(), Fatal> {
    let (tx, rx) = events::channel()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))?;
    if let Output::File(path) = &opts.output {
        // The lock lives on the staging directory: its removal must be noticed at once.
        let staging = output::staging_path(path);
        if let (Some(dir), Some(name)) = (staging.parent(), staging.file_name())
            && let Err(e) = hotplug::watch_entry(dir, name, tx.clone())
        {
            log::warning(format_args!(
                "cannot watch {} ({e}); the lock on it is checked at every scan only",
                dir.display()
            ));
        }
    }
    let hotplug = match hotplug::spawn(dev.path(), tx) {
        Ok(()) => format!("hotplug on {}", dev.path().display()),
        Err(e) => {
            log::warning(format_args!(
                "cannot watch {} for hotplug ({e}); rescanning every {} only",
                dev.path().display(),
                humantime::format_duration(interval)
            ));
            "no hotplug".into()
        }
    };
    let shared: Option<Shared> = match metrics {
        Some(listener) => {
            let shared = Shared::default();
            let reader = shared.clone();
            listener
                .start(move || {
                    // Copied out under the lock, encoded after it: the daemon never waits
                    // for a scrape.
                    let (inventory, stats) = match reader.lock() {
                        Ok(o) => (o.inventory.clone(), o.stats.clone()),
                        Err(_) => (None, Default::default()),
                    };
                    metrics::labeler(inventory.as_ref(), &stats)
                })
                .map_err(Fatal::failure)?;
            Some(shared)
        }
        None => None,
    };
    log::info(format_args!(
        "started: version {}, sysfs {}, dev {}, output {}, interval {}, expiry {}, {hotplug}",
        env!("CARGO_PKG_VERSION"),
        sys.path().display(),
        dev.path().display(),
        out.name(),
        humantime::format_duration(interval),
        opts.expiry
            .map_or("none".into(), |e| humantime::format_duration(e).to_string()),
    ));
    let config = daemon::Config {
        interval,
        expiry: opts.expiry,
        remove_on_exit: opts.remove_on_exit,
    };
    // The metrics show trip points and the like: the scan reads them too then.
    let depth = if shared.is_some() {
        Depth::Doctor
    } else {
        Depth::Labels
    };
    // The roots are opened again at every scan: a hostPath that goes away and comes
    // back is a new directory, which an old descriptor would never show.
    let (sys_path, dev_path) = (sys.path().to_path_buf(), dev.path().to_path_buf());
    let result = daemon::run(&config, out, rx, shared.as_ref(), || {
        let (sys, dev) = (Root::open(&sys_path), Root::open(&dev_path));
        scan::check_roots(&sys, &dev).map_err(|e| {
            if e.unreadable {
                ScanError::Incomplete(e.message)
            } else {
                ScanError::Roots(e.message)
            }
        })?;
        let scan = scan::discover_to(&sys, &dev, depth);
        if let Some(why) = scan.incomplete() {
            return Err(ScanError::Incomplete(why));
        }
        let (body, warnings, inventory) = compose(scan, &opts.prefix);
        Ok(Scanned {
            body,
            warnings,
            inventory,
        })
    });
    match result {
        Ok(()) => {
            log::info("stopped");
            Ok(())
        }
        Err(why) => Err(Fatal::failure(format!("{why}; stopping"))),
    }
}

//! The labeler pipeline: scan -> compose -> render -> output, once or as a daemon. The
//! command line only fills in [`Options`]; the daemon loop and the tests call [`body`].

use crate::daemon;
use crate::events;
use crate::features;
use crate::hotplug;
use crate::label::Prefix;
use crate::log::{self, Fatal};
use crate::model::Warnings;
use crate::output::{self, AtomicFile, Sink};
use crate::render;
use crate::root::Root;
use crate::scan;
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
}

/// One scan: the body of the feature file (no header, no expiry) and every warning.
pub fn body(sys: &Root, dev: &Root, prefix: &Prefix) -> (String, Warnings) {
    let scan = scan::discover(sys, dev);
    let (features, compose_warnings) = features::compose(&scan.inventory);
    let (body, render_warnings) = render::render_body(&features, prefix);
    let mut all = scan.warnings;
    all.extend(compose_warnings);
    all.extend(render_warnings);
    (body, all)
}

/// Runs the labeler: one scan to stdout or the file, or the daemon loop until a
/// SIGTERM/SIGINT. Roots that are not what they must be are a usage error (exit 2).
pub fn run(opts: &Options, sys: &Root, dev: &Root) -> Result<(), Fatal> {
    scan::check_roots(sys, dev).map_err(Fatal::usage)?;
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
        return run_daemon(opts, interval, sink, sys, dev);
    }
    let (body, warnings) = body(sys, dev, &opts.prefix);
    log::warnings(&warnings);
    match &mut file {
        Some(f) => {
            std::thread::sleep(f.due_in());
            let content = render::render(&body, opts.expiry.map(|d| SystemTime::now() + d));
            f.write(&content).map_err(Fatal::failure)
        }
        None => {
            let content = render::render(&body, opts.expiry.map(|d| SystemTime::now() + d));
            output::to_stdout(&content)
                .map_err(|e| Fatal::failure(format!("cannot write to stdout: {e}")))
        }
    }
}

fn run_daemon(
    opts: &Options,
    interval: Duration,
    out: &mut dyn Sink,
    sys: &Root,
    dev: &Root,
) -> Result<(), Fatal> {
    let (tx, rx) = events::channel()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))?;
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
    // The roots are opened again at every scan: a hostPath that goes away and comes
    // back is a new directory, which an old descriptor would never show.
    let (sys_path, dev_path) = (sys.path().to_path_buf(), dev.path().to_path_buf());
    daemon::run(&config, out, rx, || {
        let (sys, dev) = (Root::open(&sys_path), Root::open(&dev_path));
        scan::check_roots(&sys, &dev)?;
        Ok(body(&sys, &dev, &opts.prefix))
    });
    log::info("stopped");
    Ok(())
}

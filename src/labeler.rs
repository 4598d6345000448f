//! The labeler pipeline: scan -> compose -> render -> output, once or as a daemon. The
//! command line only fills in [`Options`]; the daemon loop and the tests call [`body`].

use crate::daemon;
use crate::events;
use crate::features;
use crate::hotplug;
use crate::label::Prefix;
use crate::log::{self, Fatal};
use crate::model::Warnings;
use crate::output::{self, AtomicFile};
use crate::render;
use crate::root::Root;
use crate::scan;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What the labeler's flags ask for.
#[derive(Debug, Clone)]
pub struct Options {
    pub prefix: Prefix,
    /// `None`: stdout.
    pub output_file: Option<PathBuf>,
    /// `Some`: daemon mode (requires `output_file`).
    pub sleep_interval: Option<Duration>,
    /// The expiry to write, if any (defaults already applied).
    pub expiry: Option<Duration>,
    pub remove_on_exit: bool,
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
/// SIGTERM/SIGINT.
pub fn run(opts: &Options, sys: &Root, dev: &Root) -> Result<(), Fatal> {
    if let (Some(interval), Some(path)) = (opts.sleep_interval, &opts.output_file) {
        return run_daemon(opts, interval, &AtomicFile::new(path), sys, dev);
    }
    let (body, warnings) = body(sys, dev, &opts.prefix);
    log::warnings(&warnings);
    let content = render::render(&body, opts.expiry.map(|d| SystemTime::now() + d));
    match &opts.output_file {
        Some(path) => {
            let out = AtomicFile::new(path);
            out.clean_stale();
            out.write(&content).map_err(Fatal::failure)
        }
        None => output::to_stdout(&content)
            .map_err(|e| Fatal::failure(format!("cannot write to stdout: {e}"))),
    }
}

fn run_daemon(
    opts: &Options,
    interval: Duration,
    out: &AtomicFile,
    sys: &Root,
    dev: &Root,
) -> Result<(), Fatal> {
    let (tx, rx) = events::channel()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))?;
    if let Err(e) = hotplug::spawn(dev.path(), tx) {
        log::warning(format_args!(
            "cannot watch {} for hotplug ({e}); rescanning every {} only",
            dev.path().display(),
            humantime::format_duration(interval)
        ));
    }
    let config = daemon::Config {
        interval,
        expiry: opts.expiry,
        remove_on_exit: opts.remove_on_exit,
    };
    daemon::run(&config, out, rx, || body(sys, dev, &opts.prefix));
    Ok(())
}

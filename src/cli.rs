//! The command line: flags, environment variables, and what each mode does.

use crate::daemon;
use crate::features;
use crate::inventory;
use crate::label::Prefix;
use crate::output::{self, AtomicFile};
use crate::root::Root;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Warnings printed per scan at most; the rest are counted.
const MAX_WARNINGS: usize = 50;

#[derive(Parser, Debug)]
#[command(
    name = "coral-nfd",
    version,
    about = "Tell Node Feature Discovery which nodes have a working Google Coral Edge TPU.",
    long_about = "Tell Node Feature Discovery which nodes have a working Google Coral Edge TPU.\n\n\
        Scans sysfs for Coral PCIe functions (1ac1:089a), the apex driver and its /dev/apex_N \
        nodes, and Coral USB Accelerators (1a6e:089a, 18d1:9302), and prints NFD feature lines. \
        With no arguments it scans /sys and /dev once and prints to stdout (usable as an NFD \
        hook); with --output-file it writes NFD's features.d file atomically, and with \
        --sleep-interval it keeps it up to date.\n\n\
        Exit codes: 0 success (whatever the hardware state), 1 the output could not be \
        written, 2 usage error."
)]
pub struct Cli {
    /// Root of the sysfs tree to scan; every sysfs read stays under it.
    #[arg(
        long,
        value_name = "DIR",
        env = "CORAL_NFD_SYSFS_ROOT",
        default_value = "/sys"
    )]
    pub sysfs_root: PathBuf,

    /// Root of the device tree where /dev/apex_N and /dev/bus/usb nodes are checked.
    #[arg(
        long,
        value_name = "DIR",
        env = "CORAL_NFD_DEV_ROOT",
        default_value = "/dev"
    )]
    pub dev_root: PathBuf,

    /// Namespace in front of every key: a lowercase DNS subdomain followed by '/'.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "CORAL_NFD_LABEL_PREFIX",
        default_value = "feature.node.kubernetes.io/"
    )]
    pub label_prefix: Prefix,

    /// Write the feature file atomically to PATH instead of stdout (e.g.
    /// /etc/kubernetes/node-feature-discovery/features.d/coral-nfd). Creates the
    /// parent directory if missing.
    #[arg(long, value_name = "PATH", env = "CORAL_NFD_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,

    /// Keep running and rescan every DURATION (e.g. 60s, 5m); requires --output-file.
    /// Without it, scan once and exit. SIGHUP rescans at once.
    #[arg(
        long,
        value_name = "DURATION",
        env = "CORAL_NFD_SLEEP_INTERVAL",
        value_parser = parse_interval,
        requires = "output_file"
    )]
    pub sleep_interval: Option<Duration>,

    /// Add '# +expiry-time=' now + DURATION so NFD drops the labels if coral-nfd stops
    /// refreshing them. Default: 3 x --sleep-interval in daemon mode, none in one-shot
    /// mode; 0 disables.
    #[arg(long, value_name = "DURATION", env = "CORAL_NFD_EXPIRY", value_parser = parse_duration)]
    pub expiry: Option<Duration>,

    /// In daemon mode, delete the output file on SIGTERM/SIGINT (default: keep it, so
    /// a restart does not make labels flap).
    #[arg(long, requires = "sleep_interval")]
    pub remove_on_exit: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (expected e.g. 60s, 5m, 1h)"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("the interval must be longer than 0".into()),
        d => Ok(d),
    }
}

impl Cli {
    /// The expiry to write, if any.
    pub fn effective_expiry(&self) -> Option<Duration> {
        match (self.expiry, self.sleep_interval) {
            (Some(d), _) if d.is_zero() => None,
            (Some(d), _) => Some(d),
            (None, Some(interval)) => Some(interval.saturating_mul(3)),
            (None, None) => None,
        }
    }
}

/// One scan: the body of the feature file and every warning.
pub fn scan_body(sys: &Root, dev: &Root, prefix: &Prefix) -> (String, Vec<String>) {
    let scan = inventory::discover(sys, dev);
    let (features, mut warnings) = features::compose(&scan.inventory);
    let (body, render_warnings) = features::render_body(&features, prefix);
    let mut all = scan.warnings.0;
    all.append(&mut warnings);
    all.extend(render_warnings);
    (body, all)
}

fn print_warnings(warnings: &[String]) {
    for w in warnings.iter().take(MAX_WARNINGS) {
        eprintln!("coral-nfd: warning: {w}");
    }
    if warnings.len() > MAX_WARNINGS {
        eprintln!(
            "coral-nfd: warning: ... and {} more",
            warnings.len() - MAX_WARNINGS
        );
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let sys = Root::open(&cli.sysfs_root);
    let dev = Root::open(&cli.dev_root);
    let expiry = cli.effective_expiry();

    if let (Some(interval), Some(path)) = (cli.sleep_interval, &cli.output_file) {
        let out = AtomicFile::new(path);
        let (_tx, rx) = match daemon::events() {
            Ok(ch) => ch,
            Err(e) => {
                eprintln!("coral-nfd: error: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let config = daemon::Config {
            interval,
            expiry,
            remove_on_exit: cli.remove_on_exit,
        };
        daemon::run(&config, &out, rx, || {
            let (body, warnings) = scan_body(&sys, &dev, &cli.label_prefix);
            let shown: Vec<String> = warnings.into_iter().take(MAX_WARNINGS).collect();
            (body, shown)
        });
        return ExitCode::SUCCESS;
    }

    let (body, warnings) = scan_body(&sys, &dev, &cli.label_prefix);
    print_warnings(&warnings);
    let content = features::render(&body, expiry.map(|d| std::time::SystemTime::now() + d));
    let result = match &cli.output_file {
        Some(path) => {
            let out = AtomicFile::new(path);
            out.clean_stale();
            out.write(&content)
        }
        None => output::to_stdout(&content).map_err(|e| format!("cannot write to stdout: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coral-nfd: error: {e}");
            ExitCode::from(1)
        }
    }
}

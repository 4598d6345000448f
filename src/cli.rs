//! The command line: flags and environment variables, parsed and dispatched. What each
//! mode does lives in [`crate::labeler`] and [`crate::commands`]; the one place an
//! error is printed on the way out is [`run`].

use crate::commands;
use crate::label::Prefix;
use crate::labeler::{self, Options};
use crate::log;
use crate::root::Root;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
        written, 2 usage error. Subcommands for people: doctor, frigate-config, snapshot."
)]
pub struct Cli {
    #[command(flatten)]
    pub roots: Roots,

    #[command(flatten)]
    pub labeler: Labeler,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where to look; every subcommand takes these too.
#[derive(Args, Debug)]
pub struct Roots {
    /// Root of the sysfs tree to scan; every sysfs read stays under it.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CORAL_NFD_SYSFS_ROOT",
        default_value = "/sys"
    )]
    pub sysfs_root: PathBuf,

    /// Root of the device tree where /dev/apex_N and /dev/bus/usb nodes are checked.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CORAL_NFD_DEV_ROOT",
        default_value = "/dev"
    )]
    pub dev_root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain, for a person, why each Coral device is or is not ready and what to do.
    /// Exit codes: 0 every device found is ready, 1 at least one has a problem, 3 no
    /// Coral device found, 2 usage error.
    Doctor {
        /// One JSON document (schema_version 1, see the README) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a Frigate `detectors:` YAML block for the ready devices (exit 3 when none
    /// is ready).
    FrigateConfig,
    /// Copy the part of sysfs coral-nfd reads, and a manifest of the device nodes, into
    /// DIR, replayable with --sysfs-root DIR/sys --dev-root DIR/dev.
    Snapshot {
        /// Directory to write; must be empty unless --force.
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Write into a non-empty DIR (its sys/, dev/, dev.manifest and README are replaced).
        #[arg(long)]
        force: bool,
    },
}

/// The labeler's own flags (no subcommand).
#[derive(Args, Debug)]
pub struct Labeler {
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
    /// Without it, scan once and exit. A Coral device node appearing or vanishing
    /// under the dev root (inotify), or SIGHUP, rescans at once.
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

impl Labeler {
    /// The pipeline's options, defaults applied.
    pub fn options(&self) -> Options {
        Options {
            prefix: self.label_prefix.clone(),
            output_file: self.output_file.clone(),
            sleep_interval: self.sleep_interval,
            expiry: self.effective_expiry(),
            remove_on_exit: self.remove_on_exit,
        }
    }

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

/// The labeler's flags make no sense with a subcommand. Only flags given on the command
/// line are refused: the same variables set in the DaemonSet's environment must not
/// stop `kubectl exec ... coral-nfd doctor`.
fn refuse_labeler_flags(matches: &ArgMatches) {
    let Some((sub, _)) = matches.subcommand() else {
        return;
    };
    let labeler = [
        "label_prefix",
        "output_file",
        "sleep_interval",
        "expiry",
        "remove_on_exit",
    ];
    for id in labeler {
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = format!("--{}", id.replace('_', "-"));
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{flag} is for the labeler and cannot be used with '{sub}'"),
                )
                .exit();
        }
    }
}

pub fn run() -> ExitCode {
    let matches = Cli::command().get_matches();
    refuse_labeler_flags(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sys = Root::open(&cli.roots.sysfs_root);
    let dev = Root::open(&cli.roots.dev_root);
    let result = match &cli.command {
        None => labeler::run(&cli.labeler.options(), &sys, &dev).map(|()| ExitCode::SUCCESS),
        Some(Command::Doctor { json }) => commands::doctor(&sys, &dev, *json),
        Some(Command::FrigateConfig) => commands::frigate_config(&sys, &dev),
        Some(Command::Snapshot { output, force }) => commands::snapshot(&sys, &dev, output, *force),
    };
    result.unwrap_or_else(|e| {
        log::error(&e);
        ExitCode::from(e.code)
    })
}

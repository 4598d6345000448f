//! The command line: flags and environment variables, parsed, checked and dispatched.
//! What each mode does lives in [`crate::labeler`] and [`crate::commands`]; the one
//! place an error is printed on the way out is [`run`].

use crate::commands;
use crate::label::Prefix;
use crate::labeler::{self, Options, Output};
use crate::log::{self, LogFormat};
use crate::origin;
use crate::output::NFD_GAP;
use crate::root::Root;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Bounds of `--sleep-interval`: NFD's watcher cannot take writes closer than a second,
/// and a day is already far longer than any label should lag the hardware.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `--expiry` (0 turns it off).
pub const MIN_EXPIRY: Duration = Duration::from_secs(1);
/// Longest `--write-gap`: more than a minute between writes is no pacing but a delay.
pub const MAX_WRITE_GAP: Duration = Duration::from_secs(60);
/// One year as humantime counts it (365.25 days), so `--help` and errors say "1year".
pub const MAX_EXPIRY: Duration = Duration::from_secs(31_557_600);
/// In daemon mode the expiry must leave room for one interval, the pacing gap and a
/// scan after the refresh point (half the expiry): expiry >= 2 x interval + this.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "coral-nfd",
    version,
    propagate_version = true,
    about = "Tell Node Feature Discovery which nodes have a working Google Coral Edge TPU.",
    long_about = "Tell Node Feature Discovery which nodes have a working Google Coral Edge TPU.\n\n\
        Scans sysfs for Coral PCIe functions (1ac1:089a), the apex driver and its /dev/apex_N \
        nodes, and Coral USB Accelerators (1a6e:089a, 18d1:9302), and prints NFD feature lines. \
        With no arguments it scans /sys and /dev once and prints to stdout (usable as an NFD \
        hook); with --output-file it writes NFD's features.d file atomically, and with \
        --sleep-interval it keeps it up to date.\n\n\
        Exit codes: 0 success (whatever the hardware state), 1 nothing was written: the \
        output could not be written (or is not a regular file, or another coral-nfd writes \
        it), or the scan was incomplete (something deciding which devices exist could not \
        be read), 2 usage error (including a sysfs or dev root that is missing or not a \
        sysfs tree). Subcommands \
        for people: doctor, frigate-config, snapshot; rules for NFD; completions and man \
        for installing."
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
    /// Root of the sysfs tree to scan; every sysfs read stays under it. Must hold
    /// bus/pci/devices or bus/usb/devices.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CORAL_NFD_SYSFS_ROOT",
        hide_env_values = true,
        default_value = "/sys"
    )]
    pub sysfs_root: PathBuf,

    /// Root of the device tree where /dev/apex_N and /dev/bus/usb nodes are checked.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CORAL_NFD_DEV_ROOT",
        hide_env_values = true,
        default_value = "/dev"
    )]
    pub dev_root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain, for a person, why each Coral device is or is not ready and what to do.
    /// Exit codes: 0 every device found is ready, 1 at least one has a problem (or the
    /// scan was incomplete), 3 no Coral device found, 2 usage error, 4 the report could
    /// not be written to stdout.
    Doctor {
        /// One JSON document (schema_version 1, see docs/command-line.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a Frigate `detectors:` YAML block for the ready devices (exit 3 when none
    /// is ready: then no `detectors:` key at all, so Frigate keeps its CPU detector;
    /// exit 4 when stdout cannot be written).
    FrigateConfig,
    /// Copy the part of sysfs coral-nfd reads, and a manifest of the device nodes, into
    /// DIR, replayable with --sysfs-root DIR/sys --dev-root DIR/dev.
    Snapshot {
        /// Directory to write; must be empty unless --force.
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Replace an earlier snapshot in DIR (recognised by its dev.manifest): its sys/,
        /// dev/, dev.manifest and README. A DIR holding anything else is refused.
        #[arg(long)]
        force: bool,
    },
    /// Print the NodeFeatureRule objects whose keys match a label prefix (the files in
    /// nfd-config/ are this output for the default prefix).
    Rules {
        /// The prefix coral-nfd writes its keys with (a flag only: like every
        /// subcommand, `rules` ignores the labeler's CORAL_NFD_* variables).
        #[arg(
            long,
            value_name = "PREFIX",
            default_value = "feature.node.kubernetes.io/"
        )]
        label_prefix: Prefix,
        /// Print the rule that advertises the number of ready TPUs as the node's extended
        /// resource coral.ai/ready-tpus (nfd-config/extended-resources.yaml) instead of
        /// the labelling rules.
        #[arg(long)]
        extended_resources: bool,
    },
    /// Run a kubelet device plugin: each PCIe TPU is one RESOURCE (coral.ai/tpu),
    /// Healthy when the labeler would call it ready. Needs kubelet 1.26 or later.
    DevicePlugin {
        /// The kubelet's device-plugins directory (kubelet.sock, and our socket).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/kubelet/device-plugins"
        )]
        kubelet_dir: PathBuf,
        /// The extended resource pods request: domain/name, outside kubernetes.io, not
        /// starting with `requests.` (the kubelet refuses those).
        #[arg(long, value_name = "NAME", default_value = "coral.ai/tpu", value_parser = parse_resource)]
        resource: String,
        /// Log lines as text (RFC 3339 timestamp first) or json.
        #[arg(long, value_name = "FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Serve the plugin's own metrics (registration, devices by health, Allocate
        /// calls) at http://ADDR:PORT/metrics: IP:PORT, [IPv6]:PORT, or :PORT for every
        /// address. Off by default.
        #[arg(long, value_name = "ADDR:PORT", value_parser = crate::serve::parse_address)]
        metrics_address: Option<crate::serve::Address>,
    },
    /// Print a shell completion script (e.g. `coral-nfd completions bash >
    /// /etc/bash_completion.d/coral-nfd`).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `coral-nfd man > coral-nfd.1`).
    Man,
}

/// The labeler's own flags (no subcommand).
#[derive(Args, Debug)]
pub struct Labeler {
    /// Namespace in front of every key: a lowercase DNS subdomain followed by '/'.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "CORAL_NFD_LABEL_PREFIX",
        hide_env_values = true,
        default_value = "feature.node.kubernetes.io/"
    )]
    pub label_prefix: Prefix,

    /// Write the feature file atomically to PATH instead of stdout (e.g.
    /// /etc/kubernetes/node-feature-discovery/features.d/coral-nfd). PATH must be a
    /// regular file or absent; its parent is created if missing. `-` is stdout.
    #[arg(
        long,
        value_name = "PATH",
        env = "CORAL_NFD_OUTPUT_FILE",
        hide_env_values = true
    )]
    pub output_file: Option<PathBuf>,

    /// Keep running and rescan every DURATION (1s to 24h, e.g. 60s, 5m); requires
    /// --output-file. Without it, scan once and exit. A Coral device node appearing or
    /// vanishing under the dev root (inotify), or SIGHUP, rescans at once.
    #[arg(
        long,
        value_name = "DURATION",
        env = "CORAL_NFD_SLEEP_INTERVAL",
        hide_env_values = true,
        value_parser = parse_interval,
        requires = "output_file"
    )]
    pub sleep_interval: Option<Duration>,

    /// Add '# +expiry-time=' now + DURATION (1s to 1y) so NFD drops the labels if
    /// coral-nfd stops refreshing them; 0 disables. In daemon mode it must be at least 2
    /// x --sleep-interval + 5s; default 3 x --sleep-interval (at least that minimum).
    /// One-shot default: none.
    #[arg(
        long,
        value_name = "DURATION",
        env = "CORAL_NFD_EXPIRY",
        hide_env_values = true,
        value_parser = parse_expiry
    )]
    pub expiry: Option<Duration>,

    /// In daemon mode, delete the output file on SIGTERM/SIGINT (default: keep it, so
    /// a restart does not make labels flap).
    #[arg(long, requires = "sleep_interval")]
    pub remove_on_exit: bool,

    /// How the daemon logs: text (RFC 3339 timestamp, then the message) or json (one
    /// object per line).
    #[arg(
        long,
        value_name = "FORMAT",
        env = "CORAL_NFD_LOG_FORMAT",
        hide_env_values = true,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics (each TPU's readiness, state, temperature, trip points
    /// and throttling; USB sticks; the labeler's scans and writes) at
    /// http://ADDR:PORT/metrics, from the daemon's last scan: IP:PORT, [IPv6]:PORT, or
    /// :PORT for every address. Daemon mode only; off by default.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "CORAL_NFD_METRICS_ADDRESS",
        hide_env_values = true,
        value_parser = crate::serve::parse_address,
        requires = "sleep_interval"
    )]
    pub metrics_address: Option<crate::serve::Address>,

    /// Least time between two renames of the file (0s to 1m). NFD v0.19's watcher loses
    /// a second event within its one-second tick, so the default (1.1s) should only be
    /// lowered for readers other than NFD (and for tests).
    #[arg(long, value_name = "DURATION", hide = true, value_parser = parse_write_gap)]
    pub write_gap: Option<Duration>,
}

fn parse_resource(s: &str) -> Result<String, String> {
    crate::deviceplugin::check_resource_name(s).map(|()| s.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (expected e.g. 60s, 5m, 1h)"))
}

fn within(d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    let f = |d: Duration| {
        if d.is_zero() {
            "0s".to_string()
        } else {
            humantime::format_duration(d).to_string()
        }
    };
    if d < min || d > max {
        return Err(format!("must be between {} and {}", f(min), f(max)));
    }
    Ok(d)
}

fn parse_write_gap(s: &str) -> Result<Duration, String> {
    within(parse_duration(s)?, Duration::ZERO, MAX_WRITE_GAP)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    within(parse_duration(s)?, MIN_INTERVAL, MAX_INTERVAL)
}

fn parse_expiry(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Ok(d),
        d => within(d, MIN_EXPIRY, MAX_EXPIRY).map_err(|e| format!("{e}, or 0 for none")),
    }
}

impl Labeler {
    /// The least expiry daemon mode accepts for `interval` and the pacing gap: the
    /// refresh comes when half the expiry is left and may wait for the gap, so a gap
    /// longer than the default needs twice its excess on top.
    fn min_daemon_expiry(interval: Duration, gap: Duration) -> Duration {
        interval * 2 + EXPIRY_MARGIN + gap.saturating_sub(NFD_GAP) * 2
    }

    /// The pipeline's options, defaults applied and checked against each other.
    pub fn options(&self) -> Result<Options, String> {
        let output = match &self.output_file {
            Some(p) if p.as_os_str() == "-" => Output::Stdout,
            Some(p) => Output::File(p.clone()),
            None => Output::Stdout,
        };
        let write_gap = self.write_gap.unwrap_or(NFD_GAP);
        let least = |interval| Self::min_daemon_expiry(interval, write_gap);
        let expiry = match (self.expiry, self.sleep_interval) {
            (Some(d), _) if d.is_zero() => None,
            (Some(d), Some(interval)) if d < least(interval) => {
                let gap = match write_gap.saturating_sub(NFD_GAP) {
                    excess if excess.is_zero() => String::new(),
                    excess => format!(
                        " + 2 x {} of --write-gap above the default",
                        humantime::format_duration(excess)
                    ),
                };
                return Err(format!(
                    "{} {} would let the labels expire under a running daemon: with \
                     {} {} it must be at least {} (2 x interval + {}{gap})",
                    origin::flag_name("--expiry"),
                    humantime::format_duration(d),
                    origin::flag_name("--sleep-interval"),
                    humantime::format_duration(interval),
                    humantime::format_duration(least(interval)),
                    humantime::format_duration(EXPIRY_MARGIN)
                ));
            }
            (Some(d), _) => Some(d),
            (None, Some(interval)) => Some((interval * 3).max(least(interval))),
            (None, None) => None,
        };
        if self.remove_on_exit && output == Output::Stdout {
            return Err("--remove-on-exit needs a file to remove, not stdout".into());
        }
        Ok(Options {
            prefix: self.label_prefix.clone(),
            output,
            sleep_interval: self.sleep_interval,
            expiry,
            remove_on_exit: self.remove_on_exit,
            write_gap,
            metrics: self.metrics_address,
        })
    }
}

/// Ids of the labeler's arguments.
const LABELER_ARGS: [&str; 8] = [
    "label_prefix",
    "output_file",
    "sleep_interval",
    "expiry",
    "remove_on_exit",
    "log_format",
    "metrics_address",
    "write_gap",
];

/// The labeler's flags make no sense with a subcommand. Only flags given on the command
/// line are refused: the same variables set in the DaemonSet's environment must not
/// stop `kubectl exec ... coral-nfd doctor`.
fn refuse_labeler_flags(matches: &ArgMatches) {
    let Some((sub, _)) = matches.subcommand() else {
        return;
    };
    for id in LABELER_ARGS {
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

/// Parses the command line. The labeler's variables are ignored when a subcommand is
/// given: a first parse without them finds out whether one is (and, if so, is the
/// result); only a run of the labeler parses again with them.
fn matches() -> ArgMatches {
    let mut no_env = Cli::command();
    for id in LABELER_ARGS {
        no_env = no_env.mut_arg(id, |a| a.env(None));
    }
    if let Ok(m) = no_env.try_get_matches_from(std::env::args_os())
        && m.subcommand().is_some()
    {
        return m;
    }
    Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| origin::name_the_variable(&Cli::command(), e).exit())
}

fn usage_error(message: String) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

pub fn run() -> ExitCode {
    let matches = matches();
    refuse_labeler_flags(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sys = Root::open(&cli.roots.sysfs_root);
    let dev = Root::open(&cli.roots.dev_root);
    let result = match &cli.command {
        None => {
            let opts = cli.labeler.options().unwrap_or_else(|e| usage_error(e));
            log::configure(cli.labeler.log_format, opts.sleep_interval.is_some());
            labeler::run(&opts, &sys, &dev).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Doctor { json }) => commands::doctor(&sys, &dev, *json),
        Some(Command::FrigateConfig) => commands::frigate_config(&sys, &dev),
        Some(Command::Snapshot { output, force }) => commands::snapshot(&sys, &dev, output, *force),
        Some(Command::Rules {
            label_prefix,
            extended_resources,
        }) => commands::rules(label_prefix, *extended_resources),
        Some(Command::DevicePlugin {
            kubelet_dir,
            resource,
            log_format,
            metrics_address,
        }) => {
            log::configure(*log_format, true);
            let opts = crate::deviceplugin::Options {
                kubelet_dir: kubelet_dir.clone(),
                resource: resource.clone(),
                metrics: *metrics_address,
            };
            crate::deviceplugin::run(&opts, &sys, &dev).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Completions { shell }) => commands::completions(*shell, &mut Cli::command()),
        Some(Command::Man) => commands::man(Cli::command()),
    };
    result.unwrap_or_else(|e| {
        log::error(&e);
        ExitCode::from(e.code)
    })
}

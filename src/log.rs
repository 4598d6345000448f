//! Everything coral-nfd says on stderr, in one place: warnings about what a scan could
//! not read, errors, what the daemon did, and the exit path's message. One prefix, one
//! format. A one-shot run (an NFD hook, a subcommand) prints plain lines; a daemon
//! prints each line with an RFC 3339 UTC timestamp, or one JSON object per line.

use crate::model::Warnings;
use std::fmt::Display;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// Warnings printed per scan at most; the rest are counted.
const MAX_WARNINGS: usize = 50;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `coral-nfd: LEVEL: message`, after a timestamp in daemon mode.
    #[default]
    Text,
    /// `{"time":..., "level":..., "msg":...}` per line, for log pipelines.
    Json,
}

const PLAIN: u8 = 0;
const STAMPED: u8 = 1;
const JSON: u8 = 2;

static STYLE: AtomicU8 = AtomicU8::new(PLAIN);

/// Sets how lines look from now on: `daemon` adds timestamps to text.
pub fn configure(format: LogFormat, daemon: bool) {
    let style = match (format, daemon) {
        (LogFormat::Json, _) => JSON,
        (LogFormat::Text, true) => STAMPED,
        (LogFormat::Text, false) => PLAIN,
    };
    STYLE.store(style, Ordering::Relaxed);
}

fn emit(level: &str, msg: &dyn Display) {
    let now = || humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    // Lines are written whole (stderr is unbuffered, one write per line), so lines from
    // the hotplug thread never interleave with the loop's.
    let line = match STYLE.load(Ordering::Relaxed) {
        JSON => serde_json::json!({
            "time": now(),
            "level": level,
            "msg": msg.to_string(),
        })
        .to_string(),
        STAMPED if level == "info" => format!("{} coral-nfd: {msg}", now()),
        STAMPED => format!("{} coral-nfd: {level}: {msg}", now()),
        _ if level == "info" => format!("coral-nfd: {msg}"),
        _ => format!("coral-nfd: {level}: {msg}"),
    };
    eprintln!("{line}");
}

pub fn warning(msg: impl Display) {
    emit("warning", &msg);
}

pub fn error(msg: impl Display) {
    emit("error", &msg);
}

/// What the program did (the daemon's start and writes, `snapshot`'s summary).
pub fn info(msg: impl Display) {
    emit("info", &msg);
}

/// A scan's warnings, at most [`MAX_WARNINGS`] of them.
pub fn warnings(w: &Warnings) {
    for msg in w.iter().take(MAX_WARNINGS) {
        warning(msg);
    }
    if w.len() > MAX_WARNINGS {
        warning(format_args!("... and {} more", w.len() - MAX_WARNINGS));
    }
}

/// An error that ends the command: its message (printed once, by [`crate::cli::run`])
/// and the exit code it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub message: String,
    pub code: u8,
}

/// Exit code when the output cannot be written (or another run-time failure).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error, which includes roots that are not what they must be.
pub const EXIT_USAGE: u8 = 2;

impl Fatal {
    /// A run-time failure: exit 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// A usage error found after parsing (a root that is not there): exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }
}

impl Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A root that is missing or not a sysfs tree is a usage error (exit 2); one that is
/// there but may not be read is an incomplete scan (exit 1).
impl From<crate::scan::RootsError> for Fatal {
    fn from(e: crate::scan::RootsError) -> Self {
        if e.unreadable {
            Fatal::failure(e.message)
        } else {
            Fatal::usage(e.message)
        }
    }
}

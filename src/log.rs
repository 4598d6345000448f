//! Everything coral-nfd says on stderr, in one place: warnings about what a scan could
//! not read, errors, and the exit path's message. One prefix, one format.

use crate::model::Warnings;
use std::fmt::Display;

/// Warnings printed per scan at most; the rest are counted.
const MAX_WARNINGS: usize = 50;

pub fn warning(msg: impl Display) {
    eprintln!("coral-nfd: warning: {msg}");
}

pub fn error(msg: impl Display) {
    eprintln!("coral-nfd: error: {msg}");
}

/// A line that is neither: what a command did (`snapshot`'s summary).
pub fn info(msg: impl Display) {
    eprintln!("coral-nfd: {msg}");
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

impl Fatal {
    /// A run-time failure: exit 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }
}

impl Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

//! Where the daemon's versions of the feature file go ([`Sink`]): the atomic file, or
//! stdout, which a watcher reads; and stdout itself, written so that a closed or
//! broken one is an error, not a silent success.

use super::{AtomicFile, PrepareError};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether file descriptor 1 was closed when the program started (`coral-nfd >&-`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Notes whether stdout was closed when the program started (`coral-nfd >&-`). Rust's
/// runtime puts `/dev/null` on a closed standard descriptor before `main` (opened
/// read-write, `sanitize_standard_fds` in std), so writes would silently succeed:
/// "nothing written" would look like success. A shell's `>/dev/null` opens it
/// write-only, so a read-write `/dev/null` on fd 1 is taken for a closed stdout (the
/// one shell form that gives the same, `1<>/dev/null`, is taken so too).
pub fn check_stdout() {
    use rustix::fs::{FileType, OFlags};
    let fd = io::stdout();
    let closed = match rustix::fs::fstat(&fd) {
        Err(_) => true,
        Ok(st) => {
            let null = FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                && (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)) == (1, 3);
            let read_write =
                rustix::fs::fcntl_getfl(&fd).is_ok_and(|f| f & OFlags::RWMODE == OFlags::RDWR);
            null && read_write
        }
    };
    STDOUT_CLOSED.store(closed, Ordering::Relaxed);
}

/// Writes text to stdout in one piece; an error when stdout was closed at start.
pub fn to_stdout(content: &str) -> io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(io::Error::from_raw_os_error(
            rustix::io::Errno::BADF.raw_os_error(),
        ));
    }
    let mut out = io::stdout().lock();
    out.write_all(content.as_bytes())?;
    out.flush()
}

/// Whether a write error on stdout means it will never take output again: the
/// reader went away (a closed pipe does not come back) or there is no stdout at all.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
        || e.raw_os_error() == Some(rustix::io::Errno::BADF.raw_os_error())
}

/// Why a [`Sink`] could not do what was asked, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub message: String,
    /// Retrying cannot help (the reader of stdout is gone, another coral-nfd took the
    /// file): the daemon stops with exit 1.
    pub fatal: bool,
}

impl SinkError {
    pub fn retry(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            fatal: false,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            fatal: true,
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where the daemon's versions of the file go: a file, or stdout (`--output-file -`).
pub trait Sink {
    /// For messages: the path, or `stdout`.
    fn name(&self) -> String;
    /// Gets ready to write (for a file: its staging directory and lock), so that
    /// [`Sink::due_in`] accounts for whatever that did; retried until it succeeds.
    fn prepare(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Checks that this writer still holds what keeps others off the output (for a
    /// file: the lock on the staging directory at its path), taking it again if it
    /// went away with a deleted directory (`Ok(true)`: it was taken again).
    fn check_lock(&mut self) -> Result<bool, SinkError> {
        Ok(false)
    }
    /// How long to wait before the next write may be made.
    fn due_in(&self) -> Duration;
    /// Whether what was last written is still there unchanged.
    fn holds(&self, content: &str) -> bool;
    fn write(&mut self, content: &str) -> Result<(), SinkError>;
    /// `--remove-on-exit`.
    fn remove(&mut self) -> Result<(), String>;
}

/// Each version of the file printed whole to stdout: for watching, not for NFD.
pub struct Stdout;

impl Sink for Stdout {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn due_in(&self) -> Duration {
        Duration::ZERO
    }

    fn holds(&self, _: &str) -> bool {
        true
    }

    fn write(&mut self, content: &str) -> Result<(), SinkError> {
        to_stdout(content).map_err(|e| {
            let message = format!("cannot write to stdout: {e}");
            if is_gone(&e) {
                SinkError::fatal(message)
            } else {
                SinkError::retry(message)
            }
        })
    }

    fn remove(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Sink for AtomicFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn prepare(&mut self) -> Result<(), SinkError> {
        if self.lock.is_none() {
            AtomicFile::prepare(self).map_err(PrepareError::into_sink)?;
        }
        Ok(())
    }

    fn check_lock(&mut self) -> Result<bool, SinkError> {
        AtomicFile::check_lock(self)
    }

    fn due_in(&self) -> Duration {
        AtomicFile::due_in(self)
    }

    fn holds(&self, content: &str) -> bool {
        AtomicFile::holds(self, content)
    }

    fn write(&mut self, content: &str) -> Result<(), SinkError> {
        AtomicFile::write(self, content).map_err(SinkError::retry)
    }

    fn remove(&mut self) -> Result<(), String> {
        AtomicFile::remove(self)
    }
}

//! Where the daemon's versions of the feature file go ([`Sink`]): the atomic file, or
//! stdout, which a watcher reads; and stdout itself, written so that a closed or
//! broken one is an error, not a silent success.

use super::{AtomicFile, PrepareError};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether file descriptor 1 was closed when the program started (`coral-nfd >&-`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Notes whether stdout is closed (`coral-nfd >&-`), as it is when the program starts.
/// Must run before Rust's runtime starts `main`: the runtime puts `/dev/null` on a
/// closed standard descriptor first (`sanitize_standard_fds` in std), after which a
/// closed stdout cannot be told from `>/dev/null`, and "nothing written" would pass for
/// success. The binary calls it from `.init_array` (see `main.rs`); it only asks the
/// kernel for fd 1's descriptor flags and stores the answer.
pub extern "C" fn note_stdout_at_start() {
    // Not rustix's `stdout()`: a `BorrowedFd` promises an open descriptor, which is
    // exactly what is in question here. `fcntl` takes a plain number instead.
    // SAFETY: F_GETFD reads the descriptor flags of fd 1 and nothing else; for a number
    // that is no open descriptor it fails with EBADF. No memory is passed or touched.
    let flags = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFD) };
    let closed = flags == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
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
    /// Checks, between writes, that the output is still this writer's to write: for a
    /// file, that the lock on the staging directory at its path is still held (taken
    /// again if it went away with a deleted directory: `Ok(true)`); for stdout, that its
    /// reader is still there.
    fn check(&mut self) -> Result<bool, SinkError> {
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

    /// A pipe whose reader went away shows an error on this end (POLLERR), and a
    /// terminal that hung up POLLHUP: seen at the next wake-up (an interval at most),
    /// not only at the next write, which may be far off when nothing changes.
    fn check(&mut self) -> Result<bool, SinkError> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let out = rustix::stdio::stdout();
        let mut fds = [PollFd::new(&out, PollFlags::empty())];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&now)) {
            Ok(_) if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) => Err(
                SinkError::fatal(if fds[0].revents().contains(PollFlags::ERR) {
                    "cannot write to stdout: its reader went away (Broken pipe)"
                } else {
                    "cannot write to stdout: it hung up"
                }),
            ),
            _ => Ok(false),
        }
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

    fn check(&mut self) -> Result<bool, SinkError> {
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

//! Output: stdout, or a file in NFD's `features.d/` that readers only ever see whole,
//! written so that NFD's watcher never misses the last version.
//!
//! What NFD v0.19 does with the directory (`source/local/local.go`, `runNotifier`):
//! its fsnotify watch on `features.d` (not recursive) reacts to Create, Write, Remove,
//! Rename and Chmod of any entry, dot names included. The first event after a tick of
//! a free-running one-second ticker re-reads the whole directory at once; every further
//! event until the next tick is dropped, not delayed. So:
//! - the temporary file lives in a hidden sub-directory (`.<name>.coral-nfd-tmp`), whose
//!   contents the watcher does not see; the final rename is the one event of a write;
//! - renames are paced at least [`NFD_GAP`] apart (the caller waits for
//!   [`AtomicFile::due_in`]), and a run that creates the staging directory (itself an
//!   event) waits as long before its first rename;
//! - the staging directory is kept between writes (creating it again would be another
//!   event) and holds the lock that keeps a second coral-nfd off the same file.

mod sink;

pub use sink::{Sink, SinkError, Stdout, is_gone, note_stdout_at_start, to_stdout};

use rustix::fs::{FlockOperation, flock};
use std::fs::{self, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Least time between two events coral-nfd causes in `features.d`: one NFD tick (1 s)
/// and a margin for the tick's phase and scheduling.
pub const NFD_GAP: Duration = Duration::from_millis(1100);

/// Mode of the published file: nfd-worker must be able to read it whatever its uid.
const FILE_MODE: u32 = 0o644;

/// Longest file name Linux filesystems take.
const NAME_MAX: usize = 255;

/// Why [`AtomicFile::prepare`] failed, and so whether retrying can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// The target is not a regular file: never ours to replace.
    Refused(String),
    /// Another coral-nfd holds the lock.
    Taken(String),
    /// The filesystem said no (read-only, full, permissions): may pass.
    Failed(String),
}

impl PrepareError {
    /// Retrying cannot help: the daemon refuses to start on it.
    pub fn is_final(&self) -> bool {
        !matches!(self, PrepareError::Failed(_))
    }

    /// For the daemon: another writer holding the lock ends it; the rest is retried.
    pub(crate) fn into_sink(self) -> SinkError {
        match self {
            PrepareError::Taken(m) => SinkError::fatal(m),
            PrepareError::Refused(m) | PrepareError::Failed(m) => SinkError::retry(m),
        }
    }
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Refused(m) | PrepareError::Taken(m) | PrepareError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A file replaced atomically, paced for NFD, locked against a second writer.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    staging: PathBuf,
    gap: Duration,
    /// The staging directory, open and locked, once [`AtomicFile::prepare`] succeeded.
    lock: Option<File>,
    /// The lock was held once: without it now, this writer must take it again before
    /// anything else (a removed staging directory took it away).
    held: bool,
    /// This run created the staging directory (so removes it if it never wrote).
    created_staging: bool,
    wrote: bool,
    /// When this run last caused an event in the directory (monotonic).
    last_event: Option<Instant>,
}

/// Where [`AtomicFile`] stages writes to `path`: `.<name>.coral-nfd-tmp` beside it, or,
/// when that would be longer than a file name may be, the name cut short with a hash
/// of the whole name in its place.
pub fn staging_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    const SUFFIX: &str = ".coral-nfd-tmp";
    let mut staged = Vec::with_capacity(NAME_MAX);
    staged.push(b'.');
    if 1 + name.len() + SUFFIX.len() <= NAME_MAX {
        staged.extend_from_slice(name);
    } else {
        let hash = format!("~{:016x}", fnv1a(name));
        let keep = NAME_MAX - 1 - hash.len() - SUFFIX.len();
        staged.extend_from_slice(&name[..keep]);
        staged.extend_from_slice(hash.as_bytes());
    }
    staged.extend_from_slice(SUFFIX.as_bytes());
    parent(path).join(std::ffi::OsStr::from_bytes(&staged))
}

/// FNV-1a, 64 bits: a stable hash (unlike std's, which may change between releases), so
/// every coral-nfd version finds the same staging directory and lock.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn kind_of(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn ctime(m: &fs::Metadata) -> SystemTime {
    let secs = u64::try_from(m.ctime()).unwrap_or(0);
    let nanos = u32::try_from(m.ctime_nsec()).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
}

impl AtomicFile {
    /// A file at `path`, to be written with renames at least `gap` apart. Fails when
    /// `path` cannot name a file (`/`, `dir/..`).
    pub fn new(path: impl Into<PathBuf>, gap: Duration) -> Result<Self, String> {
        let path = path.into();
        match path.file_name() {
            Some(_) if !path.ends_with("..") => {}
            _ => {
                return Err(format!(
                    "{}: names a directory, not a file to write",
                    path.display()
                ));
            }
        }
        let staging = staging_path(&path);
        Ok(AtomicFile {
            path,
            staging,
            gap,
            lock: None,
            held: false,
            created_staging: false,
            wrote: false,
            last_event: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hidden directory the temporary files are made in.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The target must be a regular file or absent: anything else (a device, a FIFO, a
    /// directory, a symlink that could lead anywhere) is not ours to replace.
    pub fn check_target(&self) -> Result<(), String> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_file() => Ok(()),
            Ok(m) => Err(format!(
                "{} is {}; coral-nfd only replaces a regular file (or creates one), \
                 so it leaves it alone",
                self.path.display(),
                kind_of(m.file_type())
            )),
            // Absent, or its parent is not a directory (which creating it will say).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("cannot examine", &self.path, e)),
        }
    }

    /// The nearest existing ancestor of `dir` (itself included) must be a directory:
    /// `--output-file notes.txt/x` cannot be created, and saying so beats "File exists".
    fn check_ancestors(&self, dir: &Path) -> Result<(), String> {
        for a in dir.ancestors() {
            let a = if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            };
            match fs::metadata(a) {
                Ok(m) if m.is_dir() => return Ok(()),
                Ok(m) => {
                    return Err(format!(
                        "{}: cannot create it: {} is {}, not a directory",
                        self.path.display(),
                        a.display(),
                        kind_of(m.file_type())
                    ));
                }
                Err(_) => continue,
            }
        }
        Ok(())
    }

    /// Checks the target, creates the parent and the staging directory if missing, takes
    /// the lock and removes temporary files a killed earlier run left behind. Nothing is
    /// created when the target is refused or the lock is taken.
    pub fn prepare(&mut self) -> Result<(), PrepareError> {
        use PrepareError::{Failed, Refused, Taken};
        self.check_target().map_err(Refused)?;
        let dir = parent(&self.path);
        self.check_ancestors(&dir).map_err(Refused)?;
        fs::create_dir_all(&dir)
            .map_err(|e| Failed(self.err("cannot create directory", &dir, e)))?;
        // 0755 whatever the umask allows more: a world-writable staging directory would
        // let another user swap the temporary file before the rename.
        match fs::DirBuilder::new().mode(0o755).create(&self.staging) {
            Ok(()) => {
                self.created_staging = true;
                self.last_event = Some(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Failed(self.err(
                    "cannot create staging directory",
                    &self.staging,
                    e,
                )));
            }
        }
        let lock = match fs::symlink_metadata(&self.staging) {
            Ok(m) if m.file_type().is_dir() => File::open(&self.staging)
                .map_err(|e| Failed(self.err("cannot open staging directory", &self.staging, e)))?,
            Ok(m) => {
                return Err(Failed(format!(
                    "{}: cannot use staging directory {}: it is {}",
                    self.path.display(),
                    self.staging.display(),
                    kind_of(m.file_type())
                )));
            }
            Err(e) => {
                return Err(Failed(self.err(
                    "cannot use staging directory",
                    &self.staging,
                    e,
                )));
            }
        };
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                // Not ours: leave the directory to the run that holds it.
                self.created_staging = false;
                return Err(Taken(format!(
                    "{} is taken: another coral-nfd holds the lock on {} (is coral-nfd \
                     deployed twice, e.g. as a DaemonSet and as the nfd-worker sidecar?)",
                    self.path.display(),
                    self.staging.display()
                )));
            }
            Err(e) => {
                return Err(Failed(self.err(
                    "cannot lock",
                    &self.staging,
                    io::Error::from(e),
                )));
            }
        }
        // The directory locked must still be the one at the path (another run may have
        // removed it between our open and our lock).
        if !self.is_at_staging(&lock) {
            return Err(Failed(format!(
                "{}: staging directory {} changed while it was being locked; retrying",
                self.path.display(),
                self.staging.display()
            )));
        }
        self.lock = Some(lock);
        self.held = true;
        self.clean_stale();
        Ok(())
    }

    /// Whether the lock this writer holds is on the staging directory at the path (not
    /// on one that was removed or replaced since).
    fn lock_is_on_path(&self) -> bool {
        self.lock.as_ref().is_some_and(|l| self.is_at_staging(l))
    }

    /// Whether `dir` (an open directory) is the one at the staging path now.
    fn is_at_staging(&self, dir: &File) -> bool {
        match (dir.metadata(), fs::symlink_metadata(&self.staging)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Whether the staging directory at the path is still the one this writer holds
    /// locked; if it is not (removed, or replaced), or the lock was let go earlier (a
    /// write whose staging directory had gone), takes the lock again on what is there
    /// now, at every call until that succeeds. Another coral-nfd holding it is fatal:
    /// two writers must never take turns on one file. `Ok(true)`: the lock was taken
    /// again.
    pub fn check_lock(&mut self) -> Result<bool, SinkError> {
        if !self.held || self.lock_is_on_path() {
            return Ok(false);
        }
        // The old lock guards nothing now: let it go and lock what is at the path.
        self.lock = None;
        match self.prepare() {
            Ok(()) => Ok(true),
            Err(PrepareError::Taken(m)) => Err(SinkError::fatal(format!(
                "lost the lock on {} (the directory was removed or replaced) and another \
                 coral-nfd took it: {m}",
                self.staging.display()
            ))),
            Err(e) => Err(SinkError::retry(format!(
                "{}: the staging directory {} was removed or replaced, and cannot be made \
                 and locked again yet: {e}",
                self.path.display(),
                self.staging.display()
            ))),
        }
    }

    /// How long to wait before the next rename: until [`NFD_GAP`] (or the configured
    /// gap) has passed since the last event in the directory that coral-nfd caused: the
    /// target's last replacement or the staging directory's last change (its creation,
    /// or the last temporary file renamed out of it), by whichever run. Their change
    /// times are the record, so pacing holds across runs.
    pub fn due_in(&self) -> Duration {
        let now = SystemTime::now();
        // A change time in the future (the wall clock went back) says nothing of how long
        // ago it was: it is ignored, and this run's own monotonic record stands in.
        let by_ctime = [&self.path, &self.staging]
            .iter()
            .filter_map(|p| fs::symlink_metadata(p).ok())
            .filter_map(|m| now.duration_since(ctime(&m)).ok())
            .min()
            .map_or(Duration::ZERO, |since| self.gap.saturating_sub(since));
        let by_clock = self
            .last_event
            .map_or(Duration::ZERO, |t| self.gap.saturating_sub(t.elapsed()));
        by_ctime.max(by_clock)
    }

    /// Whether the file on disk holds exactly `content`.
    pub fn holds(&self, content: &str) -> bool {
        let Ok(f) = File::open(&self.path) else {
            return false;
        };
        let mut buf = Vec::with_capacity(content.len() + 1);
        // One byte more than expected tells a longer file from ours.
        f.take(content.len() as u64 + 1)
            .read_to_end(&mut buf)
            .is_ok_and(|_| buf == content.as_bytes())
    }

    /// Replaces the file with `content` now (pacing is the caller's: see
    /// [`AtomicFile::due_in`]). On error the previous file is untouched and the
    /// temporary file is gone.
    pub fn write(&mut self, content: &str) -> Result<(), String> {
        if self.lock.is_none() {
            self.prepare().map_err(|e| e.to_string())?;
        }
        self.check_target()?;
        let mut tmp = tempfile::Builder::new()
            .prefix("write-")
            .tempfile_in(&self.staging)
            .map_err(|e| {
                // The staging directory may be gone: then prepare it again next time.
                // Not on a full or read-only disk: the lock is still on the directory
                // at the path, and letting it go would let a second writer in.
                if !self.lock_is_on_path() {
                    self.lock = None;
                }
                self.err("cannot create a temporary file in", &self.staging, e)
            })?;
        let tmp_path = tmp.path().to_path_buf();
        let io = |e| self.err("cannot write", &tmp_path, e);
        // Through the file itself: NamedTempFile's own Write adds the path to the error,
        // which the message already names.
        tmp.as_file_mut()
            .write_all(content.as_bytes())
            .map_err(io)?;
        // Mode before rename: a chmod after it would be a second event for NFD, and a
        // reader in between would meet a 0600 file it may not read.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path)
            .map_err(|e| self.err("cannot rename the new file onto", &self.path, e.error))?;
        self.wrote = true;
        self.last_event = Some(Instant::now());
        // The rename is durable once the directory is synced; a failure here does not
        // undo what readers already see, so it is not worth an error.
        if let Ok(d) = File::open(parent(&self.path)) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes temporary files a killed earlier run left behind.
    fn clean_stale(&self) {
        if let Ok(entries) = fs::read_dir(&self.staging) {
            for e in entries.flatten() {
                if e.file_name().as_bytes().starts_with(b"write-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Deletes the published file and the staging directory (`--remove-on-exit`).
    /// Does nothing unless this writer's lock is on the staging directory at the path:
    /// the file and directory may be another run's.
    /// The file goes first: its removal is the event NFD must see; the directory's
    /// removal right after it is dropped by NFD's rate limit, harmlessly.
    pub fn remove(&mut self) -> Result<(), String> {
        if !self.lock_is_on_path() {
            return Ok(());
        }
        let removed = match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("cannot remove", &self.path, e)),
        };
        self.clean_stale();
        let _ = fs::remove_dir(&self.staging);
        self.lock = None;
        self.created_staging = false;
        removed
    }

    fn err(&self, what: &str, path: &Path, e: io::Error) -> String {
        format!("{}: {what} {}: {e}", self.path.display(), path.display())
    }
}

impl Drop for AtomicFile {
    /// A run that created the staging directory and never published anything leaves
    /// nothing behind.
    fn drop(&mut self) {
        if self.created_staging && !self.wrote && self.lock_is_on_path() {
            self.clean_stale();
            let _ = fs::remove_dir(&self.staging);
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;

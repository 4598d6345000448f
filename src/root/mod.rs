//! The one way coral-nfd touches the filesystem it inspects: paths relative to a root
//! directory (`--sysfs-root`, `--dev-root`), resolved so that no symlink can lead out
//! of the root, with attribute reads that are bounded and never read a non-regular file.
//!
//! Resolution uses `openat2(RESOLVE_BENEATH)` where the kernel has it (Linux >= 5.6):
//! one syscall per open, the kernel does the containment. Older kernels, and container
//! runtimes whose seccomp profile refuses `openat2`, get a component-by-component walk
//! with the same semantics (`Resolver::Walk`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// sysfs attributes are at most one page; anything larger is not an attribute.
pub const MAX_ATTR_BYTES: usize = 4096;

/// `openat2` attempts before a racing path is resolved by the walk instead.
const MAX_EAGAIN_RETRIES: u32 = 8;

/// Symlinks followed while resolving one path before it counts as a loop (Linux: 40).
const MAX_LINK_HOPS: u32 = 40;

/// Why a root-relative path could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    /// Nothing there (also: a symlink whose target does not exist).
    Missing,
    /// A symlink that leads outside the root; treated like a missing entry.
    Escapes,
    /// Too many symlinks: a loop.
    Loop,
    /// A directory was expected and something else is there, or the other way round.
    WrongType(&'static str),
    /// The attribute is larger than an attribute can be.
    TooLarge(u64),
    /// Any other I/O error (permission denied, I/O error from a dying device...).
    Io(Errno),
}

impl FsError {
    fn from_errno(e: Errno) -> Self {
        match e {
            Errno::NOENT => FsError::Missing,
            Errno::XDEV => FsError::Escapes,
            Errno::LOOP => FsError::Loop,
            Errno::NOTDIR => FsError::WrongType("a path component is not a directory"),
            _ => FsError::Io(e),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Missing => write!(f, "does not exist"),
            FsError::Escapes => write!(f, "is a symlink leading outside the root"),
            FsError::Loop => write!(f, "is a symlink loop"),
            FsError::WrongType(what) => write!(f, "{what}"),
            FsError::TooLarge(n) => {
                write!(f, "is {n} bytes or more, larger than any sysfs attribute")
            }
            FsError::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// How paths are resolved under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`.
    Openat2,
    /// Userspace walk: `lstat`/`readlink` per component, then `openat(O_NOFOLLOW)`.
    Walk,
}

/// Type and identity of an entry, from one `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    pub file_type: FileType,
    /// (st_dev, st_ino): two paths name the same entry when these are equal.
    pub identity: (u64, u64),
    /// Device number of a character or block device (major, minor).
    pub rdev: (u32, u32),
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A directory treated as `/` for every read coral-nfd makes.
pub struct Root {
    path: PathBuf,
    fd: Option<OwnedFd>,
    resolver: Resolver,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({})", self.path.display())
    }
}

impl Root {
    /// Opens `path` as a root. A root that does not exist is not an error: every lookup
    /// under it is then `Missing` (a node without `/sys/bus/usb` is normal; so is a
    /// container without `/dev` mounted).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        let resolver = match &fd {
            Some(fd) => probe_openat2(fd),
            None => Resolver::Walk,
        };
        Root { path, fd, resolver }
    }

    /// Forces a resolver; tests run every fixture through both.
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// Whether the root could be opened as a directory.
    pub fn is_open(&self) -> bool {
        self.fd.is_some()
    }

    /// The root as given on the command line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` under the root, for messages only (never opened through this).
    pub fn display(&self, rel: impl AsRef<Path>) -> String {
        self.path.join(rel).display().to_string()
    }

    fn root_fd(&self) -> FsResult<&OwnedFd> {
        self.fd.as_ref().ok_or(FsError::Missing)
    }

    /// Opens `rel`, following symlinks only while they stay under the root.
    fn open_rel(&self, rel: &Path, flags: OFlags) -> FsResult<OwnedFd> {
        let root = self.root_fd()?;
        // openat2 refuses flags O_PATH cannot take (EINVAL), where open(2) ignores them.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        if self.resolver == Resolver::Openat2 {
            // With RESOLVE_BENEATH the kernel answers EAGAIN when a rename anywhere on
            // the system races a `..` in the path (sysfs links are full of them), so
            // that it cannot vouch for containment. Retry; if it keeps racing, walk.
            for _ in 0..MAX_EAGAIN_RETRIES {
                match rustix::fs::openat2(
                    root,
                    relative(rel),
                    flags,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Err(Errno::AGAIN) => continue,
                    r => return r.map_err(FsError::from_errno),
                }
            }
        }
        let resolved = self.walk(rel, true)?;
        rustix::fs::openat(
            root,
            relative(&resolved),
            flags | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(FsError::from_errno)
    }

    /// Type, identity and ownership of the entry `rel` resolves to, without opening it
    /// for reading (an `O_PATH` descriptor: opening a device node this way has no effect
    /// on the device).
    pub fn stat(&self, rel: impl AsRef<Path>) -> FsResult<EntryStat> {
        let fd = self.open_rel(rel.as_ref(), OFlags::PATH)?;
        fstat(&fd)
    }

    /// Reads a sysfs attribute: a regular file of at most [`MAX_ATTR_BYTES`].
    pub fn read_attr(&self, rel: impl AsRef<Path>) -> FsResult<Vec<u8>> {
        // O_NONBLOCK: if a FIFO was swapped in since any check, open must not wait for a
        // writer. The fstat below then refuses it before a single byte is read.
        let fd = self.open_rel(rel.as_ref(), OFlags::RDONLY | OFlags::NONBLOCK)?;
        let st = rustix::fs::fstat(&fd).map_err(FsError::Io)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::WrongType("is not a regular file"));
        }
        if st.st_size as u64 > MAX_ATTR_BYTES as u64 && !is_sysfs_size(st.st_size as u64) {
            return Err(FsError::TooLarge(st.st_size as u64));
        }
        let mut buf = [0u8; MAX_ATTR_BYTES + 1];
        let mut len = 0;
        loop {
            match rustix::io::read(&fd, &mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len > MAX_ATTR_BYTES {
                        return Err(FsError::TooLarge(len as u64));
                    }
                    // A short read of a regular file on Linux means end of file (sysfs
                    // hands out the whole attribute in one read), so the usual extra
                    // read that returns 0 is a syscall we can skip.
                    if len < buf.len() {
                        break;
                    }
                }
                Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
                Err(e) => return Err(FsError::Io(e)),
            }
        }
        Ok(buf[..len].to_vec())
    }

    /// Names in a directory, without `.` and `..`, sorted bytewise so a scan's order
    /// never depends on the filesystem's.
    pub fn read_dir(&self, rel: impl AsRef<Path>) -> FsResult<Vec<OsString>> {
        let mut names = self.read_dir_unsorted(rel)?;
        names.sort();
        Ok(names)
    }

    /// Names in a directory in the order the filesystem returns them (for sysfs: the
    /// kernel's own order, which is what other readers such as libedgetpu see).
    pub fn read_dir_unsorted(&self, rel: impl AsRef<Path>) -> FsResult<Vec<OsString>> {
        let fd = self.open_rel(rel.as_ref(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = rustix::fs::Dir::new(fd).map_err(FsError::Io)?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(FsError::Io)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// The last path component of where the symlink `rel` leads, provided that the
    /// target exists under the root and is a directory (`driver` -> `.../drivers/apex`).
    pub fn link_dir_name(&self, rel: impl AsRef<Path>) -> FsResult<OsString> {
        let rel = rel.as_ref();
        let st = self.stat(rel)?;
        if st.file_type != FileType::Directory {
            return Err(FsError::WrongType("does not lead to a directory"));
        }
        let resolved = self.walk(rel, true)?;
        resolved
            .file_name()
            .map(OsStr::to_os_string)
            .ok_or(FsError::WrongType("leads to the root itself"))
    }

    /// The type of the entry `rel` names, without following it if it is a symlink.
    pub fn entry_type(&self, rel: impl AsRef<Path>) -> FsResult<FileType> {
        let resolved = self.walk(rel.as_ref(), false)?;
        let st = rustix::fs::statat(
            self.root_fd()?,
            relative(&resolved),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(FsError::from_errno)?;
        Ok(FileType::from_raw_mode(st.st_mode))
    }

    /// Resolves `rel` to a path under the root with no symlinks and no `.`/`..` left.
    /// With `follow_last == false` a final symlink is returned as it is.
    pub fn walk(&self, rel: &Path, follow_last: bool) -> FsResult<PathBuf> {
        let root = self.root_fd()?;
        let mut done: Vec<OsString> = Vec::new();
        let mut todo: Vec<OsString> = Vec::new(); // reversed: last element is next
        push_components(&mut todo, rel)?;
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                if done.pop().is_none() {
                    return Err(FsError::Escapes);
                }
                continue;
            }
            let mut candidate: PathBuf = done.iter().collect();
            candidate.push(&part);
            let st = rustix::fs::statat(root, &candidate, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(FsError::from_errno)?;
            let is_last = todo.is_empty();
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink && (follow_last || !is_last)
            {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(FsError::Loop);
                }
                let target = rustix::fs::readlinkat(root, &candidate, Vec::new())
                    .map_err(FsError::from_errno)?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    return Err(FsError::Escapes);
                }
                push_components(&mut todo, target)?;
            } else {
                if !is_last && FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(FsError::WrongType("a path component is not a directory"));
                }
                done.push(part);
            }
        }
        Ok(done.iter().collect())
    }
}

/// sysfs reports every attribute as 4096 bytes long whatever it holds; the read itself
/// is bounded anyway, so such a size is no reason to refuse.
fn is_sysfs_size(size: u64) -> bool {
    size == 4096
}

fn fstat(fd: &OwnedFd) -> FsResult<EntryStat> {
    let st = rustix::fs::fstat(fd.as_fd()).map_err(FsError::Io)?;
    let rdev = st.st_rdev;
    Ok(EntryStat {
        file_type: FileType::from_raw_mode(st.st_mode),
        identity: (st.st_dev, st.st_ino),
        rdev: (rustix::fs::major(rdev), rustix::fs::minor(rdev)),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

/// `openat2` refuses an absolute path under `RESOLVE_BENEATH`; make it relative.
fn relative(rel: &Path) -> &Path {
    let stripped = rel.strip_prefix("/").unwrap_or(rel);
    if stripped.as_os_str().is_empty() {
        Path::new(".")
    } else {
        stripped
    }
}

/// Pushes the components of `path` onto a reversed work stack.
fn push_components(todo: &mut Vec<OsString>, path: &Path) -> FsResult<()> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Prefix(_) => return Err(FsError::Escapes),
            Component::CurDir => {}
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::Normal(n) => parts.push(n.to_os_string()),
        }
    }
    todo.extend(parts.into_iter().rev());
    Ok(())
}

/// Uses `openat2` when the kernel and the seccomp profile allow it, else the walk.
fn probe_openat2(root: &OwnedFd) -> Resolver {
    match rustix::fs::openat2(
        root,
        ".",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH,
    ) {
        Ok(_) => Resolver::Openat2,
        Err(_) => Resolver::Walk,
    }
}

#[cfg(test)]
mod tests;

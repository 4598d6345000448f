//! The snapshot directory: how a snapshot is known as ours (its `dev.manifest` header),
//! and how its files and nodes are written, never following a link planted in it.

use crate::root::{FsError, Root};
use rustix::fs::FileType;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

/// The first line of `dev.manifest`: what tells a snapshot `--force` may replace.
pub(super) const MANIFEST_HEADER: &str = "# type major:minor mode uid gid path  (relative to the dev root; the fixture dev.list format)\n";

/// Whether `dir` holds an earlier snapshot: its `dev.manifest` is a regular file that
/// starts with [`MANIFEST_HEADER`] (read without following a link planted there).
pub(super) fn is_snapshot(dir: &Path) -> bool {
    use std::io::Read;
    let p = dir.join("dev.manifest");
    if !fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
        return false;
    }
    let mut head = vec![0u8; MANIFEST_HEADER.len()];
    fs::File::open(&p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == MANIFEST_HEADER.as_bytes())
}

pub(super) fn is_empty_dir(p: &Path) -> io::Result<bool> {
    match fs::read_dir(p) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// A device node as the manifest records it.
pub(super) struct Node {
    file_type: FileType,
    rdev: (u32, u32),
    mode: u32,
    owner: (u32, u32),
}

/// One `dev.manifest` line (the fixture `dev.list` format), or a comment, and the
/// node to make again.
pub(super) fn manifest_line(dev: &Root, rel: &str) -> (String, Option<Node>) {
    match dev.stat(rel) {
        Ok(st) => {
            let kind = match st.file_type {
                FileType::CharacterDevice => 'c',
                FileType::BlockDevice => 'b',
                FileType::Fifo => 'p',
                FileType::Directory => 'd',
                _ => 'f',
            };
            let (maj, min) = if matches!(kind, 'c' | 'b') {
                st.rdev
            } else {
                (0, 0)
            };
            (
                format!(
                    "{kind} {maj}:{min} {:04o} {} {} {rel}\n",
                    st.mode, st.uid, st.gid
                ),
                Some(Node {
                    file_type: st.file_type,
                    rdev: (maj, min),
                    mode: st.mode,
                    owner: (st.uid, st.gid),
                }),
            )
        }
        Err(FsError::Missing) => (format!("# missing: {rel}\n"), None),
        Err(e) => (format!("# unreadable: {rel}: {e}\n"), None),
    }
}

/// Makes the node again at `at`, with its mode, and its owner where that is permitted
/// (not as an ordinary user: the node is still useful for a replay without it).
pub(super) fn recreate(at: &Path, n: &Node) -> io::Result<()> {
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent)?;
    }
    let mode = rustix::fs::Mode::from_raw_mode(n.mode);
    match n.file_type {
        FileType::Directory => fs::create_dir_all(at)?,
        FileType::RegularFile => drop(create_new(at, b"")?),
        ft => {
            let dev = rustix::fs::makedev(n.rdev.0, n.rdev.1);
            rustix::fs::mknodat(rustix::fs::CWD, at, ft, mode, dev)?;
        }
    }
    // mknod applies the umask; the manifest's mode is the one to replay.
    rustix::fs::chmod(at, mode)?;
    let (uid, gid) = n.owner;
    let _ = rustix::fs::chownat(
        rustix::fs::CWD,
        at,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

/// Creates a file that must not exist yet: never follows a link planted at its place.
/// The open file is returned for writing more to it later.
pub(super) fn create_new(at: &Path, content: &[u8]) -> io::Result<fs::File> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(at)?;
    f.write_all(content)?;
    Ok(f)
}

/// Removes what is at `p` without following it: a directory with its contents, or the
/// file or link itself (a link planted in DIR never leads a write outside DIR).
pub(super) fn remove_entry(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn write(dir: &Path, name: &str, content: &str) -> Result<fs::File, String> {
    let p = dir.join(name);
    create_new(&p, content.as_bytes()).map_err(|e| format!("{}: {e}", p.display()))
}

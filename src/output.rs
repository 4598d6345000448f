//! Output: stdout, or an atomically replaced file in NFD's `features.d/`.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes the feature file to stdout in one piece.
pub fn to_stdout(content: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(content.as_bytes())?;
    out.flush()
}

/// A file that readers only ever see whole.
///
/// The temporary file lives in a hidden sub-directory of the target's directory: the
/// same filesystem (so `rename` is atomic), skipped by nfd-worker's reader (it ignores
/// dot names and sub-directories) and outside its non-recursive fsnotify watch (NFD
/// v0.19 `pkg/nfd-worker`), so the final rename is the only event NFD sees. A temporary
/// `.name` beside the target would itself trigger a re-read, and the rename arriving in
/// the same rate-limit tick would be dropped.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    staging: PathBuf,
}

/// Mode of the published file: nfd-worker must be able to read it whatever its uid.
const FILE_MODE: u32 = 0o644;

impl AtomicFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let staging = staging_path(&path);
        AtomicFile { path, staging }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hidden directory the temporary files are made in.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Replaces the file with `content`. On error the previous file is untouched and
    /// the temporary file is gone.
    pub fn write(&self, content: &str) -> Result<(), String> {
        let dir = parent(&self.path);
        fs::create_dir_all(&dir).map_err(|e| self.err("cannot create directory", &dir, e))?;
        match fs::create_dir(&self.staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.staging.is_dir() => {}
            Err(e) => return Err(self.err("cannot create staging directory", &self.staging, e)),
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("write-")
            .tempfile_in(&self.staging)
            .map_err(|e| self.err("cannot create a temporary file in", &self.staging, e))?;
        let tmp_path = tmp.path().to_path_buf();
        let io = |e| self.err("cannot write", &tmp_path, e);
        tmp.write_all(content.as_bytes()).map_err(io)?;
        // Mode before rename: a chmod after it would be a second event for NFD, and a
        // reader in between would meet a 0600 file it may not read.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path)
            .map_err(|e| self.err("cannot rename the new file onto", &self.path, e.error))?;
        // The rename is durable once the directory is synced; a failure here does not
        // undo what readers already see, so it is not worth an error.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes temporary files a killed earlier run left behind.
    pub fn clean_stale(&self) {
        if let Ok(entries) = fs::read_dir(&self.staging) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("write-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Deletes the published file and the staging directory (`--remove-on-exit`).
    pub fn remove(&self) -> Result<(), String> {
        self.clean_stale();
        let _ = fs::remove_dir(&self.staging);
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("cannot remove", &self.path, e)),
        }
    }

    fn err(&self, what: &str, path: &Path, e: io::Error) -> String {
        format!("{}: {what} {}: {e}", self.path.display(), path.display())
    }
}

/// Where [`AtomicFile`] stages writes to `path`: `.<name>.coral-nfd-tmp` beside it.
pub fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.coral-nfd-tmp"))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_with_mode_0644() {
        let d = tempfile::tempdir().unwrap();
        let f = AtomicFile::new(d.path().join("sub/coral-nfd"));
        f.write("one\n").unwrap();
        f.write("two\n").unwrap();
        assert_eq!(fs::read_to_string(f.path()).unwrap(), "two\n");
        let mode = fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // Nothing but the file and the hidden staging directory, which is empty.
        let names: Vec<_> = fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(fs::read_dir(&f.staging).unwrap().count(), 0);
    }

    #[test]
    fn failure_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let f = AtomicFile::new(d.path().join("coral-nfd"));
        f.write("old\n").unwrap();
        fs::remove_dir(&f.staging).unwrap();
        fs::write(&f.staging, "in the way").unwrap();
        let err = f.write("new\n").unwrap_err();
        assert!(err.contains("staging"), "{err}");
        assert_eq!(fs::read_to_string(f.path()).unwrap(), "old\n");
    }

    #[test]
    fn remove_and_clean() {
        let d = tempfile::tempdir().unwrap();
        let f = AtomicFile::new(d.path().join("coral-nfd"));
        f.write("x\n").unwrap();
        fs::write(f.staging.join("write-stale"), "partial").unwrap();
        f.clean_stale();
        assert_eq!(fs::read_dir(&f.staging).unwrap().count(), 0);
        f.remove().unwrap();
        assert!(!f.path().exists());
        assert!(!f.staging.exists());
        f.remove().unwrap();
    }
}

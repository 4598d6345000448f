//! The kubelet's device-plugin directory as this plugin uses it: what `--kubelet-dir`
//! and `--resource` must be before anything starts (usage errors, exit 2), and the lock
//! that keeps a second plugin off the directory.

use super::{LOCK_NAME, SOCKET_NAME};
use crate::log::Fatal;
use rustix::fs::{FlockOperation, flock};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// A unix socket path holds at most this many bytes (`sun_path` is 108, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Whether `name` is an extended resource name the kubelet accepts, as
/// `v1helper.IsExtendedResourceName` (`pkg/apis/core/v1/helper/helpers.go`) decides:
/// not native (it has a `/` and no `kubernetes.io/`), not starting with `requests.`,
/// and `requests.` + name a qualified name (what a quota would call it).
pub fn check_resource_name(name: &str) -> Result<(), String> {
    if !name.contains('/') || name.contains("kubernetes.io/") {
        return Err(format!(
            "{name:?} is not an extended resource name: expected domain/name, outside \
             kubernetes.io (e.g. coral.ai/tpu)"
        ));
    }
    if name.starts_with("requests.") {
        return Err(format!(
            "{name:?} starts with \"requests.\", which the kubelet refuses for a device \
             plugin's resource (quotas use that prefix)"
        ));
    }
    let (domain, _) = name.split_once('/').unwrap_or_default();
    if !crate::label::is_qualified_name(name)
        || !crate::label::is_qualified_name(&format!("requests.{name}"))
        || domain.is_empty()
    {
        return Err(format!(
            "{name:?} is not a valid resource name: a lowercase DNS domain, '/', and a \
             name of at most 63 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Everything about `--kubelet-dir` that would only fail later, checked before the
/// plugin starts (usage errors, exit 2).
pub(super) fn check_kubelet_dir(dir: &Path) -> Result<(), Fatal> {
    let hint = "(check --kubelet-dir and the volume behind it)";
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Fatal::usage(format!(
                "kubelet directory {} is not a directory {hint}",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Fatal::usage(format!(
                "kubelet directory {} does not exist {hint}",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(Fatal::usage(format!(
                "kubelet directory {} cannot be used: {e} {hint}",
                dir.display()
            )));
        }
    }
    for name in [SOCKET_NAME, "kubelet.sock"] {
        let p = dir.join(name);
        let len = p.as_os_str().as_bytes().len();
        if len > SUN_PATH_MAX {
            return Err(Fatal::usage(format!(
                "socket path {} is {len} bytes; a unix socket path holds at most \
                 {SUN_PATH_MAX}: use a shorter --kubelet-dir",
                p.display()
            )));
        }
    }
    // Missing is fine (the kubelet may be starting); something else is not the kubelet.
    let kubelet = dir.join("kubelet.sock");
    if let Ok(m) = fs::symlink_metadata(&kubelet)
        && !m.file_type().is_socket()
    {
        return Err(Fatal::usage(format!(
            "{} is not a socket: the kubelet's registration socket must be one {hint}",
            kubelet.display()
        )));
    }
    Ok(())
}

/// Holds the directory's lock for as long as it lives.
pub(super) struct DirLock {
    _file: File,
}

/// Takes `dir/coral-nfd.lock` or says who holds it (exit 1).
pub(super) fn lock_dir(dir: &Path) -> Result<DirLock, Fatal> {
    let path = dir.join(LOCK_NAME);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Fatal::failure(format!("cannot open {}: {e}", path.display())))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Fatal::failure(format!(
                "{} is taken: another coral-nfd device-plugin holds {} ({}); one plugin per \
                 kubelet directory (is the plugin deployed twice?)",
                dir.display(),
                path.display(),
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                }
            )));
        }
        Err(e) => {
            return Err(Fatal::failure(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::from(e)
            )));
        }
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = format!(
        "pid {} on {}, resource socket {SOCKET_NAME}, since {}\n",
        std::process::id(),
        host.trim(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    // Who holds it, for the next one to say; the lock itself does not depend on it.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    Ok(DirLock { _file: file })
}

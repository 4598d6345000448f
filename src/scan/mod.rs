//! Discover: read the two roots into a [`model::Inventory`]. Everything here goes
//! through [`Root`] (bounded reads, regular files only, never out of the root), and
//! nothing here decides readiness: that is [`crate::state`]'s job.
//!
//! Imports flow one way: `scan` -> [`crate::model`], [`crate::root`], [`crate::parse`].

mod apex;
mod pci;
mod usb;

pub use apex::apex_index;
pub use pci::is_pci_address;
pub use usb::is_port_path;

use crate::model::{Attr, Inventory, Node, NodeInfo, Warnings};
use crate::root::{EntryStat, FsError, Root};
use rustix::fs::FileType;
use rustix::io::Errno;

/// How much a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// What the readiness rules need: the labeler's every-interval scan.
    Labels,
    /// Also the details `doctor` and the metrics report (trip points, shutdown
    /// threshold, poll interval, owner, framework version).
    Doctor,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub inventory: Inventory,
    pub warnings: Warnings,
    /// What the scan had to read to know which Coral devices there are and what they
    /// are, but could not (permission denied): each entry names the path and the
    /// error. When not empty the inventory may lack devices that exist, so nothing may
    /// be published from it (see [`Scan::incomplete`]).
    pub unreadable: Vec<String>,
}

impl Scan {
    /// Why this scan must not be published, if it must not: the first unreadable
    /// path, and how many more there are.
    pub fn incomplete(&self) -> Option<String> {
        let first = self.unreadable.first()?;
        Some(match self.unreadable.len() {
            1 => format!("scan incomplete: {first}"),
            n => format!("scan incomplete: {first} (and {} more)", n - 1),
        })
    }
}

/// What the scanners collect besides the inventory.
#[derive(Default)]
struct Notes {
    warnings: Warnings,
    unreadable: Vec<String>,
}

/// Reads everything coral-nfd needs from the two roots. Never fails: what cannot be
/// read becomes `Attr::Bad` or a skipped entry, with a warning, or, for what decides
/// which devices exist, an entry in [`Scan::unreadable`].
pub fn discover(sys: &Root, dev: &Root) -> Scan {
    discover_to(sys, dev, Depth::Labels)
}

/// [`discover`], reading details too when `depth` asks for them.
pub fn discover_to(sys: &Root, dev: &Root, depth: Depth) -> Scan {
    let mut n = Notes::default();
    let mut inv = Inventory::default();
    let coral = pci::discover(sys, &mut inv, &mut n);
    apex::discover(sys, dev, &coral, depth, &mut inv, &mut n);
    usb::discover(sys, dev, &mut inv, &mut n);
    Scan {
        inventory: inv,
        warnings: n.warnings,
        unreadable: n.unreadable,
    }
}

/// Why the roots cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootsError {
    pub message: String,
    /// The root is there but may not be read (permission denied): not a usage error
    /// but an incomplete scan.
    pub unreadable: bool,
}

impl std::fmt::Display for RootsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a root cannot be what it claims to be, if it cannot: a missing or non-directory
/// root, or a sysfs root with neither `bus/pci/devices` nor `bus/usb/devices` (every
/// Linux sysfs has at least one; a typo'd path or an empty hostPath has none). Without
/// this a wrong root would look like a node without a Coral, silently. A root that is
/// there but may not be read says so, with the error.
pub fn check_roots(sys: &Root, dev: &Root) -> Result<(), RootsError> {
    let usage = |message| RootsError {
        message,
        unreadable: false,
    };
    for (root, what, flag) in [
        (sys, "sysfs root", "--sysfs-root"),
        (dev, "dev root", "--dev-root"),
    ] {
        if !root.is_open() {
            let (why, unreadable) = match std::fs::metadata(root.path()) {
                Ok(m) if !m.is_dir() => ("is not a directory".to_string(), false),
                Ok(_) => ("cannot be opened".to_string(), false),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    (format!("cannot be read: {e}"), true)
                }
                Err(e) => (format!("cannot be used: {e}"), false),
            };
            return Err(RootsError {
                message: format!(
                    "{what} {} {why} (check {flag} and the volume behind it)",
                    root.path().display()
                ),
                unreadable,
            });
        }
    }
    let mut denied = None;
    let mut is_dir = |rel: &str| match sys.stat(rel) {
        Ok(st) => st.file_type == FileType::Directory,
        Err(e) => {
            if is_permission(&e) && denied.is_none() {
                denied = Some(format!("{}: {e}", sys.display(rel)));
            }
            false
        }
    };
    let (pci, usb) = (is_dir("bus/pci/devices"), is_dir("bus/usb/devices"));
    if !pci && !usb {
        if let Some(denied) = denied {
            return Err(RootsError {
                message: format!("scan incomplete: {denied}"),
                unreadable: true,
            });
        }
        return Err(usage(format!(
            "sysfs root {} has neither bus/pci/devices nor bus/usb/devices: not a sysfs tree \
             (check --sysfs-root and the volume behind it)",
            sys.path().display()
        )));
    }
    Ok(())
}

/// A permission error: what a non-root or LSM-confined reader meets. The entry is
/// there; only this reader may not see it.
fn is_permission(e: &FsError) -> bool {
    matches!(e, FsError::Io(Errno::ACCESS | Errno::PERM))
}

// --- from a filesystem error to a warning, once ---------------------------------------

/// An error that is not "missing" becomes one warning naming the path; missing stays
/// quiet. Returns the value when there was one.
fn quiet_if_missing<T>(root: &Root, rel: &str, r: Result<T, FsError>, n: &mut Notes) -> Attr<T> {
    match r {
        Ok(v) => Attr::Value(v),
        Err(FsError::Missing) => Attr::Absent,
        Err(e) => {
            n.warnings.push(format!("{}: {e}", root.display(rel)));
            Attr::Bad
        }
    }
}

/// [`quiet_if_missing`] for what decides which devices exist and what they are: a
/// permission error there makes the scan incomplete instead of a warning.
fn required<T>(root: &Root, rel: &str, r: Result<T, FsError>, n: &mut Notes) -> Attr<T> {
    match r {
        Err(e) if is_permission(&e) => {
            n.unreadable.push(format!("{}: {e}", root.display(rel)));
            Attr::Bad
        }
        r => quiet_if_missing(root, rel, r, n),
    }
}

fn parsed<T>(
    root: &Root,
    rel: &str,
    raw: Attr<Vec<u8>>,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
    n: &mut Notes,
) -> Attr<T> {
    match raw {
        Attr::Value(bytes) => match parse(&bytes) {
            Ok(v) => Attr::Value(v),
            Err(why) => {
                n.warnings.push(format!("{}: {why}", root.display(rel)));
                Attr::Bad
            }
        },
        Attr::Absent => Attr::Absent,
        Attr::Bad => Attr::Bad,
    }
}

/// Reads and parses an attribute: absent stays quiet, anything wrong is one warning.
fn read_attr<T>(
    root: &Root,
    rel: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
    n: &mut Notes,
) -> Attr<T> {
    let raw = quiet_if_missing(root, rel, root.read_attr(rel), n);
    parsed(root, rel, raw, parse, n)
}

/// [`read_attr`] for an attribute that says which devices exist or what they are.
fn read_required<T>(
    root: &Root,
    rel: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
    n: &mut Notes,
) -> Attr<T> {
    let raw = required(root, rel, root.read_attr(rel), n);
    parsed(root, rel, raw, parse, n)
}

/// Looks up a device node under the dev root.
fn read_node(dev: &Root, rel: &str, n: &mut Notes) -> Node {
    match quiet_if_missing(dev, rel, dev.stat(rel), n) {
        Attr::Value(st) => Attr::Value(node_info(&st)),
        Attr::Absent => Attr::Absent,
        Attr::Bad => Attr::Bad,
    }
}

fn node_info(st: &EntryStat) -> NodeInfo {
    NodeInfo {
        char_device: st.file_type == FileType::CharacterDevice,
        rdev: st.rdev,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
    }
}

/// Lists a directory the scan must see whole, sorted; a missing one is simply empty
/// (no USB bus, no driver), one that may not be read makes the scan incomplete.
fn list_dir(root: &Root, rel: &str, n: &mut Notes) -> Vec<String> {
    let mut names = list_dir_unsorted(root, rel, n);
    names.sort();
    names
}

/// [`list_dir`] in the filesystem's order.
fn list_dir_unsorted(root: &Root, rel: &str, n: &mut Notes) -> Vec<String> {
    let Attr::Value(names) = required(root, rel, root.read_dir_unsorted(rel), n) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|name| match name.into_string() {
            Ok(s) => Some(s),
            Err(name) => {
                n.warnings.push(format!(
                    "{}: skipping entry with a name that is not UTF-8: {:?}",
                    root.display(rel),
                    name
                ));
                None
            }
        })
        .collect()
}

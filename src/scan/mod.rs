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

/// How much a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// What the readiness rules need: the labeler's every-interval scan.
    Labels,
    /// Also the details `doctor` reports.
    Doctor,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub inventory: Inventory,
    pub warnings: Warnings,
}

/// Reads everything coral-nfd needs from the two roots. Never fails: what cannot be
/// read becomes `Attr::Bad` or a skipped entry, with a warning.
pub fn discover(sys: &Root, dev: &Root) -> Scan {
    discover_to(sys, dev, Depth::Labels)
}

/// [`discover`], reading details too when `depth` asks for them.
pub fn discover_to(sys: &Root, dev: &Root, depth: Depth) -> Scan {
    let mut w = Warnings::default();
    let mut inv = Inventory::default();
    let coral = pci::discover(sys, &mut inv, &mut w);
    apex::discover(sys, dev, &coral, depth, &mut inv, &mut w);
    usb::discover(sys, dev, &mut inv, &mut w);
    Scan {
        inventory: inv,
        warnings: w,
    }
}

/// Why a root cannot be what it claims to be, if it cannot: a missing or non-directory
/// root, or a sysfs root with neither `bus/pci/devices` nor `bus/usb/devices` (every
/// Linux sysfs has at least one; a typo'd path or an empty hostPath has none). Without
/// this a wrong root would look like a node without a Coral, silently.
pub fn check_roots(sys: &Root, dev: &Root) -> Result<(), String> {
    for (root, what, flag) in [
        (sys, "sysfs root", "--sysfs-root"),
        (dev, "dev root", "--dev-root"),
    ] {
        if !root.is_open() {
            let why = match std::fs::metadata(root.path()) {
                Ok(m) if !m.is_dir() => "is not a directory".to_string(),
                Ok(_) => "cannot be opened".to_string(),
                Err(e) => format!("cannot be used: {e}"),
            };
            return Err(format!(
                "{what} {} {why} (check {flag} and the volume behind it)",
                root.path().display()
            ));
        }
    }
    let is_dir = |rel: &str| {
        sys.stat(rel)
            .is_ok_and(|st| st.file_type == FileType::Directory)
    };
    if !is_dir("bus/pci/devices") && !is_dir("bus/usb/devices") {
        return Err(format!(
            "sysfs root {} has neither bus/pci/devices nor bus/usb/devices: not a sysfs tree \
             (check --sysfs-root and the volume behind it)",
            sys.path().display()
        ));
    }
    Ok(())
}

// --- from a filesystem error to a warning, once ---------------------------------------

/// An error that is not "missing" becomes one warning naming the path; missing stays
/// quiet. Returns the value when there was one.
fn quiet_if_missing<T>(root: &Root, rel: &str, r: Result<T, FsError>, w: &mut Warnings) -> Attr<T> {
    match r {
        Ok(v) => Attr::Value(v),
        Err(FsError::Missing) => Attr::Absent,
        Err(e) => {
            w.push(format!("{}: {e}", root.display(rel)));
            Attr::Bad
        }
    }
}

/// Reads and parses an attribute: absent stays quiet, anything wrong is one warning.
fn read_attr<T>(
    root: &Root,
    rel: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
    w: &mut Warnings,
) -> Attr<T> {
    match quiet_if_missing(root, rel, root.read_attr(rel), w) {
        Attr::Value(bytes) => match parse(&bytes) {
            Ok(v) => Attr::Value(v),
            Err(why) => {
                w.push(format!("{}: {why}", root.display(rel)));
                Attr::Bad
            }
        },
        Attr::Absent => Attr::Absent,
        Attr::Bad => Attr::Bad,
    }
}

/// Looks up a device node under the dev root.
fn read_node(dev: &Root, rel: &str, w: &mut Warnings) -> Node {
    match quiet_if_missing(dev, rel, dev.stat(rel), w) {
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

/// Lists a directory, sorted; a missing one is simply empty (no USB bus, no driver).
fn list_dir(root: &Root, rel: &str, w: &mut Warnings) -> Vec<String> {
    let mut names = list_dir_unsorted(root, rel, w);
    names.sort();
    names
}

/// [`list_dir`] in the filesystem's order.
fn list_dir_unsorted(root: &Root, rel: &str, w: &mut Warnings) -> Vec<String> {
    let Attr::Value(names) = quiet_if_missing(root, rel, root.read_dir_unsorted(rel), w) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|n| match n.into_string() {
            Ok(s) => Some(s),
            Err(n) => {
                w.push(format!(
                    "{}: skipping entry with a name that is not UTF-8: {:?}",
                    root.display(rel),
                    n
                ));
                None
            }
        })
        .collect()
}

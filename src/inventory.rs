//! What a scan found, as plain data: no file handles, no paths under the roots. The
//! composing side ([`crate::state`], [`crate::features`]) works on this alone, so it is
//! tested with plain values.

use crate::attr::Status;
use crate::root::{EntryStat, FsError, Root};
use rustix::fs::FileType;

/// An attribute that may be absent, present but unusable, or a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Attr<T> {
    /// The file (or link) does not exist.
    #[default]
    Absent,
    /// It exists but could not be read or parsed; a warning says why.
    Bad,
    Value(T),
}

impl<T> Attr<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Attr::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// A device node under the dev root, as `stat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub char_device: bool,
    pub rdev: (u32, u32),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub type Node = Attr<NodeInfo>;

/// One PCI function with the Coral IDs (`1ac1:089a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcieFunction {
    /// `0000:03:00.0`
    pub address: String,
    /// Name of the directory the `driver` link leads to (`apex`, `vfio-pci`...).
    pub driver: Attr<String>,
    /// The `apex_N` class device whose `device` link leads to this function.
    pub apex: Option<String>,
}

/// One `/sys/class/apex/apex_N` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApexDevice {
    /// `apex_0`
    pub name: String,
    /// N
    pub index: u32,
    /// Address of the Coral PCI function the `device` link leads to, if it leads to one.
    pub function: Option<String>,
    /// Content of `dev`: the (major, minor) its node must have.
    pub dev: Attr<(u32, u32)>,
    /// `/dev/apex_N`
    pub node: Node,
    pub status: Attr<Status>,
    /// Millidegrees Celsius.
    pub temp: Attr<i64>,
    /// Position in the directory order of `class/apex`: libedgetpu numbers PCIe TPUs
    /// (Frigate's `pci:N`) in that order, counting entries whose node is a char device.
    pub class_order: usize,
    /// Read only for `doctor` (see [`Depth`]).
    pub details: Option<ApexDetails>,
}

/// What `doctor` reads on top of the readiness rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApexDetails {
    /// `trip_point0_temp` .. `trip_point2_temp`, millidegrees Celsius.
    pub trip_points: [Attr<i64>; 3],
    /// `interrupt_counts` exists (only when MSI-X setup succeeded).
    pub interrupt_counts: bool,
    /// `driver_version`, `framework_version` of the class device.
    pub driver_version: Attr<String>,
    pub framework_version: Attr<String>,
}

/// How much a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// What the readiness rules need: the labeler's every-interval scan.
    Labels,
    /// Also the details `doctor` reports.
    Doctor,
}

impl ApexDevice {
    /// Where the node lives on the host, whatever `--dev-root` was.
    pub fn node_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// Which of its two identities a Coral USB Accelerator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbMode {
    /// `1a6e:089a`: as plugged in, before the runtime loads its firmware.
    Dfu,
    /// `18d1:9302`: firmware loaded.
    App,
}

impl UsbMode {
    pub fn from_ids(vendor: u16, product: u16) -> Option<UsbMode> {
        match (vendor, product) {
            (0x1a6e, 0x089a) => Some(UsbMode::Dfu),
            (0x18d1, 0x9302) => Some(UsbMode::App),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UsbMode::Dfu => "dfu",
            UsbMode::App => "app",
        }
    }
}

/// One Coral USB Accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    /// The sysfs device name, its port path: `3-4`, `1-1.2`.
    pub path: String,
    pub mode: UsbMode,
    pub busnum: Attr<u32>,
    pub devnum: Attr<u32>,
    pub dev: Attr<(u32, u32)>,
    /// Mbit/s as the kernel writes it.
    pub speed: Attr<String>,
    /// `/dev/bus/usb/BBB/DDD`, when bus and device numbers are known.
    pub node: Node,
}

impl UsbDevice {
    pub fn node_path(&self) -> Option<String> {
        match (&self.busnum, &self.devnum) {
            (Attr::Value(b), Attr::Value(d)) => Some(format!("/dev/bus/usb/{b:03}/{d:03}")),
            _ => None,
        }
    }
}

/// Everything one scan found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Entries looked at under `bus/pci/devices` and `bus/usb/devices`.
    pub pci_scanned: usize,
    pub usb_scanned: usize,
    /// `bus/pci/drivers/apex` exists.
    pub driver_loaded: bool,
    /// `module/apex/version`, `module/gasket/version`.
    pub driver_version: Attr<String>,
    pub gasket_version: Attr<String>,
    /// Sorted by address.
    pub pcie: Vec<PcieFunction>,
    /// Sorted by N.
    pub apex: Vec<ApexDevice>,
    /// Sorted by port path.
    pub usb: Vec<UsbDevice>,
}

/// Warnings collected during a scan: one per unusable entry, each naming its path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    pub fn push(&mut self, msg: String) {
        self.0.push(msg);
    }
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
    let coral = crate::pci::discover(sys, &mut inv, &mut w);
    crate::apex::discover(sys, dev, &coral, depth, &mut inv, &mut w);
    crate::usb::discover(sys, dev, &mut inv, &mut w);
    Scan {
        inventory: inv,
        warnings: w,
    }
}

/// Reads and parses an attribute: absent stays quiet, anything wrong is one warning.
pub(crate) fn read_attr<T>(
    root: &Root,
    rel: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
    w: &mut Warnings,
) -> Attr<T> {
    match root.read_attr(rel) {
        Ok(bytes) => match parse(&bytes) {
            Ok(v) => Attr::Value(v),
            Err(why) => {
                w.push(format!("{}: {why}", root.display(rel)));
                Attr::Bad
            }
        },
        Err(FsError::Missing) => Attr::Absent,
        Err(e) => {
            w.push(format!("{}: {e}", root.display(rel)));
            Attr::Bad
        }
    }
}

/// Looks up a device node under the dev root.
pub(crate) fn read_node(dev: &Root, rel: &str, w: &mut Warnings) -> Node {
    match dev.stat(rel) {
        Ok(st) => Attr::Value(node_info(&st)),
        Err(FsError::Missing) => Attr::Absent,
        Err(e) => {
            w.push(format!("{}: {e}", dev.display(rel)));
            Attr::Bad
        }
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
pub(crate) fn list_dir(root: &Root, rel: &str, w: &mut Warnings) -> Vec<String> {
    let mut names = list_dir_unsorted(root, rel, w);
    names.sort();
    names
}

/// [`list_dir`] in the filesystem's order.
pub(crate) fn list_dir_unsorted(root: &Root, rel: &str, w: &mut Warnings) -> Vec<String> {
    match root.read_dir_unsorted(rel) {
        Ok(names) => names
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
            .collect(),
        Err(FsError::Missing) => Vec::new(),
        Err(e) => {
            w.push(format!("{}: {e}", root.display(rel)));
            Vec::new()
        }
    }
}

/// Plain values for the composing side's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn char_node(rdev: (u32, u32)) -> Node {
        Attr::Value(NodeInfo {
            char_device: true,
            rdev,
            mode: 0o660,
            uid: 0,
            gid: 0,
        })
    }

    /// PCIe function `0000:0{N+3}:00.0` bound to apex, class device `apex_N`.
    pub fn function(n: u32) -> PcieFunction {
        PcieFunction {
            address: format!("0000:{:02x}:00.0", n + 3),
            driver: Attr::Value("apex".into()),
            apex: Some(format!("apex_{n}")),
        }
    }

    /// `apex_N`, ALIVE at 49.3 C, its node in place.
    pub fn apex(n: u32) -> ApexDevice {
        ApexDevice {
            name: format!("apex_{n}"),
            index: n,
            function: Some(function(n).address),
            dev: Attr::Value((120, n)),
            node: char_node((120, n)),
            status: Attr::Value(Status::Alive),
            temp: Attr::Value(49300),
            class_order: n as usize,
            details: None,
        }
    }

    /// A node with one ready PCIe TPU (apex 1.2, gasket 1.1.4).
    pub fn one_ready_tpu() -> Inventory {
        Inventory {
            driver_loaded: true,
            driver_version: Attr::Value("1.2".into()),
            gasket_version: Attr::Value("1.1.4".into()),
            pcie: vec![function(0)],
            apex: vec![apex(0)],
            ..Inventory::default()
        }
    }
}

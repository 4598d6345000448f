//! What a scan found, as plain data: no file handles, no paths under the roots, no
//! I/O. [`crate::scan`] fills it in; the composing side ([`crate::state`],
//! [`crate::features`], [`crate::doctor`], [`crate::frigate`]) works on it alone, so it
//! is tested with plain values. This module imports nothing that touches the host.

use serde::Serialize;
use std::fmt;

/// The identities of Coral hardware, written down once.
pub mod ids {
    /// The Edge TPU as a PCIe function (M.2, Mini PCIe, Dual Edge): `1ac1:089a`.
    pub const PCI_VENDOR: u16 = 0x1ac1;
    pub const PCI_DEVICE: u16 = 0x089a;
    /// A USB Accelerator before its firmware is loaded (Global Unichip): `1a6e:089a`.
    pub const USB_DFU: (u16, u16) = (0x1a6e, 0x089a);
    /// A USB Accelerator running its firmware (Google): `18d1:9302`.
    pub const USB_APP: (u16, u16) = (0x18d1, 0x9302);
}

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

/// The apex `status` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Alive,
    Lamed,
    Dead,
    DriverExiting,
    /// Some other upper-case word a later driver might add.
    Other(String),
}

impl Status {
    pub fn as_str(&self) -> &str {
        match self {
            Status::Alive => "ALIVE",
            Status::Lamed => "LAMED",
            Status::Dead => "DEAD",
            Status::DriverExiting => "DRIVER_EXITING",
            Status::Other(s) => s,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the apex `temp` register gives when the device no longer answers on the bus
/// (an all-ones read through the driver's conversion).
pub const TEMP_NOT_ANSWERING: i64 = -89700;

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
    /// `numa_node`: `Value(None)` is the kernel's -1 (no affinity known).
    pub numa_node: Attr<Option<u32>>,
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
    /// `driver_version` of the class device: `1.0` is the old staging driver.
    pub driver_version: Attr<String>,
    /// Position in the directory order of `class/apex`: libedgetpu numbers PCIe TPUs
    /// (Frigate's `pci:N`) in that order, counting entries whose node is a char device.
    pub class_order: usize,
    /// Read only for `doctor` (see [`crate::scan::Depth`]).
    pub details: Option<ApexDetails>,
}

/// What `doctor` and the metrics read on top of the readiness rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApexDetails {
    /// `trip_point0_temp` .. `trip_point2_temp`, millidegrees Celsius.
    pub trip_points: [Attr<i64>; 3],
    /// `interrupt_counts` exists (only when MSI-X setup succeeded).
    pub interrupt_counts: bool,
    /// `framework_version` of the class device.
    pub framework_version: Attr<String>,
    /// `hw_temp_warn2`: the temperature at which the chip raises its shutdown alarm
    /// line, millidegrees Celsius.
    pub shutdown_temp: Attr<i64>,
    /// `hw_temp_warn2_en`: whether that alarm is armed.
    pub shutdown_enabled: Attr<bool>,
    /// `temp_poll_interval`, milliseconds: how often the driver checks the temperature
    /// and sets the clock divider (0: never, so it never throttles).
    pub poll_interval_ms: Attr<u32>,
    /// `is_device_owned`: a process holds the device open for writing.
    pub owned: Attr<bool>,
}

impl ApexDevice {
    /// Where the node lives on the host, whatever `--dev-root` was.
    pub fn node_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// Which of its two identities a Coral USB Accelerator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsbMode {
    /// `1a6e:089a`: as plugged in, before the runtime loads its firmware.
    Dfu,
    /// `18d1:9302`: firmware loaded.
    App,
}

impl UsbMode {
    pub fn from_ids(vendor: u16, product: u16) -> Option<UsbMode> {
        match (vendor, product) {
            ids::USB_DFU => Some(UsbMode::Dfu),
            ids::USB_APP => Some(UsbMode::App),
            _ => None,
        }
    }

    /// `(vendor, product)` of this mode.
    pub fn ids(self) -> (u16, u16) {
        match self {
            UsbMode::Dfu => ids::USB_DFU,
            UsbMode::App => ids::USB_APP,
        }
    }

    /// Whether `vendor` is one of the two a Coral stick can show (the cheap first test).
    pub fn is_coral_vendor(vendor: u16) -> bool {
        vendor == ids::USB_DFU.0 || vendor == ids::USB_APP.0
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

    pub fn extend(&mut self, other: Warnings) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
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
            numa_node: Attr::Value(None),
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
            driver_version: Attr::Value("1.2".into()),
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

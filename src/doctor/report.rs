//! The `doctor --json` document (schema_version 1, described in docs/command-line.md): plain
//! serde types, filled in by [`super::diagnose`], rendered by [`super::text`].

use crate::model::UsbMode;
use serde::Serialize;

/// Bumped only when a field is removed or changes meaning; new fields may appear.
pub const SCHEMA_VERSION: u32 = 1;

/// Exit codes of `doctor`.
pub const EXIT_ALL_READY: u8 = 0;
pub const EXIT_PROBLEM: u8 = 1;
pub const EXIT_NO_DEVICE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth knowing, nothing to fix.
    Note,
    /// Works, but slower than it could.
    Warning,
    /// Does not work (or will not with the current runtime).
    Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// Stable short name: the `state` raw feature for readiness failures, or
    /// `throttled`, `staging-driver`, `usb2`, `dfu-mode`, `ready`.
    pub code: String,
    pub message: String,
    pub remedies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// Path on the host (`/dev/apex_0`).
    pub path: String,
    pub exists: bool,
    pub char_device: bool,
    /// `major:minor` of the node, when it is a device.
    pub rdev: Option<String>,
    /// `major:minor` the kernel published in `dev`.
    pub expected: Option<String>,
    pub matches: bool,
    /// Permission bits in octal, e.g. `0660`.
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Temperature {
    pub celsius: f64,
    /// Trip points 0..2 in degrees Celsius, as the driver reports them.
    pub trip_points_celsius: Vec<f64>,
    /// The clock the driver runs the TPU at for this temperature.
    pub clock_mhz: f64,
}

/// Which bus a device is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Pcie,
    Usb,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// `pcie` or `usb`.
    pub kind: DeviceKind,
    /// PCI address or USB port path.
    pub id: String,
    pub vendor_id: String,
    pub product_id: String,
    pub product: String,
    /// Ready by the labeler's rules (`coral-tpu.ready` counts it).
    pub ready: bool,
    /// The worst level among the findings.
    pub verdict: Level,
    pub state: String,
    pub driver: Option<String>,
    pub apex: Option<String>,
    /// The device string libedgetpu (and Frigate's `device:`) gives this TPU, `pci:N`,
    /// when its node is a character device (see docs/frigate.md on numbering).
    pub edgetpu_device: Option<String>,
    pub status: Option<String>,
    pub temperature: Option<Temperature>,
    pub driver_version: Option<String>,
    pub framework_version: Option<String>,
    pub usb_speed_mbps: Option<String>,
    /// `dfu` or `app`.
    pub usb_mode: Option<UsbMode>,
    pub node: Option<NodeReport>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Searched {
    pub sysfs_root: String,
    pub dev_root: String,
    pub pci_functions: usize,
    pub usb_devices: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverReport {
    pub loaded: bool,
    pub version: Option<String>,
    pub gasket_version: Option<String>,
}

/// A `class/apex/apex_N` entry that belongs to no Coral PCIe function (its labels say
/// `apex_N.ready=false`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDeviceReport {
    /// `apex_N`
    pub name: String,
    pub ready: bool,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub coral_nfd_version: &'static str,
    pub searched: Searched,
    pub driver: DriverReport,
    pub devices: Vec<DeviceReport>,
    /// Class devices no Coral function claims (added in 0.1: schema_version stays 1).
    pub class_devices: Vec<ClassDeviceReport>,
    pub ready_count: usize,
    pub problem_count: usize,
    pub exit_code: u8,
    /// What went wrong reading sysfs (paths and reasons).
    pub warnings: Vec<String>,
    /// What the scan had to read to know which devices exist but may not (paths and
    /// errors): when not empty the report may lack devices, and `exit_code` is 1.
    pub unreadable: Vec<String>,
    /// When no Coral device was found: what to check next, for a person.
    pub next_steps: Vec<String>,
}

impl Report {
    /// The report of a scan that could not read everything it needed: says so, and is
    /// never "all ready" or "nothing there" (exit 1).
    pub fn incomplete(mut self, unreadable: Vec<String>) -> Report {
        if !unreadable.is_empty() {
            self.exit_code = EXIT_PROBLEM;
            // "Nothing found, check the driver" would send the reader the wrong way:
            // what to do is to let the scan read (the unreadable list says what).
            self.next_steps.clear();
        }
        self.unreadable = unreadable;
        self
    }
}

//! `coral-nfd doctor`: for a person, why each TPU is or is not ready and what to do.
//! [`diagnose`] is a pure function of the inventory (the same scan the labeler does,
//! with details); [`render_text`] and serde's JSON present the one [`Report`].

use crate::attr::{Status, TEMP_NOT_ANSWERING};
use crate::inventory::{ApexDevice, Attr, Inventory, Node, PcieFunction, UsbDevice, UsbMode};
use crate::pci::{CORAL_DEVICE, CORAL_VENDOR};
use crate::state::{self, NodeProblem, PcieState, UsbState};
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// `pcie` or `usb`.
    pub kind: &'static str,
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
    pub status: Option<String>,
    pub temperature: Option<Temperature>,
    pub driver_version: Option<String>,
    pub framework_version: Option<String>,
    pub usb_speed_mbps: Option<String>,
    pub usb_mode: Option<&'static str>,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub coral_nfd_version: &'static str,
    pub searched: Searched,
    pub driver: DriverReport,
    pub devices: Vec<DeviceReport>,
    pub ready_count: usize,
    pub problem_count: usize,
    pub exit_code: u8,
    /// What went wrong reading sysfs (paths and reasons).
    pub warnings: Vec<String>,
}

fn attr_string<T: ToString>(a: &Attr<T>) -> Option<String> {
    a.value().map(ToString::to_string)
}

fn devnum((major, minor): (u32, u32)) -> String {
    format!("{major}:{minor}")
}

fn node_report(path: String, node: &Node, expected: Option<(u32, u32)>) -> NodeReport {
    let info = node.value();
    let rdev = info.filter(|n| n.char_device).map(|n| n.rdev);
    NodeReport {
        path,
        exists: !matches!(node, Attr::Absent),
        char_device: info.is_some_and(|n| n.char_device),
        rdev: rdev.map(devnum),
        expected: expected.map(devnum),
        matches: rdev.is_some() && rdev == expected,
        mode: info.map(|n| format!("{:04o}", n.mode)),
        uid: info.map(|n| n.uid),
        gid: info.map(|n| n.gid),
    }
}

fn finding(level: Level, code: &str, message: String, remedies: &[&str]) -> Finding {
    Finding {
        level,
        code: code.into(),
        message,
        remedies: remedies.iter().map(|r| r.to_string()).collect(),
    }
}

const INSTALL_DRIVER: &str = "Install the Coral PCIe driver (gasket-dkms): on Debian/Ubuntu build \
    it for your kernel with jnicolson/gasket-builder (or google/gasket-driver's `debuild`), \
    `dpkg -i gasket-dkms_*.deb`, then reboot.";
const SECURE_BOOT: &str = "If `modprobe apex` says 'Key was rejected by service', Secure Boot \
    refused the unsigned module: enroll the DKMS key (`mokutil --import /var/lib/dkms/mok.pub`, \
    then confirm at the next boot) or turn Secure Boot off.";
const DKMS_BUILD: &str = "After a kernel upgrade, check that DKMS built the module for the \
    running kernel: `dkms status` against `uname -r`. The old gasket source fails on \
    kernel 6.4+ (class_create) and 6.8+ (eventfd_signal): use a current gasket-driver.";
const NODE_HOST: &str = "On the host: the gasket-dkms udev rule is `SUBSYSTEM==\"apex\", \
    MODE=\"0660\", GROUP=\"apex\"`; create the group (`groupadd apex`) and run \
    `udevadm trigger`, or reboot.";
const NODE_CONTAINER: &str = "In a container: mount the host's /dev (or the node itself, \
    hostPath type CharDevice) and point --dev-root at it.";

fn pcie_findings(state: &PcieState, a: Option<&ApexDevice>, inv: &Inventory) -> Vec<Finding> {
    use Level::Problem;
    let name = a.map(|a| a.name.as_str()).unwrap_or("apex_N");
    let node = format!("/dev/{name}");
    let mut out = match state {
        PcieState::Ready => vec![finding(Level::Ok, "ready", "Ready.".into(), &[])],
        PcieState::DriverNotLoaded => vec![finding(
            Problem,
            "driver-not-loaded",
            "The apex driver is not loaded (no /sys/bus/pci/drivers/apex): not installed, \
             rejected by Secure Boot, or not built for this kernel."
                .into(),
            &[INSTALL_DRIVER, SECURE_BOOT, DKMS_BUILD],
        )],
        PcieState::NotBound => vec![finding(
            Problem,
            "not-bound",
            "The apex driver is loaded but did not take this device: its probe failed.".into(),
            &[
                "Look for the reason: `dmesg | grep -i -e apex -e gasket` ('Page table init \
                 timed out', 'probe ... failed with error -110').",
                "Under VM pass-through (Proxmox, ESXi...) this is common: pass the whole \
                 function with MSI-X working, or run coral-nfd and Frigate on the host.",
                "Reload the driver (`modprobe -r apex && modprobe apex`) or power-cycle.",
            ],
        )],
        PcieState::OtherDriver(d) => vec![finding(
            Problem,
            "other-driver",
            format!("The device is bound to driver '{d}', not apex."),
            &[
                "vfio-pci means it is reserved for a VM: run coral-nfd inside that VM, or \
                 release it on the host (unbind from vfio-pci, remove its ID from vfio-pci.ids).",
                "Otherwise unbind it (`echo ADDR > /sys/bus/pci/drivers/DRIVER/unbind`) and \
                 load apex.",
            ],
        )],
        PcieState::DriverUnreadable => vec![finding(
            Problem,
            "driver-unreadable",
            "The device's driver link cannot be followed (see the warnings).".into(),
            &["Check the sysfs tree given to --sysfs-root; on a live system, reboot."],
        )],
        PcieState::NoClassDevice => vec![finding(
            Problem,
            "no-apex-device",
            "Bound to apex, but no /sys/class/apex entry belongs to it.".into(),
            &["Reload the driver (`modprobe -r apex && modprobe apex`) and check dmesg."],
        )],
        PcieState::DevUnknown => vec![finding(
            Problem,
            "dev-unknown",
            format!("/sys/class/apex/{name}/dev is missing or unreadable."),
            &["Reload the driver and check dmesg."],
        )],
        PcieState::Node(NodeProblem::Missing) => vec![finding(
            Problem,
            "node-missing",
            format!("{node} does not exist (under the dev root)."),
            &[NODE_HOST, NODE_CONTAINER],
        )],
        PcieState::Node(NodeProblem::NotCharDevice) => vec![finding(
            Problem,
            "node-not-char-device",
            format!("{node} exists but is not a character device."),
            &[
                "A hostPath volume without `type: CharDevice` creates an empty directory when \
                 the node is missing: remove it, fix the driver, use `type: CharDevice`.",
                NODE_HOST,
            ],
        )],
        PcieState::Node(NodeProblem::Mismatch) => vec![finding(
            Problem,
            "node-mismatch",
            format!("{node} has another major:minor than the kernel published."),
            &[
                "A stale node: remove it and let udev recreate it (`udevadm trigger`), or reboot.",
                NODE_CONTAINER,
            ],
        )],
        PcieState::Node(NodeProblem::Unreadable) => vec![finding(
            Problem,
            "node-unreadable",
            format!("{node} cannot be examined (see the warnings)."),
            &[NODE_CONTAINER],
        )],
        PcieState::Status(Status::Lamed) => vec![finding(
            Problem,
            "status-lamed",
            "Status LAMED: the driver could not set up the device's interrupts (MSI-X); \
             there is no interrupt_counts file."
                .into(),
            &[
                "Check dmesg for 'Couldn't initialize interrupts' (-22, or -28 on a Raspberry \
                 Pi 5).",
                "Raspberry Pi 5: use the 4K-page kernel (`kernel=kernel8.img`) and \
                 `dtoverlay=pciex1-compat-pi5,no-mip` in config.txt, then reboot.",
                "In a VM: make sure MSI-X is passed through with the device.",
            ],
        )],
        PcieState::Status(s) => vec![finding(
            Problem,
            &state.code(),
            format!("Status {s}: the driver does not consider the device usable."),
            &["Power-cycle the machine; if it persists, reseat the card and check dmesg."],
        )],
        PcieState::StatusUnreadable => vec![finding(
            Problem,
            "status-unreadable",
            "The status attribute cannot be read (see the warnings).".into(),
            &["Reload the driver and check dmesg."],
        )],
        PcieState::NotAnswering => vec![finding(
            Problem,
            "not-answering",
            "The temperature reads -89.7 °C: the device stopped answering on the bus.".into(),
            &[
                "Power-cycle the machine (a warm reboot may not be enough).",
                "Check cooling and the slot or adapter; an M.2 card needs its heat spreader \
                 in contact.",
            ],
        )],
        PcieState::TempUnreadable => vec![finding(
            Problem,
            "temp-unreadable",
            "The temperature attribute cannot be read, so nothing shows the device still \
             answers."
                .into(),
            &["Power-cycle the machine and check dmesg."],
        )],
    };
    if is_staging_driver(a, inv) {
        out.push(finding(
            Problem,
            "staging-driver",
            "The old in-kernel staging driver (apex 1.0, no temperature files) is loaded; \
             the current Edge TPU runtime fails with it ('Could not set performance \
             expectation')."
                .into(),
            &[
                "Blacklist the staging modules (`blacklist apex` and `blacklist gasket` in \
                 /etc/modprobe.d) and install gasket-dkms, whose modules in updates/dkms \
                 replace them; rebuild the initramfs (`update-initramfs -u`) and reboot.",
                INSTALL_DRIVER,
            ],
        ));
    }
    if let Some(t) = a.and_then(temperature)
        && t.clock_mhz < 500.0
    {
        out.push(finding(
            Level::Warning,
            "throttled",
            format!(
                "Throttled to {} MHz at {:.2} °C (full speed is 500 MHz).",
                t.clock_mhz, t.celsius
            ),
            &[
                "Improve cooling: a heatsink on the module, airflow over the slot.",
                "libedgetpu1-max runs hotter than libedgetpu1-std.",
            ],
        ));
    }
    out
}

fn is_staging_driver(a: Option<&ApexDevice>, inv: &Inventory) -> bool {
    let one_oh = |v: &Attr<String>| v.value().is_some_and(|v| v == "1.0");
    let class_version = a
        .and_then(|a| a.details.as_ref())
        .is_some_and(|d| one_oh(&d.driver_version));
    one_oh(&inv.driver_version) || class_version
}

/// Temperature, trip points and the clock the driver picks for them.
pub fn temperature(a: &ApexDevice) -> Option<Temperature> {
    let t = *a.temp.value()?;
    if t == TEMP_NOT_ANSWERING {
        return None;
    }
    let trips: Vec<i64> = a
        .details
        .as_ref()
        .map(|d| {
            d.trip_points
                .iter()
                .filter_map(|p| p.value().copied())
                .collect()
        })
        .unwrap_or_default();
    let crossed = trips.iter().filter(|p| t >= **p).count();
    Some(Temperature {
        celsius: t as f64 / 1000.0,
        trip_points_celsius: trips.iter().map(|p| *p as f64 / 1000.0).collect(),
        clock_mhz: 500.0 / f64::from(1u32 << crossed.min(3)),
    })
}

fn pcie_report(inv: &Inventory, f: &PcieFunction) -> DeviceReport {
    let st = state::pcie_state(inv, f);
    let a = state::apex_of(inv, f);
    let findings = pcie_findings(&st, a, inv);
    let details = a.and_then(|a| a.details.as_ref());
    DeviceReport {
        kind: "pcie",
        id: f.address.clone(),
        vendor_id: format!("{CORAL_VENDOR:04x}"),
        product_id: format!("{CORAL_DEVICE:04x}"),
        product: pci_product_name(),
        ready: st.is_ready(),
        verdict: worst(&findings),
        state: st.code(),
        driver: attr_string(&f.driver),
        apex: f.apex.clone(),
        status: a.and_then(|a| attr_string(&a.status)),
        temperature: a.and_then(temperature),
        driver_version: details.and_then(|d| attr_string(&d.driver_version)),
        framework_version: details.and_then(|d| attr_string(&d.framework_version)),
        usb_speed_mbps: None,
        usb_mode: None,
        node: a.map(|a| node_report(a.node_path(), &a.node, a.dev.value().copied())),
        findings,
    }
}

/// "Global Unichip Corp. Coral Edge TPU", from the pci.ids database.
pub fn pci_product_name() -> String {
    match pci_ids::Device::from_vid_pid(CORAL_VENDOR, CORAL_DEVICE) {
        Some(d) => format!("{} {}", d.vendor().name(), d.name()),
        None => "Coral Edge TPU".into(),
    }
}

pub fn usb_product_name(mode: UsbMode) -> &'static str {
    match mode {
        UsbMode::Dfu => "Coral USB Accelerator (Global Unichip, firmware not loaded)",
        UsbMode::App => "Coral USB Accelerator (Google, firmware loaded)",
    }
}

fn usb_findings(st: UsbState, d: &UsbDevice) -> Vec<Finding> {
    use Level::Problem;
    let node = d
        .node_path()
        .unwrap_or_else(|| "/dev/bus/usb/BBB/DDD".into());
    let mut out = match st {
        UsbState::Ready => vec![finding(Level::Ok, "ready", "Ready.".into(), &[])],
        UsbState::Unnumbered => vec![finding(
            Problem,
            "dev-unknown",
            "busnum, devnum or dev is missing or unreadable: no node to look for.".into(),
            &["Unplug and replug the stick; check dmesg."],
        )],
        UsbState::Node(NodeProblem::Missing) => vec![finding(
            Problem,
            "node-missing",
            format!("{node} does not exist (under the dev root)."),
            &[
                "In a container: mount the host's /dev/bus/usb (the whole tree: the device \
                 number changes when the firmware loads).",
                "On the host: check that udev runs and /dev/bus/usb is populated.",
            ],
        )],
        UsbState::Node(p) => vec![finding(
            Problem,
            p.code(),
            format!("{node} is not the character device the kernel published."),
            &["Unplug and replug the stick; mount the live /dev/bus/usb, not a copy."],
        )],
    };
    if d.mode == UsbMode::Dfu {
        out.push(finding(
            Level::Note,
            "dfu-mode",
            "Firmware not loaded yet (1a6e:089a): normal until the Edge TPU runtime first \
             opens the stick; it then re-enumerates as 18d1:9302 with a new device number."
                .into(),
            &[],
        ));
    }
    let slow = d
        .speed
        .value()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(|mbps| mbps < 5000.0);
    if slow {
        out.push(finding(
            Level::Warning,
            "usb2",
            format!(
                "Connected at {} Mbit/s (USB 2 or slower): expect several times slower \
                 inference (about 70-80 ms instead of about 10 ms).",
                d.speed.value().map(String::as_str).unwrap_or("?")
            ),
            &["Use a USB 3 port (often blue) and the USB 3 cable that came with the stick."],
        ));
    }
    out
}

fn usb_report(d: &UsbDevice) -> DeviceReport {
    let st = state::usb_state(d);
    let findings = usb_findings(st, d);
    let (vid, pid) = match d.mode {
        UsbMode::Dfu => ("1a6e", "089a"),
        UsbMode::App => ("18d1", "9302"),
    };
    DeviceReport {
        kind: "usb",
        id: d.path.clone(),
        vendor_id: vid.into(),
        product_id: pid.into(),
        product: usb_product_name(d.mode).into(),
        ready: st.is_ready(),
        verdict: worst(&findings),
        state: st.code().into(),
        driver: None,
        apex: None,
        status: None,
        temperature: None,
        driver_version: None,
        framework_version: None,
        usb_speed_mbps: attr_string(&d.speed),
        usb_mode: Some(d.mode.as_str()),
        node: d
            .node_path()
            .map(|p| node_report(p, &d.node, d.dev.value().copied())),
        findings,
    }
}

fn worst(f: &[Finding]) -> Level {
    f.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}

pub fn diagnose(inv: &Inventory, searched: Searched, warnings: Vec<String>) -> Report {
    let mut devices: Vec<DeviceReport> = inv.pcie.iter().map(|f| pcie_report(inv, f)).collect();
    devices.extend(inv.usb.iter().map(usb_report));
    let ready_count = devices.iter().filter(|d| d.ready).count();
    let problem_count = devices
        .iter()
        .filter(|d| d.verdict == Level::Problem)
        .count();
    let exit_code = if devices.is_empty() {
        EXIT_NO_DEVICE
    } else if problem_count > 0 {
        EXIT_PROBLEM
    } else {
        EXIT_ALL_READY
    };
    Report {
        schema_version: SCHEMA_VERSION,
        coral_nfd_version: env!("CARGO_PKG_VERSION"),
        searched,
        driver: DriverReport {
            loaded: inv.driver_loaded,
            version: attr_string(&inv.driver_version),
            gasket_version: attr_string(&inv.gasket_version),
        },
        devices,
        ready_count,
        problem_count,
        exit_code,
        warnings,
    }
}

// --- text ---------------------------------------------------------------------------

const WIDTH: usize = 80;

/// ANSI colours, or none.
struct Paint(bool);

impl Paint {
    fn level(&self, l: Level, text: &str) -> String {
        let code = match l {
            Level::Ok => "32",
            Level::Note => "36",
            Level::Warning => "33",
            Level::Problem => "31;1",
        };
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, text: &str) -> String {
        if self.0 {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Ok => "READY",
        Level::Note => "NOTE",
        Level::Warning => "WARNING",
        Level::Problem => "PROBLEM",
    }
}

/// Appends `text` wrapped to the width, first line after `label` (padded to 14
/// columns), the rest indented to match.
fn field(out: &mut String, label: &str, text: &str) {
    let indent = " ".repeat(16);
    let first = format!("  {label:<13} ");
    let opts = textwrap::Options::new(WIDTH)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .initial_indent(&first)
        .subsequent_indent(&indent);
    for line in textwrap::wrap(text, opts) {
        out.push_str(&line);
        out.push('\n');
    }
}

fn node_text(n: &NodeReport) -> String {
    if !n.exists {
        return format!("{}: missing", n.path);
    }
    if !n.char_device {
        return format!("{}: not a character device", n.path);
    }
    let rdev = n.rdev.as_deref().unwrap_or("?");
    let matches = if n.matches {
        "matches the kernel".to_string()
    } else {
        format!("kernel says {}", n.expected.as_deref().unwrap_or("?"))
    };
    format!(
        "{}: char {rdev}, {matches}; mode {}, uid {}, gid {}",
        n.path,
        n.mode.as_deref().unwrap_or("?"),
        n.uid.map_or("?".into(), |u| u.to_string()),
        n.gid.map_or("?".into(), |g| g.to_string()),
    )
}

/// The report for a person, at most 80 columns wide.
pub fn render_text(r: &Report, colour: bool) -> String {
    let p = Paint(colour);
    let mut out = String::new();
    out.push_str(&p.bold(&format!("coral-nfd doctor {}", r.coral_nfd_version)));
    out.push('\n');
    field(
        &mut out,
        "searched",
        &format!(
            "{} PCI functions and {} USB entries under {}; device nodes under {}",
            r.searched.pci_functions,
            r.searched.usb_devices,
            r.searched.sysfs_root,
            r.searched.dev_root
        ),
    );
    let driver = if r.driver.loaded {
        format!(
            "apex {} loaded; gasket {}",
            r.driver.version.as_deref().unwrap_or("(version unknown)"),
            r.driver
                .gasket_version
                .as_deref()
                .unwrap_or("(version unknown)")
        )
    } else {
        "apex not loaded (no /sys/bus/pci/drivers/apex)".into()
    };
    field(&mut out, "driver", &driver);

    for d in &r.devices {
        out.push('\n');
        let kind = if d.kind == "pcie" { "PCIe" } else { "USB" };
        let title = format!(
            "{kind} {}  {} [{}:{}]",
            d.id, d.product, d.vendor_id, d.product_id
        );
        for line in textwrap::wrap(&title, WIDTH) {
            out.push_str(&p.bold(&line));
            out.push('\n');
        }
        if d.kind == "pcie" {
            field(
                &mut out,
                "driver",
                d.driver.as_deref().unwrap_or("none bound"),
            );
            if let Some(a) = &d.apex {
                field(&mut out, "class device", a);
            }
            if let Some(v) = &d.driver_version {
                let fw = d.framework_version.as_deref().unwrap_or("?");
                field(&mut out, "versions", &format!("driver {v}, framework {fw}"));
            }
        }
        if let Some(mode) = d.usb_mode {
            let what = if mode == "dfu" {
                "dfu (firmware not loaded)"
            } else {
                "app (firmware loaded)"
            };
            field(&mut out, "mode", what);
        }
        if let Some(s) = &d.usb_speed_mbps {
            field(&mut out, "speed", &format!("{s} Mbit/s"));
        }
        if let Some(n) = &d.node {
            field(&mut out, "node", &node_text(n));
        }
        if let Some(s) = &d.status {
            field(&mut out, "status", s);
        }
        if let Some(t) = &d.temperature {
            let trips: Vec<String> = t
                .trip_points_celsius
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect();
            let trips = if trips.is_empty() {
                String::new()
            } else {
                format!(" (throttles at {} °C)", trips.join(" / "))
            };
            let clock = if t.clock_mhz >= 500.0 {
                "500 MHz, full speed".to_string()
            } else {
                format!("{} MHz, throttled", t.clock_mhz)
            };
            field(
                &mut out,
                "temperature",
                &format!("{:.2} °C{trips}; clock {clock}", t.celsius),
            );
        }
        let verdict = p.level(d.verdict, level_word(d.verdict));
        field(&mut out, "verdict", &format!("{verdict} ({})", d.state));
        for f in d.findings.iter().filter(|f| f.level != Level::Ok) {
            let tag = p.level(f.level, level_word(f.level));
            field(&mut out, "", &format!("{tag}: {}", f.message));
            for rem in &f.remedies {
                field(&mut out, "", &format!("-> {rem}"));
            }
        }
    }
    out.push('\n');
    let summary = if r.devices.is_empty() {
        "No Coral Edge TPU found.".to_string()
    } else {
        format!(
            "{} Coral device(s), {} ready, {} with a problem.",
            r.devices.len(),
            r.ready_count,
            r.problem_count
        )
    };
    out.push_str(&p.bold(&summary));
    out.push('\n');
    if !r.warnings.is_empty() {
        out.push_str(&format!(
            "\n{} warning(s) while reading sysfs:\n",
            r.warnings.len()
        ));
        for w in &r.warnings {
            for line in textwrap::wrap(
                w,
                textwrap::Options::new(WIDTH)
                    .initial_indent("  ")
                    .subsequent_indent("    "),
            ) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ApexDetails;
    use crate::inventory::testing;

    fn apex(temp: i64) -> ApexDevice {
        ApexDevice {
            temp: Attr::Value(temp),
            details: Some(ApexDetails {
                trip_points: [Attr::Value(84800), Attr::Value(89800), Attr::Value(94800)],
                interrupt_counts: true,
                driver_version: Attr::Value("1.2".into()),
                framework_version: Attr::Value("1.1.4".into()),
            }),
            ..testing::apex(0)
        }
    }

    #[test]
    fn clock_follows_trip_points() {
        for (t, mhz) in [
            (49300, 500.0),
            (84800, 250.0),
            (89800, 125.0),
            (96050, 62.5),
        ] {
            assert_eq!(temperature(&apex(t)).unwrap().clock_mhz, mhz, "{t}");
        }
        assert!(temperature(&apex(TEMP_NOT_ANSWERING)).is_none());
    }

    #[test]
    fn pci_name_comes_from_the_database() {
        assert_eq!(pci_product_name(), "Global Unichip Corp. Coral Edge TPU");
    }

    #[test]
    fn text_fits_80_columns() {
        let inv = Inventory {
            driver_loaded: true,
            pcie: vec![PcieFunction {
                address: "0000:03:00.0".into(),
                driver: Attr::Value("apex".into()),
                apex: Some("apex_0".into()),
            }],
            apex: vec![ApexDevice {
                status: Attr::Value(Status::Lamed),
                ..apex(86050)
            }],
            ..Inventory::default()
        };
        let searched = Searched {
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            pci_functions: 1,
            usb_devices: 0,
        };
        let r = diagnose(&inv, searched, vec!["x".repeat(200)]);
        assert_eq!(r.exit_code, EXIT_PROBLEM);
        let text = render_text(&r, false);
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert!(text.contains("status-lamed"));
        assert!(text.contains("Throttled to 250 MHz"));
        assert!(!text.contains('\x1b'));
        assert!(render_text(&r, true).contains("\x1b[31;1mPROBLEM"));
    }
}

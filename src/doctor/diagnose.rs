//! Findings from the model: for each device, its state by the labeler's rules
//! ([`crate::state`]), what else is worth knowing (throttling, USB 2, the staging
//! driver), and what to do about each. Pure: inventory in, [`Report`] out.

use super::findings::{class_device_findings, pcie_findings, temperature, usb_findings};
use super::report::{
    ClassDeviceReport, DeviceKind, DeviceReport, DriverReport, EXIT_ALL_READY, EXIT_NO_DEVICE,
    EXIT_PROBLEM, Finding, Level, NodeReport, Report, SCHEMA_VERSION, Searched,
};
use crate::model::{Attr, Inventory, Node, PcieFunction, UsbDevice, UsbMode, Warnings, ids};
use crate::state;

pub(super) fn attr_string<T: ToString>(a: &Attr<T>) -> Option<String> {
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

fn pcie_report(inv: &Inventory, f: &PcieFunction) -> DeviceReport {
    let st = state::pcie_state(inv, f);
    let a = state::apex_of(inv, f);
    let findings = pcie_findings(&st, a);
    let details = a.and_then(|a| a.details.as_ref());
    DeviceReport {
        kind: DeviceKind::Pcie,
        id: f.address.clone(),
        vendor_id: format!("{:04x}", ids::PCI_VENDOR),
        product_id: format!("{:04x}", ids::PCI_DEVICE),
        product: pci_product_name(),
        ready: st.is_ready(),
        verdict: worst(&findings),
        state: st.code().into_owned(),
        driver: attr_string(&f.driver),
        apex: f.apex.clone(),
        edgetpu_device: state::libedgetpu_pci(inv)
            .iter()
            .position(|s| Some(s.apex.name.as_str()) == f.apex.as_deref())
            .map(|n| format!("pci:{n}")),
        status: a.and_then(|a| attr_string(&a.status)),
        temperature: a.and_then(temperature),
        driver_version: a.and_then(|a| attr_string(&a.driver_version)),
        framework_version: details.and_then(|d| attr_string(&d.framework_version)),
        usb_speed_mbps: None,
        usb_mode: None,
        node: a.map(|a| node_report(a.node_path(), &a.node, a.dev.value().copied())),
        findings,
    }
}

/// "Global Unichip Corp. Coral Edge TPU", from the pci.ids database.
pub fn pci_product_name() -> String {
    match pci_ids::Device::from_vid_pid(ids::PCI_VENDOR, ids::PCI_DEVICE) {
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

fn usb_report(d: &UsbDevice) -> DeviceReport {
    let st = state::usb_state(d);
    let findings = usb_findings(st, d);
    let (vid, pid) = d.mode.ids();
    DeviceReport {
        kind: DeviceKind::Usb,
        id: d.path.clone(),
        vendor_id: format!("{vid:04x}"),
        product_id: format!("{pid:04x}"),
        product: usb_product_name(d.mode).into(),
        ready: st.is_ready(),
        verdict: worst(&findings),
        state: st.code().into_owned(),
        driver: None,
        apex: None,
        edgetpu_device: None,
        status: None,
        temperature: None,
        driver_version: None,
        framework_version: None,
        usb_speed_mbps: attr_string(&d.speed),
        usb_mode: Some(d.mode),
        node: d
            .node_path()
            .map(|p| node_report(p, &d.node, d.dev.value().copied())),
        findings,
    }
}

pub(super) fn worst(f: &[Finding]) -> Level {
    f.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}

/// `class/apex` entries that no Coral PCIe function claims: the labels call each of
/// them not ready, so doctor says why.
fn class_device_reports(inv: &Inventory) -> Vec<ClassDeviceReport> {
    inv.apex
        .iter()
        .filter(|a| {
            !inv.pcie
                .iter()
                .any(|f| f.apex.as_deref() == Some(a.name.as_str()))
        })
        .map(|a| ClassDeviceReport {
            name: a.name.clone(),
            ready: false,
            findings: class_device_findings(a, inv),
        })
        .collect()
}

pub fn diagnose(inv: &Inventory, searched: Searched, warnings: Warnings) -> Report {
    let mut devices: Vec<DeviceReport> = inv.pcie.iter().map(|f| pcie_report(inv, f)).collect();
    devices.extend(inv.usb.iter().map(usb_report));
    let class_devices = class_device_reports(inv);
    let ready_count = devices.iter().filter(|d| d.ready).count();
    let problem_count = devices
        .iter()
        .filter(|d| d.verdict == Level::Problem)
        .count()
        + class_devices.len();
    let exit_code = if devices.is_empty() && class_devices.is_empty() {
        EXIT_NO_DEVICE
    } else if problem_count > 0 {
        EXIT_PROBLEM
    } else {
        EXIT_ALL_READY
    };
    let next_steps = if devices.is_empty() && class_devices.is_empty() {
        next_steps(inv, &searched)
    } else {
        Vec::new()
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
        class_devices,
        ready_count,
        problem_count,
        exit_code,
        warnings: warnings.0,
        unreadable: Vec::new(),
        next_steps,
    }
}

/// What a person checks when no Coral device shows up at all.
fn next_steps(inv: &Inventory, searched: &Searched) -> Vec<String> {
    let mut steps = vec![
        "On the node, `lspci -nn -d 1ac1:` lists a Coral M.2 / Mini PCIe card as \
         [1ac1:089a] (nothing listed: the card is not seated, or the slot is off in the \
         firmware settings; an M.2 E-key slot often wires only one TPU of a Dual Edge card)."
            .to_string(),
        "`lsusb -d 1a6e:` and `lsusb -d 18d1:` list a USB Accelerator: 1a6e:089a until \
         the Edge TPU runtime loads its firmware, 18d1:9302 after."
            .to_string(),
        format!(
            "In a pod, the host's /sys and /dev must be mounted (hostPath, read-only) where \
             --sysfs-root and --dev-root point: this run searched {} ({} PCI functions, {} \
             USB entries) and {}.",
            searched.sysfs_root, searched.pci_functions, searched.usb_devices, searched.dev_root
        ),
    ];
    if inv.driver_loaded {
        steps.push(
            "The apex driver is loaded but no Coral function is in this sysfs: if lspci \
             on the node lists one, this sysfs is not the node's (check the mount)."
                .to_string(),
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApexDetails, ApexDevice, TEMP_NOT_ANSWERING, testing};

    fn apex(temp: i64) -> ApexDevice {
        ApexDevice {
            temp: Attr::Value(temp),
            details: Some(ApexDetails {
                trip_points: [Attr::Value(84800), Attr::Value(89800), Attr::Value(94800)],
                interrupt_counts: true,
                framework_version: Attr::Value("1.1.4".into()),
                ..ApexDetails::default()
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
    fn kinds_and_modes_serialize_as_before() {
        let mut inv = testing::one_ready_tpu();
        inv.usb.push(UsbDevice {
            path: "3-4".into(),
            mode: UsbMode::Dfu,
            busnum: Attr::Value(3),
            devnum: Attr::Value(2),
            dev: Attr::Value((189, 257)),
            speed: Attr::Value("5000".into()),
            node: testing::char_node((189, 257)),
        });
        let searched = Searched {
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            pci_functions: 1,
            usb_devices: 1,
        };
        let r = diagnose(&inv, searched, Warnings::default());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["devices"][0]["kind"], "pcie");
        assert_eq!(v["devices"][0]["vendor_id"], "1ac1");
        assert_eq!(v["devices"][1]["kind"], "usb");
        assert_eq!(v["devices"][1]["usb_mode"], "dfu");
        assert_eq!(v["devices"][1]["vendor_id"], "1a6e");
        assert_eq!(v["devices"][1]["product_id"], "089a");
    }
}

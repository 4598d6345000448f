//! `coral-nfd frigate-config`: the Frigate `detectors:` block for the ready TPUs.
//! Pure: inventory in, YAML text out.

use crate::model::{Inventory, UsbMode, Warnings};
use crate::state;

/// The detectors, and whether any device is ready.
pub struct FrigateConfig {
    pub yaml: String,
    pub detectors: usize,
    /// What the config had to leave out and why (also in its comments).
    pub warnings: Warnings,
}

/// USB sticks as libedgetpu numbers them (`BeagleUsbDriverProvider::Enumerate`): every
/// Coral stick libusb lists, ready or not, those still in DFU mode (`1a6e:089a`) first,
/// then those running their firmware, each group in libusb's list order. That order is
/// the reverse of libusb's discovery, which is udev's sorted device paths or the raw
/// order of `/sys/bus/usb/devices` depending on how libusb was built: not knowable
/// here. Within a group the order matters only when its sticks differ in readiness.
fn usb_detectors(inv: &Inventory, entries: &mut Vec<(String, String)>, notes: &mut Vec<String>) {
    let mut first = 0;
    for mode in [UsbMode::Dfu, UsbMode::App] {
        let group: Vec<_> = inv.usb.iter().filter(|d| d.mode == mode).collect();
        let ready = group
            .iter()
            .filter(|d| state::usb_state(d).is_ready())
            .count();
        if ready == group.len() {
            // All ready: usb:first.. covers exactly these sticks, whatever their order.
            for n in first..first + group.len() {
                entries.push((format!("coral_usb{n}"), format!("usb:{n}")));
            }
        } else if ready > 0 {
            notes.push(format!(
                "USB sticks in {} mode: {ready} of {} ready; libedgetpu numbers them \
                 usb:{first}..usb:{} in libusb's order, which cannot be known from sysfs, \
                 so none is configured (a wrong index would open a stick that does not \
                 work): make them all ready, or unplug the broken one",
                mode.as_str(),
                group.len(),
                first + group.len() - 1
            ));
        }
        for d in group.iter().filter(|d| !state::usb_state(d).is_ready()) {
            notes.push(format!("USB {}: {}", d.path, state::usb_state(d).code()));
        }
        first += group.len();
    }
}

/// One detector per ready PCIe TPU (`pci:N`, N as libedgetpu numbers them) and per
/// ready USB stick (`usb:N`, likewise), with comments for devices left out.
pub fn detectors(inv: &Inventory) -> FrigateConfig {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();

    let slots = state::libedgetpu_pci(inv);
    for (n, slot) in slots.iter().enumerate() {
        if slot.ready {
            entries.push((format!("coral_pci{n}"), format!("pci:{n}")));
        } else {
            let state = inv
                .pcie
                .iter()
                .find(|f| f.apex.as_deref() == Some(slot.apex.name.as_str()))
                .map_or("not a Coral PCIe function".into(), |f| {
                    state::pcie_state(inv, f).code()
                });
            skipped.push(format!(
                "{} ({}) is pci:{n} to libedgetpu but not ready: {state}",
                slot.apex.name,
                slot.apex.node_path(),
            ));
        }
    }
    for f in &inv.pcie {
        let counted = slots
            .iter()
            .any(|s| Some(s.apex.name.as_str()) == f.apex.as_deref());
        if !counted {
            skipped.push(format!(
                "PCIe {}: {}",
                f.address,
                state::pcie_state(inv, f).code()
            ));
        }
    }
    let mut notes = Vec::new();
    usb_detectors(inv, &mut entries, &mut notes);

    let mut yaml = format!(
        "# Frigate detectors for the Coral Edge TPUs ready on this node (coral-nfd {}).\n\
         # PCIe TPUs are numbered as libedgetpu numbers them: /sys/class/apex in\n\
         # directory order, counting every entry whose /dev node is a character device.\n\
         # USB sticks likewise: all Coral sticks, those in DFU mode first.\n",
        env!("CARGO_PKG_VERSION")
    );
    if entries.is_empty() {
        // `detectors: {}` crashes Frigate 0.16 and 0.17 at start as soon as a camera is
        // defined (an UnboundLocalError in FrigateConfig's post-validation, not a
        // validation error, so no safe mode); without the key Frigate keeps its default
        // CPU detector and starts.
        yaml.push_str(
            "# No TPU is ready, so no detectors: key at all: Frigate then keeps its CPU\n\
             # detector (an empty detectors: {} would crash it at start).\n",
        );
    } else {
        yaml.push_str("detectors:\n");
        for (name, device) in &entries {
            yaml.push_str(&format!(
                "  {name}:\n    type: edgetpu\n    device: \"{device}\"\n"
            ));
        }
    }
    skipped.extend(notes.iter().cloned());
    skipped.sort();
    for s in &skipped {
        yaml.push_str(&format!("# skipped: {s}\n"));
    }
    let warnings = Warnings(
        notes
            .into_iter()
            .filter(|n| n.starts_with("USB sticks"))
            .collect(),
    );
    FrigateConfig {
        yaml,
        detectors: entries.len(),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{apex, function};
    use crate::model::{ApexDevice, Attr, PcieFunction, Status};

    fn tpu(n: u32, order: usize, status: Status) -> (PcieFunction, ApexDevice) {
        let a = ApexDevice {
            status: Attr::Value(status),
            class_order: order,
            ..apex(n)
        };
        (function(n), a)
    }

    #[test]
    fn a_broken_tpu_still_takes_its_libedgetpu_number() {
        // Directory order apex_1, apex_0; apex_1 is LAMED but has its node, so libedgetpu
        // calls it pci:0 and the working apex_0 is pci:1.
        let (f0, a0) = tpu(0, 1, Status::Alive);
        let (f1, a1) = tpu(1, 0, Status::Lamed);
        let inv = Inventory {
            driver_loaded: true,
            pcie: vec![f0, f1],
            apex: vec![a0, a1],
            ..Inventory::default()
        };
        let c = detectors(&inv);
        assert_eq!(c.detectors, 1);
        assert!(
            c.yaml
                .contains("  coral_pci1:\n    type: edgetpu\n    device: \"pci:1\"\n"),
            "{}",
            c.yaml
        );
        assert!(c.yaml.contains(
            "# skipped: apex_1 (/dev/apex_1) is pci:0 to libedgetpu but not ready: status-lamed"
        ));
    }

    #[test]
    fn nothing_ready_means_no_detectors_key() {
        let c = detectors(&Inventory::default());
        assert_eq!(c.detectors, 0);
        assert!(
            !c.yaml.lines().any(|l| l.starts_with("detectors")),
            "{}",
            c.yaml
        );
    }

    fn stick(path: &str, mode: UsbMode, ready: bool) -> crate::model::UsbDevice {
        use crate::model::testing::char_node;
        crate::model::UsbDevice {
            path: path.into(),
            mode,
            busnum: Attr::Value(2),
            devnum: Attr::Value(3),
            dev: Attr::Value((189, 130)),
            speed: Attr::Value("5000".into()),
            node: if ready {
                char_node((189, 130))
            } else {
                Attr::Absent
            },
        }
    }

    fn usb_devices(sticks: Vec<crate::model::UsbDevice>) -> (Vec<String>, usize) {
        let inv = Inventory {
            usb: sticks,
            ..Inventory::default()
        };
        let c = detectors(&inv);
        let devices = c
            .yaml
            .lines()
            .filter_map(|l| l.trim().strip_prefix("device: "))
            .map(|d| d.trim_matches('"').to_string())
            .collect();
        (devices, c.warnings.len())
    }

    #[test]
    fn usb_sticks_are_numbered_as_libedgetpu_does() {
        use UsbMode::{App, Dfu};
        // All ready: every index, whatever libusb's order.
        let (d, w) = usb_devices(vec![stick("1-1", App, true), stick("2-2", App, true)]);
        assert_eq!((d, w), (vec!["usb:0".to_string(), "usb:1".into()], 0));
        // DFU sticks come first: a ready DFU stick is usb:0 even on a later port.
        let (d, w) = usb_devices(vec![stick("1-1", App, false), stick("3-1", Dfu, true)]);
        assert_eq!((d, w), (vec!["usb:0".to_string()], 0));
        // ... and a ready application-mode stick after a broken DFU one is usb:1.
        let (d, _) = usb_devices(vec![stick("1-1", App, true), stick("3-1", Dfu, false)]);
        assert_eq!(d, vec!["usb:1".to_string()]);
        // Two sticks of one mode, one broken: their order is libusb's, so none, and a
        // warning says why.
        let (d, w) = usb_devices(vec![stick("1-1", App, true), stick("2-2", App, false)]);
        assert_eq!((d.len(), w), (0, 1));
        // One broken stick alone: nothing, and nothing to warn about but the skip.
        let (d, w) = usb_devices(vec![stick("1-1", App, false)]);
        assert_eq!((d.len(), w), (0, 0));
    }
}

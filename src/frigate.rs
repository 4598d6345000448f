//! `coral-nfd frigate-config`: the Frigate `detectors:` block for the ready TPUs.
//! Pure: inventory in, YAML text out.

use crate::model::{Attr, Inventory};
use crate::state;

/// The detectors, and whether any device is ready.
pub struct FrigateConfig {
    pub yaml: String,
    pub detectors: usize,
}

/// One detector per ready PCIe TPU (`pci:N`, N as libedgetpu numbers them) and per
/// ready USB stick (`usb:N`), with comments for devices that were skipped.
pub fn detectors(inv: &Inventory) -> FrigateConfig {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();

    // libedgetpu walks /sys/class/apex in directory order and counts every entry whose
    // /dev node is a character device; Frigate's `pci:N` is the N-th of those.
    let mut by_order: Vec<_> = inv.apex.iter().collect();
    by_order.sort_by_key(|a| a.class_order);
    let mut n = 0;
    for a in by_order {
        let counted = matches!(a.node, Attr::Value(node) if node.char_device);
        let function = inv
            .pcie
            .iter()
            .find(|f| f.apex.as_deref() == Some(a.name.as_str()));
        let state = function.map(|f| state::pcie_state(inv, f));
        match (counted, &state) {
            (true, Some(st)) if st.is_ready() => {
                entries.push((format!("coral_pci{n}"), format!("pci:{n}")));
            }
            (true, _) => skipped.push(format!(
                "{} ({}) is pci:{n} to libedgetpu but not ready: {}",
                a.name,
                a.node_path(),
                state.map_or("not a Coral PCIe function".into(), |s| s.code())
            )),
            (false, _) => {}
        }
        if counted {
            n += 1;
        }
    }
    for f in &inv.pcie {
        let st = state::pcie_state(inv, f);
        let counted = state::apex_of(inv, f)
            .is_some_and(|a| matches!(a.node, Attr::Value(node) if node.char_device));
        if !st.is_ready() && !counted {
            skipped.push(format!("PCIe {}: {}", f.address, st.code()));
        }
    }

    let mut u = 0;
    for d in &inv.usb {
        let st = state::usb_state(d);
        if st.is_ready() {
            entries.push((format!("coral_usb{u}"), format!("usb:{u}")));
            u += 1;
        } else {
            skipped.push(format!("USB {}: {}", d.path, st.code()));
        }
    }

    let mut yaml = format!(
        "# Frigate detectors for the Coral Edge TPUs ready on this node (coral-nfd {}).\n\
         # PCIe TPUs are numbered as libedgetpu numbers them: /sys/class/apex in\n\
         # directory order, counting every entry whose /dev node exists.\n",
        env!("CARGO_PKG_VERSION")
    );
    if entries.is_empty() {
        yaml.push_str("detectors: {}\n");
    } else {
        yaml.push_str("detectors:\n");
        for (name, device) in &entries {
            yaml.push_str(&format!(
                "  {name}:\n    type: edgetpu\n    device: \"{device}\"\n"
            ));
        }
    }
    skipped.sort();
    for s in &skipped {
        yaml.push_str(&format!("# skipped: {s}\n"));
    }
    FrigateConfig {
        yaml,
        detectors: entries.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{apex, function};
    use crate::model::{ApexDevice, PcieFunction, Status};

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
    fn nothing_ready() {
        let c = detectors(&Inventory::default());
        assert_eq!(c.detectors, 0);
        assert!(c.yaml.contains("detectors: {}\n"));
    }
}

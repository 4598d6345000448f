//! Coral USB Accelerators, from `bus/usb/devices`. There is no kernel driver: the
//! device is ready when its `/dev/bus/usb` node is there for libusb.

use super::{Notes, list_dir, read_attr, read_node, read_required};
use crate::model::{Attr, Inventory, UsbDevice, UsbMode};
use crate::parse;
use crate::root::Root;

/// A USB device (not interface, not root hub) name: `3-4`, `1-1.2.3`.
pub fn is_port_path(name: &str) -> bool {
    let Some((bus, ports)) = name.split_once('-') else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    number(bus) && ports.split('.').all(number)
}

pub(super) fn discover(sys: &Root, dev: &Root, inv: &mut Inventory, n: &mut Notes) {
    let names = list_dir(sys, "bus/usb/devices", n);
    inv.usb_scanned = names.len();
    for name in names {
        // Interfaces (`3-4:1.0`) have no IDs of their own; root hubs (`usb3`) are
        // never a Coral. Skipping them by name saves a read each.
        if !is_port_path(&name) {
            continue;
        }
        let base = format!("bus/usb/devices/{name}");
        // The IDs say whether it is a Coral at all: required.
        let Attr::Value(vendor) = read_required(sys, &format!("{base}/idVendor"), parse::hex_id, n)
        else {
            continue;
        };
        if !UsbMode::is_coral_vendor(vendor) {
            continue;
        }
        let Attr::Value(product) =
            read_required(sys, &format!("{base}/idProduct"), parse::hex_id, n)
        else {
            continue;
        };
        let Some(mode) = UsbMode::from_ids(vendor, product) else {
            continue;
        };
        let mut device = UsbDevice {
            mode,
            busnum: read_attr(sys, &format!("{base}/busnum"), parse::small_uint, n),
            devnum: read_attr(sys, &format!("{base}/devnum"), parse::small_uint, n),
            dev: read_attr(sys, &format!("{base}/dev"), parse::dev_number, n),
            speed: read_attr(sys, &format!("{base}/speed"), parse::usb_speed, n),
            node: Attr::Absent,
            path: name,
        };
        if let Some(node) = device.node_path() {
            let rel = node.trim_start_matches("/dev/");
            device.node = read_node(dev, rel, n);
        }
        inv.usb.push(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_paths() {
        for ok in ["3-4", "1-1.2", "1-1.2.3.4", "10-2"] {
            assert!(is_port_path(ok), "{ok}");
        }
        for bad in ["usb3", "3-4:1.0", "3-", "-4", "3-4.", "3-a", "3-4..1", ""] {
            assert!(!is_port_path(bad), "{bad}");
        }
    }
}

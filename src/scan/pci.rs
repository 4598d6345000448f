//! PCI functions with the Coral IDs, from `bus/pci/devices`.

use super::{Notes, list_dir, read_attr, read_required, required};
use crate::model::{Attr, Inventory, PcieFunction, ids};
use crate::parse;
use crate::root::Root;

/// A Coral function's identity on the filesystem, so an `apex_N/device` link can be
/// matched to it whatever path it takes.
pub(super) struct CoralFunction {
    pub address: String,
    pub identity: Option<(u64, u64)>,
}

/// `DDDD:BB:SS.F`, with a domain of 4 to 8 hex digits (VMD domains are longer).
pub fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    let Some(colon) = b.iter().position(|c| *c == b':') else {
        return false;
    };
    let (domain, rest) = (&b[..colon], &b[colon..]);
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    };
    (4..=8).contains(&domain.len())
        && hex(domain)
        && rest.len() == 8
        && rest[0] == b':'
        && hex(&rest[1..3])
        && rest[3] == b':'
        && hex(&rest[4..6])
        && rest[6] == b'.'
        && (b'0'..=b'7').contains(&rest[7])
}

/// Reads `vendor` of every function (and `device` only where the vendor matches: the
/// one attribute read per non-Coral function is the whole cost of a scan). Both decide
/// whether a function is a Coral, so a permission error on either makes the scan
/// incomplete, as does one on a Coral function's directory or driver link.
pub(super) fn discover(sys: &Root, inv: &mut Inventory, n: &mut Notes) -> Vec<CoralFunction> {
    let mut found = Vec::new();
    let names = list_dir(sys, "bus/pci/devices", n);
    inv.pci_scanned = names.len();
    for name in names {
        let base = format!("bus/pci/devices/{name}");
        if read_required(sys, &format!("{base}/vendor"), parse::hex_id, n)
            != Attr::Value(ids::PCI_VENDOR)
        {
            continue;
        }
        if read_required(sys, &format!("{base}/device"), parse::hex_id, n)
            != Attr::Value(ids::PCI_DEVICE)
        {
            continue;
        }
        if !is_pci_address(&name) {
            n.warnings.push(format!(
                "{}: has the Coral IDs but its name is not a PCI address; skipped",
                sys.display(&base)
            ));
            continue;
        }
        let driver = driver_name(sys, &format!("{base}/driver"), n);
        let identity = required(sys, &base, sys.stat(&base), n)
            .value()
            .map(|st| st.identity);
        let numa_node = read_attr(sys, &format!("{base}/numa_node"), parse::numa_node, n);
        inv.pcie.push(PcieFunction {
            address: name.clone(),
            driver,
            apex: None,
            numa_node,
        });
        found.push(CoralFunction {
            address: name,
            identity,
        });
    }
    found
}

fn driver_name(sys: &Root, rel: &str, n: &mut Notes) -> Attr<String> {
    match required(sys, rel, sys.link_dir_name(rel), n) {
        Attr::Value(name) => match name.into_string() {
            Ok(s) => Attr::Value(s),
            Err(name) => {
                n.warnings.push(format!(
                    "{}: driver name {name:?} is not UTF-8",
                    sys.display(rel)
                ));
                Attr::Bad
            }
        },
        Attr::Absent => Attr::Absent,
        Attr::Bad => Attr::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        for ok in [
            "0000:03:00.0",
            "0001:06:00.0",
            "10000:e0:1d.7",
            "0000:ff:1f.7",
        ] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "",
            "0000:03:00",
            "000:03:00.0",
            "0000:03:00.8",
            "0000:3:00.0",
            "0000:03:00.0 ",
            "0000:0G:00.0",
            "0000:03:00.0.1",
            "0000:AB:00.0",
            "pci0000:00",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }
}

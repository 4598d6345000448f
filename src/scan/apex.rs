//! The apex driver: whether it is registered, its version, and its class devices
//! `class/apex/apex_N` with their `/dev/apex_N` nodes.

use super::pci::CoralFunction;
use super::{Depth, Notes, list_dir_unsorted, read_attr, read_node, read_required, required};
use crate::model::{ApexDetails, ApexDevice, Attr, Inventory};
use crate::parse;
use crate::root::Root;
use rustix::fs::FileType;

/// `apex_N` -> N. Names libedgetpu would also pick up but that do not have this form
/// cannot become label keys, so they are skipped with a warning.
pub fn apex_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("apex_")?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "apex_01" would give the same N as "apex_1": only the kernel's own spelling counts.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn discover(
    sys: &Root,
    dev: &Root,
    coral: &[CoralFunction],
    depth: Depth,
    inv: &mut Inventory,
    n: &mut Notes,
) {
    // Whether the driver is there, and which one (the staging driver's version says
    // it is not usable), decide every PCIe TPU's state: required.
    let driver = "bus/pci/drivers/apex";
    inv.driver_loaded = matches!(
        required(sys, driver, sys.stat(driver), n),
        Attr::Value(st) if st.file_type == FileType::Directory
    );
    inv.driver_version = read_required(sys, "module/apex/version", parse::version, n);
    inv.gasket_version = read_attr(sys, "module/gasket/version", parse::version, n);

    for (class_order, name) in list_dir_unsorted(sys, "class/apex", n)
        .into_iter()
        .enumerate()
    {
        let Some(index) = apex_index(&name) else {
            n.warnings.push(format!(
                "{}: not of the form apex_N; skipped",
                sys.display(format!("class/apex/{name}"))
            ));
            continue;
        };
        let base = format!("class/apex/{name}");
        let function = linked_function(sys, &format!("{base}/device"), coral, n);
        let device = ApexDevice {
            index,
            function,
            dev: read_attr(sys, &format!("{base}/dev"), parse::dev_number, n),
            node: read_node(dev, &name, n),
            status: read_attr(sys, &format!("{base}/status"), parse::status, n),
            temp: read_attr(sys, &format!("{base}/temp"), parse::millicelsius, n),
            driver_version: read_attr(sys, &format!("{base}/driver_version"), parse::version, n),
            class_order,
            details: (depth == Depth::Doctor).then(|| details(sys, &base, n)),
            name,
        };
        inv.apex.push(device);
    }
    inv.apex.sort_by_key(|a| a.index);

    for f in &mut inv.pcie {
        f.apex = inv
            .apex
            .iter()
            .find(|a| a.function.as_deref() == Some(&f.address))
            .map(|a| a.name.clone());
    }
}

fn details(sys: &Root, base: &str, n: &mut Notes) -> ApexDetails {
    let trip = |i: usize, n: &mut Notes| {
        read_attr(
            sys,
            &format!("{base}/trip_point{i}_temp"),
            parse::millicelsius,
            n,
        )
    };
    ApexDetails {
        trip_points: [trip(0, n), trip(1, n), trip(2, n)],
        interrupt_counts: sys.stat(format!("{base}/interrupt_counts")).is_ok(),
        framework_version: read_attr(sys, &format!("{base}/framework_version"), parse::version, n),
        shutdown_temp: read_attr(
            sys,
            &format!("{base}/hw_temp_warn2"),
            parse::millicelsius,
            n,
        ),
        shutdown_enabled: read_attr(sys, &format!("{base}/hw_temp_warn2_en"), parse::flag, n),
        poll_interval_ms: read_attr(sys, &format!("{base}/temp_poll_interval"), parse::uint, n),
        owned: read_attr(sys, &format!("{base}/is_device_owned"), parse::flag, n),
    }
}

/// The Coral function an `apex_N/device` link leads to, compared by identity (the
/// link and `bus/pci/devices/<addr>` take different paths to the same directory).
/// Which TPU a class device belongs to is required knowledge.
fn linked_function(
    sys: &Root,
    rel: &str,
    coral: &[CoralFunction],
    n: &mut Notes,
) -> Option<String> {
    let st = required(sys, rel, sys.stat(rel), n).value().copied()?;
    coral
        .iter()
        .find(|c| c.identity == Some(st.identity))
        .map(|c| c.address.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apex_names() {
        assert_eq!(apex_index("apex_0"), Some(0));
        assert_eq!(apex_index("apex_12"), Some(12));
        for bad in [
            "apex",
            "apex_",
            "apex_01",
            "apex_-1",
            "apex_a",
            "apex_1x",
            "apex_9999999999",
        ] {
            assert_eq!(apex_index(bad), None, "{bad}");
        }
    }
}

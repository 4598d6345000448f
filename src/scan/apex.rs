//! The apex driver: whether it is registered, its version, and its class devices
//! `class/apex/apex_N` with their `/dev/apex_N` nodes.

use super::pci::CoralFunction;
use super::{Depth, list_dir_unsorted, quiet_if_missing, read_attr, read_node};
use crate::model::{ApexDetails, ApexDevice, Attr, Inventory, Warnings};
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
    w: &mut Warnings,
) {
    let driver = "bus/pci/drivers/apex";
    inv.driver_loaded = matches!(
        quiet_if_missing(sys, driver, sys.stat(driver), w),
        Attr::Value(st) if st.file_type == FileType::Directory
    );
    inv.driver_version = read_attr(sys, "module/apex/version", parse::version, w);
    inv.gasket_version = read_attr(sys, "module/gasket/version", parse::version, w);

    for (class_order, name) in list_dir_unsorted(sys, "class/apex", w)
        .into_iter()
        .enumerate()
    {
        let Some(index) = apex_index(&name) else {
            w.push(format!(
                "{}: not of the form apex_N; skipped",
                sys.display(format!("class/apex/{name}"))
            ));
            continue;
        };
        let base = format!("class/apex/{name}");
        let function = linked_function(sys, &format!("{base}/device"), coral, w);
        let device = ApexDevice {
            index,
            function,
            dev: read_attr(sys, &format!("{base}/dev"), parse::dev_number, w),
            node: read_node(dev, &name, w),
            status: read_attr(sys, &format!("{base}/status"), parse::status, w),
            temp: read_attr(sys, &format!("{base}/temp"), parse::millicelsius, w),
            driver_version: read_attr(sys, &format!("{base}/driver_version"), parse::version, w),
            class_order,
            details: (depth == Depth::Doctor).then(|| details(sys, &base, w)),
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

fn details(sys: &Root, base: &str, w: &mut Warnings) -> ApexDetails {
    let trip = |n: usize, w: &mut Warnings| {
        read_attr(
            sys,
            &format!("{base}/trip_point{n}_temp"),
            parse::millicelsius,
            w,
        )
    };
    ApexDetails {
        trip_points: [trip(0, w), trip(1, w), trip(2, w)],
        interrupt_counts: sys.stat(format!("{base}/interrupt_counts")).is_ok(),
        framework_version: read_attr(sys, &format!("{base}/framework_version"), parse::version, w),
    }
}

/// The Coral function an `apex_N/device` link leads to, compared by identity (the
/// link and `bus/pci/devices/<addr>` take different paths to the same directory).
fn linked_function(
    sys: &Root,
    rel: &str,
    coral: &[CoralFunction],
    w: &mut Warnings,
) -> Option<String> {
    let st = quiet_if_missing(sys, rel, sys.stat(rel), w)
        .value()
        .copied()?;
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

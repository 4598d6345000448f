//! Readiness: pure functions from an [`Inventory`] to a verdict per device. The rules
//! are the ones in docs/labels.md ("What counts as a device, and when it is ready").

use crate::model::{
    ApexDevice, Attr, Inventory, Node, PcieFunction, Status, TEMP_NOT_ANSWERING, UsbDevice,
};
use std::borrow::Cow;

/// Why a node is not what the device needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeProblem {
    Missing,
    NotCharDevice,
    /// A character device with another major:minor than the kernel says.
    Mismatch,
    Unreadable,
}

impl NodeProblem {
    pub fn code(self) -> &'static str {
        match self {
            NodeProblem::Missing => "node-missing",
            NodeProblem::NotCharDevice => "node-not-char-device",
            NodeProblem::Mismatch => "node-mismatch",
            NodeProblem::Unreadable => "node-unreadable",
        }
    }
}

/// Checks a node against the device number the kernel published.
fn check_node(node: &Node, expected: (u32, u32)) -> Result<(), NodeProblem> {
    match node {
        Attr::Absent => Err(NodeProblem::Missing),
        Attr::Bad => Err(NodeProblem::Unreadable),
        Attr::Value(n) if !n.char_device => Err(NodeProblem::NotCharDevice),
        Attr::Value(n) if n.rdev != expected => Err(NodeProblem::Mismatch),
        Attr::Value(_) => Ok(()),
    }
}

/// The state of one Coral PCIe function, first failing rule wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcieState {
    Ready,
    /// No `driver` link and no apex driver registered: not installed, rejected by
    /// Secure Boot, or the DKMS build failed for this kernel.
    DriverNotLoaded,
    /// apex is registered but did not take this function: probe failed.
    NotBound,
    /// Bound to another driver (`vfio-pci` when passed to a VM...).
    OtherDriver(String),
    /// Bound to the old in-kernel staging driver (apex 1.0, no `temp` files): the
    /// current Edge TPU runtime cannot use it.
    StagingDriver,
    /// The `driver` link is there but unusable (dangling out of the root, a loop).
    DriverUnreadable,
    /// Bound to apex, yet no `class/apex/apex_N` leads here.
    NoClassDevice,
    /// `apex_N/dev` is absent or malformed.
    DevUnknown,
    Node(NodeProblem),
    /// `status` is not `ALIVE` (`LAMED`: interrupts failed).
    Status(Status),
    StatusUnreadable,
    /// `temp` reads -89700: the device stopped answering on the bus.
    NotAnswering,
    TempUnreadable,
}

impl PcieState {
    pub fn is_ready(&self) -> bool {
        *self == PcieState::Ready
    }

    /// A short stable word for the `state` raw feature. Borrowed but for a status
    /// word, which is the driver's own.
    pub fn code(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            PcieState::Ready => "ready",
            PcieState::DriverNotLoaded => "driver-not-loaded",
            PcieState::NotBound => "not-bound",
            PcieState::OtherDriver(_) => "other-driver",
            PcieState::StagingDriver => "staging-driver",
            PcieState::DriverUnreadable => "driver-unreadable",
            PcieState::NoClassDevice => "no-apex-device",
            PcieState::DevUnknown => "dev-unknown",
            PcieState::Node(p) => p.code(),
            PcieState::Status(s) => {
                return Cow::Owned(format!("status-{}", s.as_str().to_ascii_lowercase()));
            }
            PcieState::StatusUnreadable => "status-unreadable",
            PcieState::NotAnswering => "not-answering",
            PcieState::TempUnreadable => "temp-unreadable",
        })
    }
}

/// The `apex_N` entry bound to a function, if any.
pub fn apex_of<'a>(inv: &'a Inventory, f: &PcieFunction) -> Option<&'a ApexDevice> {
    let name = f.apex.as_deref()?;
    inv.apex.iter().find(|a| a.name == name)
}

/// The old staging driver: the module, or the class device, says version `1.0` (the
/// version gasket-driver left behind when it moved out of the kernel; the staging
/// driver has no `temp` files either, see docs/labels.md).
pub fn is_staging_driver(inv: &Inventory, apex: Option<&ApexDevice>) -> bool {
    let one_oh = |v: &Attr<String>| v.value().is_some_and(|v| v == "1.0");
    one_oh(&inv.driver_version) || apex.is_some_and(|a| one_oh(&a.driver_version))
}

pub fn pcie_state(inv: &Inventory, f: &PcieFunction) -> PcieState {
    match &f.driver {
        Attr::Value(d) if d == "apex" => {}
        Attr::Value(d) => return PcieState::OtherDriver(d.clone()),
        Attr::Bad => return PcieState::DriverUnreadable,
        Attr::Absent if inv.driver_loaded => return PcieState::NotBound,
        Attr::Absent => return PcieState::DriverNotLoaded,
    }
    let apex = apex_of(inv, f);
    if is_staging_driver(inv, apex) {
        return PcieState::StagingDriver;
    }
    let Some(apex) = apex else {
        return PcieState::NoClassDevice;
    };
    let Attr::Value(dev) = apex.dev else {
        return PcieState::DevUnknown;
    };
    if let Err(p) = check_node(&apex.node, dev) {
        return PcieState::Node(p);
    }
    match &apex.status {
        Attr::Absent | Attr::Value(Status::Alive) => {}
        Attr::Value(s) => return PcieState::Status(s.clone()),
        Attr::Bad => return PcieState::StatusUnreadable,
    }
    match apex.temp {
        Attr::Value(TEMP_NOT_ANSWERING) => PcieState::NotAnswering,
        // A temperature that cannot be read cannot show the device still answers.
        Attr::Bad => PcieState::TempUnreadable,
        Attr::Absent | Attr::Value(_) => PcieState::Ready,
    }
}

/// How far the driver slows a TPU for its temperature: the number of the highest trip
/// point reached (0 none, 1-3: the clock at 250, 125, 62.5 MHz instead of 500). This is
/// what gasket-driver's `check_temperature_work_handler` (`src/apex_driver.c`) sets the
/// clock divider to at each poll: the highest `i` with `temp >= trip_point[i]`, plus one.
/// A trip point that could not be read is not counted. With polling off
/// (`poll_interval_ms` 0) the handler never runs, so the divider stays 0.
pub fn throttle_level(
    temp: i64,
    trip_points: [Option<i64>; 3],
    poll_interval_ms: Option<u32>,
) -> u8 {
    if poll_interval_ms == Some(0) {
        return 0;
    }
    (0..3u8)
        .rev()
        .find(|i| trip_points[usize::from(*i)].is_some_and(|t| temp >= t))
        .map_or(0, |i| i + 1)
}

/// One PCIe TPU as libedgetpu counts it: Frigate's `pci:N` is the N-th of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeTpuSlot<'a> {
    pub apex: &'a ApexDevice,
    /// The labeler's rules call it ready.
    pub ready: bool,
}

/// libedgetpu's PCIe numbering (`EnumerateByClass` in its `driver_factory_default.cc`):
/// `/sys/class/apex` in directory order (kernfs lists a directory in hash order, not by
/// name: with four TPUs `apex_2` can come first), counting each entry whose `/dev`
/// node is a character device, working or not.
pub fn libedgetpu_pci(inv: &Inventory) -> Vec<EdgeTpuSlot<'_>> {
    let mut by_order: Vec<&ApexDevice> = inv
        .apex
        .iter()
        .filter(|a| matches!(a.node, Attr::Value(n) if n.char_device))
        .collect();
    by_order.sort_by_key(|a| a.class_order);
    by_order
        .into_iter()
        .map(|apex| EdgeTpuSlot {
            apex,
            ready: inv.pcie.iter().any(|f| {
                f.apex.as_deref() == Some(apex.name.as_str()) && pcie_state(inv, f).is_ready()
            }),
        })
        .collect()
}

/// The state of one Coral USB Accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbState {
    Ready,
    /// `busnum`, `devnum` or `dev` absent or malformed: no node to look for.
    Unnumbered,
    Node(NodeProblem),
}

impl UsbState {
    pub fn is_ready(&self) -> bool {
        *self == UsbState::Ready
    }

    /// A short stable word for the `state` raw feature (the same type as
    /// [`PcieState::code`]).
    pub fn code(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            UsbState::Ready => "ready",
            UsbState::Unnumbered => "dev-unknown",
            UsbState::Node(p) => p.code(),
        })
    }
}

pub fn usb_state(d: &UsbDevice) -> UsbState {
    match (&d.busnum, &d.devnum, &d.dev) {
        (Attr::Value(_), Attr::Value(_), Attr::Value(dev)) => match check_node(&d.node, *dev) {
            Ok(()) => UsbState::Ready,
            Err(p) => UsbState::Node(p),
        },
        _ => UsbState::Unnumbered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeInfo;
    use crate::model::testing::{char_node, one_ready_tpu};

    fn node(char_device: bool, rdev: (u32, u32)) -> Node {
        Attr::Value(NodeInfo {
            char_device,
            rdev,
            mode: 0o660,
            uid: 0,
            gid: 0,
        })
    }

    fn state_after(change: impl FnOnce(&mut Inventory)) -> PcieState {
        let mut inv = one_ready_tpu();
        change(&mut inv);
        pcie_state(&inv, &inv.pcie[0])
    }

    #[test]
    fn each_rule_in_order() {
        assert_eq!(state_after(|_| {}), PcieState::Ready);
        assert_eq!(
            state_after(|i| {
                i.pcie[0].driver = Attr::Absent;
                i.driver_loaded = false;
            }),
            PcieState::DriverNotLoaded
        );
        assert_eq!(
            state_after(|i| i.pcie[0].driver = Attr::Absent),
            PcieState::NotBound
        );
        assert_eq!(
            state_after(|i| i.pcie[0].driver = Attr::Value("vfio-pci".into())),
            PcieState::OtherDriver("vfio-pci".into())
        );
        assert_eq!(
            state_after(|i| i.pcie[0].apex = None),
            PcieState::NoClassDevice
        );
        assert_eq!(
            state_after(|i| i.apex[0].dev = Attr::Bad),
            PcieState::DevUnknown
        );
        assert_eq!(
            state_after(|i| i.apex[0].node = Attr::Absent),
            PcieState::Node(NodeProblem::Missing)
        );
        assert_eq!(
            state_after(|i| i.apex[0].node = node(false, (120, 0))),
            PcieState::Node(NodeProblem::NotCharDevice)
        );
        assert_eq!(
            state_after(|i| i.apex[0].node = char_node((120, 1))),
            PcieState::Node(NodeProblem::Mismatch)
        );
        assert_eq!(
            state_after(|i| i.apex[0].status = Attr::Value(Status::Lamed)),
            PcieState::Status(Status::Lamed)
        );
        assert_eq!(
            state_after(|i| i.apex[0].status = Attr::Absent),
            PcieState::Ready
        );
        assert_eq!(
            state_after(|i| i.apex[0].temp = Attr::Value(TEMP_NOT_ANSWERING)),
            PcieState::NotAnswering
        );
        assert_eq!(
            state_after(|i| i.apex[0].temp = Attr::Absent),
            PcieState::Ready
        );
        assert_eq!(
            state_after(|i| i.apex[0].temp = Attr::Bad),
            PcieState::TempUnreadable
        );
        assert_eq!(PcieState::Status(Status::Lamed).code(), "status-lamed");
        // The staging driver comes first after the binding: nothing after it matters.
        assert_eq!(
            state_after(|i| {
                i.driver_version = Attr::Value("1.0".into());
                i.apex[0].node = Attr::Absent;
            }),
            PcieState::StagingDriver
        );
        assert_eq!(
            state_after(|i| i.apex[0].driver_version = Attr::Value("1.0".into())),
            PcieState::StagingDriver
        );
        assert_eq!(PcieState::StagingDriver.code(), "staging-driver");
    }

    #[test]
    fn libedgetpu_numbers_in_directory_order_counting_char_devices() {
        use crate::model::testing::{apex, function};
        let mut inv = one_ready_tpu();
        // Directory order apex_2, apex_0, apex_3, apex_1; apex_3 has no node, apex_0
        // is LAMED.
        inv.pcie = (0..4).map(function).collect();
        inv.apex = (0..4).map(apex).collect();
        for (n, order) in [(0, 1), (1, 3), (2, 0), (3, 2)] {
            inv.apex[n].class_order = order;
        }
        inv.apex[3].node = Attr::Absent;
        inv.apex[0].status = Attr::Value(Status::Lamed);
        let slots: Vec<(&str, bool)> = libedgetpu_pci(&inv)
            .iter()
            .map(|s| (s.apex.name.as_str(), s.ready))
            .collect();
        assert_eq!(
            slots,
            [("apex_2", true), ("apex_0", false), ("apex_1", true)]
        );
    }

    #[test]
    fn throttle_level_is_the_highest_trip_point_reached() {
        let trips = [Some(84800), Some(89800), Some(94800)];
        for (t, level) in [(49300, 0), (84799, 0), (84800, 1), (89800, 2), (99800, 3)] {
            assert_eq!(throttle_level(t, trips, Some(5000)), level, "{t}");
            assert_eq!(throttle_level(t, trips, None), level, "{t}");
            assert_eq!(throttle_level(t, trips, Some(0)), 0, "{t}: polling off");
        }
        // An unreadable trip point does not count; the driver's loop stops at the
        // highest one reached, so a higher known one still decides.
        assert_eq!(
            throttle_level(90000, [Some(84800), None, Some(94800)], None),
            1
        );
        assert_eq!(throttle_level(96000, [None, None, Some(94800)], None), 3);
    }

    #[test]
    fn usb_rules() {
        let mut d = UsbDevice {
            path: "3-4".into(),
            mode: crate::model::UsbMode::Dfu,
            busnum: Attr::Value(3),
            devnum: Attr::Value(2),
            dev: Attr::Value((189, 257)),
            speed: Attr::Value("5000".into()),
            node: char_node((189, 257)),
        };
        assert_eq!(usb_state(&d), UsbState::Ready);
        d.node = char_node((189, 258));
        assert_eq!(usb_state(&d), UsbState::Node(NodeProblem::Mismatch));
        d.devnum = Attr::Bad;
        assert_eq!(usb_state(&d), UsbState::Unnumbered);
    }
}

//! What doctor says about each state, and what to do: findings with their remedies.
//! Pure functions of the model and the state the labeler's rules give.

use super::report::{Finding, Level, Temperature};
use crate::model::{ApexDevice, Inventory, Status, TEMP_NOT_ANSWERING, UsbDevice, UsbMode};
use crate::state::{NodeProblem, PcieState, UsbState};

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

pub(super) fn pcie_findings(state: &PcieState, a: Option<&ApexDevice>) -> Vec<Finding> {
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
        PcieState::StagingDriver => vec![finding(
            Problem,
            "staging-driver",
            "The old in-kernel staging driver (apex 1.0, no temperature files) is loaded; \
             the current Edge TPU runtime fails with it ('Could not set performance \
             expectation'), so the TPU is not ready."
                .into(),
            &[
                "Blacklist the staging modules (`blacklist apex` and `blacklist gasket` in \
                 /etc/modprobe.d) and install gasket-dkms, whose modules in updates/dkms \
                 replace them; rebuild the initramfs (`update-initramfs -u`) and reboot.",
                INSTALL_DRIVER,
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
            state.code().as_ref(),
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

/// Temperature, trip points and the clock the driver picks for them.
pub fn temperature(a: &ApexDevice) -> Option<Temperature> {
    let t = *a.temp.value()?;
    if t == TEMP_NOT_ANSWERING {
        return None;
    }
    let known = a
        .details
        .as_ref()
        .map(|d| d.trip_points.clone().map(|p| p.value().copied()))
        .unwrap_or_default();
    let polling = a
        .details
        .as_ref()
        .and_then(|d| d.poll_interval_ms.value().copied());
    let level = crate::state::throttle_level(t, known, polling);
    Some(Temperature {
        celsius: t as f64 / 1000.0,
        trip_points_celsius: known.iter().flatten().map(|p| *p as f64 / 1000.0).collect(),
        clock_mhz: 500.0 / f64::from(1u32 << level),
    })
}

/// Why a class device that no Coral function claims is not ready.
pub(super) fn class_device_findings(a: &ApexDevice, inv: &Inventory) -> Vec<Finding> {
    let claimed_elsewhere = a
        .function
        .as_ref()
        .is_some_and(|addr| inv.pcie.iter().any(|f| &f.address == addr));
    let message = match &a.function {
        Some(addr) if claimed_elsewhere => format!(
            "/sys/class/apex/{} leads to {addr}, which another apex_N already belongs to.",
            a.name
        ),
        _ => format!(
            "/sys/class/apex/{}: its device link leads to no Coral PCIe function \
             (missing, dangling, or another device).",
            a.name
        ),
    };
    vec![finding(
        Level::Problem,
        "no-coral-function",
        message,
        &[
            "Reload the driver (`modprobe -r apex && modprobe apex`) and check dmesg.",
            "On a copied tree (--sysfs-root), check that the device links were copied as \
             links (coral-nfd snapshot keeps them).",
        ],
    )]
}

pub(super) fn usb_findings(st: UsbState, d: &UsbDevice) -> Vec<Finding> {
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

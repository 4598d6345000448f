//! The hardware series: each PCIe TPU, each USB stick, the node's driver.

use super::{
    Bus, Celsius, DriverInfo, PCIE_STATES, Stick, StickMode, Tpu, TpuInfo, TpuState, TripPoint,
    bit, celsius, float_gauge, gauge,
};
use crate::model::{Attr, Inventory, TEMP_NOT_ANSWERING, UsbMode};
use crate::state;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The TPU and node series of one scan.
pub(super) fn hardware(reg: &mut Registry, inv: &Inventory) {
    let ready = gauge::<Tpu>(
        reg,
        "coral_tpu_ready",
        "1 when the PCIe TPU is ready by coral-nfd's rules (the label coral-tpu.apex_N.ready)",
    );
    let states = gauge::<TpuState>(
        reg,
        "coral_tpu_state",
        "1 for the PCIe TPU's state (the raw feature coral-tpu.pcie.N.state), 0 for the others",
    );
    let temp: Celsius = float_gauge(
        reg,
        "coral_tpu_temperature",
        "TPU temperature from apex_N/temp (absent when unreadable or when the TPU no longer answers, -89.7)",
        Unit::Celsius,
    );
    let trips = float_gauge::<TripPoint>(
        reg,
        "coral_tpu_trip_point",
        "Temperature at which the driver throttles the TPU clock one step further (apex_N/trip_pointN_temp)",
        Unit::Celsius,
    );
    let throttle = gauge::<Tpu>(
        reg,
        "coral_tpu_throttle_level",
        "Trip points the temperature has reached, as the driver sets its clock divider each poll: 0 full speed (500 MHz), 1-3 slowed to 250, 125, 62.5 MHz",
    );
    let shutdown: Celsius = float_gauge(
        reg,
        "coral_tpu_shutdown_threshold",
        "Temperature at which the chip raises its shutdown alarm (apex_N/hw_temp_warn2)",
        Unit::Celsius,
    );
    let shutdown_on = gauge::<Tpu>(
        reg,
        "coral_tpu_shutdown_enabled",
        "1 when the shutdown alarm is armed (apex_N/hw_temp_warn2_en)",
    );
    let poll = float_gauge::<Tpu>(
        reg,
        "coral_tpu_temperature_poll_interval",
        "How often the driver checks the temperature and throttles (apex_N/temp_poll_interval; 0: never)",
        Unit::Seconds,
    );
    let owned = gauge::<Tpu>(
        reg,
        "coral_tpu_device_owned",
        "1 while a process holds the TPU open for writing (apex_N/is_device_owned)",
    );
    let info = gauge::<TpuInfo>(
        reg,
        "coral_tpu_info",
        "The PCIe TPU's driver and framework versions, and the device name libedgetpu (Frigate's device:) gives it",
    );
    let slots = state::libedgetpu_pci(inv);
    for f in &inv.pcie {
        let apex = state::apex_of(inv, f);
        let id = Tpu {
            device: f.apex.clone().unwrap_or_default(),
            pci_address: f.address.clone(),
        };
        let st = state::pcie_state(inv, f);
        ready.get_or_create(&id).set(bit(st.is_ready()));
        let code = st.code();
        for name in PCIE_STATES
            .iter()
            .copied()
            .chain((!PCIE_STATES.contains(&code.as_ref())).then_some(code.as_ref()))
        {
            states
                .get_or_create(&TpuState {
                    device: id.device.clone(),
                    pci_address: id.pci_address.clone(),
                    state: name.into(),
                })
                .set(bit(name == code));
        }
        let Some(a) = apex else { continue };
        let details = a.details.clone().unwrap_or_default();
        let known_trips = details.trip_points.clone().map(|p| p.value().copied());
        for (i, t) in known_trips.iter().enumerate() {
            if let Some(t) = t {
                trips
                    .get_or_create(&TripPoint {
                        device: id.device.clone(),
                        pci_address: id.pci_address.clone(),
                        trip_point: i.to_string(),
                    })
                    .set(celsius(*t));
            }
        }
        let polling = details.poll_interval_ms.value().copied();
        if let Attr::Value(t) = a.temp
            && t != TEMP_NOT_ANSWERING
        {
            temp.get_or_create(&id).set(celsius(t));
            let level = state::throttle_level(t, known_trips, polling);
            throttle.get_or_create(&id).set(i64::from(level));
        }
        if let Attr::Value(t) = details.shutdown_temp {
            shutdown.get_or_create(&id).set(celsius(t));
        }
        if let Attr::Value(on) = details.shutdown_enabled {
            shutdown_on.get_or_create(&id).set(bit(on));
        }
        if let Some(ms) = polling {
            poll.get_or_create(&id).set(f64::from(ms) / 1000.0);
        }
        if let Attr::Value(o) = details.owned {
            owned.get_or_create(&id).set(bit(o));
        }
        let text = |v: &Attr<String>| v.value().cloned().unwrap_or_default();
        let slot = slots.iter().position(|s| s.apex.name == a.name);
        info.get_or_create(&TpuInfo {
            device: id.device.clone(),
            pci_address: id.pci_address.clone(),
            driver_version: text(&a.driver_version),
            framework_version: text(&details.framework_version),
            libedgetpu_device: slot.map(|n| format!("pci:{n}")).unwrap_or_default(),
        })
        .set(1);
    }

    let usb_ready = gauge::<Stick>(
        reg,
        "coral_usb_ready",
        "1 when the USB Accelerator is ready by coral-nfd's rules (its /dev/bus/usb node is there)",
    );
    let usb_mode = gauge::<StickMode>(
        reg,
        "coral_usb_mode",
        "1 for the USB Accelerator's mode: dfu (1a6e:089a, firmware not loaded yet) or app (18d1:9302)",
    );
    let usb_speed = float_gauge::<Stick>(
        reg,
        "coral_usb_link_speed",
        "The USB Accelerator's link speed (USB 2: 60 MB/s, several times slower inference; USB 3: 625 MB/s)",
        Unit::Other("bytes_per_second".into()),
    );
    for d in &inv.usb {
        let id = Stick {
            path: d.path.clone(),
        };
        usb_ready
            .get_or_create(&id)
            .set(bit(state::usb_state(d).is_ready()));
        for mode in [UsbMode::Dfu, UsbMode::App] {
            usb_mode
                .get_or_create(&StickMode {
                    path: d.path.clone(),
                    mode: mode.as_str().into(),
                })
                .set(bit(d.mode == mode));
        }
        if let Some(mbits) = d.speed.value().and_then(|s| s.parse::<f64>().ok()) {
            usb_speed.get_or_create(&id).set(mbits * 1e6 / 8.0);
        }
    }

    let devices = gauge::<Bus>(reg, "coral_devices", "Coral devices found, by bus");
    let ready_devices = gauge::<Bus>(reg, "coral_ready_devices", "Coral devices ready, by bus");
    let pcie_ready = inv
        .pcie
        .iter()
        .filter(|f| state::pcie_state(inv, f).is_ready())
        .count();
    let usb_ready = inv
        .usb
        .iter()
        .filter(|d| state::usb_state(d).is_ready())
        .count();
    for (bus, found, ok) in [
        ("pcie", inv.pcie.len(), pcie_ready),
        ("usb", inv.usb.len(), usb_ready),
    ] {
        let b = Bus { bus: bus.into() };
        devices.get_or_create(&b).set(found as i64);
        ready_devices.get_or_create(&b).set(ok as i64);
    }
    let loaded = Gauge::<i64>::default();
    loaded.set(bit(inv.driver_loaded));
    reg.register(
        "coral_driver_loaded",
        "1 when the apex driver is registered (bus/pci/drivers/apex)",
        loaded,
    );
    let driver = gauge::<DriverInfo>(
        reg,
        "coral_driver_info",
        "The apex and gasket module versions (module/apex/version, module/gasket/version)",
    );
    if inv.driver_loaded || inv.driver_version.value().is_some() {
        driver
            .get_or_create(&DriverInfo {
                version: inv.driver_version.value().cloned().unwrap_or_default(),
                gasket_version: inv.gasket_version.value().cloned().unwrap_or_default(),
            })
            .set(1);
    }
}

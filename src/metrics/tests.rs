use super::*;
use crate::model::testing::one_ready_tpu;
use crate::model::{ApexDetails, Attr, Status, TEMP_NOT_ANSWERING};
use std::time::UNIX_EPOCH;

fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].to_string())
}

fn hot_tpu(temp: i64, poll_ms: u32) -> Inventory {
    let mut inv = one_ready_tpu();
    inv.apex[0].temp = Attr::Value(temp);
    inv.apex[0].details = Some(ApexDetails {
        trip_points: [Attr::Value(84800), Attr::Value(89800), Attr::Value(94800)],
        shutdown_temp: Attr::Value(99800),
        shutdown_enabled: Attr::Value(true),
        poll_interval_ms: Attr::Value(poll_ms),
        owned: Attr::Value(false),
        ..ApexDetails::default()
    });
    inv
}

const ID: &str = "{device=\"apex_0\",pci_address=\"0000:03:00.0\"}";

#[test]
fn a_ready_tpu() {
    let t = labeler(Some(&hot_tpu(49300, 5000)), &LabelerStats::default());
    assert_eq!(
        sample(&t, &format!("coral_tpu_ready{ID}")).as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&t, &format!("coral_tpu_temperature_celsius{ID}")).as_deref(),
        Some("49.3")
    );
    assert_eq!(
        sample(&t, &format!("coral_tpu_throttle_level{ID}")).as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(
            &t,
            "coral_tpu_state{device=\"apex_0\",pci_address=\"0000:03:00.0\",state=\"ready\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(
            &t,
            "coral_tpu_state{device=\"apex_0\",pci_address=\"0000:03:00.0\",state=\"status-lamed\"}"
        )
        .as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(
            &t,
            &format!("coral_tpu_temperature_poll_interval_seconds{ID}")
        )
        .as_deref(),
        Some("5.0")
    );
    assert!(t.contains("libedgetpu_device=\"pci:0\""), "{t}");
    assert!(
        t.contains("coral_nfd_scans_total{result=\"incomplete\"} 0"),
        "{t}"
    );
}

#[test]
fn throttling_and_a_silent_tpu() {
    let t = labeler(Some(&hot_tpu(91050, 5000)), &LabelerStats::default());
    assert_eq!(
        sample(&t, &format!("coral_tpu_throttle_level{ID}")).as_deref(),
        Some("2")
    );
    // Polling off: the driver never throttles, whatever the temperature.
    let t = labeler(Some(&hot_tpu(91050, 0)), &LabelerStats::default());
    assert_eq!(
        sample(&t, &format!("coral_tpu_throttle_level{ID}")).as_deref(),
        Some("0")
    );
    // -89.7: no temperature, no throttle level, and not ready.
    let mut inv = hot_tpu(TEMP_NOT_ANSWERING, 5000);
    let t = labeler(Some(&inv), &LabelerStats::default());
    assert!(!t.contains("coral_tpu_temperature_celsius{"), "{t}");
    assert!(!t.contains("coral_tpu_throttle_level{"), "{t}");
    assert_eq!(
        sample(&t, &format!("coral_tpu_ready{ID}")).as_deref(),
        Some("0")
    );
    inv.apex[0].temp = Attr::Value(49300);
    inv.apex[0].status = Attr::Value(Status::Other("NEW".into()));
    let t = labeler(Some(&inv), &LabelerStats::default());
    assert!(t.contains("state=\"status-new\"} 1"), "{t}");
}

#[test]
fn counters_carry_total_once_and_start_at_zero() {
    let stats = LabelerStats {
        scans_complete: 3,
        writes_failure: 2,
        expiry: Some(UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)),
        ..LabelerStats::default()
    };
    let t = labeler(None, &stats);
    assert!(
        t.contains("coral_nfd_scans_total{result=\"complete\"} 3\n"),
        "{t}"
    );
    assert!(t.contains("coral_nfd_feature_file_writes_total{result=\"success\"} 0\n"));
    assert!(t.contains("coral_nfd_feature_file_writes_total{result=\"failure\"} 2\n"));
    assert!(t.contains("coral_nfd_feature_file_expiry_timestamp_seconds 1800000000"));
    assert!(
        !t.contains("_total_total") && !t.contains("coral_tpu_"),
        "{t}"
    );
    let p = device_plugin(&PluginStats {
        registered: true,
        healthy: 2,
        ..PluginStats::default()
    });
    assert!(p.contains("coral_nfd_device_plugin_registered 1\n"), "{p}");
    assert!(p.contains("coral_nfd_device_plugin_devices{health=\"healthy\"} 2\n"));
    assert!(p.contains("coral_nfd_device_plugin_allocations_total{result=\"failure\"} 0\n"));
}

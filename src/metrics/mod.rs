//! Compose: what `/metrics` says, in the Prometheus text format 0.0.4. Pure: a scan's
//! inventory and the program's own counters in, text out (encoded by
//! `prometheus-client`, the Prometheus project's crate). Names follow the Prometheus
//! naming guide: base units (`_celsius`, `_seconds`, `_bytes_per_second`), `_total` on
//! counters (added by the encoder), `_info` series of value 1 carrying metadata. There
//! is no host name label: the scrape's target labels say which node this is.
//!
//! The TPU series come from the same scan and the same rules as the labels
//! ([`crate::state`]): `coral_tpu_ready` is 1 exactly when the labeler writes
//! `coral-tpu.apex_N.ready=true`.

mod hardware;

use crate::model::Inventory;
use hardware::hardware;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `Content-Type` of what [`labeler`] and [`device_plugin`] return.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every state a PCIe TPU can be in, as the `state` raw feature names them; one series
/// each, so a dashboard or an alert can rely on them being there (0 or 1). A status
/// word a later driver might add shows up as its own series when it is seen.
pub const PCIE_STATES: &[&str] = &[
    "ready",
    "driver-not-loaded",
    "not-bound",
    "other-driver",
    "staging-driver",
    "driver-unreadable",
    "no-apex-device",
    "dev-unknown",
    "node-missing",
    "node-not-char-device",
    "node-mismatch",
    "node-unreadable",
    "status-lamed",
    "status-dead",
    "status-driver_exiting",
    "status-unreadable",
    "not-answering",
    "temp-unreadable",
];

/// What the labeler daemon counts about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelerStats {
    /// Scans that could be published.
    pub scans_complete: u64,
    /// Scans that could not read what decides which devices exist (nothing written).
    pub scans_incomplete: u64,
    /// Scans that found a root missing or not a sysfs tree (nothing written).
    pub scans_roots_unusable: u64,
    /// Warnings of the last scan.
    pub last_warnings: u64,
    pub writes_success: u64,
    pub writes_failure: u64,
    /// The `# +expiry-time=` of the last file written, if it had one.
    pub expiry: Option<SystemTime>,
}

/// What the device plugin counts about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    pub registered: bool,
    pub registrations_success: u64,
    pub registrations_failure: u64,
    pub healthy: u64,
    pub unhealthy: u64,
    pub allocations_success: u64,
    pub allocations_failure: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tpu {
    device: String,
    pci_address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TpuState {
    device: String,
    pci_address: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TripPoint {
    device: String,
    pci_address: String,
    trip_point: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TpuInfo {
    device: String,
    pci_address: String,
    driver_version: String,
    framework_version: String,
    libedgetpu_device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stick {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StickMode {
    path: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Bus {
    bus: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverInfo {
    version: String,
    gasket_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Health {
    health: String,
}

type Celsius = Family<Tpu, Gauge<f64, AtomicU64>>;

fn gauge<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn float_gauge<L>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Unit,
) -> Family<L, Gauge<f64, AtomicU64>>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge<f64, AtomicU64>>::default();
    reg.register_with_unit(name, help, unit, f.clone());
    f
}

/// A counter family with one series per `(label value, count)`, all present from the
/// start so that `rate()` and `increase()` see the first event.
fn counter(reg: &mut Registry, name: &str, help: &str, values: &[(&str, u64)]) {
    let f = Family::<Result_, Counter>::default();
    for (result, n) in values {
        f.get_or_create(&Result_ {
            result: (*result).into(),
        })
        .inc_by(*n);
    }
    reg.register(name, help, f);
}

fn build_info(reg: &mut Registry) {
    let f = gauge::<Build>(
        reg,
        "coral_nfd_build_info",
        "coral-nfd's version (always 1)",
    );
    f.get_or_create(&Build {
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .set(1);
}

fn encode(reg: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; the encoder's only error is the writer's.
    let _ = prometheus_text::encode(&mut out, reg);
    out
}

fn celsius(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

fn bit(b: bool) -> i64 {
    i64::from(b)
}

/// The labeler daemon's `/metrics`: the hardware of the last complete scan (none
/// before the first), then the labeler's own counters.
pub fn labeler(inv: Option<&Inventory>, stats: &LabelerStats) -> String {
    let mut reg = Registry::default();
    build_info(&mut reg);
    if let Some(inv) = inv {
        hardware(&mut reg, inv);
    }
    counter(
        &mut reg,
        "coral_nfd_scans",
        "Scans by result: complete (published), incomplete (something deciding which devices exist could not be read) or roots-unusable (a root missing or not a sysfs tree); the last two keep the previous file",
        &[
            ("complete", stats.scans_complete),
            ("incomplete", stats.scans_incomplete),
            ("roots-unusable", stats.scans_roots_unusable),
        ],
    );
    let warnings = Gauge::<i64>::default();
    warnings.set(stats.last_warnings as i64);
    reg.register(
        "coral_nfd_scan_warnings",
        "Warnings of the last scan (unreadable or malformed attributes; see the log)",
        warnings,
    );
    counter(
        &mut reg,
        "coral_nfd_feature_file_writes",
        "Writes of the feature file by result",
        &[
            ("success", stats.writes_success),
            ("failure", stats.writes_failure),
        ],
    );
    let expiry = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "coral_nfd_feature_file_expiry_timestamp_seconds",
        "The expiry time in the feature file written last (Unix time): NFD drops the labels after it",
        expiry.clone(),
    );
    if let Some(at) = stats.expiry {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        expiry.get_or_create(&Vec::new()).set(secs.as_secs_f64());
    }
    encode(&reg)
}

/// The device plugin's `/metrics`.
pub fn device_plugin(stats: &PluginStats) -> String {
    let mut reg = Registry::default();
    build_info(&mut reg);
    let registered = Gauge::<i64>::default();
    registered.set(bit(stats.registered));
    reg.register(
        "coral_nfd_device_plugin_registered",
        "1 while the plugin is registered with the kubelet and serving",
        registered,
    );
    counter(
        &mut reg,
        "coral_nfd_device_plugin_registrations",
        "Register calls to the kubelet by result",
        &[
            ("success", stats.registrations_success),
            ("failure", stats.registrations_failure),
        ],
    );
    let devices = gauge::<Health>(
        &mut reg,
        "coral_nfd_device_plugin_devices",
        "TPUs offered to the kubelet, by health",
    );
    for (health, n) in [("healthy", stats.healthy), ("unhealthy", stats.unhealthy)] {
        devices
            .get_or_create(&Health {
                health: health.into(),
            })
            .set(n as i64);
    }
    counter(
        &mut reg,
        "coral_nfd_device_plugin_allocations",
        "Allocate calls from the kubelet by result",
        &[
            ("success", stats.allocations_success),
            ("failure", stats.allocations_failure),
        ],
    );
    encode(&reg)
}

#[cfg(test)]
mod tests;

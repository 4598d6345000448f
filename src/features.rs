//! Compose: from an [`Inventory`] to NFD feature lines, and render them as a feature
//! file. Pure functions, no filesystem.

use crate::inventory::{Attr, Inventory};
use crate::label::{self, Prefix};
use crate::state::{self, PcieState, UsbState};
use std::time::SystemTime;

/// nfd-worker skips a feature file larger than this whole (NFD `source/local/local.go`).
pub const NFD_MAX_FILE_BYTES: usize = 65536;

/// Room kept for the header and the expiry directive when the body is size-limited.
const HEADER_RESERVE: usize = 256;

/// What a line is for, and so what goes first when the file would be too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Node-level labels: always kept.
    Summary,
    /// `apex_N.ready` labels.
    PerDevice,
    /// `# +no-label` details: dropped first.
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// The key without the prefix, e.g. `coral-tpu.ready`.
    pub name: String,
    pub value: String,
    pub tier: Tier,
}

impl Feature {
    fn label(name: impl Into<String>, value: impl ToString, tier: Tier) -> Self {
        Feature {
            name: name.into(),
            value: value.to_string(),
            tier,
        }
    }

    fn raw(name: impl Into<String>, value: impl Into<String>) -> Self {
        Feature {
            name: name.into(),
            value: value.into(),
            tier: Tier::Raw,
        }
    }

    pub fn is_label(&self) -> bool {
        self.tier != Tier::Raw
    }
}

/// Raw feature values are not validated by NFD, but a rule author should never meet
/// spaces, quotes or line breaks in them.
pub fn is_raw_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

/// The features of a node, unsorted, plus warnings about values left out.
pub fn compose(inv: &Inventory) -> (Vec<Feature>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let pcie: Vec<PcieState> = inv.pcie.iter().map(|f| state::pcie_state(inv, f)).collect();
    let usb: Vec<UsbState> = inv.usb.iter().map(state::usb_state).collect();
    if inv.pcie.is_empty() && inv.usb.is_empty() && !inv.driver_loaded {
        // Nodes without a Coral carry no Coral labels at all.
        return (out, warnings);
    }
    let pcie_ready = pcie.iter().filter(|s| s.is_ready()).count();
    let usb_ready = usb.iter().filter(|s| s.is_ready()).count();
    let count = inv.pcie.len() + inv.usb.len();
    let ready = pcie_ready + usb_ready;
    let s = Tier::Summary;
    out.push(Feature::label("coral-tpu.present", count > 0, s));
    out.push(Feature::label("coral-tpu.count", count, s));
    out.push(Feature::label("coral-tpu.ready", ready > 0, s));
    out.push(Feature::label("coral-tpu.ready.count", ready, s));
    out.push(Feature::label("coral-tpu.pcie.count", inv.pcie.len(), s));
    out.push(Feature::label("coral-tpu.pcie.ready.count", pcie_ready, s));
    out.push(Feature::label("coral-tpu.usb.count", inv.usb.len(), s));
    out.push(Feature::label("coral-tpu.usb.ready.count", usb_ready, s));
    out.push(Feature::label(
        "coral-tpu.driver.loaded",
        inv.driver_loaded,
        s,
    ));
    if let Attr::Value(v) = &inv.driver_version {
        if label::is_label_value(v) {
            out.push(Feature::label("coral-tpu.driver.version", v, s));
        } else {
            warnings.push(format!(
                "apex driver version {v:?} is not a valid label value; coral-tpu.driver.version left out"
            ));
        }
    }
    if let Attr::Value(v) = &inv.gasket_version
        && is_raw_value(v)
    {
        out.push(Feature::raw("coral-tpu.gasket.version", v.as_str()));
    }

    for a in &inv.apex {
        let ready = inv
            .pcie
            .iter()
            .zip(&pcie)
            .any(|(f, st)| f.apex.as_deref() == Some(a.name.as_str()) && st.is_ready());
        let key = format!("coral-tpu.{}", a.name);
        out.push(Feature::label(
            format!("{key}.ready"),
            ready,
            Tier::PerDevice,
        ));
        out.push(Feature::raw(format!("{key}.dev"), a.node_path()));
        if let Attr::Value(st) = &a.status {
            out.push(Feature::raw(format!("{key}.status"), st.as_str()));
        }
        if let Some(addr) = &a.function {
            out.push(Feature::raw(format!("{key}.pci-address"), addr.as_str()));
        }
    }

    for (i, (f, st)) in inv.pcie.iter().zip(&pcie).enumerate() {
        let key = format!("coral-tpu.pcie.{i}");
        out.push(Feature::raw(format!("{key}.address"), f.address.as_str()));
        let driver = match &f.driver {
            Attr::Value(d) if is_raw_value(d) => d.as_str(),
            Attr::Value(_) | Attr::Bad => "unknown",
            Attr::Absent => "none",
        };
        out.push(Feature::raw(format!("{key}.driver"), driver));
        if let Some(apex) = &f.apex {
            out.push(Feature::raw(format!("{key}.apex"), apex.as_str()));
        }
        out.push(Feature::raw(format!("{key}.state"), st.code()));
    }

    for (i, (d, st)) in inv.usb.iter().zip(&usb).enumerate() {
        let key = format!("coral-tpu.usb.{i}");
        out.push(Feature::raw(format!("{key}.path"), d.path.as_str()));
        out.push(Feature::raw(format!("{key}.mode"), d.mode.as_str()));
        if let Some(node) = d.node_path() {
            out.push(Feature::raw(format!("{key}.dev"), node));
        }
        if let Attr::Value(speed) = &d.speed {
            out.push(Feature::raw(format!("{key}.speed"), speed.as_str()));
        }
        out.push(Feature::raw(format!("{key}.state"), st.code()));
    }
    (out, warnings)
}

/// The header line: names the writer, never starts with `# +` (that is a directive).
pub fn header() -> String {
    format!(
        "# coral-nfd {}: Coral Edge TPU features for Node Feature Discovery\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The key lines (`key=value`), sorted bytewise, each raw feature behind `# +no-label`;
/// limited so that the whole file stays under NFD's size limit (raw features go
/// first, then per-device labels, from the end).
pub fn render_body(features: &[Feature], prefix: &Prefix) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    // (the `key=value` line, the text written for it, tier)
    let mut lines: Vec<(String, String, Tier)> = Vec::with_capacity(features.len());
    let mut seen = std::collections::HashSet::new();
    for f in features {
        let key = format!("{prefix}{}", f.name);
        if !seen.insert(key.clone()) {
            warnings.push(format!("left out a second value for {key:?}"));
            continue;
        }
        let valid = label::is_qualified_name(&key)
            && if f.is_label() {
                label::is_label_value(&f.value)
            } else {
                is_raw_value(&f.value)
            };
        if !valid {
            warnings.push(format!("left out invalid feature {key:?}={:?}", f.value));
            continue;
        }
        let line = format!("{key}={}", f.value);
        let text = if f.is_label() {
            format!("{line}\n")
        } else {
            format!("# +no-label\n{line}\n")
        };
        lines.push((line, text, f.tier));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));

    let budget = NFD_MAX_FILE_BYTES - HEADER_RESERVE;
    let mut total: usize = lines.iter().map(|l| l.1.len()).sum();
    if total > budget {
        let mut dropped = 0;
        for tier in [Tier::Raw, Tier::PerDevice] {
            for l in lines.iter_mut().rev() {
                if total <= budget {
                    break;
                }
                if l.2 == tier && !l.1.is_empty() {
                    total -= l.1.len();
                    l.1.clear();
                    dropped += 1;
                }
            }
        }
        warnings.push(format!(
            "the feature file would exceed NFD's {NFD_MAX_FILE_BYTES}-byte limit; left out {dropped} per-device lines"
        ));
    }
    let body = lines.into_iter().map(|l| l.1).collect();
    (body, warnings)
}

/// A whole feature file.
pub fn render(body: &str, expires: Option<SystemTime>) -> String {
    let mut s = header();
    if let Some(t) = expires {
        s.push_str(&format!(
            "# +expiry-time={}\n",
            humantime::format_rfc3339_seconds(t)
        ));
    }
    s.push_str(body);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Status;
    use std::time::{Duration, UNIX_EPOCH};

    fn one_tpu() -> Inventory {
        crate::inventory::testing::one_ready_tpu()
    }

    fn body(inv: &Inventory) -> String {
        let (f, w) = compose(inv);
        assert!(w.is_empty(), "{w:?}");
        render_body(&f, &Prefix::default()).0
    }

    #[test]
    fn no_coral_no_driver_gives_no_lines() {
        assert_eq!(body(&Inventory::default()), "");
        let driver_only = Inventory {
            driver_loaded: true,
            ..Inventory::default()
        };
        let b = body(&driver_only);
        assert!(b.contains("feature.node.kubernetes.io/coral-tpu.present=false\n"));
        assert!(b.contains("feature.node.kubernetes.io/coral-tpu.driver.loaded=true\n"));
    }

    #[test]
    fn one_ready_tpu() {
        let b = body(&one_tpu());
        for line in [
            "feature.node.kubernetes.io/coral-tpu.apex_0.ready=true\n",
            "feature.node.kubernetes.io/coral-tpu.ready.count=1\n",
            "feature.node.kubernetes.io/coral-tpu.driver.version=1.2\n",
            "# +no-label\nfeature.node.kubernetes.io/coral-tpu.pcie.0.address=0000:03:00.0\n",
            "# +no-label\nfeature.node.kubernetes.io/coral-tpu.apex_0.dev=/dev/apex_0\n",
        ] {
            assert!(b.contains(line), "missing {line:?} in\n{b}");
        }
        let keys: Vec<&str> = b.lines().filter(|l| !l.starts_with('#')).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // Bytewise on the whole line: `ready.count=` sorts before `ready=`.
        let pos = |k: &str| keys.iter().position(|l| l.contains(k)).unwrap();
        assert!(pos("coral-tpu.ready.count=") < pos("coral-tpu.ready=true"));
    }

    #[test]
    fn lamed_device_is_not_ready() {
        let mut inv = one_tpu();
        inv.apex[0].status = Attr::Value(Status::Lamed);
        let b = body(&inv);
        assert!(b.contains("coral-tpu.apex_0.ready=false\n"));
        assert!(b.contains("coral-tpu.ready=false\n"));
        assert!(b.contains("coral-tpu.pcie.0.state=status-lamed\n"));
    }

    #[test]
    fn odd_driver_version_is_left_out_with_a_warning() {
        let mut inv = one_tpu();
        inv.driver_version = Attr::Value("1.2+git".into());
        let (f, w) = compose(&inv);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(!f.iter().any(|f| f.name == "coral-tpu.driver.version"));
    }

    #[test]
    fn expiry_directive_comes_before_keys() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let file = render("a=b\n", Some(t));
        let lines: Vec<&str> = file.lines().collect();
        assert!(lines[0].starts_with("# coral-nfd "));
        assert!(!lines[0].starts_with("# +"));
        assert_eq!(lines[1], "# +expiry-time=2027-01-15T08:00:00Z");
        assert_eq!(lines[2], "a=b");
    }

    #[test]
    fn huge_inventories_stay_under_the_limit() {
        let mut inv = one_tpu();
        let template = inv.apex[0].clone();
        for n in 1..3000 {
            let mut a = template.clone();
            a.name = format!("apex_{n}");
            a.index = n;
            inv.apex.push(a);
        }
        let (f, _) = compose(&inv);
        let (b, w) = render_body(&f, &Prefix::default());
        assert!(b.len() + HEADER_RESERVE <= NFD_MAX_FILE_BYTES);
        assert_eq!(w.len(), 1);
        // Summary labels always survive.
        assert!(b.contains("coral-tpu.ready.count=1\n"));
        assert!(b.contains("coral-tpu.apex_0.ready=true\n"));
    }
}

//! Compose: from an [`Inventory`] to NFD features (name, value, tier), with no prefix
//! and no text layout yet: [`crate::render`] turns them into a file. Pure functions, no
//! filesystem.

use crate::label;
use crate::model::{Attr, Inventory, Warnings};
use crate::state::{self, PcieState, UsbState};

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
    pub(crate) fn label(name: impl Into<String>, value: impl ToString, tier: Tier) -> Self {
        Feature {
            name: name.into(),
            value: value.to_string(),
            tier,
        }
    }

    pub(crate) fn raw(name: impl Into<String>, value: impl Into<String>) -> Self {
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
pub fn compose(inv: &Inventory) -> (Vec<Feature>, Warnings) {
    let mut out = Vec::new();
    let mut warnings = Warnings::default();
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

    // Frigate's `pci:N` as libedgetpu numbers them: what its overlays must require.
    for (n, slot) in state::libedgetpu_pci(inv).iter().enumerate() {
        out.push(Feature::label(
            format!("coral-tpu.libedgetpu.pci.{n}.ready"),
            slot.ready,
            Tier::PerDevice,
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn one_tpu() -> Inventory {
        crate::model::testing::one_ready_tpu()
    }

    /// name=value of every feature, sorted, for plain comparisons.
    fn lines(inv: &Inventory) -> Vec<String> {
        let (f, w) = compose(inv);
        assert!(w.is_empty(), "{w:?}");
        let mut v: Vec<String> = f
            .iter()
            .map(|f| format!("{}={}", f.name, f.value))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn no_coral_no_driver_gives_no_lines() {
        assert!(lines(&Inventory::default()).is_empty());
        let driver_only = Inventory {
            driver_loaded: true,
            ..Inventory::default()
        };
        let l = lines(&driver_only);
        assert!(l.contains(&"coral-tpu.present=false".to_string()));
        assert!(l.contains(&"coral-tpu.driver.loaded=true".to_string()));
    }

    #[test]
    fn one_ready_tpu() {
        let (f, _) = compose(&one_tpu());
        let get = |name: &str| f.iter().find(|f| f.name == name).unwrap();
        assert_eq!(get("coral-tpu.apex_0.ready").value, "true");
        assert_eq!(get("coral-tpu.apex_0.ready").tier, Tier::PerDevice);
        assert_eq!(get("coral-tpu.ready.count").value, "1");
        assert_eq!(get("coral-tpu.ready.count").tier, Tier::Summary);
        assert_eq!(get("coral-tpu.driver.version").value, "1.2");
        assert_eq!(get("coral-tpu.pcie.0.address").value, "0000:03:00.0");
        assert!(!get("coral-tpu.pcie.0.address").is_label());
        assert_eq!(get("coral-tpu.apex_0.dev").value, "/dev/apex_0");
    }

    #[test]
    fn lamed_device_is_not_ready() {
        let mut inv = one_tpu();
        inv.apex[0].status = Attr::Value(Status::Lamed);
        let l = lines(&inv);
        for want in [
            "coral-tpu.apex_0.ready=false",
            "coral-tpu.ready=false",
            "coral-tpu.pcie.0.state=status-lamed",
        ] {
            assert!(l.contains(&want.to_string()), "{want} not in {l:?}");
        }
    }

    #[test]
    fn odd_driver_version_is_left_out_with_a_warning() {
        let mut inv = one_tpu();
        inv.driver_version = Attr::Value("1.2+git".into());
        let (f, w) = compose(&inv);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(!f.iter().any(|f| f.name == "coral-tpu.driver.version"));
    }
}

//! Render: features to the text of an NFD feature file. Keys get their prefix, lines
//! are sorted bytewise, raw features go behind `# +no-label`, and the whole stays under
//! NFD's size limit (what goes first when it would not is decided here, by tier). The
//! header and the expiry directive are added last. Pure functions, no filesystem.

use crate::features::{Feature, Tier, is_raw_value};
use crate::label::{self, Prefix};
use crate::model::Warnings;
use std::time::SystemTime;

/// nfd-worker skips a feature file larger than this whole (NFD `source/local/local.go`).
pub const NFD_MAX_FILE_BYTES: usize = 65536;

/// Room kept for the header and the expiry directive when the body is size-limited.
const HEADER_RESERVE: usize = 256;

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
pub fn render_body(features: &[Feature], prefix: &Prefix) -> (String, Warnings) {
    let mut warnings = Warnings::default();
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
    use crate::features::compose;
    use crate::model::Inventory;
    use std::time::{Duration, UNIX_EPOCH};

    fn one_tpu() -> Inventory {
        crate::model::testing::one_ready_tpu()
    }

    fn body(inv: &Inventory) -> String {
        let (f, w) = compose(inv);
        assert!(w.is_empty(), "{w:?}");
        render_body(&f, &Prefix::default()).0
    }

    #[test]
    fn no_features_no_lines() {
        assert_eq!(body(&Inventory::default()), "");
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
    fn invalid_and_duplicate_features_are_left_out() {
        let f = vec![
            Feature::label("a", "1", Tier::Summary),
            Feature::label("a", "2", Tier::Summary),
            Feature::label("b", "not valid", Tier::Summary),
            Feature::raw("c", "has space"),
        ];
        let (b, w) = render_body(&f, &Prefix::default());
        assert_eq!(b, "feature.node.kubernetes.io/a=1\n");
        assert_eq!(w.len(), 3, "{w:?}");
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

//! What changed between two versions of the feature file's body, for the daemon's log:
//! one phrase per label that changed (`coral-tpu.apex_0.ready true -> false
//! (status-lamed)`). Pure: two texts in, phrases out.

use std::collections::BTreeMap;

/// Labels and raw features of a body, without the prefix.
struct Parsed {
    labels: BTreeMap<String, String>,
    raw: BTreeMap<String, String>,
}

fn parse(body: &str) -> Parsed {
    let mut p = Parsed {
        labels: BTreeMap::new(),
        raw: BTreeMap::new(),
    };
    let mut no_label = false;
    for line in body.lines() {
        if line == "# +no-label" {
            no_label = true;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let name = key.rsplit_once('/').map_or(key, |(_, n)| n).to_string();
            let map = if no_label { &mut p.raw } else { &mut p.labels };
            map.insert(name, value.to_string());
        }
        no_label = false;
    }
    p
}

/// The state code of the device behind a per-device label, from the raw features: for
/// `coral-tpu.apex_N.ready`, the `pcie.M.state` whose `pcie.M.apex` is `apex_N`.
fn reason(p: &Parsed, label: &str) -> Option<String> {
    let apex = label.strip_prefix("coral-tpu.")?.strip_suffix(".ready")?;
    let (slot, _) = p
        .raw
        .iter()
        .find(|(k, v)| k.ends_with(".apex") && v.as_str() == apex)?;
    let state = slot.strip_suffix(".apex")?.to_string() + ".state";
    p.raw.get(&state).cloned()
}

/// One phrase per key of `old` and `new` whose value differs, in key order.
fn differences(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    why: impl Fn(&str, &str) -> Option<String>,
) -> Vec<(String, String)> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let show = |v: Option<&String>| v.map_or("(none)".to_string(), Clone::clone);
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let (a, b) = (old.get(k), new.get(k));
            let mut phrase = format!("{k} {} -> {}", show(a), show(b));
            if let Some(reason) = b.and_then(|b| why(k, b)) {
                phrase.push_str(&format!(" ({reason})"));
            }
            (k.clone(), phrase)
        })
        .collect()
}

/// One phrase per label added, removed or changed, in key order.
pub fn label_changes(old: &str, new: &str) -> Vec<String> {
    let (o, n) = (parse(old), parse(new));
    differences(&o.labels, &n.labels, |k, v| {
        (v == "false").then(|| reason(&n, k)).flatten()
    })
    .into_iter()
    .map(|(_, p)| p)
    .collect()
}

/// [`label_changes`] and the raw features (`# +no-label`: a USB stick's `mode` or
/// node, a TPU's `state`) that changed, in one key order and one format.
pub fn all_changes(old: &str, new: &str) -> Vec<String> {
    let (o, n) = (parse(old), parse(new));
    let mut all = differences(&o.labels, &n.labels, |k, v| {
        (v == "false").then(|| reason(&n, k)).flatten()
    });
    all.extend(differences(&o.raw, &n.raw, |_, _| None));
    all.sort();
    all.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &str = "p/coral-tpu.apex_0.ready=true\n# +no-label\np/coral-tpu.pcie.0.apex=apex_0\n\
        # +no-label\np/coral-tpu.pcie.0.state=ready\np/coral-tpu.ready.count=1\n";
    const LAMED: &str = "p/coral-tpu.apex_0.ready=false\n# +no-label\np/coral-tpu.pcie.0.apex=apex_0\n\
        # +no-label\np/coral-tpu.pcie.0.state=status-lamed\np/coral-tpu.ready.count=0\n";

    #[test]
    fn says_what_changed_and_why() {
        assert_eq!(
            label_changes(READY, LAMED),
            [
                "coral-tpu.apex_0.ready true -> false (status-lamed)",
                "coral-tpu.ready.count 1 -> 0"
            ]
        );
        assert!(label_changes(READY, READY).is_empty());
        assert_eq!(
            label_changes("", "p/coral-tpu.present=true\n"),
            ["coral-tpu.present (none) -> true"]
        );
    }

    #[test]
    fn raw_features_are_changes_too() {
        let dfu = "# +no-label\np/coral-tpu.usb.0.dev=/dev/bus/usb/002/003\n\
            # +no-label\np/coral-tpu.usb.0.mode=dfu\np/coral-tpu.usb.ready.count=1\n";
        let app = "# +no-label\np/coral-tpu.usb.0.dev=/dev/bus/usb/002/004\n\
            # +no-label\np/coral-tpu.usb.0.mode=app\np/coral-tpu.usb.ready.count=1\n";
        assert!(label_changes(dfu, app).is_empty());
        assert_eq!(
            all_changes(dfu, app),
            [
                "coral-tpu.usb.0.dev /dev/bus/usb/002/003 -> /dev/bus/usb/002/004",
                "coral-tpu.usb.0.mode dfu -> app"
            ]
        );
        assert_eq!(
            all_changes(READY, LAMED),
            [
                "coral-tpu.apex_0.ready true -> false (status-lamed)",
                "coral-tpu.pcie.0.state ready -> status-lamed",
                "coral-tpu.ready.count 1 -> 0"
            ]
        );
    }
}

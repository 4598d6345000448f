//! Kubernetes label syntax, as nfd-worker and nfd-master enforce it (NFD
//! `pkg/apis/nfd/validate/validate.go`; apimachinery's `IsQualifiedName` and
//! `IsValidLabelValue`). A line that breaks these rules would be dropped by NFD, so
//! coral-nfd never writes one.

use std::fmt;

/// Name part of a key and a label value: at most 63 characters of `[A-Za-z0-9_.-]`,
/// beginning and ending with an alphanumeric character.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 DNS subdomain of at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label value: empty, or a name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// A qualified name: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.rsplit_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

/// The namespace in front of every key, ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix("feature.node.kubernetes.io/".into())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_within(domain: &str, parent: &str) -> bool {
    domain == parent
        || domain
            .strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
}

impl std::str::FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some(domain) = s.strip_suffix('/') else {
            return Err(format!("{s:?} must end with '/'"));
        };
        if !is_dns_subdomain(domain) {
            return Err(format!(
                "{domain:?} is not a lowercase DNS subdomain (a-z, 0-9, '-', '.'; at most 253 characters)"
            ));
        }
        // nfd-master denies kubernetes.io and *.kubernetes.io except these two.
        let allowed = ["feature.node.kubernetes.io", "profile.node.kubernetes.io"];
        if is_within(domain, "kubernetes.io") && !allowed.iter().any(|a| is_within(domain, a)) {
            return Err(format!(
                "NFD denies labels in {domain:?}; under kubernetes.io only \
                 feature.node.kubernetes.io and profile.node.kubernetes.io are allowed"
            ));
        }
        Ok(Prefix(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in [
            "feature.node.kubernetes.io/",
            "profile.node.kubernetes.io/",
            "sub.feature.node.kubernetes.io/",
            "example.com/",
            "coral.ai/",
            "notkubernetes.io/",
        ] {
            assert!(ok.parse::<Prefix>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/",
            "feature.node.kubernetes.io",
            "kubernetes.io/",
            "node.kubernetes.io/",
            "x.k8s.io.kubernetes.io/",
            "Example.com/",
            "example..com/",
            "-example.com/",
            "example.com//",
            "exa mple.com/",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_values() {
        assert!(is_qualified_name(
            "feature.node.kubernetes.io/coral-tpu.apex_0.ready"
        ));
        assert!(!is_qualified_name(
            "feature.node.kubernetes.io/coral-tpu.apex_0.ready-"
        ));
        assert!(!is_qualified_name(&format!("a.b/{}", "x".repeat(64))));
        assert!(is_label_value("1.2"));
        assert!(is_label_value(""));
        assert!(!is_label_value("1.2 beta"));
        assert!(!is_label_value("v1.2+"));
        assert!(!is_label_value(&"1".repeat(64)));
    }
}

//! `coral-nfd rules`: the NodeFeatureRule objects for a label prefix. The files in
//! `nfd-config/` are this module's output for the default prefix (a test compares them
//! byte for byte); another `--label-prefix` needs rules that match its keys, or NFD
//! would see a healthy node as one where coral-nfd is not reporting.

use crate::label::Prefix;

/// `nfd-config/nodefeaturerule.yaml`, with `{P}` for the prefix.
const RULES: &str = r#"# NodeFeatureRule for Coral Edge TPUs, for node-feature-discovery v0.16 or later (NFD
# applies NodeFeatureRule objects by default since v0.16).
#
#   kubectl apply -f nfd-config/nodefeaturerule.yaml
#
# This file is the output of `coral-nfd rules`; with another --label-prefix, generate
# the rules for it: `coral-nfd rules --label-prefix example.com/ | kubectl apply -f -`.
#
# The first two rules need only NFD's own pci and usb sources: they label where the
# hardware is, even before coral-nfd runs (has-pcie-tpu, the label of the write-up
# this project started from, kept). The others combine NFD's features with what coral-nfd writes to features.d
# (`local.feature`, keys exactly as written, i.e. with the label prefix).
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: coral-tpu
spec:
  rules:
    # (a) A Coral PCIe card is on the bus (working or not).
    - name: coral-pcie-hardware
      labels:
        {P}has-pcie-tpu: "true"
      matchFeatures:
        - feature: pci.device
          matchExpressions:
            vendor: {op: In, value: ["1ac1"]}
            device: {op: In, value: ["089a"]}

    # (b) A Coral USB Accelerator is plugged in, before (1a6e:089a) or after
    # (18d1:9302) the runtime loaded its firmware. Two alternatives, so that vendor
    # and device are matched on the same instance and no mixed pair can match.
    - name: coral-usb-hardware
      labels:
        {P}has-usb-tpu: "true"
      matchAny:
        - matchFeatures:
            - feature: usb.device
              matchExpressions:
                vendor: {op: In, value: ["1a6e"]}
                device: {op: In, value: ["089a"]}
        - matchFeatures:
            - feature: usb.device
              matchExpressions:
                vendor: {op: In, value: ["18d1"]}
                device: {op: In, value: ["9302"]}

    # (c) The card is there but coral-nfd says none of the PCIe TPUs works: driver
    # missing, probe failed, node missing, LAMED... `coral-nfd doctor` says which.
    # `kubectl get nodes -l {P}coral-tpu.needs-attention`
    - name: coral-pcie-needs-attention
      labels:
        {P}coral-tpu.needs-attention: "true"
      matchFeatures:
        - feature: pci.device
          matchExpressions:
            vendor: {op: In, value: ["1ac1"]}
            device: {op: In, value: ["089a"]}
        - feature: local.feature
          matchExpressions:
            {P}coral-tpu.pcie.ready.count: {op: In, value: ["0"]}

    # (c) The hardware is there but coral-nfd is not reporting (not deployed, or gone
    # long enough for its expiry to drop its features).
    - name: coral-nfd-not-reporting
      labels:
        {P}coral-nfd.not-reporting: "true"
      matchAny:
        - matchFeatures:
            - feature: pci.device
              matchExpressions:
                vendor: {op: In, value: ["1ac1"]}
                device: {op: In, value: ["089a"]}
            - feature: local.feature
              matchExpressions:
                {P}coral-tpu.present: {op: DoesNotExist}
        - matchFeatures:
            - feature: usb.device
              matchExpressions:
                vendor: {op: In, value: ["1a6e"]}
                device: {op: In, value: ["089a"]}
            - feature: local.feature
              matchExpressions:
                {P}coral-tpu.present: {op: DoesNotExist}
        - matchFeatures:
            - feature: usb.device
              matchExpressions:
                vendor: {op: In, value: ["18d1"]}
                device: {op: In, value: ["9302"]}
            - feature: local.feature
              matchExpressions:
                {P}coral-tpu.present: {op: DoesNotExist}

    # (c) The old in-kernel staging driver (apex 1.0) is loaded: the current Edge TPU
    # runtime fails with it, so coral-nfd calls its TPUs not ready; this says why.
    - name: coral-staging-driver
      labels:
        {P}coral-tpu.driver.outdated: "true"
      matchFeatures:
        - feature: kernel.loadedmodule
          matchExpressions:
            apex: {op: Exists}
        - feature: local.feature
          matchExpressions:
            {P}coral-tpu.driver.version: {op: In, value: ["1.0"]}
"#;

/// `nfd-config/extended-resources.yaml`, with `{P}` for the prefix.
const EXTENDED_RESOURCES: &str = r#"# Optional: advertise the number of READY Coral TPUs as the node extended resource
# coral.ai/ready-tpus: a count to see in `kubectl describe node` or use in quotas.
#
#   kubectl apply -f nfd-config/extended-resources.yaml
#
# This file is the output of `coral-nfd rules --extended-resources` (add
# --label-prefix P for another prefix).
#
# It is not a device, and not coral.ai/tpu: that name belongs to coral-nfd's device
# plugin (deploy/coral-nfd-device-plugin), which hands a pod an actual TPU; two sources
# of one node capacity would overwrite each other. Do not request coral.ai/ready-tpus in
# a pod: nothing gives it a device. Needs node-feature-discovery v0.19.x
# (extendedResources with a value taken from a feature: "@local.feature.<key>").
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: coral-tpu-extended-resources
spec:
  rules:
    - name: coral-tpu-count
      extendedResources:
        coral.ai/ready-tpus: "@local.feature.{P}coral-tpu.ready.count"
      matchFeatures:
        - feature: local.feature
          matchExpressions:
            {P}coral-tpu.ready.count: {op: Gt, value: ["0"]}
"#;

/// The rules (or, with `extended_resources`, the extended-resource rule) for `prefix`.
pub fn node_feature_rules(prefix: &Prefix, extended_resources: bool) -> String {
    let template = if extended_resources {
        EXTENDED_RESOURCES
    } else {
        RULES
    };
    template.replace("{P}", prefix.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_takes_the_prefix() {
        let p: Prefix = "example.com/".parse().unwrap();
        for er in [false, true] {
            let text = node_feature_rules(&p, er);
            assert!(!text.contains("{P}"));
            assert!(!text.contains("feature.node.kubernetes.io/"), "{text}");
            assert!(text.contains("example.com/coral-tpu."));
        }
    }
}

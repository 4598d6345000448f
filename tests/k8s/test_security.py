"""Every rendered manifest through a Kubernetes policy scanner (checkov). What fails must
be in the allowlist below, each entry with its reason; an entry that no longer fails is
an error too, so the list stays true. docs/security.md explains every exception."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml

from conftest import FRIGATE_WITH, REPO, find, objects, render

# (kustomization, "Kind.name", check) -> why it is accepted
CORAL_NFD = {
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_23"):
        "root: the host's features.d is root-owned 0755; no capability is kept",
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_40"):
        "uid 0 for the same reason (a high uid cannot create the file)",
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_8"):
        "no liveness endpoint: a scratch image with one binary; a dead labeler is "
        "restarted by the kubelet and its labels expire (3 x interval)",
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_9"):
        "no readiness: the pod serves nothing",
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_43"):
        "the image digest is the user's to pin (kustomize images: digest)",
    ("coral-nfd", "DaemonSet.coral-nfd", "CKV_K8S_15"):
        "IfNotPresent: release tags are never moved, and an image imported into the node "
        "without a registry (k3s ctr images import) must be used as it is",
}

# Frigate itself, in every overlay.
FRIGATE_COMMON = {
    "CKV_K8S_11": "no CPU limit on purpose: CFS throttling stalls video decoding; memory is limited",
    "CKV_K8S_43": "pinned by tag (0.17.2, or 0.16.4 with the component); pin the digest in your overlay",
    "CKV_K8S_15": "IfNotPresent: a ~1 GB image on edge nodes must not depend on the registry to restart",
    "CKV_K8S_23": "the Frigate image runs as root (s6-overlay)",
    "CKV_K8S_40": "the Frigate image runs as root (s6-overlay)",
    "CKV_K8S_22": "Frigate writes inside its image (nginx config, s6 state in /run)",
    "CKV_K8S_37": "s6-overlay needs default capabilities (chown, setuid, setgid...); NET_RAW is dropped",
}

# What only the privileged overlays (as the seed) add.
PRIVILEGED = {
    "CKV_K8S_16": "privileged: every host device node (the TPUs libedgetpu numbers, /dev/bus/usb); "
                  "a device node passes the device cgroup of no other container",
    "CKV_K8S_20": "privileged implies privilege escalation",
}

# The third-party device plugin (its own requirements, not Frigate's), unprivileged.
DEVICE_PLUGIN_DS = {
    "CKV_K8S_23": "root, the owner of the kubelet's device-plugins directory (no capability)",
    "CKV_K8S_40": "root, the owner of the kubelet's device-plugins directory (no capability)",
    "CKV_K8S_43": "pinned by tag (0.1.0); its digest could not be looked up here: pin the one you reviewed",
    "CKV_K8S_15": "IfNotPresent on a pinned tag: a restart does not depend on the registry",
}

# Checks reported on the pod rather than the DaemonSet.
DEVICE_PLUGIN_POD = {
    "CKV2_K8S_6": "it lives in kube-system; its only port is metrics",
}


# coral-nfd's own device plugin, next to the labeler (the same reasons, same image).
CORAL_NFD_DEVICE_PLUGIN = {
    "CKV_K8S_23": "root, the owner of the kubelet's device-plugins directory (no capability)",
    "CKV_K8S_40": "root, the owner of the kubelet's device-plugins directory (no capability)",
    "CKV_K8S_43": "the image digest is the user's to pin (kustomize images: digest)",
    "CKV_K8S_8": "no network endpoint to probe (a scratch image, a unix socket for the kubelet); "
                 "it re-registers on its own, and a dead process is restarted by the kubelet",
    "CKV_K8S_9": "no readiness: it serves the kubelet only, over its socket",
    "CKV_K8S_15": "IfNotPresent, as the labeler's (the same image)",
}


WITH = FRIGATE_WITH


def allowlist() -> dict:
    out = dict(CORAL_NFD)
    for (name, obj, check), why in CORAL_NFD.items():
        out[("coral-nfd-device-plugin", obj, check)] = why
        out[("monitoring", obj, check)] = why
    for check, why in CORAL_NFD_DEVICE_PLUGIN.items():
        out[("coral-nfd-device-plugin", "DaemonSet.coral-nfd-device-plugin", check)] = why
        out[("monitoring", "DaemonSet.coral-nfd-device-plugin", check)] = why
    frigate = ("pcie", "pcie-dual", "usb", "device-plugin", "coral-device-plugin", *WITH)
    for overlay in frigate:
        for check, why in FRIGATE_COMMON.items():
            out[(overlay, "Deployment.frigate", check)] = why
    for overlay in ("pcie", "pcie-dual", "usb", "pcie+frigate-0.16"):
        for check, why in PRIVILEGED.items():
            out[(overlay, "Deployment.frigate", check)] = why
    for check, why in DEVICE_PLUGIN_DS.items():
        out[("device-plugin", "DaemonSet.generic-device-plugin", check)] = why
    for check, why in DEVICE_PLUGIN_POD.items():
        out[("device-plugin", "Pod.generic-device-plugin", check)] = why
    return out


def checkov_failures(name: str) -> set[tuple[str, str, str]]:
    exe = os.path.join(os.path.dirname(sys.executable), "checkov")
    assert os.path.exists(exe), "checkov is not installed; run scripts/test.sh"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(objects(name), f)
        f.flush()
        p = subprocess.run([exe, "-f", f.name, "--framework", "kubernetes", "--quiet", "--compact",
                            "-o", "json"], capture_output=True, text=True)
    reports = json.loads(p.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = set()
    for r in reports:
        for c in r["results"]["failed_checks"]:
            kind, _namespace, obj = c["resource"].split(".", 2)
            obj = obj.split(".")[0]
            failed.add((name, f"{kind}.{obj}", c["check_id"]))
    return failed


@pytest.mark.parametrize("name", ["coral-nfd", "coral-nfd-device-plugin", "monitoring", "device-plugin",
                                  "coral-device-plugin", "pcie", "pcie-dual", "usb", *WITH])
def test_policy_scan_finds_nothing_unexplained(name):
    allowed = {k for k in allowlist() if k[0] == name}
    failed = checkov_failures(name)
    unexplained = failed - allowed
    assert not unexplained, f"new findings: {sorted(unexplained)}"
    stale = allowed - failed
    assert not stale, f"allowlisted but no longer failing (remove them): {sorted(stale)}"


def test_the_docs_explain_every_exception():
    with open(os.path.join(REPO, "docs/security.md")) as fh:
        doc = fh.read()
    checks = set(PRIVILEGED) | set(FRIGATE_COMMON) | {k[2] for k in CORAL_NFD} | \
        set(CORAL_NFD_DEVICE_PLUGIN) | set(DEVICE_PLUGIN_DS) | set(DEVICE_PLUGIN_POD)
    for check in sorted(checks):
        assert check in doc, f"{check} is not explained in docs/security.md"


def test_coral_nfd_container_needs_nothing():
    ds = find(render("coral-nfd"), "DaemonSet", "coral-nfd")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False, "no service account token"
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, "no capabilities"
    assert "add" not in c["securityContext"]["capabilities"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True, "no writable root filesystem"
    assert c["securityContext"]["privileged"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    # Only the three host paths it needs, two of them read-only.
    host = {v["hostPath"]["path"].rstrip("/") for v in pod["volumes"] if "hostPath" in v}
    assert host == {"/sys", "/dev", "/etc/kubernetes/node-feature-discovery/features.d"}
    policy = find(render("coral-nfd"), "NetworkPolicy", "coral-nfd")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"], "deny all"

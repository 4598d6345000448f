"""The device-plugin manifests: coral-nfd's own plugin DaemonSet, the Frigate overlay
that uses it, the third-party plugin overlay as fixed, and the Pod Security label of
every Frigate overlay checked against the pods it renders."""

from __future__ import annotations

import yaml

import pss
from conftest import FRIGATE_WITH, find, objects, render

FRIGATE_OVERLAYS = ["pcie", "pcie-dual", "usb", "device-plugin", "coral-device-plugin", *FRIGATE_WITH]
PRIVILEGED_OVERLAYS = {"pcie", "pcie-dual", "usb", "pcie+frigate-0.16"}


def pods(objs):
    for o in objs:
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            yield o, o["spec"]["template"]["spec"]


def test_every_frigate_namespace_admits_its_pods_at_the_strictest_level():
    for overlay in FRIGATE_OVERLAYS:
        objs = objects(overlay)
        ns = find(objs, "Namespace", "frigate")
        labels = ns["metadata"]["labels"]
        enforce = labels["pod-security.kubernetes.io/enforce"]
        assert labels["pod-security.kubernetes.io/warn"] == enforce
        frigate = [spec for o, spec in pods(objs) if o["metadata"].get("namespace") == "frigate"]
        assert frigate, overlay
        levels = {pss.strictest_level(spec) for spec in frigate}
        # The label admits every pod, and is no looser than the pods need.
        worst = max(levels, key=pss.ORDER.index)
        assert enforce == worst, (overlay, enforce, levels)
        assert (enforce == "privileged") == (overlay in PRIVILEGED_OVERLAYS), overlay
        # Baseline at most for the unprivileged ones (Frigate runs as root: not restricted).
        if overlay not in PRIVILEGED_OVERLAYS:
            assert enforce == "baseline", overlay


def test_coral_nfd_pods_need_host_mounts_and_root_and_nothing_else():
    """The coral-nfd namespace enforces privileged (hostPath needs it) and warns at
    baseline, as docs/security.md says; its pods break restricted only by their hostPath
    volumes and by running as root."""
    for kustomization in ("coral-nfd", "coral-nfd-device-plugin"):
        objs = render(kustomization)
        labels = find(objs, "Namespace", "coral-nfd")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
        assert labels["pod-security.kubernetes.io/warn"] == "baseline"
        for o, spec in pods(objs):
            allowed = {f"{c['name']}: {r}" for c in spec["containers"]
                       for r in ("runAsNonRoot not true", "runAsUser 0")}
            for v in spec["volumes"]:
                if "hostPath" in v:
                    allowed |= {f"hostPath volume {v['name']}", f"volume {v['name']}: ['hostPath']"}
            extra = set(pss.restricted_violations(spec)) - allowed
            assert not extra, (kustomization, o["metadata"]["name"], extra)


def test_the_pss_model_catches_what_it_exists_for():
    spec = {"containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    assert pss.strictest_level(spec) == "privileged"
    spec = {"containers": [{"name": "c"}], "volumes": [{"name": "d", "hostPath": {"path": "/dev"}}]}
    assert pss.strictest_level(spec) == "privileged"
    spec = {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["PERFMON"]}}}]}
    assert pss.strictest_level(spec) == "privileged"
    assert pss.strictest_level({"containers": [{"name": "c"}]}) == "baseline"


def test_coral_device_plugin_daemonset_has_least_privilege():
    objs = render("coral-nfd-device-plugin")
    ds = find(objs, "DaemonSet", "coral-nfd-device-plugin")
    spec = ds["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    (c,) = spec["containers"]
    assert c["args"][0] == "device-plugin"
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {v["hostPath"]["path"] for v in vols.values()} == {"/sys", "/dev", "/var/lib/kubelet/device-plugins"}
    assert mounts["/host/sys"]["readOnly"] and mounts["/host/dev"]["readOnly"]
    assert not mounts["/var/lib/kubelet/device-plugins"].get("readOnly")
    assert c["args"][c["args"].index("--kubelet-dir") + 1] == "/var/lib/kubelet/device-plugins"
    # The labeler comes along, and the deny-all network policy covers both.
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "DaemonSet"} == {
        "coral-nfd", "coral-nfd-device-plugin"}
    np = find(objs, "NetworkPolicy", "coral-nfd")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_frigate_with_coral_nfds_device_plugin():
    objs = render("coral-device-plugin")
    spec = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "frigate")
    assert c["resources"]["limits"]["coral.ai/tpu"] == "1"
    assert c["securityContext"]["privileged"] is False
    assert not any("hostPath" in v for v in spec["volumes"])
    cfg = yaml.safe_load(find(objs, "ConfigMap", "frigate-config")["data"]["config.yml"])
    assert [d["device"] for d in cfg["detectors"].values()] == ["pci:0"]


def test_third_party_plugin_overlay_as_fixed():
    objs = render("device-plugin")
    ds = find(objs, "DaemonSet", "generic-device-plugin")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "docker.io/squat/generic-device-plugin:0.1.0"
    assert not any("coral-usb" in a for a in c["args"]), "the USB group is gone"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["args"][c["args"].index("--listen") + 1] == ":8080"
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    dev = next(m for m in c["volumeMounts"] if m["mountPath"] == "/dev")
    assert dev["readOnly"] is True

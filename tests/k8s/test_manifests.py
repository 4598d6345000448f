"""The NFD rules and Kubernetes manifests, rendered and cross-checked offline."""

from __future__ import annotations

import os
import subprocess

import copy

import kubernetes_validate
import pytest
import yaml

import nfd
import promop
from conftest import (FIXTURES, FRIGATE_WITH, KUSTOMIZATIONS, REPO, binary, coral_nfd, find, objects,
                      render, render_with, scenarios, static_binary)

K8S_VERSION = "1.37.0"
P = "feature.node.kubernetes.io/"


# --- rendering and schemas ------------------------------------------------------------

def validate(o: dict):
    """Strictly (unknown fields are errors): against the Kubernetes OpenAPI schemas, or
    for the Prometheus operator's custom resources, against models of their CRDs."""
    if o["kind"] in promop.MODELS:
        promop.MODELS[o["kind"]].model_validate(o)
    else:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renders_and_validates_strictly(name):
    objs = render(name)
    assert objs, f"{name} rendered nothing"
    for o in objs:
        validate(o)


@pytest.mark.parametrize("name", sorted(FRIGATE_WITH))
def test_frigate_components_render_and_validate(name):
    for o in objects(name):
        validate(o)


def test_a_misspelt_field_in_a_custom_resource_is_caught():
    pm = copy.deepcopy(find(render("monitoring"), "PodMonitor", "coral-nfd"))
    pm["spec"]["podMetricsEndpoint"] = pm["spec"].pop("podMetricsEndpoints")
    with pytest.raises(Exception):
        validate(pm)


def load_yaml(path):
    with open(os.path.join(REPO, path)) as fh:
        return yaml.safe_load(fh)


def rules_of_cr():
    return nfd.NodeFeatureRule.model_validate(load_yaml("nfd-config/nodefeaturerule.yaml")).spec.rules


def worker_conf():
    return nfd.WorkerConfig.model_validate(load_yaml("nfd-config/worker-config/nfd-worker.conf"))


def er_rules():
    return nfd.NodeFeatureRule.model_validate(load_yaml("nfd-config/extended-resources.yaml")).spec.rules


def test_nfd_objects_parse_strictly_with_valid_labels():
    for rule in rules_of_cr() + er_rules():
        nfd.check_rule_outputs(rule)
    conf = worker_conf()
    # The original write-up's configuration, brought up to date: NFD's default classes kept, 0880 added.
    assert {"03", "0b40", "12", "0880"} <= set(conf.sources.pci.deviceClassWhitelist)
    # The rules live in the NodeFeatureRule only (NFD >= 0.16 applies it by default).
    assert conf.sources.custom is None
    assert "class" in conf.sources.pci.deviceLabelFields and "vendor" in conf.sources.pci.deviceLabelFields
    assert conf.core.sleepInterval and "-cpu" in conf.core.featureSources
    # An unknown field is refused by the models (they are strict).
    bad = load_yaml("nfd-config/nodefeaturerule.yaml")
    bad["spec"]["rules"][0]["matchFeature"] = []
    with pytest.raises(Exception):
        nfd.NodeFeatureRule.model_validate(bad)


def test_worker_config_replaces_nfds_own_generator():
    """On a stand-in of NFD v0.19.0's kustomization, the Coral component replaces NFD's
    nfd-worker-conf generator: one ConfigMap, our text under NFD's key, and the worker
    DaemonSet mounting it by its hash-suffixed name."""
    objs = render("nfd-standin")
    cms = [o for o in objs if o["kind"] == "ConfigMap"]
    assert len(cms) == 1, cms
    cm = cms[0]
    assert cm["metadata"]["name"].startswith("nfd-worker-conf-")
    assert cm["metadata"]["namespace"] == "node-feature-discovery"
    with open(os.path.join(REPO, "nfd-config/worker-config/nfd-worker.conf")) as fh:
        assert cm["data"] == {"nfd-worker.conf": fh.read()}
    ds = find(objs, "DaemonSet", "nfd-worker")
    vol = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "nfd-worker-conf")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]


def test_a_configmap_by_the_plain_name_would_never_be_mounted():
    """Why the component exists: NFD's kustomization mounts a hash-suffixed name, so the
    plain nfd-worker-conf that nfd-config used to apply was never read."""
    ds = find(render("nfd-upstream-only"), "DaemonSet", "nfd-worker")
    vol = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "nfd-worker-conf")
    assert vol["configMap"]["name"] != "nfd-worker-conf"
    assert vol["configMap"]["name"].startswith("nfd-worker-conf-")


def test_the_kustomization_builds_on_nfd_v0_19_and_the_component():
    k = load_yaml("nfd-config/kustomization.yaml")
    remote = [r for r in k["resources"] if r.startswith("https://")]
    assert remote == ["https://github.com/kubernetes-sigs/node-feature-discovery/"
                      "deployment/overlays/default?ref=v0.19.0"]
    # The rule is applied on its own, once NFD's CRDs are established: in one apply with
    # them, a fresh cluster refuses it (docs/nfd.md, the README's step 3).
    assert "nodefeaturerule.yaml" not in k["resources"]
    assert k["components"] == ["worker-config"]
    comp = load_yaml("nfd-config/worker-config/kustomization.yaml")
    gen = comp["configMapGenerator"][0]
    assert (gen["name"], gen["behavior"], gen["files"]) == ("nfd-worker-conf", "replace", ["nfd-worker.conf"])


def test_helm_values_carry_the_same_worker_config():
    values = load_yaml("nfd-config/helm-values.yaml")
    assert values["worker"]["config"] == load_yaml("nfd-config/worker-config/nfd-worker.conf")
    nfd.WorkerConfig.model_validate(values["worker"]["config"])


def test_shipped_rules_are_the_output_of_coral_nfd_rules():
    for args, path in [([], "nfd-config/nodefeaturerule.yaml"),
                       (["--extended-resources"], "nfd-config/extended-resources.yaml")]:
        out = subprocess.run([binary(), "rules", *args], check=True, capture_output=True, text=True).stdout
        with open(os.path.join(REPO, path)) as fh:
            assert out == fh.read(), f"{path} differs from `coral-nfd rules {' '.join(args)}`"


def test_seed_rule_is_kept():
    seed = next(r for r in rules_of_cr() if r.labels and P + "has-pcie-tpu" in r.labels)
    exprs = seed.matchFeatures[0].matchExpressions
    assert seed.matchFeatures[0].feature == "pci.device"
    assert exprs["vendor"].value == ["1ac1"] and exprs["device"].value == ["089a"]


# --- end to end: fixture -> coral-nfd -> rules -> labels -> affinity ----------------------

PCIE_READY = {"pcie-ready", "pcie-dual", "pcie-throttled", "devboard", "rpi5-switch",
              "pcie-and-usb"}
USB_READY = {"usb-dfu-usb3", "usb-app-usb2", "pcie-and-usb"}
PCIE_PRESENT = PCIE_READY | {"pcie-no-driver", "pcie-probe-failed", "pcie-node-missing",
                             "pcie-node-mismatch", "pcie-lamed", "pcie-not-answering", "pcie-vfio",
                             "pcie-staging-driver"}
USB_PRESENT = USB_READY

# Where each Frigate overlay must be schedulable, written down by hand.
SCHEDULABLE = {
    "pcie": PCIE_READY,
    "pcie-dual": {"pcie-dual"},
    "usb": USB_READY,
    "device-plugin": PCIE_READY,
}


def node_labels(scenario: str, with_coral_nfd: bool = True):
    code, out = coral_nfd(scenario)
    assert code == 0
    features, labels = nfd.node_features(os.path.join(FIXTURES, scenario, "sys"),
                                         out if with_coral_nfd else None)
    rule_labels, _ = nfd.evaluate(rules_of_cr(), features)
    _, resources = nfd.evaluate(er_rules(), features)
    return {**labels, **rule_labels}, resources


def deployment_affinity(overlay: str) -> dict:
    return find(render(overlay), "Deployment", "frigate")["spec"]["template"]["spec"]["affinity"]


def test_every_scenario_is_covered():
    assert set(scenarios()) >= PCIE_PRESENT | USB_PRESENT
    assert len(scenarios()) >= 15


@pytest.mark.parametrize("overlay", sorted(SCHEDULABLE))
def test_overlay_schedules_exactly_where_its_tpu_works(overlay):
    affinity = deployment_affinity(overlay)
    got = {s for s in scenarios() if nfd.affinity_matches(affinity, node_labels(s)[0])}
    assert got == SCHEDULABLE[overlay]


def test_rule_labels_per_scenario():
    for s in scenarios():
        labels, resources = node_labels(s)
        assert (labels.get(P + "has-pcie-tpu") == "true") == (s in PCIE_PRESENT), s
        assert (labels.get(P + "has-usb-tpu") == "true") == (s in USB_PRESENT), s
        needs = s in PCIE_PRESENT - PCIE_READY
        assert (labels.get(P + "coral-tpu.needs-attention") == "true") == needs, s
        assert (labels.get(P + "coral-tpu.driver.outdated") == "true") == (s == "pcie-staging-driver"), s
        assert P + "coral-nfd.not-reporting" not in labels, s
        ready = int(labels.get(P + "coral-tpu.ready.count", "0"))
        assert resources == ({"coral.ai/ready-tpus": str(ready)} if ready else {}), s
        for k, v in labels.items():
            assert nfd.is_qualified_name(k) and nfd.is_label_value(v), (s, k, v)


def test_hardware_labels_without_coral_nfd():
    # Before coral-nfd runs (or long after it stopped): the original write-up's label still appears,
    # the not-reporting label says why nothing else does, and nothing is schedulable.
    for s in scenarios():
        labels, resources = node_labels(s, with_coral_nfd=False)
        assert (labels.get(P + "has-pcie-tpu") == "true") == (s in PCIE_PRESENT), s
        present = s in PCIE_PRESENT | USB_PRESENT
        assert (labels.get(P + "coral-nfd.not-reporting") == "true") == present, s
        assert resources == {}
        for overlay in SCHEDULABLE:
            assert not nfd.affinity_matches(deployment_affinity(overlay), labels), (s, overlay)


def test_rules_for_a_custom_prefix():
    """With --label-prefix, the rules of `coral-nfd rules --label-prefix` match what it
    writes; the default rules do not (a healthy node would look unreported)."""
    q = "example.com/"

    def rules(*args):
        out = subprocess.run([binary(), "rules", "--label-prefix", q, *args], check=True,
                             capture_output=True, text=True).stdout
        return nfd.NodeFeatureRule.model_validate(yaml.safe_load(out)).spec.rules

    for s in ["pcie-ready", "pcie-lamed", "usb-dfu-usb3"]:
        code, out = coral_nfd(s, "--label-prefix", q)
        assert code == 0
        features, labels = nfd.node_features(os.path.join(FIXTURES, s, "sys"), out)
        ours, _ = nfd.evaluate(rules(), features)
        _, resources = nfd.evaluate(rules("--extended-resources"), features)
        assert q + "coral-nfd.not-reporting" not in ours, s
        assert (ours.get(q + "coral-tpu.needs-attention") == "true") == (s == "pcie-lamed"), s
        ready = int(labels.get(q + "coral-tpu.ready.count", "0"))
        assert resources == ({"coral.ai/ready-tpus": str(ready)} if ready else {}), s
        default, _ = nfd.evaluate(rules_of_cr(), features)
        assert default.get(P + "coral-nfd.not-reporting") == "true", s


def test_device_plugin_runs_where_a_coral_is():
    ds = find(render("device-plugin"), "DaemonSet", "generic-device-plugin")
    affinity = ds["spec"]["template"]["spec"]["affinity"]
    got = {s for s in scenarios() if nfd.affinity_matches(affinity, node_labels(s)[0])}
    assert got == PCIE_PRESENT | USB_PRESENT


def test_a_typo_in_a_selector_fails():
    # The evaluator is strict enough to catch a renamed key.
    affinity = deployment_affinity("pcie")
    expr = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]
    broken = {**expr, "key": expr["key"].replace("pci.0", "pci0")}
    bad = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [broken]}]}}}
    assert not nfd.affinity_matches(bad, node_labels("pcie-ready")[0])


# --- Frigate -------------------------------------------------------------------------

# overlay -> (fixture whose frigate-config it must match, device pass-through mounts)
FRIGATE = {
    # privileged: every host device node, none mounted by name (pci:N need not be apex_N)
    "pcie": ("pcie-ready", []),
    "pcie-dual": ("pcie-dual", []),
    "usb": ("usb-dfu-usb3", ["/dev/bus/usb"]),
    "device-plugin": ("pcie-ready", []),
}


def frigate_config(overlay: str) -> dict:
    cm = find(render(overlay), "ConfigMap", "frigate-config")
    return yaml.safe_load(cm["data"]["config.yml"])


def same_device(a: str, b: str) -> bool:
    """'usb' is the first USB stick, as is 'usb:0'; likewise 'pci'."""
    norm = {"usb": "usb:0", "pci": "pci:0"}
    return norm.get(a, a) == norm.get(b, b)


@pytest.mark.parametrize("overlay", sorted(FRIGATE))
def test_frigate_detectors_match_the_overlay(overlay):
    fixture, mounts = FRIGATE[overlay]
    detectors = frigate_config(overlay)["detectors"]
    assert all(d["type"] == "edgetpu" for d in detectors.values())
    code, out = coral_nfd(fixture, "frigate-config")
    assert code == 0
    generated = yaml.safe_load(out)["detectors"]
    assert list(detectors) == list(generated)
    for name, d in detectors.items():
        assert same_device(d["device"], generated[name]["device"]), (name, d, generated[name])
    dep = find(render(overlay), "Deployment", "frigate")
    spec = dep["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "frigate")
    paths = {m["mountPath"] for m in container["volumeMounts"]}
    for m in mounts:
        assert m in paths, f"{overlay}: {m} not mounted"
    host = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in spec["volumes"] if "hostPath" in v}
    for m in mounts:
        assert host.get(m) in ("CharDevice", "Directory"), f"{overlay}: {m} hostPath type"
    sc = container.get("securityContext", {})
    if overlay == "device-plugin":
        assert not host, "device-plugin overlay has no host paths"
        assert sc.get("privileged") is False
        assert container["resources"]["limits"]["squat.ai/coral"] == "1"
    else:
        assert sc.get("privileged") is True


def test_frigate_base():
    objs = render("frigate-base")
    dep = find(objs, "Deployment", "frigate")
    spec = dep["spec"]
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "frigate")
    ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
    assert {(5000, "TCP"), (8971, "TCP"), (8554, "TCP"), (8555, "TCP"), (8555, "UDP")} <= ports
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in c, probe
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    shm = vols[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    assert vols[mounts["/tmp/cache"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert "persistentVolumeClaim" in vols[mounts["/config"]["name"]]
    assert "persistentVolumeClaim" in vols[mounts["/media/frigate"]["name"]]
    # Frigate 0.17 listens on IPv6 by its own setting: no template override.
    assert "/usr/local/nginx/templates/listen.gotmpl" not in mounts
    svc = find(objs, "Service", "frigate")
    assert svc["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    # The seed config is copied into /config only when absent.
    init = pod["initContainers"][0]
    script = " ".join(init["command"])
    assert "/config/config.yaml" in script and 'cp "/seed/${SEED_CONFIG}" /config/config.yml' in script
    assert init["env"] == [{"name": "SEED_CONFIG", "value": "config.yml"}]


def test_nginx_template_binds_dual_stack():
    """Frigate 0.16 only (the frigate-0.16 component): the original write-up's template override."""
    objs = render_with("deploy/frigate/overlays/pcie", "deploy/frigate/components/frigate-0.16")
    cm = find(objs, "ConfigMap", "frigate-nginx-templates")
    c = next(c for c in find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]["containers"]
             if c["name"] == "frigate")
    tmpl = next(m for m in c["volumeMounts"] if m["mountPath"] == "/usr/local/nginx/templates/listen.gotmpl")
    assert tmpl["subPath"] == "listen.gotmpl" and tmpl["readOnly"] is True
    lines = [l.strip() for l in cm["data"]["listen.gotmpl"].splitlines()]
    listens = [l for l in lines if l.startswith("listen ")]
    assert "listen [::]:8971 ipv6only=off;" in listens
    assert "listen [::]:8971 ipv6only=off ssl;" in listens
    assert "listen [::]:5000 ipv6only=off;" in listens
    # Every listen binds [::] for both families; none is IPv4-only or loopback-only.
    for l in listens:
        assert l.startswith("listen [::]:") and "ipv6only=off" in l, l


# --- coral-nfd DaemonSet and sidecar ---------------------------------------------------

ARGS = ["--output-file", "/etc/kubernetes/node-feature-discovery/features.d/coral-nfd",
        "--sleep-interval", "60s", "--sysfs-root", "/host/sys", "--dev-root", "/host/dev"]


def check_coral_nfd_container(c: dict, pod: dict) -> None:
    assert c["args"] == ARGS
    sc = c["securityContext"]
    assert sc.get("privileged") is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    seccomp = sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert vols[mounts["/host/sys"]["name"]]["hostPath"]["path"] == "/sys"
    assert mounts["/host/sys"]["readOnly"] is True
    assert vols[mounts["/host/dev"]["name"]]["hostPath"]["path"] == "/dev"
    assert mounts["/host/dev"]["readOnly"] is True
    fd = mounts["/etc/kubernetes/node-feature-discovery/features.d"]
    assert not fd.get("readOnly")
    assert vols[fd["name"]]["hostPath"]["path"].rstrip("/") == "/etc/kubernetes/node-feature-discovery/features.d"


def test_coral_nfd_daemonset():
    ds = find(render("coral-nfd"), "DaemonSet", "coral-nfd")
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["terminationGracePeriodSeconds"] <= 30
    (c,) = pod["containers"]
    check_coral_nfd_container(c, pod)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["features-d"]["hostPath"]["type"] == "DirectoryOrCreate"
    # The image is set through kustomize images:, not hard-coded.
    assert c["image"] == "ghcr.io/coral-nfd/coral-nfd:0.1.0"


def test_sidecar_shares_features_d_with_nfd_worker():
    ds = find(render("sidecar"), "DaemonSet", "nfd-worker")
    pod = ds["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["nfd-worker", "coral-nfd"]
    worker, sidecar = pod["containers"]
    check_coral_nfd_container(sidecar, pod)
    # The image of the one image component (test_images.py), pulled only when missing.
    assert sidecar["image"] == find(render("coral-nfd"), "DaemonSet", "coral-nfd")["spec"][
        "template"]["spec"]["containers"][0]["image"]
    assert sidecar["imagePullPolicy"] == "IfNotPresent"
    wm = {m["name"]: m for m in worker["volumeMounts"]}
    sm = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert wm["features-d"]["readOnly"] is True and not sm["features-d"].get("readOnly")
    assert len([v for v in pod["volumes"] if v["name"] == "features-d"]) == 1


# --- the binary in the image -----------------------------------------------------------

def test_static_release_build_runs_and_is_not_dynamically_linked():
    exe = static_binary()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("coral-nfd ")
    headers = subprocess.run(["readelf", "-lW", exe], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in headers, "needs a dynamic loader"
    dynamic = subprocess.run(["readelf", "-dW", exe], capture_output=True, text=True).stdout
    assert "NEEDED" not in dynamic, "links shared libraries"
    # And it does the job inside an empty environment, as in the scratch image.
    p = subprocess.run([exe, "--sysfs-root", os.path.join(FIXTURES, "pcie-no-driver", "sys")],
                       capture_output=True, text=True, env={})
    assert p.returncode == 0 and "coral-tpu.present=true" in p.stdout
    assert binary()  # the debug build the other tests use exists too

"""Every container coral-nfd ships, taken from the rendered manifests and run for real
(podman and runc, as root): the image built from the shipped Dockerfile, the container's
args, securityContext and mounts translated as a kubelet and containerd would
(runtime.py), the host paths mapped onto a fixture's sys/dev, a temporary features.d and
a temporary kubelet directory. And Frigate's device access, overlay by overlay, with a
stand-in for its detector: what the device cgroup lets through (ENXIO: allowed, no driver
here) and what it refuses (EPERM), the original write-up's unprivileged attempt included."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

import runtime
from conftest import FIXTURES, FIXTURES_SCRIPT, REPO, binary, find, render, static_binary
from kubelet import Kubelet
from runtime import DeviceSpec, Podman, container_flags, proc_status, root_is_read_only, wait

FEATURES_D = "/etc/kubernetes/node-feature-discovery/features.d"
KUBELET_DIR = "/var/lib/kubelet/device-plugins"
RESOURCE = "coral.ai/tpu"


def podman_available() -> bool:
    return shutil.which("podman") is not None and os.geteuid() == 0


@pytest.fixture(scope="module")
def engine():
    if not podman_available():
        if os.environ.get("CORAL_NFD_ALLOW_NO_CONTAINERS"):
            pytest.skip("*** podman or root missing: container tests SKIPPED ***")
        pytest.fail("podman (and root) are needed; scripts/test.sh installs Debian's podman")
    p = Podman()
    # The image the manifests name, built from the Dockerfile's `prebuilt` stage: the
    # image the DaemonSets would find on a node that imported it (IfNotPresent).
    image = coral_nfd_container("coral-nfd", "coral-nfd")[1]["image"]
    ctx = runtime.tempdir("image-")
    shutil.copy(static_binary(), os.path.join(ctx, "coral-nfd"))
    p.build(ctx, image, os.path.join(REPO, "Dockerfile"), target="prebuilt")
    runtime.rmtree(ctx)
    # The stand-in for Frigate's detector: a static probe on an empty image.
    probe = runtime.tempdir("probe-")
    subprocess.run(["gcc", "-static", "-O2", "-o", os.path.join(probe, "probe"),
                    os.path.join(REPO, "tests/k8s/probe/probe.c")], check=True)
    with open(os.path.join(probe, "Containerfile"), "w") as fh:
        fh.write('FROM scratch\nCOPY probe /probe\nENTRYPOINT ["/probe"]\n')
    p.build(probe, "localhost/coral-probe:test", os.path.join(probe, "Containerfile"))
    runtime.rmtree(probe)
    yield p
    p.cleanup()


def coral_nfd_container(kustomization: str, container: str, objs=None):
    objs = objs or render(kustomization)
    for o in objs:
        if o["kind"] != "DaemonSet":
            continue
        pod = o["spec"]["template"]["spec"]
        for c in pod["containers"]:
            if c["name"] == container:
                return pod, c
    raise AssertionError(f"{kustomization}: no container {container}")


class Node:
    """A node's host paths, mapped: a fixture's sys, its device nodes, features.d and the
    kubelet's device-plugins directory in a temporary directory."""

    def __init__(self, scenario: str):
        self.dir = runtime.tempdir("node-")
        self.sys = os.path.join(self.dir, "sys")
        shutil.copytree(os.path.join(FIXTURES, scenario, "sys"), self.sys, symlinks=True)
        self.dev = os.path.join(self.dir, "dev")
        os.makedirs(self.dev)
        FIXTURES_SCRIPT.make_nodes(os.path.join(FIXTURES, scenario, "dev.list"), self.dev)
        self.features = os.path.join(self.dir, "features.d")
        self.kubelet = os.path.join(self.dir, "device-plugins")
        os.makedirs(self.kubelet)

    def host(self, path: str) -> str:
        path = path.rstrip("/") or "/"
        for prefix, local in (("/sys", self.sys), ("/dev", self.dev),
                              (FEATURES_D, self.features), (KUBELET_DIR, self.kubelet)):
            if path == prefix or path.startswith(prefix + "/"):
                return local + path[len(prefix):]
        raise AssertionError(f"no host path {path} on this test node")

    def nodes(self) -> list[tuple[str, str]]:
        """The Coral device nodes, (host side, /dev path): what a privileged container
        sees of them (it gets every host node; the rest are this machine's own)."""
        out = []
        for root, _, files in os.walk(self.dev):
            for f in files:
                p = os.path.join(root, f)
                d = "/dev/" + os.path.relpath(p, self.dev)
                if (d.startswith("/dev/apex_") or d.startswith("/dev/bus/usb/")) \
                        and (os.stat(p).st_mode & 0o170000) == 0o020000:
                    out.append((p, d))
        return sorted(out)

    def close(self):
        runtime.rmtree(self.dir)


def readme_doctor_args() -> list[str]:
    """The doctor command the README tells a user to exec in the pod."""
    with open(os.path.join(REPO, "README.md")) as fh:
        for line in fh:
            m = re.search(r"exec \S+ -- (/coral-nfd doctor .*)$", line.strip())
            if m:
                return m.group(1).split()
    raise AssertionError("the README shows no `kubectl exec ... -- /coral-nfd doctor`")


def without_expiry(text: str) -> str:
    return "".join(l for l in text.splitlines(keepends=True) if not l.startswith("# +expiry-time="))


def run_labeler(engine, pod, c, node: Node) -> str:
    return engine.start(container_flags(pod, c, node.host))


def check_labeler(engine, pod, c, node: Node, name: str, scenario: str):
    """What the container `name` must do on a node, by the manifest's `pod` and `c`: the
    feature file on the host, equal to the fixture's; its process as the manifest says
    (PID 1, its arguments, the kernel's view of its privileges); hotplug across the bind
    mount; doctor by exec; SIGTERM within the grace period, the file kept."""
    out = os.path.join(node.features, "coral-nfd")
    try:
        wait("the feature file on the host", lambda: os.path.exists(out), 10)
    except AssertionError:
        raise AssertionError(f"no feature file; the container said:\n{engine.logs(name)}")
    with open(os.path.join(FIXTURES, scenario, "expected")) as fh:
        assert without_expiry(open(out).read()) == fh.read()
    st = engine.state(name)
    assert st["Running"], engine.logs(name)
    pid = st["Pid"]
    status = proc_status(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    # PID 1 of the container is coral-nfd itself, with the manifest's arguments.
    assert status["NSpid"].split()[-1] == "1", status["NSpid"]
    assert [a.decode() for a in argv if a] == ["/coral-nfd", *c["args"]]
    sc = c["securityContext"]
    assert root_is_read_only(pid) == bool(sc.get("readOnlyRootFilesystem")), "root filesystem"
    if sc.get("capabilities", {}).get("drop") == ["ALL"]:
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"] == ("1" if sc.get("allowPrivilegeEscalation") is False else "0")
    seccomp = (sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {})
    assert status["Seccomp"] == ("2" if seccomp.get("type") == "RuntimeDefault" else "0"), status
    user = sc.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
    assert status["Uid"].split()[0] == str(user if user is not None else 0)
    # A TPU's node removed on the host is seen through the bind mount (inotify).
    os.remove(os.path.join(node.dev, "apex_1"))
    wait("apex_1 not ready in the file", lambda: "coral-tpu.apex_1.ready=false" in open(out).read(), 20)
    # doctor, with the README's arguments, by exec in the running container.
    d = engine("exec", name, *readme_doctor_args(), check=False)
    assert d.returncode == 1, d.stderr
    assert "0000:04:00.0" in d.stdout and "node-missing" in d.stdout, d.stdout
    # SIGTERM within the pod's grace period; the file stays.
    grace = pod.get("terminationGracePeriodSeconds", 30)  # the API default
    start = time.monotonic()
    engine("stop", "-t", str(grace), name, timeout=grace + 30)
    took = time.monotonic() - start
    st = engine.state(name)
    assert st["ExitCode"] == 0 and took < grace, (st, took)
    assert os.path.exists(out) and "coral-tpu.present=true" in open(out).read()


@pytest.mark.parametrize("kustomization,container", [("coral-nfd", "coral-nfd"),
                                                     ("sidecar", "coral-nfd")])
def test_the_labeler_runs_as_shipped(engine, kustomization, container):
    pod, c = coral_nfd_container(kustomization, container)
    node = Node("pcie-dual")
    try:
        name = run_labeler(engine, pod, c, node)
        check_labeler(engine, pod, c, node, name, "pcie-dual")
    finally:
        node.close()


def mutated(pod, c, change):
    pod, c = copy.deepcopy(pod), copy.deepcopy(c)
    change(pod, c)
    return pod, c


def test_the_translation_is_what_runs(engine):
    """The checks above see the manifest: a mount dropped, an argument changed or the
    read-only root turned off, and they fail."""
    pod, c = coral_nfd_container("coral-nfd", "coral-nfd")

    def drop_dev(pod, c):
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/host/dev"]

    def other_output(pod, c):
        c["args"][c["args"].index("--output-file") + 1] = "/tmp/coral-nfd"

    def writable_root(pod, c):
        c["securityContext"]["readOnlyRootFilesystem"] = False

    # Each change fails the check that guards it, not some other one by accident.
    for what, change, says in [("dev mount dropped", drop_dev, "dev root /host/dev cannot be used"),
                               ("output moved", other_output, "no feature file"),
                               ("root writable", writable_root, "root filesystem")]:
        p2, c2 = mutated(pod, c, change)
        node = Node("pcie-dual")
        try:
            name = run_labeler(engine, p2, c2, node)
            # Checked against the manifest as shipped: what must run on a node.
            with pytest.raises(AssertionError, match=says):
                check_labeler(engine, pod, c, node, name, "pcie-dual")
            print(f"{what}: the check failed, as it must")
        finally:
            engine.cleanup()
            node.close()


def test_the_device_plugin_runs_as_shipped(engine):
    """The plugin's DaemonSet container registers with a kubelet stand-in through the
    bind-mounted device-plugins directory, lists both TPUs, allocates, and on SIGTERM
    within the grace period removes its socket."""
    pod, c = coral_nfd_container("coral-nfd-device-plugin", "device-plugin")
    node = Node("pcie-dual")
    kubelet = Kubelet(node.kubelet)
    kubelet.start()
    try:
        name = engine.start(container_flags(pod, c, node.host))
        wait("registration through the mount", lambda: kubelet.registrations, 10)
        wait("both TPUs", lambda: len(kubelet.health(RESOURCE)) == 2, 20)
        assert kubelet.health(RESOURCE) == {"0000:03:00.0": "Healthy", "0000:04:00.0": "Healthy"}
        r = kubelet.allocate(RESOURCE, ["0000:04:00.0"])
        assert [(d.container_path, d.host_path, d.permissions) for d in r.devices] == [
            ("/dev/apex_1", "/dev/apex_1", "rw")]
        status = proc_status(engine.state(name)["Pid"])
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1", status
        grace = pod.get("terminationGracePeriodSeconds", 30)  # the API default
        start = time.monotonic()
        engine("stop", "-t", str(grace), name, timeout=grace + 30)
        assert time.monotonic() - start < grace
        assert engine.state(name)["ExitCode"] == 0
        assert not os.path.exists(os.path.join(node.kubelet, "coral-nfd.sock"))
    finally:
        kubelet.stop()
        node.close()


# --- Frigate's device access -----------------------------------------------------------

def frigate(overlay: str):
    objs = render(overlay)
    dep = find(objs, "Deployment", "frigate")
    pod = dep["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "frigate")
    cfg = yaml.safe_load(find(objs, "ConfigMap", "frigate-config")["data"]["config.yml"])
    return objs, pod, c, [d["device"] for d in cfg["detectors"].values()]


def other_path(host_node: str) -> str:
    """Where a TPU node the container must not open is put, to try it anyway."""
    return "/other-" + os.path.basename(host_node)


def probe(engine, pod, c, node: Node, specs, others=(), devices=()):
    """Runs the detector stand-in with the Frigate container's securityContext and its
    hostPath volumes; returns {spec or path: (node, rdev, result)}."""
    mounts = [(node.sys, "/fixture-sys")]
    # At the top of the root: runc 1.1 cannot make a nested mount point for a node.
    mounts += [(h, other_path(h)) for h in others]
    args = ["/fixture-sys/class/apex", *specs, "--", *(other_path(h) for h in others)]
    flags = container_flags(pod, c, node.host, devices=devices, host_devices=node.nodes(),
                            image="localhost/coral-probe:test", args=args, only_host_paths=True,
                            extra_mounts=mounts)
    p = engine.run(flags)
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        kind, name, path, rdev, result = line.split()
        out[name] = (path, rdev, result)
    return out


def usb_node(node: Node) -> str:
    """The node of the fixture's one Coral stick (read from its sysfs as libusb finds it:
    idVendor/idProduct, busnum, devnum): libedgetpu's first and only stick, `usb`."""
    found = []
    devices = os.path.join(node.sys, "bus/usb/devices")
    for name in os.listdir(devices):
        d = os.path.join(devices, name)

        def attr(a):
            try:
                with open(os.path.join(d, a)) as fh:
                    return fh.read().strip()
            except OSError:
                return None
        if (attr("idVendor"), attr("idProduct")) in (("1a6e", "089a"), ("18d1", "9302")):
            found.append(f"/dev/bus/usb/{int(attr('busnum')):03d}/{int(attr('devnum')):03d}")
    assert len(found) == 1, found
    return found[0]


def allocate(node: Node) -> tuple[str, list[DeviceSpec]]:
    """What the real `coral-nfd device-plugin` answers the kubelet's Allocate for one
    healthy TPU on this node (the first the kubelet lists)."""
    kubelet = Kubelet(node.kubelet)
    kubelet.start()
    proc = subprocess.Popen([binary(), "device-plugin", "--sysfs-root", node.sys, "--dev-root",
                             node.dev, "--kubelet-dir", node.kubelet], stderr=subprocess.DEVNULL)
    try:
        wait("the plugin's devices", lambda: kubelet.health(RESOURCE), 10)
        tpu = sorted(i for i, h in kubelet.health(RESOURCE).items() if h == "Healthy")[0]
        r = kubelet.allocate(RESOURCE, [tpu])
        return tpu, [DeviceSpec(d.container_path, d.host_path, d.permissions) for d in r.devices]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("the device plugin did not end within 10 s of SIGTERM")
        finally:
            kubelet.stop()


def tpu_dev(node: Node, pci_address: str) -> str:
    apex = os.listdir(os.path.join(node.sys, "bus/pci/devices", pci_address, "apex"))[0]
    with open(os.path.join(node.sys, "class/apex", apex, "dev")) as fh:
        return fh.read().strip()


def check_access(result: dict, specs, want_rdev: dict | None = None, refused=()):
    for s in specs:
        path, rdev, got = result[s]
        assert got == "ENXIO", f"{s}: {path} {got} (ENXIO: the device cgroup let it through)"
        if want_rdev and s in want_rdev:
            assert rdev == want_rdev[s], f"{s} opened {path} ({rdev}), not the TPU given ({want_rdev[s]})"
    for o in refused:
        got = result[other_path(o)][2]
        assert got == "EPERM", f"{o}: {got} (EPERM: refused by the device cgroup)"


@pytest.mark.parametrize("overlay,scenario", [("pcie", "pcie-dual"), ("pcie-dual", "pcie-dual"),
                                              ("usb", "usb-dfu-usb3")])
def test_privileged_overlays_reach_their_tpus(engine, overlay, scenario):
    """privileged: every host device node is in the container and allowed."""
    _, pod, c, specs = frigate(overlay)
    assert c["securityContext"]["privileged"] is True
    node = Node(scenario)
    try:
        specs = [usb_node(node) if s in ("usb", "usb:0") else s for s in specs]
        check_access(probe(engine, pod, c, node, specs), specs)
    finally:
        node.close()


def test_coral_device_plugin_overlay_gets_exactly_its_tpu(engine):
    """Unprivileged, with exactly the DeviceSpecs the real plugin returns from Allocate,
    applied as containerd applies them: pci:0 is the TPU allocated, and every other TPU
    node is refused by the device cgroup."""
    _, pod, c, specs = frigate("coral-device-plugin")
    assert specs == ["pci:0"] and not c["securityContext"].get("privileged")
    node = Node("pcie-dual")
    try:
        tpu, devices = allocate(node)
        others = [h for h, d in node.nodes() if d.startswith("/dev/apex_")
                  and d not in {x.container_path for x in devices}]
        assert others, "nothing left to be refused"
        result = probe(engine, pod, c, node, specs, others=others, devices=devices)
        check_access(result, specs, want_rdev={"pci:0": tpu_dev(node, tpu)}, refused=others)
        # Given the wrong node, or none, the same check fails.
        wrong = [DeviceSpec(d.container_path, others[0].replace(node.dev, "/dev"), d.permissions)
                 for d in devices]
        with pytest.raises(AssertionError):
            check_access(probe(engine, pod, c, node, specs, devices=wrong), specs,
                         want_rdev={"pci:0": tpu_dev(node, tpu)})
        with pytest.raises((AssertionError, KeyError)):
            check_access(probe(engine, pod, c, node, specs), specs)
    finally:
        node.close()


def test_third_party_plugin_overlay(engine):
    """squat/generic-device-plugin's DeviceSpec for its first group (/dev/apex_0, as its
    rendered arguments say): the same unprivileged access."""
    objs, pod, c, specs = frigate("device-plugin")
    ds = find(objs, "DaemonSet", "generic-device-plugin")
    group = yaml.safe_load(ds["spec"]["template"]["spec"]["containers"][0]["args"][1])["groups"][0]
    path = group["paths"][0]["path"]
    node = Node("pcie-dual")
    try:
        devices = [DeviceSpec(path, path, "rw")]
        others = [h for h, d in node.nodes() if d.startswith("/dev/apex_") and d != path]
        result = probe(engine, pod, c, node, specs, others=others, devices=devices)
        check_access(result, specs, refused=others)
    finally:
        node.close()


def test_the_seeds_unprivileged_attempt_is_refused(engine):
    """The original write-up's attempt without privileged (a hostPath /dev/apex_0, IPC_LOCK, SYS_RAWIO
    and SYS_ADMIN, privilege escalation allowed): the device cgroup refuses the node.
    The plugin overlays above are what solves it."""
    pod = {"volumes": [{"name": "coral-apex-0", "hostPath": {"path": "/dev/apex_0"}}]}
    c = {"name": "frigate", "image": "x",
         "securityContext": {"privileged": False, "allowPrivilegeEscalation": True,
                             "capabilities": {"add": ["IPC_LOCK", "SYS_RAWIO", "CAP_SYS_ADMIN"]}},
         "volumeMounts": [{"name": "coral-apex-0", "mountPath": "/dev/apex_0"}]}
    node = Node("pcie-dual")
    try:
        result = probe(engine, pod, c, node, ["/dev/apex_0"])
        assert result["/dev/apex_0"][2] == "EPERM", result
    finally:
        node.close()

"""`coral-nfd device-plugin`, the real binary, against the kubelet stand-in in
kubelet.py: registration, per-TPU health from the labeler's rules, kubelet restarts,
Allocate, SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from conftest import FIXTURES, FIXTURES_SCRIPT, binary
from kubelet import Kubelet, pb, pb_grpc

RESOURCE = "coral.ai/tpu"
APEX1 = "devices/pci0000:00/0000:00:1d.0/0000:04:00.0/apex/apex_1"
TPU0, TPU1 = "0000:03:00.0", "0000:04:00.0"


def wait(what, cond, limit=5.0):
    start = time.monotonic()
    while True:
        got = cond()
        if got:
            return time.monotonic() - start
        assert time.monotonic() - start < limit, f"timed out after {limit} s waiting for {what}"
        time.sleep(0.02)


class Bed:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="coral-dp-")
        self.sys = os.path.join(self.dir, "sys")
        self.dev = os.path.join(self.dir, "dev")
        self.kdir = os.path.join(self.dir, "device-plugins")
        shutil.copytree(os.path.join(FIXTURES, "pcie-dual", "sys"), self.sys, symlinks=True)
        os.makedirs(self.dev)
        os.makedirs(self.kdir)
        try:
            FIXTURES_SCRIPT.make_nodes(os.path.join(FIXTURES, "pcie-dual", "dev.list"), self.dev)
        except PermissionError:
            if os.environ.get("CORAL_NFD_ALLOW_NO_MKNOD"):
                pytest.skip("*** mknod not permitted: device plugin tests SKIPPED ***")
            pytest.fail("mknod is not permitted here: run the tests as root")
        self.kubelet = Kubelet(self.kdir)
        self.kubelet.start()
        self.proc = None

    def spawn(self):
        self.proc = subprocess.Popen(
            [binary(), "device-plugin", "--sysfs-root", self.sys, "--dev-root", self.dev,
             "--kubelet-dir", self.kdir], stderr=subprocess.PIPE, text=True)
        wait("registration", lambda: self.kubelet.registrations)
        wait("first device list", lambda: len(self.kubelet.health(RESOURCE)) == 2)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.kubelet.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, rel, text):
        with open(os.path.join(self.sys, rel), "w") as fh:
            fh.write(text)


@pytest.fixture
def bed():
    b = Bed()
    yield b
    b.close()


def test_registers_and_lists_both_tpus_healthy(bed):
    bed.spawn()
    t, resource, endpoint = bed.kubelet.registrations[0]
    assert (resource, endpoint) == (RESOURCE, "coral-nfd.sock")
    assert bed.kubelet.health(RESOURCE) == {TPU0: "Healthy", TPU1: "Healthy"}
    assert bed.kubelet.capacity(RESOURCE) == (2, 2)
    opts = bed.kubelet.options[RESOURCE]
    assert not opts.pre_start_required and not opts.get_preferred_allocation_available


def test_health_follows_the_tpu(bed):
    bed.spawn()
    # LAMED (interrupts failed): Unhealthy within 2 s, out of allocatable, still in capacity.
    bed.write(f"{APEX1}/status", "LAMED\n")
    took = wait("apex_1 Unhealthy", lambda: bed.kubelet.health(RESOURCE).get(TPU1) == "Unhealthy", 2.0)
    assert bed.kubelet.capacity(RESOURCE) == (2, 1)
    print(f"LAMED -> Unhealthy after {took * 1000:.0f} ms")
    bed.write(f"{APEX1}/status", "ALIVE\n")
    wait("apex_1 Healthy again", lambda: bed.kubelet.health(RESOURCE).get(TPU1) == "Healthy", 2.0)
    # Its node vanishes: Unhealthy (inotify), and back.
    os.remove(os.path.join(bed.dev, "apex_1"))
    took = wait("node gone -> Unhealthy", lambda: bed.kubelet.health(RESOURCE).get(TPU1) == "Unhealthy", 2.0)
    print(f"node removed -> Unhealthy after {took * 1000:.0f} ms")
    os.mknod(os.path.join(bed.dev, "apex_1"), 0o020660, os.makedev(120, 1))
    wait("node back -> Healthy", lambda: bed.kubelet.health(RESOURCE).get(TPU1) == "Healthy", 2.0)
    assert bed.kubelet.health(RESOURCE)[TPU0] == "Healthy"


def test_re_registers_after_a_kubelet_restart(bed):
    bed.spawn()
    for _ in range(3):
        n = len(bed.kubelet.registrations)
        bed.kubelet.restart()  # removes every socket, ours included
        took = wait("re-registration", lambda: len(bed.kubelet.registrations) > n, 2.0)
        wait("device list after restart", lambda: len(bed.kubelet.health(RESOURCE)) == 2, 2.0)
        print(f"re-registered {took * 1000:.0f} ms after the kubelet restart")
    assert bed.kubelet.capacity(RESOURCE) == (2, 2)


def test_allocate_gives_exactly_the_node(bed):
    bed.spawn()
    for tpu, node in [(TPU0, "/dev/apex_0"), (TPU1, "/dev/apex_1")]:
        r = bed.kubelet.allocate(RESOURCE, [tpu])
        assert [(d.container_path, d.host_path, d.permissions) for d in r.devices] == [(node, node, "rw")]
        assert not r.mounts and not r.envs and not r.annotations and not r.cdi_devices
    with pytest.raises(grpc.RpcError) as e:
        bed.kubelet.allocate(RESOURCE, ["0000:99:00.0"])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_sigterm_removes_the_socket(bed):
    bed.spawn()
    sock = os.path.join(bed.kdir, "coral-nfd.sock")
    assert os.path.exists(sock)
    bed.proc.send_signal(signal.SIGTERM)
    assert bed.proc.wait(5) == 0
    assert not os.path.exists(sock)
    log = bed.proc.stderr.read()
    assert "registered coral.ai/tpu" in log and "stopped" in log, log


def test_the_stand_in_refuses_what_the_kubelet_refuses(bed):
    """The stand-in is strict where the kubelet is: an endpoint nobody serves, a wrong
    version or resource name, and a dial with the socket path as authority (what
    kubelets before 1.26 sent) all fail."""
    bed.spawn()
    ch = grpc.insecure_channel("unix:" + os.path.join(bed.kdir, "kubelet.sock"))
    reg = pb_grpc.RegistrationStub(ch)
    for req, says in [
        (pb.RegisterRequest(version="v1beta1", endpoint="nobody.sock", resource_name="coral.ai/x"),
         "failed to dial"),
        (pb.RegisterRequest(version="v1alpha", endpoint="coral-nfd.sock", resource_name="coral.ai/x"),
         "unsupported version"),
        (pb.RegisterRequest(version="v1beta1", endpoint="coral-nfd.sock", resource_name="tpu"),
         "is invalid"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            reg.Register(req, timeout=15)
        assert says in e.value.details(), e.value.details()
    ch.close()
    # A kubelet older than 1.26 dials with the socket path as authority: refused.
    sock = os.path.join(bed.kdir, "coral-nfd.sock")
    old = grpc.insecure_channel("unix:" + sock, options=[("grpc.default_authority", sock)])
    with pytest.raises(grpc.RpcError):
        pb_grpc.DevicePluginStub(old).GetDevicePluginOptions(pb.Empty(), timeout=5)
    old.close()
    # The same call with "localhost" works.
    ok = grpc.insecure_channel("unix:" + sock, options=[("grpc.default_authority", "localhost")])
    pb_grpc.DevicePluginStub(ok).GetDevicePluginOptions(pb.Empty(), timeout=5)
    ok.close()


def test_wrong_arguments_are_usage_errors(tmp_path):
    for args, says in [
        (["--resource", "kubernetes.io/tpu"], "extended resource"),
        (["--resource", "tpu"], "extended resource"),
        (["--kubelet-dir", str(tmp_path / "missing")], "kubelet directory"),
    ]:
        p = subprocess.run([binary(), "device-plugin", "--sysfs-root",
                            os.path.join(FIXTURES, "pcie-dual", "sys"), "--dev-root", str(tmp_path), *args],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.stderr)
        assert says in p.stderr, p.stderr

#!/usr/bin/env python3
"""coral-nfd device-plugin: health-change latency and memory, against the kubelet
stand-in of tests/k8s/kubelet.py (grpcio from target/pyenv). Run by scripts/bench.py;
prints one tab-separated line: trials, latency figures, peak RSS. Needs root (mknod)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "k8s"))
from kubelet import Kubelet  # noqa: E402

import importlib.util  # noqa: E402

spec = importlib.util.spec_from_file_location("mf", os.path.join(REPO, "scripts", "make-fixtures.py"))
mf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mf)

BIN = os.path.join(REPO, "target", "release", "coral-nfd")
APEX1 = "devices/pci0000:00/0000:00:1d.0/0000:04:00.0/apex/apex_1/status"
TPU1 = "0000:04:00.0"
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def main():
    d = tempfile.mkdtemp(prefix="coral-dp-bench-")
    sys_root, dev, kdir = (os.path.join(d, x) for x in ("sys", "dev", "device-plugins"))
    shutil.copytree(os.path.join(REPO, "tests/fixtures/pcie-dual/sys"), sys_root, symlinks=True)
    os.makedirs(dev)
    os.makedirs(kdir)
    mf.make_nodes(os.path.join(REPO, "tests/fixtures/pcie-dual/dev.list"), dev)
    k = Kubelet(kdir)
    k.start()
    p = subprocess.Popen([BIN, "device-plugin", "--sysfs-root", sys_root, "--dev-root", dev,
                          "--kubelet-dir", kdir], stderr=subprocess.DEVNULL)
    try:
        while len(k.health("coral.ai/tpu")) != 2:
            time.sleep(0.01)
        lat = []
        for i in range(TRIALS):
            want = "Unhealthy" if i % 2 == 0 else "Healthy"
            with open(os.path.join(sys_root, APEX1), "w") as fh:
                fh.write("LAMED\n" if want == "Unhealthy" else "ALIVE\n")
            t0 = time.perf_counter()
            while k.health("coral.ai/tpu").get(TPU1) != want:
                time.sleep(0.002)
            lat.append(time.perf_counter() - t0)
        with open(f"/proc/{p.pid}/status") as fh:
            hwm = next(l.split()[1] for l in fh if l.startswith("VmHWM"))
        lat.sort()
        print(f"device_plugin\t{TRIALS} status flips\tp50 {lat[len(lat) // 2] * 1e3:.0f} ms, "
              f"max {lat[-1] * 1e3:.0f} ms\tpeak RSS {int(hwm) / 1024:.1f} MiB")
    finally:
        p.terminate()
        p.wait()
        k.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

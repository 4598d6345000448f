#!/usr/bin/env python3
"""coral-nfd benchmarks: one command, a table of figures with the machine they ran on.

    sudo python3 scripts/bench.py            # about two minutes

Needs root (device nodes are made with mknod), gcc (a small static helper measures peak
RSS) and strace (syscall count). Not part of the test run. Trees are generated into target/bench by scripts/make-fixtures.py.

1. one-shot, whole process, realistic tree: coral-nfd against scripts/reference-hook.sh
2. in-process scan and render cost on generated trees (cargo bench --bench scan)
3. syscalls of one run (strace -c -f) next to the floor the rules need
4. daemon: CPU per idle rescan and per hour at 60 s, wakeups between rescans
5. hotplug latency: device node appears/vanishes after a quiet period -> output file shows it
6. release binary: size, static or not
7. NFD: hardware change (single and bursts) -> the model of NFD v0.19's notifier has read
   it (cargo bench --bench nfd_latency, 100 trials, about four minutes)
8. device plugin: TPU status change -> the kubelet stand-in sees its health change, and
   the plugin's peak RSS (scripts/bench_device_plugin.py; grpcio from target/pyenv,
   which `bash scripts/test.sh` installs)
9. metrics: the daemon's resident memory at rest with and without --metrics-address,
   and the time of a scrape (GET /metrics) on the realistic tree
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TREES = os.path.join(REPO, "target", "bench")
RELEASE = os.path.join(REPO, "target", "release", "coral-nfd")
HOOK = os.path.join(REPO, "scripts", "reference-hook.sh")
ROWS: list[tuple[str, str, str, str]] = []  # (section, measure, value, goal)


def row(section, measure, value, goal=""):
    ROWS.append((section, measure, value, goal))
    print(f"  {measure}: {value}" + (f"   (goal: {goal})" if goal else ""), flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


def make_dev(tree: str) -> str:
    dev = os.path.join(tree, "dev")
    if os.path.isdir(dev):
        return dev
    FIXTURES_SCRIPT.make_nodes(os.path.join(tree, "dev.list"), dev)
    return dev


MAXRSS = os.path.join(REPO, "target", "maxrss")


def _load_fixtures_script():
    import importlib.util
    path = os.path.join(REPO, "scripts", "make-fixtures.py")
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FIXTURES_SCRIPT = _load_fixtures_script()


def run_measured(cmd, env=None):
    """(wall seconds, user+sys seconds, peak RSS KiB, stdout) of one child process,
    measured by the small static helper scripts/maxrss.c (a child of this Python
    process would inherit Python's resident set in its peak RSS)."""
    p = subprocess.run([MAXRSS, *cmd], capture_output=True, env=env)
    assert p.returncode == 0, (cmd, p.stderr)
    wall, cpu, rss = p.stderr.decode().strip().splitlines()[-1].split()
    return float(wall), float(cpu), int(rss), p.stdout


def one_shot(tree: str, dev: str):
    print("1. one-shot, whole process, realistic tree", flush=True)
    sys_root = os.path.join(tree, "sys")
    ours = [RELEASE, "--sysfs-root", sys_root, "--dev-root", dev]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CORAL_NFD_SYSFS_ROOT": sys_root,
           "CORAL_NFD_DEV_ROOT": dev, "LC_ALL": "C"}
    hook = ["bash", HOOK]
    results = {}
    # Interleaved, so that both see the same machine state.
    samples = {"coral-nfd": [], "hook": []}
    for _ in range(30):
        samples["coral-nfd"].append(run_measured(ours))
        samples["hook"].append(run_measured(hook, env))
    for name, s in samples.items():
        results[name] = (statistics.median(x[0] for x in s), statistics.median(x[1] for x in s),
                         max(x[2] for x in s))
    pci = len(os.listdir(os.path.join(sys_root, "bus/pci/devices")))
    usb = len([n for n in os.listdir(os.path.join(sys_root, "bus/usb/devices"))
               if re.match(r"^\d+-[\d.]+$", n)])  # devices: no interfaces, no root hubs
    row("one-shot", "tree", f"{pci} PCI functions, {usb} USB devices, 2 PCIe TPUs, 1 USB stick")
    for name, (wall, cpu, rss) in results.items():
        row("one-shot", f"{name}: median wall / CPU / peak RSS",
            f"{wall * 1e3:.2f} ms / {cpu * 1e3:.2f} ms / {rss / 1024:.1f} MiB",
            "RSS <= 4 MiB" if name == "coral-nfd" else "")
    base = run_measured(["/bin/true"])[2]
    row("one-shot", "peak RSS of /bin/true, for scale", f"{base / 1024:.1f} MiB")
    ratio = results["hook"][0] / results["coral-nfd"][0]
    row("one-shot", "wall-time ratio hook / coral-nfd", f"{ratio:.0f}x", ">= 20x")


def scaling():
    print("2. in-process scan and render", flush=True)
    trees = sorted(glob.glob(os.path.join(TREES, "*")))
    for t in trees:
        make_dev(t)
    out = sh("cargo", "bench", "--quiet", "--bench", "scan", "--", *trees, cwd=REPO,
             capture_output=True, text=True).stdout
    lines = [l.split("\t") for l in out.strip().splitlines() if "\t" in l]
    header, data = lines[0], lines[1:]
    data.sort(key=lambda r: (int(r[1]), int(r[2])))
    for r in data:
        rec = dict(zip(header, r))
        goal = ""
        if rec["tree"] == "realistic":
            goal = "<= 200 us per scan"
        elif rec["pci"].startswith("40") or rec["pci"].startswith("41"):
            goal = "<= 5 ms per scan"
        row("scaling", f"{rec['tree']} ({rec['pci']} PCI, {rec['tpus']} TPUs)",
            f"scan {float(rec['scan_us']):.0f} us, render {float(rec['render_us']):.1f} us, "
            f"{rec['ns_per_pci']} ns per PCI function", goal)
    per = [float(dict(zip(header, r))["ns_per_pci"]) for r in data if dict(zip(header, r))["tpus"] == "1"]
    if per:
        row("scaling", "per-PCI-function cost at 64 / 512 / 4096 functions (1 TPU)",
            " / ".join(f"{p:.0f} ns" for p in per), "flat (linear growth)")


def syscalls(tree: str, dev: str):
    print("3. syscalls of one run", flush=True)
    if not shutil.which("strace"):
        row("syscalls", "strace", "not installed: skipped")
        return

    def count(args):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
            sh("strace", "-f", "-c", "-o", f.name, RELEASE, *args, stdout=subprocess.DEVNULL)
            text = f.read()
        m = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)", text, re.M)
        return int(m.group(1))

    sys_root = os.path.join(tree, "sys")
    total = count(["--sysfs-root", sys_root, "--dev-root", dev])
    # Start-up alone: a valid but empty sysfs tree (a root that is missing is an error).
    with tempfile.TemporaryDirectory() as bare:
        os.makedirs(os.path.join(bare, "sys/bus/pci/devices"))
        os.makedirs(os.path.join(bare, "dev"))
        empty = count(["--sysfs-root", os.path.join(bare, "sys"), "--dev-root", os.path.join(bare, "dev")])
    scan = total - empty
    # The floor: each attribute the rules need read once (open, read, close), each
    # directory listed once (open, getdents until empty, close), each node stat'ed once
    # and each link followed once.
    pci = len(os.listdir(os.path.join(sys_root, "bus/pci/devices")))
    usb_names = os.listdir(os.path.join(sys_root, "bus/usb/devices"))
    usb_devices = len([n for n in usb_names if re.match(r"^\d+-[\d.]+$", n)])
    tpus, sticks = 2, 1
    attrs = (pci  # vendor
             + tpus * (1 + 3)  # device; dev, status, temp
             + usb_devices  # idVendor
             + sticks * 4  # idProduct, busnum, devnum, dev
             + 2)  # module versions
    dirs = 3  # bus/pci/devices, class/apex, bus/usb/devices
    links = tpus * 2  # driver, apex device link
    stats = tpus + sticks + 1  # nodes, drivers/apex
    floor = attrs * 3 + dirs * 4 + links + stats
    row("syscalls", "whole run / start-up and output only / scan", f"{total} / {empty} / {scan}")
    row("syscalls", "floor for this tree (reads the rules need)", f"{floor}")
    row("syscalls", "scan / floor", f"{scan / floor:.2f}x", "<= 1.5x")


def daemon_cpu(tree: str, dev: str):
    print("4. daemon at rest", flush=True)

    def cpu_ns(pid):
        total = 0
        for t in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            with open(t) as fh:
                total += int(fh.read().split()[0])
        return total

    def switches(pid):
        n = 0
        for t in glob.glob(f"/proc/{pid}/task/*/status"):
            with open(t) as fh:
                for line in fh:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        return n

    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "coral-nfd")
        base = [RELEASE, "--sysfs-root", os.path.join(tree, "sys"), "--dev-root", dev,
                "--output-file", path]
        # The shortest interval there is (1 s); past the first write, which waits 1.1 s
        # when the staging directory is new (pacing for NFD).
        p = subprocess.Popen(base + ["--sleep-interval", "1s", "--expiry", "0"],
                             stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        c0, t0 = cpu_ns(p.pid), time.monotonic()
        time.sleep(10.0)
        c1, t1 = cpu_ns(p.pid), time.monotonic()
        p.terminate()
        p.wait()
        rescans = (t1 - t0) / 1.0
        per = (c1 - c0) / rescans
        row("daemon", "CPU per idle rescan (no change, no write)", f"{per / 1e3:.0f} us")
        row("daemon", "CPU per hour at --sleep-interval 60s", f"{per * 60 / 1e6:.1f} ms")
        p = subprocess.Popen(base + ["--sleep-interval", "1h"], stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        s0 = switches(p.pid)
        time.sleep(5.0)
        s1 = switches(p.pid)
        p.terminate()
        p.wait()
        row("daemon", "wakeups in 5 s between rescans (--sleep-interval 1h)", f"{s1 - s0}", "0")


def hotplug(tree: str, dev: str):
    print("5. hotplug latency", flush=True)
    node = os.path.join(dev, "apex_0")
    st = os.stat(node)
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "coral-nfd")
        p = subprocess.Popen([RELEASE, "--sysfs-root", os.path.join(tree, "sys"), "--dev-root", dev,
                              "--output-file", path, "--sleep-interval", "1h", "--expiry", "0"])

        def shows(ready: bool, deadline: float) -> float:
            want = f"coral-tpu.apex_0.ready={'true' if ready else 'false'}\n"
            while time.perf_counter() < deadline:
                try:
                    with open(path) as fh:
                        if want in fh.read():
                            return time.perf_counter()
                except OSError:
                    pass
                time.sleep(0.0002)
            raise TimeoutError("hotplug not seen")

        shows(True, time.perf_counter() + 5)
        lat = []
        # Each change after a quiet period longer than the 1.1 s pacing gap: the case
        # hotplug is fast for (a change sooner is held back for NFD; see section 7).
        for _ in range(20):
            time.sleep(1.2)
            t0 = time.perf_counter()
            os.unlink(node)
            lat.append(shows(False, t0 + 5) - t0)
            time.sleep(1.2)
            t0 = time.perf_counter()
            os.mknod(node, st.st_mode, st.st_rdev)
            lat.append(shows(True, t0 + 5) - t0)
        p.terminate()
        p.wait()
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    row("hotplug", f"node appears/vanishes after a quiet second -> file shows it ({len(lat)} trials)",
        f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms",
        "p50 <= 50 ms, p99 <= 250 ms")


def nfd_latency():
    print("7. NFD sees the change", flush=True)
    out = sh("cargo", "bench", "--quiet", "--bench", "nfd_latency", cwd=REPO,
             capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("nfd_latency"))
    _, trials, figures = line.split("\t")
    row("nfd", f"hardware change -> NFD v0.19 notifier model has read it ({trials})", figures,
        "max <= 1500 ms, stale 0")


def device_plugin():
    print("8. device plugin", flush=True)
    py = os.path.join(REPO, "target", "pyenv", "bin", "python")
    if not os.path.exists(py):
        row("device plugin", "health change / RSS", "not run: run bash scripts/test.sh first (grpcio)")
        return
    out = sh(py, os.path.join(REPO, "scripts", "bench_device_plugin.py"), "20",
             capture_output=True, text=True).stdout
    _, trials, latency, rss = out.strip().split("\t")
    row("device plugin", f"TPU status change -> kubelet sees Unhealthy/Healthy ({trials})", latency,
        "max <= 2000 ms")
    row("device plugin", "peak RSS of `coral-nfd device-plugin`", rss.replace("peak RSS ", ""))


def metrics(tree: str, dev: str):
    print("9. metrics endpoint", flush=True)
    import socket
    import urllib.request

    def rss_kib(pid) -> int:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:"))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        base = [RELEASE, "--sysfs-root", os.path.join(tree, "sys"), "--dev-root", dev,
                "--sleep-interval", "60s"]
        rss = {}
        for name, extra in [("off", []), ("on", ["--metrics-address", f"127.0.0.1:{port}"])]:
            p = subprocess.Popen(base + ["--output-file", os.path.join(out, name), *extra],
                                 stderr=subprocess.DEVNULL)
            time.sleep(2.5)
            if extra:
                url = f"http://127.0.0.1:{port}/metrics"
                lat = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(url, timeout=5) as r:
                        body = r.read()
                    lat.append(time.perf_counter() - t0)
                lat.sort()
                row("metrics", f"scrape (GET /metrics, {len(body)} bytes) on the realistic tree, 200 scrapes",
                    f"p50 {lat[100] * 1e3:.2f} ms, p99 {lat[197] * 1e3:.2f} ms")
            rss[name] = rss_kib(p.pid)
            p.terminate()
            p.wait()
        row("metrics", "daemon resident memory at rest, metrics off / on (after 200 scrapes)",
            f"{rss['off'] / 1024:.1f} MiB / {rss['on'] / 1024:.1f} MiB")


def binary():
    print("6. release binary", flush=True)
    row("binary", "target/release/coral-nfd (LTO, stripped)", f"{os.path.getsize(RELEASE) / 1024:.0f} KiB")
    target = "x86_64-unknown-linux-gnu" if platform.machine() == "x86_64" else f"{platform.machine()}-unknown-linux-gnu"
    env = {**os.environ, "RUSTFLAGS": "-C target-feature=+crt-static",
           "CARGO_TARGET_DIR": os.path.join(REPO, "target", "static")}
    sh("cargo", "build", "--release", "--locked", "--quiet", "--target", target, cwd=REPO, env=env)
    static = os.path.join(REPO, "target", "static", target, "release", "coral-nfd")
    interp = "INTERP" in sh("readelf", "-lW", static, capture_output=True, text=True).stdout
    row("binary", "static build (crt-static), as in the image",
        f"{os.path.getsize(static) / 1024:.0f} KiB, {'dynamically' if interp else 'statically'} linked")


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes device nodes with mknod")
    print(f"coral-nfd benchmark on {machine()}, {time.strftime('%Y-%m-%d')}", flush=True)
    sh("cargo", "build", "--release", "--locked", "--quiet", cwd=REPO)
    sh("gcc", "-O2", "-static", "-o", MAXRSS, os.path.join(REPO, "scripts", "maxrss.c"))
    shutil.rmtree(TREES, ignore_errors=True)
    sh(sys.executable, os.path.join(REPO, "scripts", "make-fixtures.py"), "--bench", TREES,
       stdout=subprocess.DEVNULL)
    tree = os.path.join(TREES, "realistic")
    dev = make_dev(tree)
    one_shot(tree, dev)
    scaling()
    syscalls(tree, dev)
    daemon_cpu(tree, dev)
    hotplug(tree, dev)
    binary()
    nfd_latency()
    device_plugin()
    metrics(tree, dev)

    print()
    print(f"Machine: {machine()}")
    w = [max(len(r[i]) for r in ROWS) for i in range(4)]
    head = ("section", "measure", "value", "goal")
    w = [max(w[i], len(head[i])) for i in range(4)]
    fmt = "| " + " | ".join(f"{{:<{x}}}" for x in w) + " |"
    print(fmt.format(*head))
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in ROWS:
        print(fmt.format(*r))


if __name__ == "__main__":
    main()

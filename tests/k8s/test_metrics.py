"""The /metrics endpoint against the real thing (Debian's prometheus package): promtool
lints what every fixture gives; a real Prometheus scrapes the daemon on a fixture and
answers queries, also after a TPU goes LAMED and a node disappears; promtool unit-tests
every alert (firing and not); the dashboard's queries parse and use only exported
metrics; the monitoring component's manifests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
import yaml

import conftest
from conftest import FIXTURES, REPO, binary, find, render, wait
from kubelet import Kubelet

MONITORING = os.path.join(REPO, "deploy/coral-nfd/components/monitoring")
RULES = os.path.join(MONITORING, "coral-nfd.rules.yaml")
APEX1 = "devices/pci0000:00/0000:00:1d.0/0000:04:00.0/apex/apex_1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout=5) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Labeler:
    """The labeler daemon on a copy of a fixture, with its metrics on a free port."""

    def __init__(self, scenario: str, interval: str = "1h"):
        self.dir = tempfile.mkdtemp(prefix="coral-metrics-")
        self.sys = os.path.join(self.dir, "sys")
        shutil.copytree(os.path.join(FIXTURES, scenario, "sys"), self.sys, symlinks=True)
        self.dev = os.path.join(self.dir, "dev")
        os.makedirs(self.dev)
        conftest.make_dev_root(scenario, self.dev)
        self.port = free_port()
        self.out = os.path.join(self.dir, "features.d", "coral-nfd")
        self.proc = subprocess.Popen(
            [binary(), "--sysfs-root", self.sys, "--dev-root", self.dev, "--output-file", self.out,
             "--sleep-interval", interval, "--write-gap", "0s",
             "--metrics-address", f"127.0.0.1:{self.port}"],
            stderr=subprocess.PIPE, text=True)
        wait("the first write", lambda: os.path.exists(self.out))
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> str:
        status, headers, body = fetch(self.url)
        assert status == 200, (status, body)
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return body

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def promtool_check(text: str):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), (
        p.returncode, p.stdout, p.stderr)


def sample_names(text: str) -> set[str]:
    return {re.split(r"[{ ]", l, maxsplit=1)[0] for l in text.splitlines() if l and not l.startswith("#")}


@pytest.mark.parametrize("scenario", conftest.scenarios())
def test_promtool_finds_nothing_on_any_fixture(scenario):
    lab = Labeler(scenario)
    try:
        text = lab.metrics()
        promtool_check(text)
        assert "coral_nfd_build_info" in text
        # The TPU series come from the same scan and rules as the labels.
        with open(lab.out) as fh:
            labels = dict(l.strip().split("=", 1) for l in fh if "=" in l and not l.startswith("#"))
        p = "feature.node.kubernetes.io/coral-tpu."
        ready = [l for l in text.splitlines() if l.startswith("coral_tpu_ready{")]
        for line in ready:
            device = re.search(r'device="([^"]*)"', line).group(1)
            if device:
                assert labels[p + f"{device}.ready"] == ("true" if line.endswith(" 1") else "false"), line
        total = sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("coral_ready_devices{"))
        assert str(total) == labels.get(p + "ready.count", "0"), scenario
    finally:
        lab.close()


def plugin_metrics() -> str:
    """The device plugin's /metrics on pcie-dual, registered with a kubelet stand-in and
    after one Allocate."""
    d = tempfile.mkdtemp(prefix="coral-dp-metrics-")
    try:
        sys_root = os.path.join(d, "sys")
        shutil.copytree(os.path.join(FIXTURES, "pcie-dual", "sys"), sys_root, symlinks=True)
        dev = os.path.join(d, "dev")
        kdir = os.path.join(d, "kubelet")
        os.makedirs(dev)
        os.makedirs(kdir)
        conftest.make_dev_root("pcie-dual", dev)
        kubelet = Kubelet(kdir)
        kubelet.start()
        port = free_port()
        proc = subprocess.Popen([binary(), "device-plugin", "--sysfs-root", sys_root, "--dev-root", dev,
                                 "--kubelet-dir", kdir, "--metrics-address", f"127.0.0.1:{port}"],
                                stderr=subprocess.DEVNULL)
        try:
            wait("registration", lambda: kubelet.registrations)
            wait("devices", lambda: len(kubelet.health("coral.ai/tpu")) == 2)
            kubelet.allocate("coral.ai/tpu", ["0000:03:00.0"])
            return fetch(f"http://127.0.0.1:{port}/metrics")[2]
        finally:
            proc.terminate()
            proc.wait(10)
            kubelet.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_device_plugins_metrics_pass_promtool():
    text = plugin_metrics()
    promtool_check(text)
    assert "coral_nfd_device_plugin_registered 1" in text
    assert 'coral_nfd_device_plugin_devices{health="healthy"} 2' in text
    assert 'coral_nfd_device_plugin_allocations_total{result="success"} 1' in text
    assert 'coral_nfd_device_plugin_registrations_total{result="success"} 1' in text


def test_the_endpoint_answers_only_metrics_and_survives_garbage():
    lab = Labeler("pcie-ready")
    try:
        base = f"http://127.0.0.1:{lab.port}"
        assert fetch(base + "/")[0] == 404
        assert fetch(base + "/metrics/x")[0] == 404
        req = urllib.request.Request(base + "/metrics", method="POST", data=b"x")
        assert fetch_req(req)[0] == 405
        for junk in [b"\x16\x03\x01\x02\x00\x01\x00", b"GET /metrics HTTP/9.9\r\n\r\n",
                     b"A" * 20000, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n"]:
            with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as s:
                s.sendall(junk)
                answer = s.recv(200)
            assert answer.startswith(b"HTTP/1.1 4"), (junk[:20], answer)
        # A client that sends nothing is cut off after the deadline; the next scrape works.
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as s:
            start = time.monotonic()
            answer = s.recv(200)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 7
        lab.metrics()
        # A scrape never makes the daemon write.
        before = os.stat(lab.out).st_ino
        for _ in range(20):
            lab.metrics()
        assert os.stat(lab.out).st_ino == before
    finally:
        lab.close()


def fetch_req(req):
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_bad_or_taken_address_is_a_usage_error():
    lab = Labeler("no-coral")
    try:
        d = tempfile.mkdtemp()
        for addr, says in [(f"127.0.0.1:{lab.port}", "Address already in use"),
                           ("192.0.2.1:9965", "Cannot assign requested address"),
                           ("localhost:9965", "IP:PORT")]:
            p = subprocess.run([binary(), "--sysfs-root", os.path.join(FIXTURES, "no-coral/sys"),
                                "--output-file", os.path.join(d, "f"), "--sleep-interval", "1m",
                                "--metrics-address", addr], capture_output=True, text=True, timeout=10)
            assert p.returncode == 2, (addr, p.stderr)
            assert says in p.stderr and "started" not in p.stderr, (addr, p.stderr)
        shutil.rmtree(d)
    finally:
        lab.close()


class Prometheus:
    """Debian's prometheus on loopback, scraping `targets` every second."""

    def __init__(self, targets: list[str]):
        self.dir = tempfile.mkdtemp(prefix="coral-prom-")
        self.port = free_port()
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as fh:
            yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [RULES],
                            "scrape_configs": [{"job_name": "coral-nfd/coral-nfd",
                                                "static_configs": [{"targets": targets,
                                                                    "labels": {"node": "n1"}}]}]}, fh)
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir}/prometheus.yml",
             f"--storage.tsdb.path={self.dir}/data", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait("prometheus ready", lambda: self.ready(), 60, 0.5)

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.proc.stderr.read()
        try:
            return fetch(f"http://127.0.0.1:{self.port}/-/ready", 2)[0] == 200
        except OSError:
            return False

    def query(self, q: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        status, _, body = fetch(url)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (q, doc)
        return doc["data"]["result"]

    def value(self, q: str) -> float | None:
        r = self.query(q)
        return float(r[0]["value"][1]) if r else None

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_real_prometheus_scrapes_it():
    lab = Labeler("pcie-dual", interval="1s")
    prom = None
    try:
        prom = Prometheus([f"127.0.0.1:{lab.port}"])
        wait("the first scrape", lambda: prom.value("up") == 1, 60, 0.5)
        tpu = '{device="apex_1",pci_address="0000:04:00.0"}'
        assert prom.value(f"coral_tpu_ready{tpu}") == 1
        assert prom.value(f"coral_tpu_temperature_celsius{tpu}") == 51.55
        assert prom.value(f"coral_tpu_throttle_level{tpu}") == 0
        assert prom.value('coral_ready_devices{bus="pcie"}') == 2
        assert prom.value('coral_nfd_scans_total{result="complete"}') >= 1
        # The TPU goes LAMED: ready 0, state status-lamed, within a scan and a scrape.
        with open(os.path.join(lab.sys, APEX1, "status"), "w") as fh:
            fh.write("LAMED\n")
        wait("LAMED in Prometheus", lambda: prom.value(
            f'coral_tpu_state{{device="apex_1",state="status-lamed"}}') == 1, 15, 0.5)
        assert prom.value(f"coral_tpu_ready{tpu}") == 0
        assert prom.value('coral_ready_devices{bus="pcie"}') == 1
        # apex_0's node disappears: node-missing, and no TPU ready at all.
        os.remove(os.path.join(lab.dev, "apex_0"))
        wait("node-missing in Prometheus", lambda: prom.value(
            'coral_tpu_state{device="apex_0",state="node-missing"}') == 1, 15, 0.5)
        assert prom.value('coral_ready_devices{bus="pcie"}') == 0
        # The dashboard's queries, against this Prometheus.
        for expr in dashboard_queries():
            prom.query(expr)
        # The labeler goes: its target is down.
        lab.proc.send_signal(signal.SIGTERM)
        lab.proc.wait(10)
        wait("up == 0", lambda: prom.value("up") == 0, 15, 0.5)
    finally:
        if prom:
            prom.close()
        lab.close()


# --- alerts ------------------------------------------------------------------------------

# alertname -> [(input series and values, eval time, the alerts expected then: labels and
# the $value the description gets)]. Each alert has a case where it fires and one where it
# does not.
N = 'node="n1"'
T0 = f'device="apex_0",pci_address="0000:03:00.0",{N}'
T1 = f'device="apex_1",pci_address="0000:04:00.0",{N}'
CASES = {
    "CoralTPUNotReady": [
        ({f"coral_tpu_ready{{{T0}}}": "0x10", f"coral_tpu_ready{{{T1}}}": "1x10"}, "4m", []),
        ({f"coral_tpu_ready{{{T0}}}": "0x10", f"coral_tpu_ready{{{T1}}}": "1x10"}, "6m",
         [({"device": "apex_0", "pci_address": "0000:03:00.0", "node": "n1"}, "0")]),
    ],
    "CoralTPUThrottled": [
        ({f"coral_tpu_throttle_level{{{T0}}}": "0x5 1x15", f"coral_tpu_throttle_level{{{T1}}}": "1x8 0x12"},
         "12m", []),
        ({f"coral_tpu_throttle_level{{{T0}}}": "0x5 1x15", f"coral_tpu_throttle_level{{{T1}}}": "1x8 0x12"},
         "16m", [({"device": "apex_0", "pci_address": "0000:03:00.0", "node": "n1"}, "1")]),
    ],
    "CoralTPUNearShutdown": [
        ({f"coral_tpu_temperature_celsius{{{T0}}}": "90x5 96x5",
          f"coral_tpu_shutdown_threshold_celsius{{{T0}}}": "99.8x10"}, "5m", []),
        ({f"coral_tpu_temperature_celsius{{{T0}}}": "90x5 96x5",
          f"coral_tpu_shutdown_threshold_celsius{{{T0}}}": "99.8x10"}, "8m",
         [({"device": "apex_0", "pci_address": "0000:03:00.0", "node": "n1"}, "96")]),
    ],
    "CoralTPUThermalProtectionOff": [
        ({f"coral_tpu_shutdown_enabled{{{T0}}}": "1x20", f"coral_tpu_temperature_poll_interval_seconds{{{T0}}}": "5x20",
          f"coral_tpu_shutdown_enabled{{{T1}}}": "0x20", f"coral_tpu_temperature_poll_interval_seconds{{{T1}}}": "5x20"},
         "10m", []),
        ({f"coral_tpu_shutdown_enabled{{{T0}}}": "1x20", f"coral_tpu_temperature_poll_interval_seconds{{{T0}}}": "0x20",
          f"coral_tpu_shutdown_enabled{{{T1}}}": "0x20", f"coral_tpu_temperature_poll_interval_seconds{{{T1}}}": "5x20"},
         "16m", [({"device": "apex_0", "pci_address": "0000:03:00.0", "node": "n1"}, "0"),
                 ({"device": "apex_1", "pci_address": "0000:04:00.0", "node": "n1"}, "0")]),
    ],
    "CoralNfdDown": [
        ({f'up{{job="coral-nfd/coral-nfd",pod="coral-nfd-x",{N}}}': "1x3 0x10",
          f'up{{job="other",pod="other-x",{N}}}': "0x13"}, "5m", []),
        ({f'up{{job="coral-nfd/coral-nfd",pod="coral-nfd-x",{N}}}': "1x3 0x10",
          f'up{{job="other",pod="other-x",{N}}}': "0x13"}, "9m",
         [({"job": "coral-nfd/coral-nfd", "pod": "coral-nfd-x", "node": "n1"}, "0")]),
    ],
    "CoralNfdPodsUnavailable": [
        ({'kube_daemonset_status_number_unavailable{daemonset="coral-nfd",namespace="coral-nfd"}': "0x20",
          'kube_daemonset_status_number_unavailable{daemonset="other",namespace="x"}': "1x20"}, "15m", []),
        ({'kube_daemonset_status_number_unavailable{daemonset="coral-nfd",namespace="coral-nfd"}': "0x3 1x17"},
         "15m", [({"daemonset": "coral-nfd", "namespace": "coral-nfd"}, "1")]),
    ],
    "CoralNfdLabelsExpiring": [
        # Refreshed: always 180 s ahead of now.
        ({f"coral_nfd_feature_file_expiry_timestamp_seconds{{{N}}}": "180+60x10"}, "5m", []),
        # Not refreshed after 4m: 90 s left at 7m, 30 s at 8m.
        ({f"coral_nfd_feature_file_expiry_timestamp_seconds{{{N}}}": "180+60x4 510x10"}, "7m", []),
        ({f"coral_nfd_feature_file_expiry_timestamp_seconds{{{N}}}": "180+60x4 510x10"}, "8m",
         [({"node": "n1"}, "30")]),
    ],
    "CoralNfdWritesFailing": [
        ({f'coral_nfd_feature_file_writes_total{{result="failure",{N}}}': "0x20",
          f'coral_nfd_feature_file_writes_total{{result="success",{N}}}': "0+1x20"}, "15m", []),
        ({f'coral_nfd_feature_file_writes_total{{result="failure",{N}}}': "0x3 0+1x17"}, "10m",
         [({"result": "failure", "node": "n1"}, None)]),
    ],
    "CoralNfdScanIncomplete": [
        ({f'coral_nfd_scans_total{{result="complete",{N}}}': "0+1x20",
          f'coral_nfd_scans_total{{result="incomplete",{N}}}': "0x20"}, "15m", []),
        ({f'coral_nfd_scans_total{{result="incomplete",{N}}}': "0x3 0+1x17"}, "15m",
         [({"result": "incomplete", "node": "n1"}, None)]),
    ],
    "CoralDevicePluginNotRegistered": [
        ({f"coral_nfd_device_plugin_registered{{{N}}}": "1x20"}, "15m", []),
        ({f"coral_nfd_device_plugin_registered{{{N}}}": "1x3 0x17"}, "15m", [({"node": "n1"}, "0")]),
    ],
}


def load_rules() -> dict:
    with open(RULES) as fh:
        doc = yaml.safe_load(fh)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def expand(template: str, labels: dict, value: str | None) -> str:
    """The rule's annotation with {{ $labels.X }} and {{ $value }} filled in (the only
    template parts the rules use); promtool renders them for real and compares."""
    out = re.sub(r"{{ \$labels\.(\w+) }}", lambda m: labels.get(m.group(1), ""), template)
    if value is not None:
        out = out.replace("{{ $value }}", value)
    assert "{{" not in out, out
    return out


def test_every_alert_fires_and_holds_back_under_promtool():
    rules = load_rules()
    assert set(CASES) == set(rules), set(rules) ^ set(CASES)
    tests = []
    for alert, cases in CASES.items():
        assert any(exp for _, _, exp in cases) and any(not exp for _, _, exp in cases), alert
        for series, at, expected in cases:
            exp = []
            for labels, value in expected:
                ann = rules[alert]["annotations"]
                if value is None:
                    # The value is an increase(): it lands between scrapes; fill in what
                    # promtool computes by asking for it first would be circular, so
                    # these descriptions use no $value.
                    assert all("$value" not in a for a in ann.values()), alert
                exp.append({"exp_labels": {**labels, **rules[alert]["labels"]},
                            "exp_annotations": {k: expand(v, labels, value) for k, v in ann.items()}})
            tests.append({"interval": "1m",
                          "input_series": [{"series": s, "values": v} for s, v in series.items()],
                          "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": exp}]})
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "alerts-test.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump({"rule_files": [RULES], "evaluation_interval": "1m", "tests": tests}, fh)
        p = subprocess.run(["promtool", "test", "rules", path], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        shutil.rmtree(d)


def test_the_rules_file_is_valid_and_equals_the_prometheusrule():
    p = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(RULES) as fh:
        plain = yaml.safe_load(fh)
    pr = find(render("monitoring"), "PrometheusRule", "coral-nfd")
    assert pr["spec"] == plain


# --- the dashboard -----------------------------------------------------------------------

def dashboard() -> dict:
    cm = find(render("monitoring"), "ConfigMap", "coral-nfd-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(cm["data"]["coral-nfd.json"])


def dashboard_queries() -> list[str]:
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    # Grafana's variables, as it substitutes them.
    subst = {"$node": ".*", "$__rate_interval": "1m"}
    out = []
    for e in exprs:
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", e)
        if m:
            e = f"count by ({m.group(2)}) ({m.group(1)})"
        for k, v in subst.items():
            e = e.replace(k, v)
        out.append(e)
    return out


def test_the_dashboard_uses_only_exported_metrics():
    # Every name the endpoints export, the hardware ones from a node with everything.
    exported = set()
    for scenario in ["pcie-and-usb", "pcie-throttled"]:
        lab = Labeler(scenario)
        try:
            exported |= sample_names(lab.metrics())
        finally:
            lab.close()
    exported |= sample_names(plugin_metrics())
    used = set()
    for e in dashboard_queries():
        used |= set(re.findall(r"\b(coral_[a-z_]+)\b", e))
        for fn in re.findall(r"\b([a-z_]+)\(", e):
            assert fn in {"sum", "increase", "count", "time", "rate", "max"}, (fn, e)
    assert used and used <= exported, used - exported
    # Panels for the four things the dashboard is for.
    titles = " ".join(p["title"] for p in dashboard()["panels"]).lower()
    for what in ["temperature", "ready", "throttle", "labels expire"]:
        assert what in titles, what


# --- the manifests -------------------------------------------------------------------------

def test_the_port_is_open_only_with_the_component():
    for name in ("coral-nfd", "coral-nfd-device-plugin"):
        for o in render(name):
            if o["kind"] == "DaemonSet":
                (c,) = o["spec"]["template"]["spec"]["containers"]
                assert "ports" not in c and "--metrics-address" not in c["args"], name
    objs = render("monitoring")
    for ds in (o for o in objs if o["kind"] == "DaemonSet"):
        (c,) = ds["spec"]["template"]["spec"]["containers"]
        assert c["ports"] == [{"name": "metrics", "containerPort": 9965, "protocol": "TCP"}]
        i = c["args"].index("--metrics-address")
        assert c["args"][i + 1] == ":9965"
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "coral-nfd-deny-all")
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    allow = next(p for p in policies if p["metadata"]["name"] == "coral-nfd-allow-scrape")
    assert allow["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = allow["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    pm = find(objs, "PodMonitor", "coral-nfd")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert any(r.get("targetLabel") == "node" for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"])

"""Frigate as it will really start: the nginx listen template rendered by Go's
text/template and served by a real nginx on loopback (TLS on and off, IPv4 and IPv6,
and a network namespace without IPv6), the seed-config init container run by a real
shell, the config version, and scheduling on libedgetpu's PCIe numbering on a tree
whose directory order is not name order."""

from __future__ import annotations

import functools
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
import yaml

import nfd
from conftest import FIXTURES_SCRIPT, REPO, binary, find, render

TEMPLATE = os.path.join(REPO, "deploy/frigate/base/listen.gotmpl")
# The image the template was written for: Frigate 0.17 brings its own IPv6 setting and
# a different template (see the README); upgrading must be a deliberate change here.
FRIGATE_IMAGE = "ghcr.io/blakeblackshear/frigate:0.16.3"


@functools.cache
def gotmpl() -> str:
    out = os.path.join(REPO, "target", "gotmpl")
    subprocess.run(["go", "build", "-o", out, os.path.join(REPO, "tests/k8s/gotmpl/main.go")],
                   check=True, cwd=REPO)
    return out


def render_listen(data: str, template: str = TEMPLATE) -> str:
    return subprocess.run([gotmpl(), template], input=data, check=True, capture_output=True,
                          text=True).stdout


class Nginx:
    """nginx with a configuration shaped like Frigate's (nginx.conf's one server block
    starts with `include listen.conf;`), the rendered template included as it is; only
    its certificate directory, /etc/letsencrypt, is moved into a temporary one."""

    def __init__(self, listen_conf: str, netns: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="frigate-nginx-")
        le = os.path.join(self.dir, "letsencrypt")
        live = os.path.join(le, "live/frigate")
        os.makedirs(live)
        os.makedirs(os.path.join(le, "www/.well-known/acme-challenge"))
        with open(os.path.join(le, "www/.well-known/acme-challenge/token"), "w") as fh:
            fh.write("acme-ok")
        # A throwaway self-signed certificate, as Frigate's nginx run script makes one.
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-days", "1", "-nodes",
                        "-x509", "-subj", "/O=coral-nfd test/CN=*",
                        "-keyout", os.path.join(live, "privkey.pem"),
                        "-out", os.path.join(live, "fullchain.pem")],
                       check=True, capture_output=True)
        with open(os.path.join(self.dir, "listen.conf"), "w") as fh:
            fh.write(listen_conf.replace("/etc/letsencrypt/", le + "/"))
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as fh:
            # `user root;` as in Frigate's nginx.conf (its files are root's).
            fh.write(f"""daemon off;
user root;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        include {self.dir}/listen.conf;
        location / {{
            return 200 "frigate\\n";
        }}
    }}
}}
""")
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = None

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, "nginx", "-t", "-c", self.conf], capture_output=True,
                              text=True)

    def start(self):
        self.proc = subprocess.Popen([*self.prefix, "nginx", "-c", self.conf],
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(self.dir, "nginx.pid")):
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        time.sleep(0.2)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def get(host: str, port: int, tls: bool, path: str = "/"):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=5, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, dict(r.getheaders()), body


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# Frigate 0.16's get_tls_settings.py prints the config's `tls:` section, or
# {"enabled": true} when there is none (so TLS is on by default).
@pytest.mark.parametrize("tls", [True, False])
def test_nginx_serves_the_rendered_template_on_both_families(tls):
    n = Nginx(render_listen('{"enabled": %s}' % ("true" if tls else "false")))
    try:
        t = n.test_config()
        assert t.returncode == 0, t.stderr
        n.start()
        hosts = ["127.0.0.1"] + (["::1"] if ipv6_loopback() else [])
        assert len(hosts) == 2, "no IPv6 loopback here: the dual-stack half did not run"
        for host in hosts:
            assert get(host, 5000, False)[0] == 200, host
            status, headers, body = get(host, 8971, tls)
            assert (status, body) == (200, "frigate\n"), host
            hsts = headers.get("Strict-Transport-Security")
            assert (hsts == "max-age=63072000") == tls, headers
            if tls:
                # ACME challenges are served from the image's directory, as text.
                status, headers, body = get(host, 8971, True, "/.well-known/acme-challenge/token")
                assert (status, body) == (200, "acme-ok")
                assert headers["Content-Type"].startswith("text/plain")
                # Plain HTTP on the TLS port is refused by nginx.
                assert get(host, 8971, False)[0] == 400
    finally:
        n.stop()


def test_a_tls_section_without_enabled_renders_plain_http():
    # Frigate renders `tls: {}` with no `enabled` key: the template's `not .enabled` is
    # true, as in the image's own template (plain HTTP on 8971).
    conf = render_listen("{}")
    assert "ssl" not in "".join(l for l in conf.splitlines() if l.startswith("listen"))


def test_the_previous_template_fails_nginx_with_tls_on():
    """The bug this test exists for: `listen ... ssl` without a certificate."""
    old = "listen [::]:5000 ipv6only=off;\n{{ if not .enabled }}\nlisten [::]:8971 ipv6only=off;\n" \
          "{{ else }}\nlisten [::]:8971 ipv6only=off ssl;\n{{ end }}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".gotmpl", delete=False) as fh:
        fh.write(old)
    try:
        n = Nginx(render_listen('{"enabled": true}', fh.name))
        t = n.test_config()
        n.stop()
    finally:
        os.unlink(fh.name)
    assert t.returncode != 0
    assert 'no "ssl_certificate" is defined' in t.stderr


def test_a_node_with_ipv6_disabled_still_serves_ipv4():
    """net.ipv6.conf.*.disable_ipv6=1 (the usual way to turn IPv6 off): [::] with
    ipv6only=off still binds and takes IPv4. (A kernel booted with ipv6.disable=1 has no
    IPv6 sockets at all; nginx then cannot bind [::]: the README says to drop the
    override there.)"""
    ns = f"coral-nov6-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CORAL_NFD_ALLOW_NO_MKNOD"):
            pytest.skip("*** cannot make a network namespace: SKIPPED ***")
        pytest.fail(f"ip netns add (needs root): {made.stderr}")
    n = None
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    ["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=1"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        n = Nginx(render_listen('{"enabled": false}'), netns=ns)
        n.start()
        probe = ("import urllib.request,sys\n"
                 "for p in (5000, 8971):\n"
                 "    sys.stdout.write(urllib.request.urlopen(f'http://127.0.0.1:{p}/').read().decode())\n")
        out = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe], check=True,
                             capture_output=True, text=True).stdout
        assert out == "frigate\nfrigate\n"
    finally:
        if n:
            n.stop()
        subprocess.run(["ip", "netns", "del", ns])


def test_the_template_is_pinned_to_the_image_it_was_written_for():
    dep = find(render("frigate-base"), "Deployment", "frigate")
    images = {c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in dep["spec"]["template"]["spec"]["initContainers"]}
    assert images == {FRIGATE_IMAGE}
    with open(TEMPLATE) as fh:
        assert "Frigate 0.16.3" in fh.read()


def overlay_configs():
    for name in ["frigate-base", "pcie", "pcie-dual", "usb", "device-plugin"]:
        cm = find(render(name), "ConfigMap", "frigate-config")
        yield name, yaml.safe_load(cm["data"]["config.yml"])


def test_every_config_says_its_version():
    # Without it Frigate 0.16 runs every migration since 0.13 on first start, writes a
    # backup and turns detection on (frigate/util/config.py, migrate_frigate_config).
    for name, cfg in overlay_configs():
        assert cfg["version"] == "0.16-0", name


def test_no_capability_is_claimed_for_tpu_temperature():
    # Frigate reads /sys/class/apex/*/temp as a plain file; CAP_PERFMON is for Intel GPU
    # statistics, and a privileged container has every capability anyway.
    for name in ["pcie", "pcie-dual", "usb", "device-plugin"]:
        dep = find(render(name), "Deployment", "frigate")
        for c in dep["spec"]["template"]["spec"]["containers"]:
            caps = c.get("securityContext", {}).get("capabilities", {})
            assert "add" not in caps, (name, caps)
    for root, _, files in os.walk(os.path.join(REPO, "deploy")):
        for f in files:
            with open(os.path.join(root, f)) as fh:
                assert "PERFMON" not in fh.read(), f


def test_the_seed_is_copied_only_where_frigate_would_read_none():
    init = find(render("frigate-base"), "Deployment", "frigate")["spec"]["template"]["spec"][
        "initContainers"][0]
    script = init["command"][-1]
    cases = {(): "seeded", ("config.yml",): "kept", ("config.yaml",): "kept",
             ("config.yml", "config.yaml"): "kept"}
    for existing, want in cases.items():
        d = tempfile.mkdtemp()
        try:
            os.makedirs(os.path.join(d, "config"))
            os.makedirs(os.path.join(d, "seed"))
            with open(os.path.join(d, "seed/config.yml"), "w") as fh:
                fh.write("seed\n")
            for name in existing:
                with open(os.path.join(d, "config", name), "w") as fh:
                    fh.write("mine\n")
            s = script.replace("/config/", d + "/config/").replace("/seed/", d + "/seed/")
            subprocess.run(["sh", "-c", s], check=True, capture_output=True)
            names = sorted(os.listdir(os.path.join(d, "config")))
            if want == "seeded":
                assert names == ["config.yml"]
            else:
                assert names == sorted(existing), (existing, names)
                for name in existing:
                    with open(os.path.join(d, "config", name)) as fh:
                        assert fh.read() == "mine\n"
        finally:
            shutil.rmtree(d)


def affinity(overlay):
    return find(render(overlay), "Deployment", "frigate")["spec"]["template"]["spec"]["affinity"]


def test_pcie_overlays_follow_libedgetpu_numbering_on_four_tpus():
    """Four TPUs whose /sys/class/apex order is not name order: the overlays require the
    TPUs libedgetpu calls pci:0 (and pci:1), whatever their names; apex_0 working is not
    enough when it is not pci:0."""
    base = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        first = None
        for creation in ([2, 0, 3, 1], [1, 3, 0, 2], [3, 2, 1, 0]):
            shutil.rmtree(base)
            os.makedirs(base)
            FIXTURES_SCRIPT.quad(base, creation, lamed=-1)
            order = os.listdir(os.path.join(base, "sys/class/apex"))
            if order != sorted(order) and order[0] != "apex_0":
                first = order
                break
        assert first, "no creation order gave a directory order other than name order"
        # The TPU libedgetpu lists first is broken; apex_0 works.
        lamed = int(first[0].split("_")[1])
        shutil.rmtree(base)
        os.makedirs(base)
        FIXTURES_SCRIPT.quad(base, creation, lamed=lamed)
        order = os.listdir(os.path.join(base, "sys/class/apex"))
        assert order == first, "the directory order changed between two identical builds"
        dev = os.path.join(base, "dev")
        os.makedirs(dev)
        FIXTURES_SCRIPT.make_nodes(os.path.join(base, "dev.list"), dev)
        sys_root = os.path.join(base, "sys")
        out = subprocess.run([binary(), "--sysfs-root", sys_root, "--dev-root", dev], check=True,
                             capture_output=True, text=True).stdout
        features, labels = nfd.node_features(sys_root, out)
        p = "feature.node.kubernetes.io/coral-tpu."
        assert labels[p + "apex_0.ready"] == "true" or first[0] == "apex_0"
        for n, name in enumerate(order):
            assert labels[p + f"libedgetpu.pci.{n}.ready"] == str(name != first[0]).lower(), (n, name)
        assert not nfd.affinity_matches(affinity("pcie"), labels)
        assert not nfd.affinity_matches(affinity("pcie-dual"), labels)
        # frigate-config names the same TPUs: pci:1, pci:2, pci:3.
        cfg = subprocess.run([binary(), "frigate-config", "--sysfs-root", sys_root, "--dev-root", dev],
                             check=True, capture_output=True, text=True).stdout
        devices = sorted(d["device"] for d in yaml.safe_load(cfg)["detectors"].values())
        assert devices == ["pci:1", "pci:2", "pci:3"]
        # With pci:0 working again, both overlays schedule there.
        status = os.path.join(sys_root, "class/apex", first[0], "status")
        with open(status, "w") as fh:
            fh.write("ALIVE\n")
        out = subprocess.run([binary(), "--sysfs-root", sys_root, "--dev-root", dev], check=True,
                             capture_output=True, text=True).stdout
        _, labels = nfd.node_features(sys_root, out)
        assert nfd.affinity_matches(affinity("pcie"), labels)
        assert nfd.affinity_matches(affinity("pcie-dual"), labels)
    finally:
        shutil.rmtree(base, ignore_errors=True)

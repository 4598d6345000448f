"""Frigate as it will really start. 0.17.2 (the default): its own nginx listen template
(a model written from the v0.17.2 file) rendered by Go's text/template with the data its
helper makes from each shipped config, served by a real nginx on loopback over IPv4 and
IPv6, and the same check failing when a 0.16-style override is left mounted. 0.16.4 (the
frigate-0.16 component): the original write-up's override, TLS on and off, both families, a network
namespace without IPv6. The seed-config init container run by a real shell, the config
versions, /dev/shm against Frigate's formula, scheduling on libedgetpu's PCIe numbering,
the USB overlay on two sticks one of which is broken, and the optional components."""

from __future__ import annotations

import copy
import functools
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
import yaml

import nfd
from conftest import FIXTURES, FIXTURES_SCRIPT, REPO, binary, find, render, render_with

COMPONENT_016 = "deploy/frigate/components/frigate-0.16"
# The original write-up's IPv6 override, for Frigate 0.16 only (the frigate-0.16 component).
TEMPLATE = os.path.join(REPO, COMPONENT_016, "listen.gotmpl")
# A model of Frigate 0.17.2's own template (tests/k8s/frigate: not shipped).
TEMPLATE_017 = os.path.join(REPO, "tests/k8s/frigate/listen-0.17.2.gotmpl")
# The images the templates and configs were written for: upgrading is a deliberate change.
FRIGATE_IMAGE = "ghcr.io/blakeblackshear/frigate:0.17.2"
FRIGATE_016_IMAGE = "ghcr.io/blakeblackshear/frigate:0.16.4"
OVERLAYS = ["pcie", "pcie-dual", "usb", "device-plugin", "coral-device-plugin"]


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


def frigate_images(objs) -> set[str]:
    dep = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
    return {c["image"] for c in dep["containers"] + dep["initContainers"]}


def test_the_images_are_pinned():
    assert frigate_images(render("frigate-base")) == {FRIGATE_IMAGE}
    for overlay in OVERLAYS:
        assert frigate_images(render(overlay)) == {FRIGATE_IMAGE}, overlay
        with_016 = render_with(f"deploy/frigate/overlays/{overlay}", COMPONENT_016)
        assert frigate_images(with_016) == {FRIGATE_016_IMAGE}, overlay
    with open(TEMPLATE) as fh:
        assert "Frigate 0.16.4" in fh.read()


def seed_configs(objs) -> dict:
    cm = find(objs, "ConfigMap", "frigate-config")
    return {k: yaml.safe_load(v) for k, v in cm["data"].items()}


def test_every_config_says_its_version():
    """config.yml is 0.17's current format with native IPv6 (no migration, no backup
    rewrite on first start); config-0.16.yml the same for 0.16, without networking:
    (0.16's model refuses the key). Otherwise the two are the same config."""
    for name in ["frigate-base", *OVERLAYS]:
        configs = seed_configs(render(name))
        assert set(configs) == {"config.yml", "config-0.16.yml"}, name
        new, old = configs["config.yml"], configs["config-0.16.yml"]
        assert new["version"] == "0.17-0", name
        assert new["networking"] == {"ipv6": {"enabled": True}}, name
        assert old["version"] == "0.16-0" and "networking" not in old, name
        assert {k: v for k, v in new.items() if k not in ("version", "networking")} == \
            {k: v for k, v in old.items() if k != "version"}, name
        assert new["detectors"], f"{name}: detectors: {{}} crashes Frigate"


def test_frigate_config_never_prints_empty_detectors():
    """With no TPU ready, `coral-nfd frigate-config` prints no detectors: key at all (an
    empty mapping crashes Frigate 0.16 and 0.17 at start), and exits 3."""
    import conftest
    none_ready = 0
    for s in conftest.scenarios():
        code, out = conftest.coral_nfd(s, "frigate-config")
        doc = yaml.safe_load(out)
        if code == 3:
            none_ready += 1
            assert doc is None or "detectors" not in doc, (s, out)
        else:
            assert code == 0 and doc["detectors"], (s, out)
    assert none_ready >= 5


def test_the_0_16_component_seeds_the_0_16_config():
    for overlay in OVERLAYS:
        objs = render_with(f"deploy/frigate/overlays/{overlay}", COMPONENT_016)
        init = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]["initContainers"][0]
        assert init["env"] == [{"name": "SEED_CONFIG", "value": "config-0.16.yml"}], overlay


def test_go2rtc_arbitrary_exec_stays_off():
    """GO2RTC_ALLOW_ARBITRARY_EXEC would let go2rtc's exec/echo/expr sources run any
    command a config or the go2rtc API names (0.16.4 and 0.17 refuse them without it)."""
    for objs in [render(o) for o in OVERLAYS] + [
            render_with(f"deploy/frigate/overlays/{o}", COMPONENT_016) for o in OVERLAYS]:
        dep = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
        for c in dep["containers"] + dep["initContainers"]:
            assert "GO2RTC_ALLOW_ARBITRARY_EXEC" not in {e["name"] for e in c.get("env", [])}


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
    """The init container's script, run by a real shell with its rendered environment:
    the version's seed is copied only when /config has no config.yml or config.yaml."""
    for objs, seed in [(render("frigate-base"), "config.yml"),
                       (render_with("deploy/frigate/overlays/pcie", COMPONENT_016), "config-0.16.yml")]:
        init = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]["initContainers"][0]
        script = init["command"][-1]
        env = {**os.environ, **{e["name"]: e["value"] for e in init["env"]}}
        cases = {(): "seeded", ("config.yml",): "kept", ("config.yaml",): "kept",
                 ("config.yml", "config.yaml"): "kept"}
        for existing, want in cases.items():
            d = tempfile.mkdtemp()
            try:
                os.makedirs(os.path.join(d, "config"))
                os.makedirs(os.path.join(d, "seed"))
                for name in ("config.yml", "config-0.16.yml"):
                    with open(os.path.join(d, "seed", name), "w") as fh:
                        fh.write(f"seed {name}\n")
                for name in existing:
                    with open(os.path.join(d, "config", name), "w") as fh:
                        fh.write("mine\n")
                s = script.replace("/config/", d + "/config/").replace("/seed/", d + "/seed/")
                subprocess.run(["sh", "-c", s], check=True, capture_output=True, env=env)
                names = sorted(os.listdir(os.path.join(d, "config")))
                if want == "seeded":
                    assert names == ["config.yml"]
                    with open(os.path.join(d, "config/config.yml")) as fh:
                        assert fh.read() == f"seed {seed}\n"
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


# --- Frigate 0.17.2: IPv6 the native way, TLS kept ---------------------------------------

def listen_settings_017(config: dict) -> str:
    """What 0.17.2's docker/main/rootfs/usr/local/nginx/get_listen_settings.py prints for
    a config: the `tls:` section ({"enabled": true} when there is none) and
    networking.ipv6 ({"enabled": false} when there is none). A `networking:` that is
    null makes it fail (AttributeError), and the container with it: so does this."""
    return json.dumps({"tls": config.get("tls", {"enabled": True}),
                       "ipv6": config.get("networking", {}).get("ipv6", {"enabled": False})})


def served_template(objs) -> str:
    """The listen template Frigate's nginx renders in this Deployment: an override
    mounted over /usr/local/nginx/templates/listen.gotmpl if there is one, else the
    image's own (0.17.2's, as modelled)."""
    spec = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "frigate")
    mount = next((m for m in c.get("volumeMounts", [])
                  if m["mountPath"] == "/usr/local/nginx/templates/listen.gotmpl"), None)
    if mount is None:
        return TEMPLATE_017
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = find(objs, "ConfigMap", vol["configMap"]["name"].rsplit("-", 1)[0])
    with tempfile.NamedTemporaryFile("w", suffix=".gotmpl", delete=False) as fh:
        fh.write(cm["data"][mount["subPath"]])
    return fh.name


def check_017_serves(objs):
    """Frigate 0.17.2 as this Deployment starts it, with its seeded config: HTTPS on 8971
    and HTTP on 5000, over 127.0.0.1 and ::1."""
    assert frigate_images(objs) == {FRIGATE_IMAGE}
    config = seed_configs(objs)["config.yml"]
    conf = render_listen(listen_settings_017(config), served_template(objs))
    n = Nginx(conf)
    try:
        t = n.test_config()
        assert t.returncode == 0, t.stderr
        n.start()
        assert ipv6_loopback(), "no IPv6 loopback here: the dual-stack half cannot run"
        for host in ["127.0.0.1", "::1"]:
            assert get(host, 5000, False)[0] == 200, host
            try:
                status, headers, _ = get(host, 8971, True)
            except (ssl.SSLError, ConnectionError, OSError) as e:
                raise AssertionError(f"{host}:8971 does not serve HTTPS: {e}")
            assert status == 200 and headers.get("Strict-Transport-Security"), host
    finally:
        n.stop()


@pytest.mark.parametrize("name", ["frigate-base", *OVERLAYS])
def test_0_17_serves_https_and_http_on_both_families(name):
    check_017_serves(render(name))


def test_a_0_16_override_left_mounted_on_0_17_fails():
    """The upgrade trap: the 0.16 template left mounted on the 0.17.2 image renders with
    0.17's data as plain HTTP on 8971 (nginx starts, probes pass). The check above fails."""
    objs = copy.deepcopy(render_with("deploy/frigate/overlays/pcie", COMPONENT_016))
    spec = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
    for c in spec["containers"] + spec["initContainers"]:
        c["image"] = FRIGATE_IMAGE
    with pytest.raises(AssertionError) as e:
        check_017_serves(objs)
    print(e.value)


def test_the_0_17_template_model_follows_its_data():
    """The model answers to the helper's data as 0.17.2's template does: no IPv6 without
    networking.ipv6.enabled, plain 8971 with tls disabled or `tls: {}`."""
    def listens(data):
        return sorted(l.strip() for l in render_listen(json.dumps(data), TEMPLATE_017).splitlines()
                      if l.strip().startswith("listen"))
    assert listens({"tls": {"enabled": True}, "ipv6": {"enabled": False}}) == [
        "listen 5000;", "listen 8971 ssl;"]
    assert listens({"tls": {"enabled": False}, "ipv6": {"enabled": True}}) == [
        "listen 5000;", "listen 8971;", "listen [::]:5000;", "listen [::]:8971;"]
    assert listens({"tls": {}, "ipv6": {"enabled": False}}) == ["listen 5000;", "listen 8971;"]


# --- /dev/shm ---------------------------------------------------------------------------

def shm_mib_017(cameras: list[tuple[int, int]]) -> int:
    """Frigate 0.17.2's minimum /dev/shm in MiB (frigate/util/services.py,
    calculate_shm_requirements): 50 MiB, plus 20 frames per enabled camera of
    round((w * h * 1.5 + 270480) / 2^20, 1) MiB, plus the same for two 720p cameras it
    keeps room for."""
    per = lambda w, h: round((w * h * 1.5 + 270480) / 1048576, 1)
    total = sum(per(w, h) for w, h in cameras) + 2 * per(1280, 720)
    return round(50 + total * 20)


def test_shm_fits_the_cameras_the_comment_states():
    with open(os.path.join(REPO, "deploy/frigate/base/deployment.yaml")) as fh:
        text = fh.read()
    m = re.search(r"(\d+)Mi fits (\d+)\s+#?\s*1080p cameras", re.sub(r"\s+#\s+", " ", text))
    assert m, "the /dev/shm comment states how many 1080p cameras fit"
    size, cameras = int(m.group(1)), int(m.group(2))
    dep = find(render("frigate-base"), "Deployment", "frigate")["spec"]["template"]["spec"]
    shm = next(v for v in dep["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm["sizeLimit"] == f"{size}Mi"
    need = shm_mib_017([(1920, 1080)] * cameras)
    assert need == 50 + 64 * (cameras + 1), need
    # With margin: logs and go2rtc's files live there too.
    assert need <= 0.8 * size, (need, size)
    assert shm_mib_017([(1920, 1080)] * (cameras + 2)) > size * 0.8


# --- the USB overlay ----------------------------------------------------------------------

def test_usb_overlay_never_schedules_where_usb_could_be_a_broken_stick():
    """Two Coral sticks, one of them broken (its node missing): `device: usb` is
    libedgetpu's first stick, ready or not, so the overlay must not schedule there; on
    the same node with only the working stick, it does."""
    base = tempfile.mkdtemp()
    try:
        sys_root = os.path.join(base, "sys")
        shutil.copytree(os.path.join(FIXTURES, "usb-app-usb2", "sys"), sys_root, symlinks=True)
        dev = os.path.join(base, "dev")
        os.makedirs(dev)
        FIXTURES_SCRIPT.make_nodes(os.path.join(FIXTURES, "usb-app-usb2", "dev.list"), dev)
        devices = os.path.join(sys_root, "bus/usb/devices")
        first = next(n for n in sorted(os.listdir(devices))
                     if os.path.exists(os.path.join(devices, n, "idVendor"))
                     and open(os.path.join(devices, n, "idVendor")).read().strip() == "18d1")
        real = os.path.realpath(os.path.join(devices, first))
        second = os.path.join(os.path.dirname(real), "1-9")
        shutil.copytree(real, second, symlinks=True)
        with open(os.path.join(second, "devnum"), "w") as fh:
            fh.write("99\n")
        with open(os.path.join(second, "dev"), "w") as fh:
            fh.write("189:98\n")
        os.symlink(os.path.relpath(second, devices), os.path.join(devices, "1-9"))

        def labels():
            out = subprocess.run([binary(), "--sysfs-root", sys_root, "--dev-root", dev], check=True,
                                 capture_output=True, text=True).stdout
            return nfd.node_features(sys_root, out)[1]
        two = labels()
        p = "feature.node.kubernetes.io/coral-tpu."
        assert (two[p + "usb.count"], two[p + "usb.ready.count"]) == ("2", "1")
        assert not nfd.affinity_matches(affinity("usb"), two)
        cfg = subprocess.run([binary(), "frigate-config", "--sysfs-root", sys_root, "--dev-root", dev],
                             capture_output=True, text=True)
        assert cfg.returncode == 3 and "detectors" not in (yaml.safe_load(cfg.stdout) or {})
        os.remove(os.path.join(devices, "1-9"))
        one = labels()
        assert nfd.affinity_matches(affinity("usb"), one)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- optional components ------------------------------------------------------------------

def frigate_spec(objs):
    spec = find(objs, "Deployment", "frigate")["spec"]["template"]["spec"]
    return spec, next(c for c in spec["containers"] if c["name"] == "frigate")


def test_tls_secret_component():
    """A Secret's tls.crt and tls.key at the paths Frigate's nginx reads; the run script
    then makes no certificate of its own."""
    spec, c = frigate_spec(render_with("deploy/frigate/overlays/coral-device-plugin",
                                       "deploy/frigate/components/tls-secret"))
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/letsencrypt/live/frigate")
    assert mount["readOnly"] is True
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "frigate-tls"
    assert {i["key"]: i["path"] for i in vol["secret"]["items"]} == {
        "tls.crt": "fullchain.pem", "tls.key": "privkey.pem"}


def test_external_service_component():
    objs = render_with("deploy/frigate/overlays/coral-device-plugin",
                       "deploy/frigate/components/external-service")
    svc = find(objs, "Service", "frigate-external")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ipFamilyPolicy"] in ("PreferDualStack", "RequireDualStack")
    ports = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert ports == {(8971, "TCP"), (8554, "TCP"), (8555, "TCP"), (8555, "UDP")}
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "frigate"}
    # The ClusterIP Service stays, and neither publishes the unauthenticated 5000.
    internal = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "frigate")
    assert internal["spec"].get("type", "ClusterIP") == "ClusterIP"
    for s in (o for o in objs if o["kind"] == "Service"):
        assert 5000 not in {p["port"] for p in s["spec"]["ports"]}


def test_intel_gpu_component_asks_a_device_plugin_not_the_host():
    spec, c = frigate_spec(render_with("deploy/frigate/overlays/coral-device-plugin",
                                       "deploy/frigate/components/intel-gpu"))
    assert c["resources"]["limits"]["gpu.intel.com/i915"] == "1"
    assert c["resources"]["limits"]["coral.ai/tpu"] == "1"
    assert not c["securityContext"].get("privileged")
    assert not any("hostPath" in v for v in spec["volumes"])

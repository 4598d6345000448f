"""The README is the front door: short, its walkthrough in an order that works on a fresh
cluster, and everything it names is there and agrees with the rendered manifests."""

from __future__ import annotations

import os
import re

import yaml

import conftest
from conftest import REPO, find, render

with open(os.path.join(REPO, "README.md")) as fh:
    README = fh.read()


def commands() -> list[str]:
    """The shell lines of the README's code blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        out += [l.strip() for l in joined.splitlines() if l.strip() and not l.strip().startswith("#")]
    return out


def test_it_is_a_front_door():
    assert len(README.encode()) <= 12 * 1024, len(README.encode())
    assert "cargo run --release" in commands() and "bash scripts/test.sh" in commands()
    with open(os.path.join(REPO, ".ci/run")) as fh:
        assert "bash scripts/test.sh" in fh.read()


def test_the_walkthrough_runs_in_an_order_that_works():
    cmds = commands()

    def at(pattern: str) -> int:
        hits = [i for i, c in enumerate(cmds) if re.search(pattern, c)]
        assert hits, f"the README has no command matching {pattern!r}"
        return hits[0]

    steps = [
        r"^podman build --target prebuilt -f Dockerfile ",
        r"^sudo k3s ctr images import ",
        r"^kubectl apply -k nfd-config/$",
        r"^kubectl wait --for condition=established .*crd/nodefeaturerules\.nfd\.k8s-sigs\.io$",
        r"^kubectl apply -f nfd-config/nodefeaturerule\.yaml$",
        r"^kubectl apply -k deploy/coral-nfd-device-plugin/$",
        r"^kubectl -n coral-nfd exec \$POD -- /coral-nfd doctor",
        r"^kubectl apply -k deploy/frigate/overlays/coral-device-plugin$",
        r"^kubectl -n frigate port-forward svc/frigate 8971:8971$",
    ]
    order = [at(s) for s in steps]
    assert order == sorted(order), list(zip(steps, order))


def test_what_the_walkthrough_names_is_what_is_shipped():
    cmds = commands()
    # The image it builds is the one the manifests use: imported, it is used as it is.
    build = next(c for c in cmds if c.startswith("podman build"))
    tag = build.split(" -t ")[1].split()[0]
    ds = find(render("coral-nfd-device-plugin"), "DaemonSet", "coral-nfd-device-plugin")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == tag
    # The CRD it waits for is the one of the rule it applies next.
    with open(os.path.join(REPO, "nfd-config/nodefeaturerule.yaml")) as fh:
        rule = yaml.safe_load(fh)
    crd = f"{rule['kind'].lower()}s.{rule['apiVersion'].split('/')[0]}"
    assert any(c.endswith(f"crd/{crd}") for c in cmds), crd
    # The pod it asks doctor in is the labeler on that node.
    labeler = find(render("coral-nfd"), "DaemonSet", "coral-nfd")["spec"]["template"]["metadata"]["labels"]
    sel = next(c for c in cmds if c.startswith("POD=")).split("-l ")[1].split()[0]
    k, v = sel.split("=")
    assert labeler[k] == v
    # The label keys it shows are the ones coral-nfd writes.
    code, out = conftest.coral_nfd("pcie-ready")
    for key in re.findall(r"-L (\S+)", " ".join(cmds))[0].split(","):
        assert f"{key}=" in out, key
    # Frigate's Service has the port it forwards.
    svc = find(render("coral-device-plugin"), "Service", "frigate")
    assert 8971 in {p["port"] for p in svc["spec"]["ports"]}


def test_every_path_and_link_exists():
    docs = [os.path.join(REPO, "README.md")] + [
        os.path.join(REPO, "docs", f) for f in sorted(os.listdir(os.path.join(REPO, "docs")))]
    for path in docs:
        with open(path) as fh:
            text = fh.read()
        base = os.path.dirname(path)
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert os.path.exists(os.path.normpath(os.path.join(base, link))), (path, link)
        for ref in set(re.findall(r"`((?:deploy|nfd-config|scripts|tests|docs)/[\w./-]+)`", text)):
            ref = ref.rstrip("/.")
            assert os.path.exists(os.path.join(REPO, ref)), (path, ref)

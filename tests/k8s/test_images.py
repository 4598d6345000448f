"""One image setting: deploy/coral-nfd/components/image reaches every coral-nfd
container of every kustomization offered (the labeler, the device plugin, the nfd-worker
sidecar, with monitoring too); the tag is the crate's version; every coral-nfd container
pulls only what the node lacks, so an image imported without a registry is used."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import yaml

from conftest import KUSTOMIZATIONS, REPO, kubectl, render

IMAGE_COMPONENT = "deploy/coral-nfd/components/image/kustomization.yaml"
# Images that are not coral-nfd's, in the kustomizations that have them.
THIRD_PARTY = re.compile(r"^(ghcr\.io/blakeblackshear/frigate|registry\.k8s\.io/nfd/|docker\.io/squat/)")


def containers(objs):
    for o in objs:
        spec = o.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                yield o, c


def coral_images(objs) -> list[str]:
    return [c["image"] for _, c in containers(objs) if not THIRD_PARTY.match(c["image"])]


def component() -> dict:
    with open(os.path.join(REPO, IMAGE_COMPONENT)) as fh:
        return yaml.safe_load(fh)


def crate_version() -> str:
    with open(os.path.join(REPO, "Cargo.toml")) as fh:
        return re.search(r'^version = "([^"]+)"', fh.read(), re.M).group(1)


def test_one_place_sets_every_coral_nfd_image():
    """The image changed in the component, and nowhere else: every kustomization renders
    every coral-nfd container with it, and no other coral-nfd image is left."""
    work = tempfile.mkdtemp(prefix="coral-image-", dir=os.path.join(REPO, "target"))
    try:
        for d in ("deploy", "nfd-config", "tests/k8s"):
            shutil.copytree(os.path.join(REPO, d), os.path.join(work, d), symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        path = os.path.join(work, IMAGE_COMPONENT)
        with open(path) as fh:
            text = fh.read()
        text = re.sub(r"newName: \S+", "newName: registry.test/mine/coral-nfd", text)
        text = re.sub(r'newTag: "[^"]+"', 'newTag: "9.9.9"', text)
        with open(path, "w") as fh:
            fh.write(text)
        seen = 0
        for name, rel in sorted(KUSTOMIZATIONS.items()):
            out = subprocess.run([kubectl(), "kustomize", os.path.join(work, rel)], check=True,
                                 capture_output=True, text=True).stdout
            objs = [o for o in yaml.safe_load_all(out) if o]
            images = coral_images(objs)
            assert set(images) <= {"registry.test/mine/coral-nfd:9.9.9"}, (name, images)
            assert "ghcr.io/coral-nfd" not in out and "image: coral-nfd" not in out, name
            seen += len(images)
        # The labeler (twice: alone and with the plugin), the plugin (twice: with and
        # without monitoring) and the labeler with monitoring, and the sidecar.
        assert seen == 6, seen
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_tag_is_the_crate_version():
    (img,) = component()["images"]
    assert img["name"] == "coral-nfd"
    assert img["newTag"] == crate_version() and img["newTag"] != "latest"
    for name in KUSTOMIZATIONS:
        for image in coral_images(render(name)):
            assert image == f"{img['newName']}:{crate_version()}", (name, image)


def test_coral_nfd_pulls_only_what_the_node_lacks():
    """IfNotPresent on every coral-nfd container: release tags are never moved, and an
    image imported into the node (k3s ctr images import) must be used as it is."""
    for name in KUSTOMIZATIONS:
        for o, c in containers(render(name)):
            if not THIRD_PARTY.match(c["image"]):
                assert c.get("imagePullPolicy") == "IfNotPresent", (name, o["metadata"]["name"], c["name"])


def test_no_image_entry_elsewhere():
    """No other kustomization of the repository sets coral-nfd's image."""
    for root, _, files in os.walk(os.path.join(REPO, "deploy")):
        for f in files:
            if f != "kustomization.yaml":
                continue
            p = os.path.join(root, f)
            if p.endswith(IMAGE_COMPONENT):
                continue
            with open(p) as fh:
                k = yaml.safe_load(fh)
            for img in k.get("images", []) or []:
                assert "coral-nfd" not in img["name"], p

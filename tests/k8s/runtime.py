"""Containers of the rendered manifests, run for real with podman (runc underneath), the
way a kubelet and containerd would run them. `container_flags` is the translation from
a pod spec to the runtime's flags, and it is code under test: the tests show that a
change in a manifest (a mount dropped, an argument changed) changes what runs.

Written from the kubelet (pkg/kubelet/kuberuntime) and containerd's CRI plugin
(internal/cri/opts, pkg/oci), v1.7 to v2.1:
- the image's ENTRYPOINT runs as PID 1 with the container's `args`; `command` replaces
  the entrypoint (cri/opts/spec_opts.go WithProcessArgs); no init is added;
- privileged: every host device node and all devices allowed in the cgroup, every
  capability, no seccomp (oci WithPrivileged, WithHostDevices, WithAllDevicesAllowed);
- capabilities drop/add as given (cri/opts WithCapabilities); allowPrivilegeEscalation:
  false is no_new_privs (kubelet security_context.go: only when explicitly false);
  readOnlyRootFilesystem is a read-only root; runAsUser/runAsGroup the process's ids;
- seccomp RuntimeDefault is the runtime's default profile; unset is Unconfined (the
  kubelet's default unless seccompDefault is on);
- hostPath volumes are rbind mounts, rprivate, ro when readOnly; the kubelet checks the
  hostPath type first (pkg/volume/hostpath checkType) and DirectoryOrCreate makes it; a
  missing source without a type is made by containerd (withMounts, MkdirAll 0755);
- a device plugin's DeviceSpec becomes a device node at container_path with an allow
  rule for the host node's type and major:minor and the DeviceSpec's permissions
  (cri/opts WithDevices -> oci.WithDevices): podman's --device does the same.
Host paths are mapped to test directories by the `host` function given.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

from conftest import REPO, wait  # noqa: F401 (re-exported for the container tests)


@dataclass
class DeviceSpec:
    """What a device plugin's Allocate returns for one device (v1beta1 DeviceSpec)."""
    container_path: str
    host_path: str
    permissions: str


class HostPathError(Exception):
    """The kubelet would not start the pod: a hostPath is not of its declared type."""


def _host_path(v: dict, host) -> str:
    hp = v["hostPath"]
    src = host(hp["path"].rstrip("/") or "/")
    kind = hp.get("type", "")
    if kind == "DirectoryOrCreate":
        os.makedirs(src, exist_ok=True)
    elif kind == "" and not os.path.exists(src):
        # No type: the kubelet checks nothing and containerd makes the missing source
        # as a directory (MkdirAll 0755, in withMounts).
        os.makedirs(src, mode=0o755)
    elif kind == "Directory" and not os.path.isdir(src):
        raise HostPathError(f"hostPath type check failed: {hp['path']} is not a directory")
    elif kind == "CharDevice" and not (os.path.exists(src) and stat.S_ISCHR(os.stat(src).st_mode)):
        raise HostPathError(f"hostPath type check failed: {hp['path']} is not a character device")
    elif kind not in ("", "DirectoryOrCreate", "Directory", "CharDevice"):
        # Socket, File, FileOrCreate, BlockDevice: each has checks of its own in the
        # kubelet (pkg/volume/hostpath/host_path.go); passing it unchecked would let a
        # manifest that the kubelet refuses pass here.
        raise NotImplementedError(f"hostPath type {kind!r} ({hp['path']}) is not modelled")
    return src


def container_flags(pod: dict, c: dict, host, devices=(), host_devices=(), image: str | None = None,
                    args: list[str] | None = None, only_host_paths: bool = False,
                    extra_mounts=()) -> list[str]:
    """`podman run` flags for container `c` of pod spec `pod`: its image and args (or
    `image`/`args` instead, for a stand-in), securityContext, and volume mounts; device
    plugin `devices` (DeviceSpecs); `host_devices`, the host's device nodes a privileged
    container is given; `extra_mounts` (source, target), read-only, for the test's own
    probes. `only_host_paths` leaves out volumes other than hostPath (a stand-in needs
    no PVC or ConfigMap)."""
    psc = pod.get("securityContext", {}) or {}
    csc = c.get("securityContext", {}) or {}
    privileged = bool(csc.get("privileged"))
    flags = ["--network", "none", "--pull", "never"]
    if privileged:
        flags.append("--privileged")
        # Every host device node at its path (podman's --privileged gives this machine's
        # own and ignores --device, so the test node's are bind-mounted: all devices are
        # allowed in a privileged container's cgroup either way).
        for node in host_devices:
            flags += ["-v", f"{node[0]}:{node[1]}:rw,rprivate"]
    caps = csc.get("capabilities", {}) or {}
    for cap in caps.get("drop", []) or []:
        flags += ["--cap-drop", cap]
    for cap in caps.get("add", []) or []:
        flags += ["--cap-add", cap]
    if csc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if csc.get("readOnlyRootFilesystem"):
        # containerd adds no tmpfs of its own on a read-only root (podman would).
        flags += ["--read-only", "--read-only-tmpfs=false"]
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    if user is not None:
        flags += ["--user", f"{user}:{group}" if group is not None else str(user)]
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if not privileged and seccomp != "RuntimeDefault":
        flags += ["--security-opt", "seccomp=unconfined"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []) or []:
        v = volumes[m["name"]]
        if "hostPath" in v:
            src = _host_path(v, host)
        elif only_host_paths:
            continue
        elif "emptyDir" in v:
            flags += ["--tmpfs", m["mountPath"]]
            continue
        else:
            raise NotImplementedError(f"volume {m['name']}: only hostPath and emptyDir are run here")
        mode = "ro" if m.get("readOnly") else "rw"
        flags += ["-v", f"{src}:{m['mountPath']}:{mode},rprivate"]
    for src, target in extra_mounts:
        flags += ["-v", f"{src}:{target}:ro,rprivate"]
    for e in c.get("env", []) or []:
        flags += ["-e", f"{e['name']}={e.get('value', '')}"]
    for d in devices:
        flags += ["--device", f"{host(d.host_path)}:{d.container_path}:{d.permissions}"]
    command = c.get("command")
    if command and args is None:
        flags += ["--entrypoint", command[0]]
    flags.append(image or c["image"])
    if args is not None:
        flags += args
    else:
        flags += list(command[1:] if command else []) + list(c.get("args", []) or [])
    return flags


class Podman:
    """podman with its own storage under target/podman, vfs and cgroupfs, and no rlimits
    of its own (setting them needs CAP_SYS_RESOURCE, which a CI sandbox may lack; the
    kubelet sets none either)."""

    def __init__(self):
        base = os.path.join(REPO, "target", "podman")
        os.makedirs(base, exist_ok=True)
        conf = os.path.join(base, "containers.conf")
        with open(conf, "w") as fh:
            fh.write("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\n")
        self.env = {**os.environ, "CONTAINERS_CONF": conf}
        self.base = ["podman", "--root", os.path.join(base, "root"), "--runroot",
                     os.path.join(base, "run"), "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--log-level", "error"]
        self.names: list[str] = []

    def __call__(self, *args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run([*self.base, *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def build(self, context: str, tag: str, dockerfile: str, target: str | None = None):
        t = ["--target", target] if target else []
        self("build", "--pull=never", *t, "-f", dockerfile, "-t", tag, context, timeout=300)

    def start(self, flags: list[str]) -> str:
        name = f"coral-test-{os.getpid()}-{len(self.names)}"
        self.names.append(name)
        self("run", "-d", "--name", name, *flags)
        return name

    def run(self, flags: list[str], timeout=60) -> subprocess.CompletedProcess:
        return self("run", "--rm", *flags, check=False, timeout=timeout)

    def state(self, name: str) -> dict:
        import json
        return json.loads(self("inspect", name).stdout)[0]["State"]

    def logs(self, name: str) -> str:
        p = self("logs", name, check=False)
        return p.stdout + p.stderr

    def cleanup(self):
        for n in self.names:
            self("rm", "-f", "-t", "0", n, check=False)
        self.names.clear()


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status of a container's process, seen from the host: the kernel's word
    on its capabilities, no_new_privs, seccomp mode and ids."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def root_is_read_only(pid: int) -> bool:
    """Whether what the process sees at / is mounted read-only: the last mount at "/"
    in its mountinfo is the one on top (an earlier one may be a writable layer under
    it)."""
    top = None
    with open(f"/proc/{pid}/mountinfo") as fh:
        for line in fh:
            f = line.split()
            if f[4] == "/":
                top = f
    if top is None:
        raise AssertionError(f"no mount at / in /proc/{pid}/mountinfo")
    return "ro" in top[5].split(",")


def tempdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=os.path.join(REPO, "target"))


def rmtree(p: str):
    shutil.rmtree(p, ignore_errors=True)

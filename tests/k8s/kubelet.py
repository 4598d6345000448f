"""A stand-in for the kubelet's device manager, for testing `coral-nfd device-plugin`
without a kubelet. Written from kubernetes v1.36's pkg/kubelet/cm/devicemanager:

- plugin/v1beta1/server.go `Start`: `CleanupPluginDirectory` (manager.go) removes every
  socket in the directory, then kubelet.sock is served; `Register` checks the version
  (`v1beta1`, exactly) and that the resource is an extended resource name
  (`v1helper.IsExtendedResourceName`), then connects to `<dir>/<endpoint>` at once.
- plugin/v1beta1/client.go `dial`: a blocking dial (10 s) with authority "localhost"
  (kubelet 1.26+); then handler.go/manager.go `PluginConnected` calls
  `GetDevicePluginOptions` (a failure fails Register), and `Run` keeps `ListAndWatch`
  open, each message replacing the resource's device set; when the stream ends the
  plugin is disconnected and its devices marked unhealthy.
- manager.go `GetCapacity`: capacity counts every device, allocatable only Healthy ones.
- endpoint.go: `Allocate` sends one ContainerAllocateRequest and uses the first response;
  `GetPreferredAllocation` and `PreStartContainer` only when the options say so.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _generated():
    """Python stubs for proto/deviceplugin.proto, made with grpcio-tools' protoc."""
    out = tempfile.mkdtemp(prefix="deviceplugin-pb-")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(REPO, "proto"),
                    f"--python_out={out}", f"--grpc_python_out={out}", "deviceplugin.proto"],
                   check=True)
    sys.path.insert(0, out)
    import deviceplugin_pb2
    import deviceplugin_pb2_grpc
    return deviceplugin_pb2, deviceplugin_pb2_grpc


pb, pb_grpc = _generated()

VERSION = "v1beta1"


def is_extended_resource_name(name: str) -> bool:
    if "/" not in name:
        return False
    domain, _, rest = name.partition("/")
    return bool(rest) and "kubernetes.io" not in domain and "/" not in rest


class Kubelet(pb_grpc.RegistrationServicer):
    def __init__(self, directory: str, authority: str = "localhost"):
        self.dir = directory
        self.authority = authority
        self.lock = threading.Lock()
        # resource -> {device id: health}
        self.devices: dict[str, dict[str, str]] = {}
        self.registrations: list[tuple[float, str, str]] = []  # (time, resource, endpoint)
        self.options: dict[str, object] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.server = None

    # --- lifecycle ----------------------------------------------------------------
    def start(self):
        # CleanupPluginDirectory: every socket goes, whoever made it.
        for name in os.listdir(self.dir):
            p = os.path.join(self.dir, name)
            if stat.S_ISSOCK(os.lstat(p).st_mode):
                os.remove(p)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RegistrationServicer_to_server(self, self.server)
        self.server.add_insecure_port("unix:" + os.path.join(self.dir, "kubelet.sock"))
        self.server.start()

    def stop(self):
        if self.server:
            self.server.stop(0).wait()
            self.server = None
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()

    def restart(self):
        self.stop()
        with self.lock:
            self.devices.clear()
        self.start()

    # --- Registration ---------------------------------------------------------------
    def Register(self, request, context):
        if request.version != VERSION:
            context.abort(grpc.StatusCode.UNKNOWN, f"unsupported version {request.version!r}")
        if not is_extended_resource_name(request.resource_name):
            context.abort(grpc.StatusCode.UNKNOWN, f"the ResourceName {request.resource_name!r} is invalid")
        path = os.path.join(self.dir, request.endpoint)
        ch = grpc.insecure_channel("unix:" + path, options=[("grpc.default_authority", self.authority)])
        try:
            grpc.channel_ready_future(ch).result(timeout=10)
            stub = pb_grpc.DevicePluginStub(ch)
            opts = stub.GetDevicePluginOptions(pb.Empty(), timeout=5)
        except Exception as e:  # noqa: BLE001 - any failure fails Register
            ch.close()
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to dial device plugin: {e}")
        old = self.channels.pop(request.resource_name, None)
        if old:
            old.close()
        self.channels[request.resource_name] = ch
        with self.lock:
            self.options[request.resource_name] = opts
            self.registrations.append((time.monotonic(), request.resource_name, request.endpoint))
        threading.Thread(target=self._watch, args=(request.resource_name, stub), daemon=True).start()
        return pb.Empty()

    def _watch(self, resource, stub):
        try:
            for resp in stub.ListAndWatch(pb.Empty()):
                with self.lock:
                    self.devices[resource] = {d.ID: d.health for d in resp.devices}
        except grpc.RpcError:
            pass
        with self.lock:  # disconnected: markResourceUnhealthy
            if resource in self.devices:
                self.devices[resource] = {k: "Unhealthy" for k in self.devices[resource]}

    # --- what the node would advertise ------------------------------------------------
    def capacity(self, resource) -> tuple[int, int]:
        with self.lock:
            devs = self.devices.get(resource, {})
            return len(devs), sum(1 for h in devs.values() if h == "Healthy")

    def health(self, resource) -> dict[str, str]:
        with self.lock:
            return dict(self.devices.get(resource, {}))

    def allocate(self, resource, ids):
        stub = pb_grpc.DevicePluginStub(self.channels[resource])
        with self.lock:
            opts = self.options[resource]
        if opts.pre_start_required:
            stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids), timeout=30)
        resp = stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=10)
        if not resp.container_responses:
            raise RuntimeError("no containers return in allocation response")
        return resp.container_responses[0]

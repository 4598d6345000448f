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
  `GetPreferredAllocation` and `PreStartContainer` only when the options say so; an
  endpoint whose stop time is set fails every call ("endpoint has been stopped").
- manager.go `PluginDisconnected(resourceName)`: when a ListAndWatch stream ends, the
  endpoint registered *now* for that resource gets its stop time and its devices are
  marked unhealthy. Handled late (`disconnect_delay`), after a new registration, it stops
  the new endpoint: the race a plugin must leave room for.
"""

from __future__ import annotations

import os
import re
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


_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def is_extended_resource_name(name: str) -> bool:
    """v1helper.IsExtendedResourceName (pkg/apis/core/v1/helper/helpers.go): not native
    (IsNativeResource: no '/', or the kubernetes.io/ prefix), no "requests." prefix, and
    "requests." + name a qualified name."""
    if "/" not in name or "kubernetes.io/" in name:
        return False
    if name.startswith("requests."):
        return False
    quota = "requests." + name
    prefix, _, rest = quota.rpartition("/")
    return bool(_QUALIFIED.match(quota)) and len(rest) <= 63 and len(prefix) <= 253


class Kubelet(pb_grpc.RegistrationServicer):
    def __init__(self, directory: str, authority: str = "localhost", disconnect_delay: float = 0.0):
        self.dir = directory
        self.authority = authority
        # Seconds between a ListAndWatch stream's end and its PluginDisconnected.
        self.disconnect_delay = disconnect_delay
        # Register fails as when the dial-back fails (the kubelet then leaks the conn).
        self.refuse_dial = False
        self.lock = threading.Lock()
        # resource -> {device id: health}
        self.devices: dict[str, dict[str, str]] = {}
        # resource -> {device id: [NUMA node ids]} (the Device.topology sent)
        self.topology: dict[str, dict[str, list[int]]] = {}
        self.registrations: list[tuple[float, str, str]] = []  # (time, resource, endpoint)
        self.attempts: list[float] = []  # every Register call, accepted or not
        self.options: dict[str, object] = {}
        self.channels: dict[str, grpc.Channel] = {}
        # resource -> the current endpoint's state: {"stopped": bool}
        self.endpoints: dict[str, dict] = {}
        # A restarted kubelet is a new process: streams of the old one change nothing.
        self.generation = 0
        self.server = None

    # --- lifecycle ----------------------------------------------------------------
    def start(self):
        with self.lock:
            self.generation += 1
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
            self.endpoints.clear()
        self.start()

    # --- Registration ---------------------------------------------------------------
    def Register(self, request, context):
        with self.lock:
            self.attempts.append(time.monotonic())
        if self.refuse_dial:
            context.abort(grpc.StatusCode.UNKNOWN, "failed to dial device plugin: refused by the test")
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
            self.endpoints[request.resource_name] = {"stopped": False}
        threading.Thread(target=self._watch, args=(request.resource_name, stub, self.generation),
                         daemon=True).start()
        return pb.Empty()

    def _watch(self, resource, stub, generation):
        try:
            for resp in stub.ListAndWatch(pb.Empty()):
                with self.lock:
                    if generation != self.generation:
                        return
                    self.devices[resource] = {d.ID: d.health for d in resp.devices}
                    self.topology[resource] = {
                        d.ID: [n.ID for n in d.topology.nodes] for d in resp.devices
                        if d.HasField("topology")}
        except grpc.RpcError:
            pass
        if self.disconnect_delay:
            time.sleep(self.disconnect_delay)
        with self.lock:
            if generation != self.generation:
                return
            # PluginDisconnected: whatever endpoint is registered now is stopped, and
            # the resource's devices are marked unhealthy.
            ep = self.endpoints.get(resource)
            if ep is not None:
                ep["stopped"] = True
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
            if self.endpoints.get(resource, {}).get("stopped"):
                raise RuntimeError("endpoint has been stopped")
        if opts.pre_start_required:
            stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids), timeout=30)
        resp = stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=10)
        if not resp.container_responses:
            raise RuntimeError("no containers return in allocation response")
        return resp.container_responses[0]

#!/usr/bin/env python3
"""Builds the sysfs fixture trees under tests/fixtures/<scenario>/.

Each scenario gets `sys/` (a tree shaped like real sysfs: device directories under
`devices/`, relative symlinks from `bus/`, `class/` and driver directories, as the kernel
makes them) and `dev.list` (the device nodes the test harness creates with mknod under
a temporary dev root). The golden `expected` output is written by the tests
(UPDATE_GOLDEN=1 cargo test) and reviewed by eye.

Layouts follow ../shared/facts/coral-hardware.md. Run from the repository root:
    python3 scripts/make-fixtures.py
It removes and rebuilds every scenario's sys/ and dev.list; `expected` files stay.
`python3 scripts/make-fixtures.py --bench DIR` writes the (uncommitted) benchmark trees.
`python3 scripts/make-fixtures.py --dev-root SCENARIO DIR` makes a scenario's device
nodes under DIR (root needed), to run coral-nfd on a bundled fixture as on a real node.
"""

import argparse
import os
import shutil
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


class Tree:
    def __init__(self, base):
        self.sys = os.path.join(base, "sys")
        self.nodes = []  # (type, major, minor, mode, uid, gid, path)
        self.pci_drivers = set()

    def path(self, rel):
        return os.path.join(self.sys, rel)

    def file(self, rel, content):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(content)

    def files(self, base, attrs):
        for name, value in attrs.items():
            self.file(f"{base}/{name}", value if value.endswith("\n") or value == "" else value + "\n")

    def link(self, rel, target_rel):
        """A relative symlink at `rel` leading to `target_rel` (both under sys/)."""
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        target = os.path.relpath(self.path(target_rel), os.path.dirname(p))
        os.symlink(target, p)

    def node(self, path, major, minor, mode="0660", uid=0, gid=0, kind="c"):
        self.nodes.append((kind, major, minor, mode, uid, gid, path))

    # --- PCI -------------------------------------------------------------------------
    def pci(self, parent, addr, vendor, device, cls, driver=None, subsys=("0000", "0000"), rev="00"):
        """A PCI function directory under `parent` (a devices/... path)."""
        d = f"{parent}/{addr}"
        self.files(d, {
            "vendor": f"0x{vendor}",
            "device": f"0x{device}",
            "class": f"0x{cls}",
            "subsystem_vendor": f"0x{subsys[0]}",
            "subsystem_device": f"0x{subsys[1]}",
            "revision": f"0x{rev}",
            "enable": "1",
            "irq": "16",
            "local_cpus": "ff",
            "numa_node": "-1",
            "uevent": f"PCI_CLASS={cls.upper()}\nPCI_ID={vendor.upper()}:{device.upper()}\nPCI_SLOT_NAME={addr}\n",
        })
        self.power(d)
        self.link(f"{d}/subsystem", "bus/pci")
        self.link(f"bus/pci/devices/{addr}", d)
        if driver:
            self.bind(d, addr, driver)
        return d

    def power(self, d):
        # git keeps no empty directories, so every directory holds what the kernel puts there.
        self.files(f"{d}/power", {"control": "auto", "runtime_status": "active"})

    def bind(self, d, addr, driver):
        self.pci_driver(driver)
        self.link(f"{d}/driver", f"bus/pci/drivers/{driver}")
        self.link(f"bus/pci/drivers/{driver}/{addr}", d)

    def pci_driver(self, driver):
        if driver in self.pci_drivers:
            return
        self.pci_drivers.add(driver)
        base = f"bus/pci/drivers/{driver}"
        self.files(base, {"bind": "", "unbind": "", "new_id": "", "remove_id": "", "uevent": ""})

    # --- USB -------------------------------------------------------------------------
    def usb_dev(self, parent, name, vendor, product, busnum, devnum, speed, strings=None,
                cls="00", interfaces=(("ff", "ff", "ff"),), node=True):
        d = f"{parent}/{name}"
        minor = (busnum - 1) * 128 + devnum - 1
        attrs = {
            "idVendor": vendor,
            "idProduct": product,
            "busnum": str(busnum),
            "devnum": str(devnum),
            "dev": f"189:{minor}",
            "speed": speed,
            "bcdDevice": "0100",
            "bDeviceClass": cls,
            "bNumConfigurations": "1",
            "bNumInterfaces": f" {len(interfaces)}",
            "maxchild": "0",
            "removable": "removable",
            "authorized": "1",
            "version": " 3.20" if speed in ("5000", "10000") else " 2.00",
            "uevent": f"MAJOR=189\nMINOR={minor}\nDEVNAME=bus/usb/{busnum:03}/{devnum:03}\nDEVTYPE=usb_device\n",
        }
        for k, v in (strings or {}).items():
            attrs[k] = v
        self.files(d, attrs)
        self.link(f"{d}/subsystem", "bus/usb")
        self.link(f"bus/usb/devices/{name}", d)
        self.link(f"{d}/driver", "bus/usb/drivers/usb")
        self.files("bus/usb/drivers/usb", {"bind": "", "unbind": "", "uevent": ""})
        for i, (c, s, p) in enumerate(interfaces):
            iname = f"{name}:1.{i}"
            self.files(f"{d}/{iname}", {
                "bInterfaceClass": c,
                "bInterfaceSubClass": s,
                "bInterfaceProtocol": p,
                "bInterfaceNumber": f"{i:02}",
                "bAlternateSetting": " 0",
            })
            self.link(f"bus/usb/devices/{iname}", f"{d}/{iname}")
        if node:
            self.node(f"bus/usb/{busnum:03}/{devnum:03}", 189, minor, "0664")
        return d

    def usb_root_hub(self, hc, bus, usb3):
        name = f"usb{bus}"
        d = self.usb_dev(hc, name, "1d6b", "0003" if usb3 else "0002", bus, 1,
                         "5000" if usb3 else "480",
                         strings={"product": "xHCI Host Controller",
                                  "manufacturer": "Linux 6.8.0 xhci-hcd"},
                         cls="09", interfaces=(("09", "00", "00"),))
        return d

    def write_dev_list(self, base):
        with open(os.path.join(base, "dev.list"), "w") as f:
            f.write("# type major:minor mode uid gid path  (created under a temporary dev root)\n")
            for kind, major, minor, mode, uid, gid, path in sorted(self.nodes, key=lambda n: n[6]):
                f.write(f"{kind} {major}:{minor} {mode} {uid} {gid} {path}\n")


def make_nodes(dev_list: str, into: str) -> None:
    """Creates the nodes of a dev.list under `into` (mknod: needs root; PermissionError
    otherwise). The one reader of the format this script writes."""
    with open(dev_list) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, num, mode, _uid, _gid, path = line.split()
            major, minor = (int(x) for x in num.split(":"))
            p = os.path.join(into, path)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            flag = {"c": 0o020000, "b": 0o060000}[kind]
            os.mknod(p, flag | int(mode, 8), os.makedev(major, minor))


# --- machines -------------------------------------------------------------------------

def desktop(t, coral_slots=0, usb_devices=True):
    """An Intel desktop: ~30 PCI functions, an xHCI with a hub, keyboard, mouse, storage.
    Returns the bridge paths whose secondary buses can hold a Coral card."""
    host = "devices/pci0000:00"
    t.file(f"{host}/uevent", "")
    t.pci(host, "0000:00:00.0", "8086", "3e30", "060000", subsys=("1462", "7b98"), rev="0d")
    t.pci(host, "0000:00:02.0", "8086", "3e92", "030000", "i915", ("1462", "7b98"))
    t.pci(host, "0000:00:08.0", "8086", "1911", "088000", subsys=("1462", "7b98"))
    t.pci(host, "0000:00:12.0", "8086", "a379", "118000", "intel_pch_thermal", ("1462", "7b98"))
    xhci = t.pci(host, "0000:00:14.0", "8086", "a36d", "0c0330", "xhci_hcd", ("1462", "7b98"))
    t.pci(host, "0000:00:14.2", "8086", "a36f", "050000", subsys=("1462", "7b98"))
    t.pci(host, "0000:00:16.0", "8086", "a360", "078000", "mei_me", ("1462", "7b98"))
    t.pci(host, "0000:00:17.0", "8086", "a352", "010601", "ahci", ("1462", "7b98"))
    rp1 = t.pci(host, "0000:00:1b.0", "8086", "a340", "060400", "pcieport")
    t.pci(rp1, "0000:01:00.0", "144d", "a808", "010802", "nvme", ("144d", "a801"))
    rp2 = t.pci(host, "0000:00:1c.0", "8086", "a338", "060400", "pcieport")
    t.pci(rp2, "0000:02:00.0", "8086", "1539", "020000", "igb", ("1462", "7b98"), rev="03")
    rp3 = t.pci(host, "0000:00:1c.4", "8086", "a33c", "060400", "pcieport")
    rp4 = t.pci(host, "0000:00:1d.0", "8086", "a330", "060400", "pcieport")
    rp5 = t.pci(host, "0000:00:1d.4", "8086", "a334", "060400", "pcieport")
    t.pci(rp5, "0000:05:00.0", "10de", "1f82", "030000", "nouveau", ("1458", "4015"))
    t.pci(rp5, "0000:05:00.1", "10de", "10fa", "040300", "snd_hda_intel", ("1458", "4015"))
    t.pci(host, "0000:00:1f.0", "8086", "a305", "060100", subsys=("1462", "7b98"))
    t.pci(host, "0000:00:1f.3", "8086", "a348", "040300", "snd_hda_intel", ("1462", "7b98"))
    t.pci(host, "0000:00:1f.4", "8086", "a323", "0c0500", "i801_smbus", ("1462", "7b98"))
    t.pci(host, "0000:00:1f.5", "8086", "a324", "0c8000", "intel-spi", ("1462", "7b98"))

    # USB: bus 1 is the USB 2 root hub, bus 2 the USB 3 one.
    t.usb_root_hub(xhci, 1, False)
    t.usb_root_hub(xhci, 2, True)
    if usb_devices:
        u1 = f"{xhci}/usb1"
        t.usb_dev(u1, "1-1", "046d", "c31c", 1, 2, "1.5",
                  {"manufacturer": "Logitech", "product": "USB Keyboard"}, interfaces=(("03", "01", "01"), ("03", "00", "00")))
        hub = t.usb_dev(u1, "1-2", "05e3", "0610", 1, 3, "480",
                        {"product": "USB2.1 Hub", "manufacturer": "GenesysLogic"}, cls="09", interfaces=(("09", "00", "02"),))
        t.usb_dev(hub, "1-2.1", "046d", "c077", 1, 4, "1.5",
                  {"manufacturer": "Logitech", "product": "USB Optical Mouse"}, interfaces=(("03", "01", "02"),))
        t.usb_dev(hub, "1-2.4", "8087", "0aaa", 1, 6, "12", interfaces=(("e0", "01", "01"), ("e0", "01", "01")))
        t.usb_dev(f"{xhci}/usb2", "2-2", "0781", "5583", 2, 2, "5000",
                  {"manufacturer": " USB ", "product": " SanDisk 3.2Gen1", "serial": "0401aa9b6c7b"},
                  interfaces=(("08", "06", "50"),))
    t.node("null", 1, 3, "0666")
    t.node("zero", 1, 5, "0666")
    return {"03": rp3, "04": rp4}


def server(t):
    """A dual-socket server: many system-peripheral functions (class 0880 among them,
    so class alone proves nothing), no Coral."""
    for bus in ("00", "80"):
        host = f"devices/pci0000:{bus}"
        t.file(f"{host}/uevent", "")
        for dev in range(0x00, 0x20):
            for fn in range(0, 4 if dev in (0x08, 0x0b, 0x0e, 0x1e) else 1):
                addr = f"0000:{bus}:{dev:02x}.{fn}"
                cls = "088000" if dev in (0x08, 0x0b, 0x0e, 0x1e) else ("060400" if dev < 0x04 else "110100")
                t.pci(host, addr, "8086", f"20{dev:02x}", cls, "pcieport" if cls == "060400" else None)
    nic_parent = "devices/pci0000:00/0000:00:01.0"
    for fn in range(4):
        t.pci(nic_parent, f"0000:18:00.{fn}", "14e4", "165f", "020000", "tg3", ("1028", "0639"))
    raid_parent = "devices/pci0000:00/0000:00:02.0"
    t.pci(raid_parent, "0000:19:00.0", "1000", "005f", "010400", "megaraid_sas", ("1028", "1f4b"))
    xhci = t.pci("devices/pci0000:00", "0000:00:14.1", "8086", "a1af", "0c0330", "xhci_hcd")
    t.usb_root_hub(xhci, 1, False)
    t.usb_root_hub(xhci, 2, True)
    u1 = f"{xhci}/usb1"
    hub = t.usb_dev(u1, "1-1", "0424", "2660", 1, 2, "480", cls="09", interfaces=(("09", "00", "01"),))
    for port in range(1, 5):
        t.usb_dev(hub, f"1-1.{port}", "0624", f"02{port:02}", 1, 2 + port, "12",
                  {"manufacturer": "Avocent", "product": "Virtual Device"}, interfaces=(("03", "01", "01"), ("03", "01", "02")))
    t.node("null", 1, 3, "0666")


def apex_driver(t, version="1.2", gasket="1.1.4"):
    t.pci_driver("apex")
    t.link("bus/pci/drivers/apex/module", "module/apex")
    t.files("module/apex", {"version": version, "srcversion": "2A9D3E1F0B4C5D6E7F80912", "refcnt": "0", "initstate": "live"})
    t.link("module/apex/drivers/pci:apex", "bus/pci/drivers/apex")
    if gasket:
        t.files("module/gasket", {"version": gasket, "srcversion": "9F8E7D6C5B4A39281706F5E", "refcnt": "1", "initstate": "live"})
        t.link("module/gasket/holders/apex", "module/apex")


TEMP_ATTRS = {
    "temp": "49300",
    "trip_point0_temp": "84800",
    "trip_point1_temp": "89800",
    "trip_point2_temp": "94800",
    "hw_temp_warn1": "99800",
    "hw_temp_warn1_en": "0",
    "hw_temp_warn2": "99800",
    "hw_temp_warn2_en": "1",
    "temp_poll_interval": "5000",
}


def coral_card(t, parent, addr, *, bind=True, n=None, driver_version="1.2", framework="1.1.4",
               status="ALIVE", temps=True, temp=None, interrupts=True, node=True,
               node_minor=None, node_gid=0, unique_id=True):
    """A Coral PCIe function; with n set, bound to apex with class device apex_N."""
    d = t.pci(parent, addr, "1ac1", "089a", "0880ff", subsys=("1ac1", "089a"))
    if not bind:
        return d
    t.bind(d, addr, "apex")
    if n is None:
        return d
    a = f"{d}/apex/apex_{n}"
    attrs = {
        "bar_offsets": "2: 0x0",
        "bar_sizes": "2: 0x100000",
        "driver_version": driver_version,
        "framework_version": framework,
        "device_type": "apex",
        "revision": "0",
        "pci_address": addr,
        "status": status,
        "is_device_owned": "0",
        "device_owner": "0",
        "write_open_count": "0",
        "reset_count": "0",
        "user_mem_ranges": "",
        "node_0_page_table_entries": "8192",
        "node_0_simple_page_table_entries": "4096",
        "node_0_num_mapped_pages": "0",
        "dev": f"120:{n}",
        "uevent": f"MAJOR=120\nMINOR={n}\nDEVNAME=apex_{n}\n",
    }
    if interrupts:
        attrs["interrupt_counts"] = "".join(f"0x{i:02x}: 0\n" for i in range(13))
    if temps:
        attrs.update(TEMP_ATTRS)
        if temp is not None:
            attrs["temp"] = temp
    if temps and unique_id and driver_version == "1.2":
        attrs["unique_id"] = f"{0x3f1c5a7e9b0d2468ace13579bdf02468 + n:032x}"
    t.files(a, attrs)
    t.power(a)
    t.link(f"{a}/device", d)
    t.link(f"{a}/subsystem", "class/apex")
    t.link(f"{a}/{addr}", d)
    t.link(f"class/apex/apex_{n}", a)
    if node:
        t.node(f"apex_{n}", 120, n if node_minor is None else node_minor, "0660", 0, node_gid)
    return d


def coral_usb(t, app, usb3):
    """A Coral USB Accelerator on port 4 of the USB 3 (bus 2) or USB 2 (bus 1) root hub."""
    xhci = "devices/pci0000:00/0000:00:14.0"
    if usb3:
        bus, name, devnum, speed = 2, "2-4", 3, "5000"
    else:
        bus, name, devnum, speed = 1, "1-4", 7, "480"
    vid, pid = ("18d1", "9302") if app else ("1a6e", "089a")
    ifaces = (("ff", "ff", "ff"),) if app else (("fe", "01", "02"),)
    t.usb_dev(f"{xhci}/usb{bus}", name, vid, pid, bus, devnum, speed, interfaces=ifaces)


# --- scenarios ------------------------------------------------------------------------

def s_no_coral(t):
    desktop(t)


def s_server_no_coral(t):
    server(t)


def s_pcie_ready(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, node_gid=999)


def s_pcie_dual(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, node_gid=999)
    coral_card(t, slots["04"], "0000:04:00.0", n=1, node_gid=999, temp="51550")


def s_pcie_no_driver(t):
    slots = desktop(t)
    coral_card(t, slots["03"], "0000:03:00.0", bind=False)


def s_pcie_probe_failed(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", bind=False)


def s_pcie_node_missing(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, node=False)


def s_pcie_node_mismatch(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, node_minor=1)


def s_pcie_lamed(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, status="LAMED", interrupts=False)


def s_pcie_not_answering(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, temp="-89700")


def s_pcie_throttled(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, temp="86050")


def s_pcie_staging_driver(t):
    slots = desktop(t)
    apex_driver(t, version="1.0", gasket="1.1.2")
    coral_card(t, slots["03"], "0000:03:00.0", n=0, driver_version="1.0", framework="1.1.2",
               temps=False)


def s_pcie_vfio(t):
    slots = desktop(t)
    d = coral_card(t, slots["03"], "0000:03:00.0", bind=False)
    t.bind(d, "0000:03:00.0", "vfio-pci")


def s_devboard(t):
    """Coral Dev Board (Mendel): the TPU on the SoC's PCIe controller, domain 0001."""
    plat = "devices/platform/33c00000.pcie"
    t.file(f"{plat}/uevent", "OF_NAME=pcie\n")
    host = f"{plat}/pci0001:00"
    rp = t.pci(host, "0001:00:00.0", "16c3", "abcd", "060400", "pcieport")
    apex_driver(t, version="1.1", gasket=None)
    coral_card(t, rp, "0001:01:00.0", n=0, driver_version="1.1", framework="1.1.3",
               unique_id=False)
    t.file(f"{rp}/0001:01:00.0/apex/apex_0/temp_poll_interval", "0\n")
    t.node("null", 1, 3, "0666")


def s_rpi5_switch(t):
    """Raspberry Pi 5 with a PCIe switch HAT: domain 0001 behind a chain of bridges."""
    plat = "devices/platform/axi/1000110000.pcie"
    t.file(f"{plat}/uevent", "OF_NAME=pcie\n")
    host = f"{plat}/pci0001:00"
    b0 = t.pci(host, "0001:00:00.0", "14e4", "2712", "060400", "pcieport")
    b1 = t.pci(b0, "0001:01:00.0", "1b21", "2806", "060400", "pcieport")
    b2 = t.pci(b1, "0001:02:07.0", "1b21", "2806", "060400", "pcieport")
    b3 = t.pci(b2, "0001:04:00.0", "1b21", "2806", "060400", "pcieport")
    b4 = t.pci(b3, "0001:05:03.0", "1b21", "2806", "060400", "pcieport")
    t.pci(b1, "0001:02:03.0", "1b21", "2806", "060400", "pcieport")
    apex_driver(t)
    coral_card(t, b4, "0001:06:00.0", n=0, node_gid=993)
    rp1 = "devices/platform/axi/1000120000.pcie/pci0002:00"
    t.pci(rp1, "0002:00:00.0", "14e4", "2712", "060400", "pcieport")
    t.pci(f"{rp1}/0002:00:00.0", "0002:01:00.0", "1de4", "0001", "020000", "rp1")
    t.node("null", 1, 3, "0666")


def s_usb_dfu_usb3(t):
    desktop(t)
    coral_usb(t, app=False, usb3=True)


def s_usb_app_usb2(t):
    desktop(t)
    coral_usb(t, app=True, usb3=False)


def s_pcie_and_usb(t):
    slots = desktop(t)
    apex_driver(t)
    coral_card(t, slots["03"], "0000:03:00.0", n=0, node_gid=999)
    coral_usb(t, app=True, usb3=True)


def s_driver_no_device(t):
    desktop(t)
    apex_driver(t)


def quad(base, order, lamed):
    """Four PCIe TPUs (a Dual Edge card on each of two bridges) whose class devices are
    created in `order` (a list of N), apex_`lamed` LAMED; the tree and its dev.list under
    `base`. Not a bundled fixture: a directory's order depends on the filesystem, so the
    tests build it where they run and read the order back."""
    t = Tree(base)
    slots = desktop(t)
    apex_driver(t)
    addrs = {0: (slots["03"], "0000:03:00.0"), 1: (slots["03"], "0000:03:00.1"),
             2: (slots["04"], "0000:04:00.0"), 3: (slots["04"], "0000:04:00.1")}
    for n in order:
        parent, addr = addrs[n]
        coral_card(t, parent, addr, n=n, status="LAMED" if n == lamed else "ALIVE")
    t.write_dev_list(base)
    return t


SCENARIOS = {
    "no-coral": s_no_coral,
    "server-no-coral": s_server_no_coral,
    "pcie-ready": s_pcie_ready,
    "pcie-dual": s_pcie_dual,
    "pcie-no-driver": s_pcie_no_driver,
    "pcie-probe-failed": s_pcie_probe_failed,
    "pcie-node-missing": s_pcie_node_missing,
    "pcie-node-mismatch": s_pcie_node_mismatch,
    "pcie-lamed": s_pcie_lamed,
    "pcie-not-answering": s_pcie_not_answering,
    "pcie-throttled": s_pcie_throttled,
    "pcie-staging-driver": s_pcie_staging_driver,
    "pcie-vfio": s_pcie_vfio,
    "devboard": s_devboard,
    "rpi5-switch": s_rpi5_switch,
    "usb-dfu-usb3": s_usb_dfu_usb3,
    "usb-app-usb2": s_usb_app_usb2,
    "pcie-and-usb": s_pcie_and_usb,
    "driver-no-device": s_driver_no_device,
}


# --- benchmark trees (scripts/bench.py; not committed) ---------------------------------

def realistic(t):
    """A busy server: about 160 PCI functions and 35 USB devices, among them a Dual Edge
    TPU card (two functions) and one USB Accelerator (firmware loaded, USB 3)."""
    server(t)
    # More functions under a third host bridge: NVMe drives behind a switch, NIC
    # virtual functions, platform functions, the Coral card and a second xHCI.
    host = "devices/pci0000:c0"
    t.file(f"{host}/uevent", "")
    sw = t.pci(host, "0000:c0:03.0", "8086", "a330", "060400", "pcieport")
    for i in range(8):
        t.pci(sw, f"0000:d{i}:00.0", "144d", "a80a", "010802", "nvme", ("144d", "a801"))
    vf_parent = "devices/pci0000:00/0000:00:01.0/0000:18:00.0"
    for i in range(1, 32):
        t.pci(vf_parent, f"0000:18:{(i >> 3) + 0x10:02x}.{i & 7}", "14e4", "16dc", "020000", "bnxt_en")
    for i in range(12):
        t.pci(host, f"0000:c0:1f.{i}" if i < 8 else f"0000:c0:1e.{i - 8}", "8086", f"a3{i:02x}", "0c8000")
    apex_driver(t)
    rp3 = t.pci(host, "0000:c0:01.0", "8086", "a33c", "060400", "pcieport")
    rp4 = t.pci(host, "0000:c0:02.0", "8086", "a33d", "060400", "pcieport")
    coral_card(t, rp3, "0000:c1:00.0", n=0, node_gid=999)
    coral_card(t, rp4, "0000:c2:00.0", n=1, node_gid=999)
    xhci = t.pci(host, "0000:c0:14.0", "8086", "a36d", "0c0330", "xhci_hcd")
    t.usb_root_hub(xhci, 3, False)
    t.usb_root_hub(xhci, 4, True)
    hub = t.usb_dev(f"{xhci}/usb3", "3-1", "05e3", "0610", 3, 2, "480", cls="09", interfaces=(("09", "00", "02"),))
    n = 3
    for port in range(1, 5):
        sub = t.usb_dev(hub, f"3-1.{port}", "05e3", "0610", 3, n, "480", cls="09", interfaces=(("09", "00", "02"),))
        n += 1
        for p2 in range(1, 7):
            t.usb_dev(sub, f"3-1.{port}.{p2}", "0403", "6001", 3, n, "12",
                      {"manufacturer": "FTDI", "product": "FT232R USB UART", "serial": f"A{n:07d}"})
            n += 1
    t.usb_dev(f"{xhci}/usb4", "4-2", "18d1", "9302", 4, 2, "5000")


def scale(n_pci, n_tpu):
    def build(t):
        host = "devices/pci0000:00"
        apex_driver(t)
        for i in range(n_pci - n_tpu):
            t.pci(host, f"0000:{0x80 + (i >> 8) % 0x80:02x}:{(i >> 3) & 0x1f:02x}.{i & 7}", "8086", "1234", "020000")
        for i in range(n_tpu):
            bridge = t.pci(host, f"0000:00:{i >> 3:02x}.{i & 7}", "8086", "a33c", "060400", "pcieport")
            coral_card(t, bridge, f"0000:{i + 1:02x}:00.0", n=i)
    return build


def bench(out):
    trees = {"realistic": realistic}
    for n in (64, 512, 4096):
        for tpus in (1, 8, 64):
            if tpus < n:
                trees[f"scale-{n}-{tpus}"] = scale(n, tpus)
    for name, build in trees.items():
        base = os.path.join(out, name)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        t = Tree(base)
        build(t)
        t.write_dev_list(base)
        print(f"{name}: {sum(len(f) for _, _, f in os.walk(t.sys))} files")


# Marks a dev root this script made, so that it may be emptied and made again.
DEV_ROOT_MARK = ".coral-nfd-fixture-dev-root"
# Never a place for fixture nodes, whatever the spelling (realpath).
FORBIDDEN = {"/", "/dev"}


def fail(msg):
    print(f"make-fixtures.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def make_dev_root(scenario, into):
    """The scenario's device nodes under `into`, which must be new, empty, or an earlier
    dev root of this script's: anything else is left untouched (exit 2)."""
    dev_list = os.path.join(ROOT, scenario, "dev.list")
    if "/" in scenario or not os.path.isfile(dev_list):
        known = sorted(d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "dev.list")))
        fail(f"unknown scenario {scenario!r}; one of: {', '.join(known)}")
    real = os.path.realpath(into)
    if real in FORBIDDEN:
        fail(f"refusing to make fixture device nodes in {into} ({real}): use a new directory, "
             "e.g. /tmp/coral-dev")
    if os.path.lexists(into):
        if os.path.islink(into) or not os.path.isdir(into):
            fail(f"{into} exists and is not a directory; nothing touched")
        entries = os.listdir(into)
        if entries and DEV_ROOT_MARK not in entries:
            fail(f"{into} is not empty and was not made by this script (no {DEV_ROOT_MARK}); "
                 "nothing touched: use a new or empty directory")
        for name in entries:
            p = os.path.join(into, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    else:
        os.makedirs(into)
    with open(os.path.join(into, DEV_ROOT_MARK), "w") as fh:
        fh.write(f"device nodes of the {scenario} fixture, made by scripts/make-fixtures.py\n")
    try:
        make_nodes(dev_list, into)
    except PermissionError as e:
        fail(f"mknod refused ({e}): run as root")
    print(f"device nodes of {scenario} in {into}")


def main():
    parser = argparse.ArgumentParser(
        prog="make-fixtures.py",
        description="Build the sysfs fixture trees under tests/fixtures (all, or the SCENARIOs "
                    "named), the benchmark trees, or one scenario's device nodes.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help="rebuild only these fixtures' sys/ and dev.list")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--bench", metavar="DIR", help="write the benchmark trees into DIR")
    mode.add_argument("--dev-root", nargs=2, metavar=("SCENARIO", "DIR"),
                      help="make SCENARIO's device nodes (mknod, as root) under DIR: a new or "
                           "empty directory, or one this script made before; / and /dev are refused")
    args = parser.parse_args()
    if (args.bench or args.dev_root) and args.scenarios:
        parser.error("SCENARIO names go without --bench and --dev-root")
    if args.bench:
        bench(args.bench)
        return
    if args.dev_root:
        make_dev_root(*args.dev_root)
        return
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}")
    for name, build in SCENARIOS.items():
        if args.scenarios and name not in args.scenarios:
            continue
        base = os.path.join(ROOT, name)
        shutil.rmtree(os.path.join(base, "sys"), ignore_errors=True)
        os.makedirs(base, exist_ok=True)
        t = Tree(base)
        build(t)
        t.write_dev_list(base)
        print(f"{name}: {sum(len(f) for _, _, f in os.walk(t.sys))} files")


if __name__ == "__main__":
    main()

"""NIC identity: sysfs parsing on fixture trees laid out like the kernel's, the ethtool
ioctl on a real veth (cross-checked with the `ethtool` binary), default-route detection."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from xtcp2.identity.nic import (PciIds, default_pci_ids, default_route_interfaces, lower_devices, read_nic,
                                valid_ifname)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(path: pathlib.Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def pci_nic(root: pathlib.Path, ifname: str, slot: str, ids: tuple[int, int, int, int], driver: str,
            speed: str = "25000", nested: str = "") -> None:
    """A sysfs tree as the kernel lays it out: class/net/IF -> devices/.../net/IF, device ->
    the PCI function (or a virtio child of it when `nested`), driver -> bus/pci/drivers/X."""
    fn = root / "devices" / "pci0000:00" / slot
    for name, v in zip(("vendor", "device", "subsystem_vendor", "subsystem_device"), ids):
        _write(fn / name, f"0x{v:04x}\n")
    _link(fn / "subsystem", "../../../bus/pci")
    (root / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    dev = fn / nested if nested else fn
    if nested:
        _link(dev / "subsystem", "../../../../bus/virtio")
        _write(dev / "vendor", "0x1af4\n")        # the virtio ids, not the PCI ones
        _write(dev / "device", "0x0001\n")
    _link(dev / "driver", os.path.relpath(root / "bus" / "pci" / "drivers" / driver, dev))
    net = dev / "net" / ifname
    _write(net / "operstate", "up\n")
    _write(net / "speed", speed + "\n")
    _write(net / "carrier", "0\n" if speed == "-1" else "1\n")
    _link(net / "device", "../.." if not nested else "../..")
    _link(root / "class" / "net" / ifname, os.path.relpath(net, root / "class" / "net"))


def test_pci_nic_from_fixture_tree(tmp_path):
    pci_nic(tmp_path, "ens1f0", "0000:3b:00.0", (0x8086, 0x159b, 0x1137, 0x02BE), "ice")
    n = read_nic("ens1f0", str(tmp_path), use_ioctl=False)
    assert (n.driver, n.pci_vendor, n.pci_device, n.bus_info) == ("ice", 0x8086, 0x159B, "0000:3b:00.0")
    assert n.speed_mbps == 25000 and n.operstate == "up" and n.errors == []
    # the card (subsystem entry) from Debian's pci.ids, more specific than the chip
    assert n.model == "E810XXVDA2 2x25/10 GbE SFP28 PCIe NIC"


def test_virtio_nic_takes_ids_from_its_pci_parent(tmp_path):
    """As on this VM: device -> 0000:00:03.0/virtio2, whose own vendor/device are virtio ids."""
    pci_nic(tmp_path, "eth0", "0000:00:03.0", (0x1AF4, 0x1041, 0x1AF4, 0x1041), "virtio-pci", nested="virtio2")
    n = read_nic("eth0", str(tmp_path), use_ioctl=False)
    assert (n.pci_vendor, n.pci_device, n.bus_info) == (0x1AF4, 0x1041, "0000:00:03.0")
    assert n.model == "Virtio 1.0 network device"


def test_usb_nic_has_no_pci_ids(tmp_path):
    """A USB NIC sits below the USB host controller's PCI function: those ids are not its own."""
    pci_nic(tmp_path, "xhci-dummy", "0000:00:14.0", (0x8086, 0xA36D, 0, 0), "xhci_hcd")
    usb = tmp_path / "devices" / "pci0000:00" / "0000:00:14.0" / "usb2" / "2-1" / "2-1:2.0"
    _link(usb / "subsystem", os.path.relpath(tmp_path / "bus" / "usb", usb))
    (tmp_path / "bus" / "usb" / "drivers" / "cdc_ether").mkdir(parents=True)
    _link(usb / "driver", os.path.relpath(tmp_path / "bus" / "usb" / "drivers" / "cdc_ether", usb))
    net = usb / "net" / "usb0"
    _write(net / "carrier", "1\n")
    _write(net / "speed", "1000\n")
    _link(net / "device", "../..")
    _link(tmp_path / "class" / "net" / "usb0", os.path.relpath(net, tmp_path / "class" / "net"))
    n = read_nic("usb0", str(tmp_path), use_ioctl=False)
    assert (n.driver, n.speed_mbps) == ("cdc_ether", 1000)
    assert (n.pci_vendor, n.pci_device, n.bus_info, n.model) == (0, 0, "", "")


def test_link_down_and_broken_files(tmp_path):
    pci_nic(tmp_path, "eth1", "0000:5e:00.1", (0x15B3, 0x101D, 0, 0), "mlx5_core", speed="-1")
    fn = tmp_path / "devices" / "pci0000:00" / "0000:5e:00.1"
    (fn / "device").write_text("garbage\n")
    n = read_nic("eth1", str(tmp_path), use_ioctl=False)
    assert n.speed_mbps == 0                    # -1: link down
    assert n.pci_vendor == 0x15B3 and n.pci_device == 0 and n.model == ""
    assert n.driver == "mlx5_core"


def test_virtual_and_missing_interfaces(tmp_path):
    _write(tmp_path / "class" / "net" / "veth0" / "speed", "10000\n")
    _write(tmp_path / "class" / "net" / "veth0" / "carrier", "1\n")
    n = read_nic("veth0", str(tmp_path), use_ioctl=False)
    assert (n.driver, n.bus_info, n.pci_vendor, n.speed_mbps, n.errors) == ("", "", 0, 10000, [])
    gone = read_nic("eth9", str(tmp_path), use_ioctl=False)
    assert gone.errors == ["sysfs: no such interface"]


def virtual(root: pathlib.Path, ifname: str, lowers: tuple[str, ...] = (), bridge: bool = False) -> None:
    """A virtual device as the kernel shows it: devices/virtual/net/IF, lower_X -> ../X."""
    d = root / "devices" / "virtual" / "net" / ifname
    d.mkdir(parents=True)
    for low in lowers:
        (d / f"lower_{low}").symlink_to(f"../{low}")
    if bridge:
        (d / "bridge").mkdir()
    _link(root / "class" / "net" / ifname, f"../../devices/virtual/net/{ifname}")


def test_stacked_devices_resolve_to_the_nics_below(tmp_path):
    pci_nic(tmp_path, "eth1", "0000:3b:00.1", (0x8086, 0x159B, 0, 0), "ice")
    pci_nic(tmp_path, "eth0", "0000:3b:00.0", (0x8086, 0x159B, 0, 0), "ice")
    pci_nic(tmp_path, "eth2", "0000:5e:00.0", (0x15B3, 0x101D, 0, 0), "mlx5_core")
    virtual(tmp_path, "bond0", ("eth1", "eth0"))
    virtual(tmp_path, "bond0.100", ("bond0",))
    virtual(tmp_path, "vnet0")
    virtual(tmp_path, "br0", ("vnet0", "eth2"), bridge=True)
    virtual(tmp_path, "docker0", ("vnet0",), bridge=True)
    root = str(tmp_path)
    assert lower_devices("bond0.100", root) == ["eth0", "eth1"]   # VLAN on a bond: both ports
    assert lower_devices("bond0", root) == ["eth0", "eth1"]
    assert lower_devices("br0", root) == ["eth2"]                 # a bridge: its physical port only
    assert lower_devices("docker0", root) == ["docker0"]          # nothing physical below: itself
    assert lower_devices("eth0", root) == ["eth0"] and lower_devices("gone", root) == ["gone"]


@pytest.mark.parametrize("name,ok", [("eth0", True), ("a" * 15, True), ("a" * 16, False), ("", False),
                                     ("..", False), ("a/b", False), ("a b", False), ("a:1", False),
                                     ("a\x01", False), ("é" * 8, False)])
def test_interface_names(name, ok):
    assert valid_ifname(name) is ok
    if not ok:
        with pytest.raises(ValueError):
            read_nic(name, "/nonexistent")


def test_pci_ids_parser(tmp_path):
    f = tmp_path / "pci.ids"
    f.write_text("# comment\n"
                 "8086  Intel Corporation\n"
                 "\t1521  I350 Gigabit Network Connection\n"
                 "# a comment inside a device\n"
                 "\t\t8086 0001  Ethernet Server Adapter I350-T4\n"
                 "\t159b  Ethernet Controller E810-XXV for SFP\n"
                 "8087  Intel Corporation\n"
                 "\t1521  not this one\n"
                 "C 02  Network controller\n"
                 "\t00  Ethernet controller\n")
    ids = PciIds(str(f))
    assert ids.model(0x8086, 0x1521) == "I350 Gigabit Network Connection"
    assert ids.model(0x8086, 0x1521, 0x8086, 0x0001) == "Ethernet Server Adapter I350-T4"
    assert ids.model(0x8086, 0x159B, 0x8086, 0x0001) == "Ethernet Controller E810-XXV for SFP"
    assert ids.model(0x8087, 0x1521) == "not this one"
    assert ids.model(0x8086, 0x0002) == "" and ids.model(0x0002, 0x0000) == ""  # class section not read
    assert PciIds(None).model(0x8086, 0x1521) == "" and PciIds(str(tmp_path / "none")).model(1, 2) == ""


def test_real_pci_ids_file_is_installed():
    assert default_pci_ids().path, "pci.ids missing: apt-get install pci.ids (scripts/apt-runtime.txt)"
    assert default_pci_ids().model(0x15B3, 0x101D) == "MT2892 Family [ConnectX-6 Dx]"


def test_default_routes_from_proc_files(tmp_path):
    _write(tmp_path / "net" / "route",
           "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
           "bond0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
           "eth2\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"      # not a default route
           "eth3\t00000000\t0102A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n")     # not up
    _write(tmp_path / "net" / "ipv6_route",
           "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
           "fe800000000000000000000000000001 00000400 00000002 00000000 00000003     eth1\n"
           "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
           "fe800000000000000000000000000001 00000400 00000002 00000000 00000003    bond0\n"
           "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
           "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
    assert default_route_interfaces(str(tmp_path)) == ["bond0", "eth1"]
    assert default_route_interfaces(str(tmp_path / "none")) == []


PROBE = r"""
import dataclasses, json, sys
from xtcp2.identity.nic import default_route_interfaces, read_nic
print(json.dumps({"nic": dataclasses.asdict(read_nic(sys.argv[1])), "routes": default_route_interfaces()}))
"""


def _in_ns(ns: str, *argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True,
                          env=env, timeout=30).stdout


@pytest.mark.root
def test_real_veth_through_the_ethtool_ioctl(veth_pair):
    """In A: the ioctl names the veth driver and its speed, as the ethtool binary does;
    /proc/net/route names the veth as the default route's interface."""
    assert shutil.which("ethtool"), "ethtool missing: apt-get install ethtool (scripts/apt-test.txt)"
    got = json.loads(_in_ns(veth_pair.a, sys.executable, "-c", PROBE, veth_pair.a_if))
    nic = got["nic"]
    tool = dict(re.findall(r"^([\w-]+): ?(.*)$", _in_ns(veth_pair.a, "ethtool", "-i", veth_pair.a_if), re.M))
    assert nic["driver"] == tool["driver"] == "veth"
    assert nic["fw_version"] == tool["firmware-version"] and nic["bus_info"] == tool["bus-info"] == ""
    speed = re.search(r"Speed: (\d+)Mb/s", _in_ns(veth_pair.a, "ethtool", veth_pair.a_if)).group(1)
    assert nic["speed_mbps"] == int(speed) > 0
    assert nic["errors"] == [] and nic["operstate"] == "up"
    assert got["routes"] == [veth_pair.a_if]


@pytest.mark.root
def test_speed_is_zero_while_the_link_is_down(veth_pair):
    """Peer down: no carrier. veth still claims 10000 Mb/s through ethtool; we report 0
    (upstream's meaning: 0 = unknown or down), and the speed again once the link is back."""
    subprocess.run(["ip", "-n", veth_pair.b, "link", "set", veth_pair.b_if, "down"], check=True)
    nic = json.loads(_in_ns(veth_pair.a, sys.executable, "-c", PROBE, veth_pair.a_if))["nic"]
    assert "Link detected: no" in _in_ns(veth_pair.a, "ethtool", veth_pair.a_if)
    assert nic["speed_mbps"] == 0 and nic["driver"] == "veth"
    subprocess.run(["ip", "-n", veth_pair.b, "link", "set", veth_pair.b_if, "up"], check=True)
    nic = json.loads(_in_ns(veth_pair.a, sys.executable, "-c", PROBE, veth_pair.a_if))["nic"]
    assert nic["speed_mbps"] == 10000


@pytest.mark.root
def test_real_macvlan_and_bridge_stacks(veth_pair):
    """The kernel's own lower_* links: a macvlan resolves to the veth below it; a bridge
    whose only port is a veth stays itself."""
    a, dev = veth_pair.a, veth_pair.a_if
    mv, br, port = dev[:-1] + "m", dev[:-1] + "r", dev[:-1] + "p"
    subprocess.run(["ip", "-n", a, "link", "add", "link", dev, "name", mv, "type", "macvlan"], check=True)
    subprocess.run(["ip", "-n", a, "link", "add", br, "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", port + "x"], check=True)
    subprocess.run(["ip", "-n", a, "link", "set", port, "master", br], check=True)
    code = ("import json, sys; from xtcp2.identity.nic import lower_devices; "
            "print(json.dumps([lower_devices(n) for n in sys.argv[1:]]))")
    got = json.loads(_in_ns(a, sys.executable, "-c", code, mv, br, dev))
    assert got == [[dev], [br], [dev]]


@pytest.mark.root
def test_host_default_route_nic_matches_ethtool():
    """The host's own uplink, whatever its driver, against `ethtool -i`."""
    names = default_route_interfaces()
    if not names:
        pytest.skip("this host has no default route")
    n = read_nic(names[0])
    out = subprocess.run(["ethtool", "-i", names[0]], capture_output=True, text=True, check=True)
    tool = dict(re.findall(r"^([\w-]+): ?(.*)$", out.stdout, re.M))
    assert (n.driver, n.fw_version, n.bus_info) == (tool["driver"], tool["firmware-version"], tool["bus-info"])

"""Identity of an uplink NIC: driver, model, PCI ids, bus address, speed, firmware.

Read from sysfs (`<root>/class/net/IF/...`) and, on the live system, from the ethtool
ioctl (SIOCETHTOOL: ETHTOOL_GDRVINFO as `ethtool -i`, ETHTOOL_GLINKSETTINGS for the speed)
on a plain datagram socket; no process is started. The sysfs root is a parameter so the
parsing can be tested on a fixture tree; the ioctl only runs against the real `/sys`,
because it asks the kernel of this network namespace about the interface, not the tree.

Best-effort by design: every value that cannot be read stays empty/0 and the reason is
returned in `NicInfo.errors`, so the caller can count it. Virtual interfaces (veth,
bond, vlan) are reported too (driver and speed from ethtool, no PCI ids), unlike
upstream, which skips interfaces without a `device` link: a bond is a common uplink.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field

from .. import values

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GLINKSETTINGS = 0x0000004C
IFNAMSIZ = 16
SPEED_UNKNOWN = 0xFFFFFFFF

# struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
# erom_version[32], reserved2[12], then five u32 counts.
_DRVINFO = struct.Struct("=I32s32s32s32s32s12s5I")
# struct ethtool_link_settings header: cmd, speed, 8 u8 (duplex .. eth_tp_mdix_ctrl),
# s8 link_mode_masks_nwords, 3 u8, reserved[7]; the link mode masks follow.
_LINK_HDR = struct.Struct("=II7Bb4B7I")
_NWORDS_OFFSET = 15
_IFREQ_SIZE = 40  # struct ifreq on LP64 and ILP32 alike (the union is 24 bytes)

PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids")
MAX_TEXT = 255  # longest string we stamp from sysfs/ethtool; longer means a broken source


@dataclass
class NicInfo:
    ifname: str
    driver: str = ""
    model: str = ""
    pci_vendor: int = 0
    pci_device: int = 0
    bus_info: str = ""
    speed_mbps: int = 0
    fw_version: str = ""
    operstate: str = ""
    errors: list[str] = field(default_factory=list)  # "kind: why" per failed read; kind from a fixed set


def valid_ifname(name: str) -> bool:
    """A name the kernel accepts for an interface, and printable (values.ifname)."""
    try:
        values.ifname(name)
    except ValueError:
        return False
    return True


def read_nic(ifname: str, sysfs_root: str = "/sys", use_ioctl: bool | None = None,
             pci_ids: "PciIds | None" = None) -> NicInfo:
    """Everything known about one interface. Never raises for a missing or odd source."""
    if not valid_ifname(ifname):
        raise ValueError(f"invalid interface name {ifname!r}")
    info = NicInfo(ifname)
    if_dir = os.path.join(sysfs_root, "class", "net", ifname)
    if not os.path.isdir(if_dir):
        info.errors.append("sysfs: no such interface")
        return info
    info.operstate = _read_text(os.path.join(if_dir, "operstate"))
    info.speed_mbps = _read_speed(os.path.join(if_dir, "speed"))  # unreadable while down
    dev = os.path.join(if_dir, "device")
    if os.path.exists(dev):
        info.driver = _link_name(os.path.join(dev, "driver"))
        pci = _pci_function(os.path.realpath(dev))
        if pci is not None:
            info.bus_info = os.path.basename(pci)
            info.pci_vendor = _read_hex(os.path.join(pci, "vendor"))
            info.pci_device = _read_hex(os.path.join(pci, "device"))
            sub = (_read_hex(os.path.join(pci, "subsystem_vendor")), _read_hex(os.path.join(pci, "subsystem_device")))
            if info.pci_vendor:
                info.model = (pci_ids or default_pci_ids()).model(info.pci_vendor, info.pci_device, *sub)
    if use_ioctl is None:
        use_ioctl = sysfs_root == "/sys"
    if use_ioctl:
        _apply_ethtool(info)
    if _read_text(os.path.join(if_dir, "carrier")) != "1":
        info.speed_mbps = 0  # some drivers (veth) report their nominal speed with the link down
    return info


def _apply_ethtool(info: NicInfo) -> None:
    """Driver, firmware and bus address as `ethtool -i`, speed as `ethtool`; errors noted."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                drv = ethtool_drvinfo(s.fileno(), info.ifname)
                info.driver = drv["driver"] or info.driver
                info.fw_version = drv["fw_version"]
                info.bus_info = drv["bus_info"] or info.bus_info
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:  # e.g. lo: nothing to know, not a failure
                    info.errors.append(f"ethtool_drvinfo: {e.strerror or e}")
            try:
                speed = ethtool_speed(s.fileno(), info.ifname)
                if speed is not None:
                    info.speed_mbps = speed
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    info.errors.append(f"ethtool_linksettings: {e.strerror or e}")
    except OSError as e:
        info.errors.append(f"ethtool_socket: {e.strerror or e}")


def _ethtool(fd: int, ifname: str, buf: ctypes.Array) -> None:
    """SIOCETHTOOL with ifr_data pointing at `buf` (filled in place by the kernel)."""
    ifreq = bytearray(_IFREQ_SIZE)
    struct.pack_into(f"{IFNAMSIZ}sP", ifreq, 0, ifname.encode(), ctypes.addressof(buf))
    fcntl.ioctl(fd, SIOCETHTOOL, ifreq, True)


def _cstr(raw: bytes) -> str:
    return _clean(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))


def ethtool_drvinfo(fd: int, ifname: str) -> dict[str, str]:
    """ETHTOOL_GDRVINFO: driver, version, fw_version, bus_info (as `ethtool -i`)."""
    buf = ctypes.create_string_buffer(_DRVINFO.size)
    struct.pack_into("=I", buf, 0, ETHTOOL_GDRVINFO)
    _ethtool(fd, ifname, buf)
    _, driver, version, fw, bus, *_ = _DRVINFO.unpack(buf.raw)
    return {"driver": _cstr(driver), "version": _cstr(version), "fw_version": _cstr(fw), "bus_info": _cstr(bus)}


def ethtool_speed(fd: int, ifname: str) -> int | None:
    """Link speed in Mb/s from ETHTOOL_GLINKSETTINGS, None when unknown (link down).

    The kernel's handshake: a first request with link_mode_masks_nwords = 0 is answered
    with -N, the number of u32 words each of the three link mode masks needs; the real
    request then carries N and room for the masks.
    """
    buf = ctypes.create_string_buffer(_LINK_HDR.size)
    struct.pack_into("=I", buf, 0, ETHTOOL_GLINKSETTINGS)
    _ethtool(fd, ifname, buf)
    nwords = -struct.unpack_from("=b", buf, _NWORDS_OFFSET)[0]
    if not 0 < nwords <= 127:
        raise OSError(0, f"link settings handshake returned {-nwords} words")
    buf = ctypes.create_string_buffer(_LINK_HDR.size + 3 * 4 * nwords)
    struct.pack_into("=I", buf, 0, ETHTOOL_GLINKSETTINGS)
    struct.pack_into("=b", buf, _NWORDS_OFFSET, nwords)
    _ethtool(fd, ifname, buf)
    speed = struct.unpack_from("=I", buf, 4)[0]
    return None if speed in (SPEED_UNKNOWN, 0) else speed


def _subsystem(path: str) -> str:
    return os.path.basename(os.path.realpath(os.path.join(path, "subsystem")))


def _pci_function(dev: str) -> str | None:
    """The PCI function behind an interface's `device`, if the NIC is on PCI.

    A PCI NIC's `device` is the function itself; a virtio NIC's is a virtio device whose
    parent is the function (0000:00:03.0/virtio2). Nothing else: a USB NIC's ancestors
    include the USB host controller's function, whose ids are not the NIC's.
    """
    sub = _subsystem(dev)
    if sub == "pci":
        return dev
    parent = os.path.dirname(dev)
    if sub == "virtio" and _subsystem(parent) == "pci":
        return parent
    return None


def _clean(text: str) -> str:
    """Printable text only, bounded: these strings go onto every record."""
    text = "".join(ch for ch in text.strip() if ch.isprintable())
    return text[:MAX_TEXT]


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return _clean(f.read(4096).decode("utf-8", "replace"))
    except OSError:
        return ""


def _read_hex(path: str) -> int:
    text = _read_text(path).lower()
    try:
        v = int(text, 16) if text else 0
    except ValueError:
        return 0
    return v if 0 <= v <= 0xFFFF else 0


def _read_speed(path: str) -> int:
    """sysfs `speed` is -1 or unreadable (EINVAL) while the link is down: both mean 0."""
    try:
        v = int(_read_text(path))
    except ValueError:
        return 0
    return v if 0 < v < SPEED_UNKNOWN else 0


def _link_name(path: str) -> str:
    try:
        return _clean(os.path.basename(os.readlink(path)))
    except OSError:
        return ""


class PciIds:
    """Model names from a pci.ids file (Debian package `pci.ids`), looked up on demand.

    Only the few ids of the uplinks are ever asked for, so each lookup scans the file
    once and results are cached; no 1.3 MB table is held in memory.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._cache: dict[tuple[int, int, int, int], str] = {}

    def model(self, vendor: int, device: int, sub_vendor: int = 0, sub_device: int = 0) -> str:
        key = (vendor, device, sub_vendor, sub_device)
        if key not in self._cache:
            self._cache[key] = self._lookup(*key)
        return self._cache[key]

    def _lookup(self, vendor: int, device: int, sub_vendor: int, sub_device: int) -> str:
        if not self.path:
            return ""
        want_v, want_d = f"{vendor:04x}", f"{device:04x}"
        want_s = f"{sub_vendor:04x} {sub_device:04x}"
        in_vendor = in_device = False
        name = ""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip() or line.startswith("#"):
                        continue
                    if line.startswith("C "):  # the device class list follows the vendors
                        break
                    if not line.startswith("\t"):
                        if in_vendor:
                            break
                        in_vendor = line[:4].lower() == want_v and line[4:6] == "  "
                    elif in_vendor and not line.startswith("\t\t"):
                        if in_device:
                            break
                        in_device = line[1:5].lower() == want_d
                        if in_device:
                            name = line[5:].strip()
                    elif in_device and line[2:11].lower() == want_s:
                        return _clean(line[11:])  # the card itself, more specific than the chip
        except OSError:
            return ""
        return _clean(name)


_DEFAULT_PCI_IDS: PciIds | None = None


def default_pci_ids() -> PciIds:
    global _DEFAULT_PCI_IDS
    if _DEFAULT_PCI_IDS is None:
        _DEFAULT_PCI_IDS = PciIds(next((p for p in PCI_IDS_PATHS if os.path.exists(p)), None))
    return _DEFAULT_PCI_IDS


def lower_devices(ifname: str, sysfs_root: str = "/sys", _depth: int = 0) -> list[str]:
    """The devices at the bottom of `ifname`'s stack, sorted: the NICs behind a bond, team,
    VLAN or macvlan (the kernel's lower_* links, followed down), where LLDP is heard and the
    PCI ids live. A bridge's ports are mostly veths and taps: only those with a device
    behind them count. `ifname` itself when nothing is below it (or nothing physical
    below a bridge)."""
    d = os.path.join(sysfs_root, "class", "net", ifname)
    try:
        lowers = sorted(e[len("lower_"):] for e in os.listdir(d) if e.startswith("lower_"))
    except OSError:
        return [ifname]
    if not lowers or _depth >= 8:
        return [ifname]
    out: list[str] = []
    for low in lowers:
        for leaf in lower_devices(low, sysfs_root, _depth + 1):
            if leaf not in out and valid_ifname(leaf):
                out.append(leaf)
    if os.path.isdir(os.path.join(d, "bridge")):
        out = [n for n in out if os.path.exists(os.path.join(sysfs_root, "class", "net", n, "device"))]
    return out or [ifname]


def default_route_interfaces(proc_root: str = "/proc") -> list[str]:
    """Interfaces holding a default route, IPv4 first (/proc/net/route, ipv6_route).

    Read from this process's network namespace, as the uplinks are those of the host
    the daemon runs in. Order of appearance, duplicates removed.
    """
    out: list[str] = []

    def add(name: str) -> None:
        if valid_ifname(name) and name != "lo" and name not in out:
            out.append(name)

    try:
        with open(os.path.join(proc_root, "net", "route")) as f:
            for line in list(f)[1:]:
                cols = line.split()
                # Destination and Mask 0: the default route; flag 0x1 RTF_UP
                if len(cols) >= 8 and cols[1] == "00000000" and cols[7] == "00000000" and int(cols[3], 16) & 1:
                    add(cols[0])
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(proc_root, "net", "ipv6_route")) as f:
            for line in f:
                cols = line.split()
                if len(cols) >= 10 and cols[0] == "0" * 32 and cols[1] == "00" and int(cols[8], 16) & 1:
                    add(cols[9])
    except (OSError, ValueError):
        pass
    return out

"""The uplink1_* / uplink2_* record fields: which interfaces are the uplinks, their NIC
identity (nic.py) and their LLDP neighbour (lldp.py), kept fresh in the background.

These are per-host constants. A refresher thread recomputes them every
`refresh_seconds` (and at once after a reconfigure) and publishes them as one dict,
swapped whole; the record sink's join `stamp()` adds that dict to every batch's
constants (a `target` dict, if given, is also updated). A poll never waits for sysfs,
an ioctl or lldpcli; only start() waits (bounded) for the first round so the first poll
has them.
A source that fails keeps its last known values and counts the error.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from ..prom_light import Counter, Gauge

if TYPE_CHECKING:  # sysfs, ethtool and lldpcli are read only with -enrichNic / -enrichLldp
    from .lldp import Neighbor
    from .nic import NicInfo

log = logging.getLogger(__name__)

MAX_UPLINKS = 2   # the schema has two slots
REFRESH_SECONDS = 60.0
LLDP_TIMEOUT = 2.0
START_WAIT = 3.0

ERRORS = Counter("xtcp2_uplink_errors_total",
                 "Uplink NIC / LLDP reads that failed (the fields keep their last known values)",
                 ["source", "kind"])
REFRESHES = Counter("xtcp2_uplink_refreshes_total", "Completed uplink NIC / LLDP refresh rounds", ["source"])
UPLINKS = Gauge("xtcp2_uplinks", "Uplink slots filled (interfaces named in uplink*_ifname)")
NEIGHBORS = Gauge("xtcp2_uplink_lldp_neighbors", "Uplinks with an LLDP neighbour")

_NIC_FIELDS = ("nic_driver", "nic_model", "nic_pci_vendor", "nic_pci_device", "nic_bus_info",
               "nic_speed_mbps", "nic_fw_version")
_LLDP_FIELDS = ("lldp_chassis_name", "lldp_chassis_id", "lldp_mgmt_ip", "lldp_port_id", "lldp_port_descr")
_INT_FIELDS = {"nic_pci_vendor", "nic_pci_device", "nic_speed_mbps"}


def empty_constants() -> dict:
    """Every uplink field at its default: what is stamped when enrichment is off."""
    return {f"uplink{slot}_{name}": 0 if name in _INT_FIELDS else ""
            for slot in range(1, MAX_UPLINKS + 1) for name in ("ifname", *_NIC_FIELDS, *_LLDP_FIELDS)}


def nic_fields(nic: NicInfo) -> dict:
    return {"nic_driver": nic.driver, "nic_model": nic.model, "nic_pci_vendor": nic.pci_vendor,
            "nic_pci_device": nic.pci_device, "nic_bus_info": nic.bus_info,
            "nic_speed_mbps": nic.speed_mbps, "nic_fw_version": nic.fw_version}


def lldp_fields(nb: Neighbor) -> dict:
    return {"lldp_chassis_name": nb.chassis_name, "lldp_chassis_id": nb.chassis_id, "lldp_mgmt_ip": nb.mgmt_ip,
            "lldp_port_id": nb.port_id, "lldp_port_descr": nb.port_descr}


def physical_interfaces(sysfs_root: str = "/sys") -> list[str]:
    """Interfaces with a device behind them (not lo/veth/bridge), sorted: the fallback
    when no default route names an uplink (upstream does the same)."""
    net = os.path.join(sysfs_root, "class", "net")
    try:
        names = sorted(os.listdir(net))
    except OSError:
        return []
    return [n for n in names if n != "lo" and os.path.exists(os.path.join(net, n, "device"))]


class UplinkEnricher:
    """Keeps the uplink fields up to date; stamp() puts them on records."""

    def __init__(self, config, target: dict | None = None, refresh_seconds: float = REFRESH_SECONDS,
                 sysfs_root: str = "/sys", proc_root: str = "/proc") -> None:
        self._target = target if target is not None else {}
        self.refresh_seconds = refresh_seconds
        self.sysfs_root = sysfs_root
        self.proc_root = proc_root
        self._config = config
        self._nics: dict[str, dict] = {}         # ifname -> last good nic fields
        self._neighbors: dict[str, Neighbor] = {}
        self._last_error: dict[str, str] = {}    # source -> last logged message
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()            # one refresh at a time
        self.constants: dict = empty_constants()
        self._stamped: dict = {}                 # what stamp() adds: nothing until first published

    def stamp(self, cols, consts: dict) -> None:
        """The same fields as a record-sink join: onto one batch's constants. Reads one
        reference (swapped whole by _publish), so it never waits for a refresh."""
        current = self._stamped
        if current:
            consts.update(current)

    @classmethod
    def started(cls, config, target: dict | None = None, **kwargs) -> "UplinkEnricher":
        """The daemon's hook: an enricher already running if the config asks for one."""
        u = cls(config, target, **kwargs)
        u.start()
        return u

    @property
    def enabled(self) -> bool:
        return bool(self._config.enrich_nic_enable or self._config.enrich_lldp_enable)

    # ---- lifecycle -------------------------------------------------------------
    def start(self, wait: float = START_WAIT) -> None:
        """Start the refresher if enabled; wait up to `wait` s for its first round."""
        if not self.enabled:
            return  # no keys at all: records stay as they were, nothing to encode
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._wake.clear()
            self._first.clear()
            self._thread = threading.Thread(target=self._run, name="uplink-refresh", daemon=True)
            self._thread.start()
        if wait and not self._first.wait(wait):
            log.warning("uplink enrichment: first refresh still running after %.3gs; records go out without it until it ends", wait)

    def configure(self, config) -> None:
        """A new validated config: refresh now (in the background), or stop and clear."""
        self._config = config
        if not self.enabled:
            self.close()
            if any(self.constants.values()):
                self._publish(empty_constants())  # switched off: clear what records carried
            return
        if self._thread is None or not self._thread.is_alive():
            self.start(wait=0)
        else:
            self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=LLDP_TIMEOUT + 1)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as e:  # a bug here must not end enrichment for good
                ERRORS.labels("uplink", "internal").inc()
                log.exception("uplink refresh failed: %s", e)
            self._first.set()
            self._wake.wait(self.refresh_seconds)
            self._wake.clear()

    # ---- one round ---------------------------------------------------------------
    def interfaces(self) -> list[str]:
        """The uplinks, slot order: -uplinkInterfaces as given, else the default routes'
        interfaces (a bond, VLAN or macvlan replaced by the NICs below it: a bond of two
        ports to two switches fills both slots), else the physical NICs; at most
        -uplinkCount (0 = 2)."""
        from .nic import default_route_interfaces, lower_devices
        cfg = self._config
        count = min(cfg.uplink_count or MAX_UPLINKS, MAX_UPLINKS)
        names = list(cfg.uplink_interfaces)
        if not names:
            for route_if in default_route_interfaces(self.proc_root):
                names += [n for n in lower_devices(route_if, self.sysfs_root) if n not in names]
        names = names or physical_interfaces(self.sysfs_root)
        return names[:count]

    def refresh(self) -> dict:
        """Read everything once, publish the constants and return them."""
        with self._lock:
            cfg = self._config
            names = self.interfaces()
            if cfg.enrich_nic_enable:
                self._refresh_nics(names)
            if cfg.enrich_lldp_enable:
                self._refresh_lldp(cfg.lldpd_socket_path)
            consts = empty_constants()
            for slot, name in enumerate(names, 1):
                consts[f"uplink{slot}_ifname"] = name
                fields = {}
                if cfg.enrich_nic_enable:
                    fields.update(self._nics.get(name, {}))
                if cfg.enrich_lldp_enable and name in self._neighbors:
                    fields.update(lldp_fields(self._neighbors[name]))
                consts.update({f"uplink{slot}_{k}": v for k, v in fields.items()})
            UPLINKS.set(len(names))
            NEIGHBORS.set(sum(1 for n in names if n in self._neighbors) if cfg.enrich_lldp_enable else 0)
            self._publish(consts)
            return consts

    def _refresh_nics(self, names: list[str]) -> None:
        from .nic import NicInfo, read_nic
        # forget interfaces that are no longer uplinks (routes change, devices go)
        self._nics = {n: v for n, v in self._nics.items() if n in names}
        for key in [k for k in self._last_error if k.startswith("nic:") and k[4:] not in names]:
            del self._last_error[key]
        for name in names:
            try:
                info = read_nic(name, self.sysfs_root)
            except ValueError as e:  # an invalid name never gets here past config.validate()
                info = NicInfo(name, errors=[f"name: {e}"])
            for err in info.errors:
                ERRORS.labels("nic", err.split(":", 1)[0]).inc()
            self._note("nic:" + name, "; ".join(info.errors))
            fresh = nic_fields(info)
            if info.errors and name in self._nics:
                # keep what an earlier round knew for the values this one could not read
                old = self._nics[name]
                fresh = {k: v or old.get(k, v) for k, v in fresh.items()}
            self._nics[name] = fresh
        REFRESHES.labels("nic").inc()

    def _refresh_lldp(self, socket_path: str) -> None:
        from .lldp import LldpError, fetch_neighbors
        try:
            self._neighbors = fetch_neighbors(socket_path, LLDP_TIMEOUT)
        except LldpError as e:
            ERRORS.labels("lldp", e.kind).inc()
            self._note("lldp", str(e))
            return
        self._note("lldp", "")
        REFRESHES.labels("lldp").inc()

    def _note(self, source: str, error: str) -> None:
        """Log a source's error when it starts or changes, and when it clears (not every round)."""
        last = self._last_error.get(source, "")
        if error and error != last:
            log.warning("uplink enrichment (%s): %s", source, error)
        elif last and not error:
            log.info("uplink enrichment (%s): working again", source)
        self._last_error[source] = error

    def _publish(self, consts: dict) -> None:
        if consts != self.constants:
            changed = {k: v for k, v in consts.items() if self.constants.get(k) != v}
            log.info("uplink fields: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items()) if v) or "cleared")
        self.constants = consts
        self._stamped = consts
        self._target.update(consts)  # one C-level update: concurrent dict() copies see old or new

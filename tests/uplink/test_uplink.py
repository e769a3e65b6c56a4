"""The uplink*_ record fields end to end: the background refresher against real lldpd,
the daemon's records (poll mode) inside a namespace whose default route is a veth, the
flags and the gRPC config mapping."""
from __future__ import annotations

import os
import pathlib
import subprocess
import signal
import sys

import pytest
from prometheus_client import REGISTRY

from xtcp2.api.config_proto import config_from_proto, config_to_proto
from xtcp2.cli import build_parser, config_from_args
from xtcp2.config import Config
from xtcp2.errors import ConfigError
from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2 as cpb
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.identity.uplink import UplinkEnricher
from xtcp2.marshal.protobuf_list import unmarshal

from ..prom import sample
from .conftest import wait_for
from .test_nic import pci_nic, virtual

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _errors(source: str, kind: str) -> float:
    return sample(REGISTRY, "xtcp2_uplink_errors_total", source=source, kind=kind)


def test_disabled_stamps_nothing():
    target = {"hostname": "h"}
    u = UplinkEnricher.started(Config(), target)
    assert u._thread is None
    assert target == {"hostname": "h"}          # not even empty uplink keys to encode


def test_two_slots_from_fixture_sysfs(tmp_path):
    """Explicit -uplinkInterfaces: slot order is the flag's order; a third is never read."""
    pci_nic(tmp_path, "ens1f0", "0000:3b:00.0", (0x8086, 0x159B, 0x1137, 0x02BE), "ice")
    pci_nic(tmp_path, "ens1f1", "0000:3b:00.1", (0x8086, 0x159B, 0, 0), "ice", speed="10000")
    cfg = Config(enrich_nic_enable=True, uplink_interfaces=["ens1f1", "ens1f0"]).validate()
    target: dict = {}
    consts = UplinkEnricher(cfg, target, sysfs_root=str(tmp_path)).refresh()
    assert target == consts
    assert consts["uplink1_ifname"] == "ens1f1" and consts["uplink2_ifname"] == "ens1f0"
    assert consts["uplink1_nic_speed_mbps"] == 10000 and consts["uplink2_nic_speed_mbps"] == 25000
    assert consts["uplink2_nic_model"] == "E810XXVDA2 2x25/10 GbE SFP28 PCIe NIC"
    assert consts["uplink1_nic_model"] == "Ethernet Controller E810-XXV for SFP"
    assert consts["uplink1_nic_bus_info"] == "0000:3b:00.1" and consts["uplink1_nic_pci_vendor"] == 0x8086
    assert consts["uplink1_lldp_chassis_name"] == ""   # -enrichLldp off
    one = UplinkEnricher(cfg.replace(uplink_count=1), {}, sysfs_root=str(tmp_path)).refresh()
    assert one["uplink1_ifname"] == "ens1f1" and one["uplink2_ifname"] == ""


def test_stamp_as_a_sink_join(tmp_path):
    """stamp(cols, consts) adds the current fields to a batch's constants (a record-sink join)."""
    pci_nic(tmp_path, "eth0", "0000:3b:00.0", (0x8086, 0x159B, 0, 0), "ice")
    off = UplinkEnricher(Config(), sysfs_root=str(tmp_path))
    consts = {"netns": "x"}
    off.stamp(None, consts)
    assert consts == {"netns": "x"}
    on = UplinkEnricher(Config(enrich_nic_enable=True, uplink_interfaces=["eth0"]).validate(), sysfs_root=str(tmp_path))
    on.refresh()
    on.stamp(None, consts)
    assert consts["netns"] == "x" and consts["uplink1_nic_driver"] == "ice" and consts["uplink2_ifname"] == ""


def test_missing_interface_is_counted_and_keeps_its_slot(tmp_path):
    pci_nic(tmp_path, "eth0", "0000:3b:00.0", (0x8086, 0x159B, 0, 0), "ice")
    cfg = Config(enrich_nic_enable=True, uplink_interfaces=["eth7", "eth0"]).validate()
    before = _errors("nic", "sysfs")
    u = UplinkEnricher(cfg, {}, sysfs_root=str(tmp_path))
    consts = u.refresh()
    u.refresh()
    assert _errors("nic", "sysfs") == before + 2
    assert consts["uplink1_ifname"] == "eth7" and consts["uplink1_nic_driver"] == ""
    assert consts["uplink2_nic_driver"] == "ice"


def test_default_route_on_a_bond_fills_both_slots(tmp_path):
    """Dual-homed: bond0 over two NICs, each to its own switch; the default route names bond0."""
    sysfs, proc = tmp_path / "sys", tmp_path / "proc"
    pci_nic(sysfs, "ens2f0", "0000:3b:00.0", (0x15B3, 0x101D, 0, 0), "mlx5_core")
    pci_nic(sysfs, "ens2f1", "0000:3b:00.1", (0x15B3, 0x101D, 0, 0), "mlx5_core")
    virtual(sysfs, "bond0", ("ens2f1", "ens2f0"))
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "bond0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    cfg = Config(enrich_nic_enable=True).validate()
    consts = UplinkEnricher(cfg, {}, sysfs_root=str(sysfs), proc_root=str(proc)).refresh()
    assert (consts["uplink1_ifname"], consts["uplink2_ifname"]) == ("ens2f0", "ens2f1")
    assert consts["uplink1_nic_bus_info"] == "0000:3b:00.0" and consts["uplink2_nic_bus_info"] == "0000:3b:00.1"
    assert consts["uplink2_nic_model"] == "MT2892 Family [ConnectX-6 Dx]"
    # named explicitly, bond0 is taken as given
    mine = UplinkEnricher(cfg.replace(uplink_interfaces=["bond0"]), {}, sysfs_root=str(sysfs), proc_root=str(proc))
    assert mine.interfaces() == ["bond0"]


def test_physical_nic_fallback_without_default_route(tmp_path):
    pci_nic(tmp_path / "sys", "eno2", "0000:01:00.1", (0x14E4, 0x165F, 0, 0), "tg3")
    pci_nic(tmp_path / "sys", "eno1", "0000:01:00.0", (0x14E4, 0x165F, 0, 0), "tg3")
    (tmp_path / "sys" / "class" / "net" / "veth9").mkdir()   # virtual: not an uplink
    (tmp_path / "proc" / "net").mkdir(parents=True)
    cfg = Config(enrich_nic_enable=True).validate()
    u = UplinkEnricher(cfg, {}, sysfs_root=str(tmp_path / "sys"), proc_root=str(tmp_path / "proc"))
    assert u.interfaces() == ["eno1", "eno2"]
    assert u.refresh()["uplink2_nic_driver"] == "tg3"


@pytest.mark.root
def test_background_refresh_follows_lldpd_and_survives_its_loss(lldpd_pair):
    v = lldpd_pair.veth
    cfg = Config(enrich_lldp_enable=True, uplink_interfaces=[v.a_if], lldpd_socket_path=lldpd_pair.a_sock).validate()
    target: dict = {}
    u = UplinkEnricher(cfg, target, refresh_seconds=0.2)
    u.start()
    try:
        assert target["uplink1_ifname"] == v.a_if
        assert target["uplink1_lldp_chassis_name"] == lldpd_pair.peer_name
        assert target["uplink1_lldp_port_id"] == v.b_if
        assert target["uplink1_lldp_chassis_id"] == v.mac("b")
        assert target["uplink1_lldp_mgmt_ip"] == v.b_addr
        # the switch's port description changes: the next rounds pick it up, no poll involved
        lldpd_pair.cli(lldpd_pair.b_sock, "configure", "ports", v.b_if, "lldp", "portdescription", "moved")
        lldpd_pair.cli(lldpd_pair.b_sock, "update")
        wait_for(lambda: target["uplink1_lldp_port_descr"] == "moved", 15, "the new port description")
        # lldpd unreachable: errors counted, the last known neighbour stays on the records
        before = _errors("lldp", "socket")
        u.configure(cfg.replace(lldpd_socket_path=lldpd_pair.a_sock + ".gone"))
        wait_for(lambda: _errors("lldp", "socket") >= before + 2, 10, "counted lldp errors")
        assert target["uplink1_lldp_chassis_name"] == lldpd_pair.peer_name
        # enrichment switched off by a reconfigure: fields cleared, thread gone
        u.configure(cfg.replace(enrich_lldp_enable=False))
        assert target["uplink1_lldp_chassis_name"] == "" and target["uplink1_ifname"] == ""
        assert u._thread is None
    finally:
        u.close()


def _holder(ns: str) -> subprocess.Popen:
    """A TCP listener in `ns` so the namespace has records to stamp."""
    code = ("import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
            "print('ready', flush=True); sys.stdin.read()")
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _run_daemon(ns: str, out: pathlib.Path, *flags: str) -> list:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "xtcp2", "--once", "--netns", "self",
                        "-dest", f"file:{out}", "-d", "0", *flags], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    rows = []
    for body in unmarshal(out.read_bytes()):
        rows += list(pb.Envelope.FromString(body).row)
    return rows


@pytest.mark.root
def test_daemon_records_carry_the_uplink(lldpd_pair, tmp_path):
    """The daemon inside A, no -uplinkInterfaces: the default route names the veth, the
    ethtool ioctl its driver, A's lldpd the switch (B) on the other end."""
    v = lldpd_pair.veth
    holder = _holder(v.a)
    try:
        rows = _run_daemon(v.a, tmp_path / "on.bin", "-enrichNic", "-enrichLldp", "-lldpdSocket", lldpd_pair.a_sock)
        plain = _run_daemon(v.a, tmp_path / "off.bin")
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert rows and plain
    for r in rows:
        assert r.uplink1_ifname == v.a_if
        assert r.uplink1_nic_driver == "veth" and r.uplink1_nic_speed_mbps == 10000
        assert r.uplink1_nic_pci_vendor == 0 and r.uplink1_nic_bus_info == ""   # virtual: no PCI device
        assert r.uplink1_lldp_chassis_name == lldpd_pair.peer_name
        assert r.uplink1_lldp_chassis_id == v.mac("b")
        assert r.uplink1_lldp_port_id == v.b_if
        assert r.uplink1_lldp_port_descr == lldpd_pair.peer_port_descr
        assert r.uplink1_lldp_mgmt_ip == v.b_addr
        assert r.uplink2_ifname == ""                                           # one default route
    for r in plain:
        assert not r.uplink1_ifname and not r.uplink1_nic_driver and not r.uplink1_lldp_chassis_name


@pytest.mark.root
def test_daemon_default_route_on_a_macvlan_names_the_port_below(lldpd_pair, tmp_path):
    """The default route leaves through a macvlan on the veth: the uplink is the veth,
    where lldpd hears the switch."""
    v = lldpd_pair.veth
    mv = v.a_if[:-1] + "m"
    for args in (["link", "add", "link", v.a_if, "name", mv, "type", "macvlan"],
                 ["addr", "add", "10.78.0.3/24", "dev", mv], ["link", "set", mv, "up"],
                 ["route", "replace", "default", "via", v.b_addr, "dev", mv]):
        subprocess.run(["ip", "-n", v.a, *args], check=True)
    holder = _holder(v.a)
    try:
        rows = _run_daemon(v.a, tmp_path / "mv.bin", "-enrichNic", "-enrichLldp", "-lldpdSocket", lldpd_pair.a_sock)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert rows and all(r.uplink1_ifname == v.a_if and r.uplink1_nic_driver == "veth"
                        and r.uplink1_lldp_chassis_name == lldpd_pair.peer_name and not r.uplink2_ifname for r in rows)


@pytest.mark.root
def test_daemon_with_lldpd_down_still_reports(veth_pair, tmp_path):
    """-enrichLldp with no lldpd: records go out with the NIC fields, the error is logged once."""
    holder = _holder(veth_pair.a)
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = tmp_path / "x.bin"
        r = subprocess.run(["ip", "netns", "exec", veth_pair.a, sys.executable, "-m", "xtcp2", "--once", "--netns",
                            "self", "-dest", f"file:{out}", "-d", "10", "-enrichNic", "-enrichLldp", "-lldpdSocket",
                            "/run/uplink-none.socket"], capture_output=True, text=True, env=env, timeout=60)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("lldpd socket /run/uplink-none.socket: No such file or directory") == 1
    rows = [row for body in unmarshal(out.read_bytes()) for row in pb.Envelope.FromString(body).row]
    assert rows and all(x.uplink1_nic_driver == "veth" and not x.uplink1_lldp_chassis_name for x in rows)


def test_flags():
    def parse(*argv):
        return config_from_args(build_parser().parse_args(list(argv)))

    c = parse("-enrichNic", "-enrichLldp=false", "-uplinkInterfaces", "eth0, eth1", "-uplinkCount", "1",
              "-lldpdSocket", "/run/x.sock", "-lldpdVersionHint", "1.0.16")
    assert (c.enrich_nic_enable, c.enrich_lldp_enable) == (True, False)
    assert c.uplink_interfaces == ["eth0", "eth1"] and c.uplink_count == 1 and c.lldpd_socket_path == "/run/x.sock"
    d = parse()
    assert (d.enrich_nic_enable, d.enrich_lldp_enable, d.uplink_count, d.uplink_interfaces,
            d.lldpd_socket_path) == (False, False, 2, [], "/run/lldpd.socket")
    assert parse("-populateNsid", "false").populate_nsid is False   # bools still take a value
    for bad in (["-uplinkCount", "3"], ["-uplinkInterfaces", "eth0,eth1,eth2"], ["-uplinkInterfaces", "../x"],
                ["-lldpdSocket", "relative.sock"]):
        with pytest.raises(ConfigError):
            parse(*bad)


def test_grpc_config_mapping():
    cur = Config(lldpd_socket_path="/run/custom/lldpd.socket").validate()
    msg = config_to_proto(cur)
    assert msg.lldpd_socket_path == "/run/custom/lldpd.socket" and msg.uplink_count == 2
    msg.enrich_nic_enable = msg.enrich_lldp_enable = True
    msg.uplink_interfaces[:] = ["bond0"]
    new = config_from_proto(msg, cur)
    assert new.enrich_nic_enable and new.enrich_lldp_enable and new.uplink_interfaces == ["bond0"]
    msg.ClearField("lldpd_socket_path")   # a client that does not know the field: unchanged
    msg.uplink_count = 0
    new = config_from_proto(msg, cur)
    assert new.lldpd_socket_path == "/run/custom/lldpd.socket" and new.uplink_count == 0   # 0 = both slots
    for field, value in (("uplink_count", 3), ("uplink_interfaces", ["a", "b", "c"]), ("uplink_interfaces", ["a b"]),
                         ("lldpd_socket_path", "/var/run/docker.sock")):
        m = cpb.XtcpConfig()
        m.CopyFrom(msg)
        if isinstance(value, list):
            m.ClearField(field)
            getattr(m, field).extend(value)
        else:
            setattr(m, field, value)
        with pytest.raises(ConfigError) as e:
            config_from_proto(m, cur)
        assert e.value.field == field
    # the socket is the operator's (command line) choice: a Set cannot point lldpcli elsewhere
    assert "restart" in str(e.value)


@pytest.mark.root
def test_daemon_records_keep_the_uplink_across_reconfigure():
    """In-process daemon: records carry the uplink before and after a reconfigure of other
    fields (a reconfigure rebuilds the record constants; the uplink must survive it)."""
    import socket

    from xtcp2.daemon import Daemon
    d = Daemon(Config(dest="null", netns=["self"], enrich_nic_enable=True, uplink_interfaces=["lo"]).validate())
    bodies: list[bytes] = []
    d.add_listener(lambda env: bodies.append(env.body))
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        try:
            d.table.reconcile()
            d.collector.poll()
            d.reconfigure(d.config.replace(label="x"))
            d.collector.poll()
        finally:
            d.close()
    rows = [r for b in bodies for r in pb.Envelope.FromString(b).row]
    assert any(r.label == "" for r in rows) and any(r.label == "x" for r in rows)
    assert all(r.uplink1_ifname == "lo" for r in rows)


@pytest.mark.root
def test_bpf_mode_records_carry_the_uplink(veth_pair, tmp_path):
    """bpf mode's records go through the same sink: the uplink fields reach its
    RESYNC/OPEN records too. (Its metrics and gRPC listeners bind A's
    own loopback, so the default ports collide with nothing.)"""
    from xtcp2.ebpf import available
    ok, why = available()
    assert ok, f"bpf mode cannot run here: {why}"
    holder = _holder(veth_pair.a)
    out = tmp_path / "bpf.bin"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(["ip", "netns", "exec", veth_pair.a, sys.executable, "-m", "xtcp2", "--mode", "bpf",
                          "--netns", "self", "-dest", f"file:{out}", "-d", "0", "-frequency", "1s", "-enrichNic"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0 or p.poll() is not None, 60, "bpf records")
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        holder.stdin.close()
        holder.wait(10)
    assert out.exists() and out.stat().st_size > 0, err[-2000:]
    rows = [row for body in unmarshal(out.read_bytes()) for row in pb.Envelope.FromString(body).row]
    assert rows and all(r.trigger != pb.XtcpFlatRecord.TRIGGER_POLL for r in rows)
    assert all(r.uplink1_ifname == veth_pair.a_if and r.uplink1_nic_driver == "veth" for r in rows)

"""LLDP neighbours: the parser on lldpcli's real json0 output, and two real lldpd instances."""
from __future__ import annotations

import json
import os
import pathlib
import socket

import pytest

from xtcp2.identity.lldp import LldpError, fetch_neighbors, parse_neighbors

from .conftest import answers, start_lldpd, stop, wait_for

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
# `lldpcli -f json0 show neighbors` of lldpd 1.0.16 (Debian 12) with one neighbour, saved as is
CAPTURED = (FIXTURES / "lldpcli_1.0.16_json0_neighbors.json").read_text()


def test_parse_captured_reply():
    got = parse_neighbors(CAPTURED)
    assert list(got) == ["uplxa"]
    n = got["uplxa"]
    assert n.chassis_name == "peer-b"
    assert n.chassis_id == "3a:df:40:86:0a:f4"
    assert n.mgmt_ip == "10.77.0.2"
    assert n.port_id == "uplxb"
    assert n.port_descr == "to host A"


def _reply(*ifaces: dict) -> str:
    return json.dumps({"lldp": [{"interface": list(ifaces)}]})


def _iface(name, chassis_name="sw1", mgmt=("192.0.2.9",), port_id="Ethernet1", descr="uplink"):
    return {"name": name, "via": "LLDP",
            "chassis": [{"id": [{"type": "mac", "value": "00:11:22:33:44:55"}], "name": [{"value": chassis_name}],
                         "mgmt-ip": [{"value": m} for m in mgmt]}],
            "port": [{"id": [{"type": "ifname", "value": port_id}], "descr": [{"value": descr}]}]}


def test_two_uplinks_first_neighbour_per_port_and_ipv4_preferred():
    got = parse_neighbors(_reply(_iface("eth0", "sw-a", mgmt=("2001:db8::1", "192.0.2.1")),
                                 _iface("eth0", "sw-other"),
                                 _iface("eth1", "sw-b", mgmt=("2001:db8::2",))))
    assert sorted(got) == ["eth0", "eth1"]
    assert got["eth0"].chassis_name == "sw-a"       # a second neighbour on the same port is ignored
    assert got["eth0"].mgmt_ip == "192.0.2.1"       # IPv4 first, though lldpd listed IPv6 first
    assert got["eth1"].mgmt_ip == "2001:db8::2"


def test_hostile_values_are_cleaned_or_dropped():
    got = parse_neighbors(_reply(_iface("eth0", chassis_name="sw\x1b[31m" + "x" * 1000, mgmt=("not-an-ip", "300.1.1.1"),
                                        port_id="Eth\n1"),
                                 _iface("../../etc", "evil")))
    assert list(got) == ["eth0"]                    # an impossible interface name is not a slot
    n = got["eth0"]
    assert n.chassis_name.startswith("sw[31mxxx") and len(n.chassis_name) == 255
    assert n.mgmt_ip == ""
    assert n.port_id == "Eth1"


@pytest.mark.parametrize("text", ["", "\n\n", '{"lldp": [{}]}', '{"lldp": [{"interface": []}]}'])
def test_no_neighbours(text):
    assert parse_neighbors(text) == {}


@pytest.mark.parametrize("text", ["{not json", '{"lldp": {"interface": {"eth0": {}}}}', '[1, 2]',
                                  '{"lldp": [{"interface": [{"name": "eth0", "chassis": "x"}]}]}'])
def test_malformed_reply_is_one_error(text):
    with pytest.raises(LldpError) as e:
        parse_neighbors(text)
    assert e.value.kind == "parse" and "\n" not in str(e.value)


def test_missing_socket(tmp_path):
    with pytest.raises(LldpError) as e:
        fetch_neighbors(str(tmp_path / "none.sock"))
    assert e.value.kind == "socket"
    (tmp_path / "file").write_text("x")
    with pytest.raises(LldpError) as e:
        fetch_neighbors(str(tmp_path / "file"))
    assert e.value.kind == "socket" and "not a unix socket" in str(e.value)


def test_a_socket_that_never_answers_times_out(lldp_dir):
    """A listener that accepts and stays silent: lldpcli waits, we kill it at the timeout."""
    path = os.path.join(lldp_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        os.chmod(path, 0o777)  # lldpcli connects as _lldpd (setuid)
        srv.listen(1)
        with pytest.raises(LldpError) as e:
            fetch_neighbors(path, timeout=0.5)
    assert e.value.kind == "timeout"


def test_a_dead_socket_is_an_exit_error(lldp_dir):
    path = os.path.join(lldp_dir, "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens: connection refused
    with pytest.raises(LldpError) as e:
        fetch_neighbors(path)
    assert e.value.kind == "exit" and "lldpcli exit" in str(e.value)


@pytest.mark.root
def test_real_lldpd_pair_reports_the_peer(lldpd_pair):
    v = lldpd_pair.veth
    got = fetch_neighbors(lldpd_pair.a_sock)
    assert list(got) == [v.a_if]
    n = got[v.a_if]
    assert n.chassis_name == lldpd_pair.peer_name
    assert n.chassis_id == v.mac("b")               # lldpd's chassis id: the MAC of B's port
    assert n.port_id == v.b_if                      # port id subtype ifname, as configured on B
    assert n.port_descr == lldpd_pair.peer_port_descr
    assert n.mgmt_ip == v.b_addr
    # and the other way round, with B's defaults: port id is A's MAC, description its name
    back = fetch_neighbors(lldpd_pair.b_sock)[v.b_if]
    assert back.port_id == v.mac("a") and back.port_descr == v.a_if and back.mgmt_ip == v.a_addr


@pytest.mark.root
def test_lldpd_without_neighbours(veth_pair, lldp_dir):
    """One lldpd alone: it answers, with nobody on its port."""
    sock = os.path.join(lldp_dir, "solo.sock")
    p = start_lldpd(veth_pair.a, veth_pair.a_if, sock)
    try:
        wait_for(lambda: os.path.exists(sock) and answers(sock), 10, "lldpd answering")
        assert fetch_neighbors(sock) == {}
    finally:
        stop([p])


@pytest.mark.root
def test_hardened_unit_needs_the_adm_and_lldpd_groups(lldpd_pair):
    """As under deploy/systemd/xtcp2.service (NoNewPrivileges, no CAP_DAC_OVERRIDE): Debian's
    lldpcli is mode 4750 _lldpd:adm, so root may not even run it without group adm, and
    (its setuid bit ignored) may not reach the _lldpd socket without group _lldpd: the
    unit needs SupplementaryGroups=adm _lldpd, as its comment and the README say."""
    import grp
    import shutil
    import subprocess
    import sys

    assert shutil.which("setpriv"), "setpriv missing (util-linux, scripts/apt-test.txt)"
    code = ("import sys; from xtcp2.identity.lldp import fetch_neighbors, LldpError\n"
            "try: print(sorted(fetch_neighbors(sys.argv[1])))\n"
            "except LldpError as e: print(e.kind, e)")
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
    base = ["setpriv", "--no-new-privs", "--bounding-set=-dac_override,-dac_read_search"]
    adm, lldpd = (str(grp.getgrnam(g).gr_gid) for g in ("adm", "_lldpd"))

    def run(groups: str) -> str:
        return subprocess.run([*base, "--groups", groups, sys.executable, "-c", code, lldpd_pair.a_sock],
                              capture_output=True, text=True, env=env, timeout=30).stdout.strip()

    assert run("0") == "cli /usr/sbin/lldpcli is not executable by this process (needs group adm, or root with " \
                       "CAP_DAC_OVERRIDE)"
    no_socket = run(adm)
    assert no_socket.startswith("exit lldpcli exit 1: ") and "Permission denied" in no_socket
    assert run(f"{adm},{lldpd}") == repr([lldpd_pair.veth.a_if])

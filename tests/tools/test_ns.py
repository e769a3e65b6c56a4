"""The ns inspector against real namespaces: names, cookies, nsid, socket counts."""
import json
import os
import socket
import subprocess

from xtcp2.tools import ns as nsmod

from .conftest import needs_root, tool

pytestmark = needs_root


def test_own_namespace_listed_with_cookie():
    data = json.loads(tool("ns", "--json").stdout)
    own = [n for n in data["namespaces"] if n["own"]]
    assert len(own) == 1
    assert own[0]["inode"] == os.stat("/proc/self/ns/net").st_ino
    assert isinstance(own[0]["cookie"], int) and own[0]["cookie"] > 0
    # this test process lives in the own namespace and outlives the tool: it must be listed
    assert os.getpid() in own[0]["pids"]
    assert data["count"] == len(data["namespaces"])


def test_named_namespace_counts_match_population(netns_name):
    # 3 listeners + 2 established pairs made from inside the namespace
    def make():
        socks = []
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0)); ls.listen()
        socks.append(ls)
        for _ in range(2):
            extra = socket.socket(); extra.bind(("127.0.0.1", 0)); extra.listen(); socks.append(extra)
        for _ in range(2):
            c = socket.create_connection(ls.getsockname()); a, _ = ls.accept(); socks += [c, a]
        six = socket.socket(socket.AF_INET6); six.bind(("::1", 0)); six.listen(); socks.append(six)
        return socks

    socks = nsmod.run_in_netns(f"/run/netns/{netns_name}", make)
    try:
        data = json.loads(tool("ns", "--json").stdout)
        mine = [n for n in data["namespaces"] if any(x["path"] == f"/run/netns/{netns_name}" for x in n["names"])]
        assert len(mine) == 1
        entry = mine[0]
        assert entry["inode"] == os.stat(f"/run/netns/{netns_name}").st_ino
        assert entry["names"][0]["source"] == "netns"
        assert entry["sockets"]["inet"] == {"ESTABLISHED": 4, "LISTEN": 3}
        assert entry["sockets"]["inet6"] == {"LISTEN": 1}
        assert entry["total_sockets"] == 8
        own = [n for n in data["namespaces"] if n["own"]][0]
        assert entry["cookie"] != own["cookie"]
    finally:
        for s in socks:
            s.close()


def _unused_nsid() -> int:
    """An nsid no namespace holds yet: ids are host-wide, and other namespaces may have 42."""
    listed = subprocess.run(["ip", "netns", "list-id"], capture_output=True, text=True, check=True).stdout
    taken = {int(w) for line in listed.splitlines() for w in line.split()[1:2] if w.isdigit()}
    return next(i for i in range(4242, 100000) if i not in taken)


def test_nsid_reported_when_assigned(netns_name):
    nsid = _unused_nsid()
    subprocess.run(["ip", "netns", "set", netns_name, str(nsid)], check=True)
    data = json.loads(tool("ns", "--json").stdout)
    entry = [n for n in data["namespaces"] if any(x["path"].endswith("/" + netns_name) for x in n["names"])][0]
    assert entry["nsid"] == nsid


def test_process_only_namespace_found_by_pid():
    # a namespace with no name, only a process inside (unshare -n)
    p = subprocess.Popen(["unshare", "-n", "sleep", "30"])
    try:
        import time
        for _ in range(50):
            ino = os.stat(f"/proc/{p.pid}/ns/net").st_ino
            if ino != os.stat("/proc/self/ns/net").st_ino:
                break
            time.sleep(0.05)
        data = json.loads(tool("ns", "--json").stdout)
        entry = [n for n in data["namespaces"] if n["inode"] == ino]
        assert entry and p.pid in entry[0]["pids"] and entry[0]["names"] == []
        assert entry[0]["cookie"] and entry[0]["total_sockets"] == 0
    finally:
        p.kill(); p.wait()


def test_table_output_has_header_and_named_row(netns_name):
    r = tool("ns")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["INODE", "COOKIE", "NSID", "NAME"]
    assert any(f"netns:{netns_name}" in line for line in lines)


def test_placeholder_file_is_not_a_namespace(tmp_path, monkeypatch):
    fake = tmp_path / "netns"
    fake.mkdir()
    (fake / "notans").write_text("")
    monkeypatch.setattr(nsmod, "NAMED_DIRS", (("netns", str(fake)),))
    assert all(not n.names for n in nsmod.discover())

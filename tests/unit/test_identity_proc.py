"""proc.py and join.py on a fixture /proc tree (fd links, comm, stat, cgroup files)."""
import os
import time

import numpy as np
import pytest

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.identity.cgroup import Container
from xtcp2.identity.join import IdentityJoin
from xtcp2.identity.proc import SocketOwners, read_process
from xtcp2.records.encode import encode_rows

CID = "915d3d353d246ab989d696e4fb7cfd8ade4fdc8e81274b58c8ad4a24e361f521"


class FakeProc:
    """A /proc look-alike: enough of it for proc.py (the layout the kernel exposes)."""

    def __init__(self, root):
        self.root = root

    def add(self, pid: int, comm: str, sockets=(), cgroup="0::/\n", start: int = 1000, other_fds=2):
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        # field 22 (starttime); comm in parentheses may itself hold ") ("
        (d / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 " + "0 " * 12 + f"{start} 0 0\n")
        (d / "cgroup").write_text(cgroup)
        fd = 0
        for _ in range(other_fds):
            os.symlink("/dev/null", d / "fd" / str(fd))
            fd += 1
        for ino in sockets:
            os.symlink(f"socket:[{ino}]", d / "fd" / str(fd))
            fd += 1

    def remove(self, pid: int):
        import shutil
        shutil.rmtree(self.root / str(pid))


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path)


def test_read_process_parses_comm_with_spaces_and_parens(proc):
    proc.add(7, "we) (ird", start=4242, cgroup=f"0::/docker/{CID}\n")
    p = read_process(7, str(proc.root))
    assert (p.pid, p.comm, p.start, p.container) == (7, "we) (ird", 4242, Container(CID, "docker"))
    assert read_process(8, str(proc.root)) is None


def test_find_returns_lowest_pid_and_stops_early(proc):
    proc.add(10, "server", sockets=[100, 101])
    proc.add(20, "worker", sockets=[101, 102])     # 101 shared (fork): ss lists the lowest pid first
    proc.add(30, "other", sockets=[103])
    owners = SocketOwners(str(proc.root), min_interval=0)
    assert owners.find([101, 102]) == {101: 10, 102: 20}
    assert owners.links_read == 4 + 4              # pid 30 was never read


def test_one_walk_serves_later_chunks_of_the_same_poll(proc):
    proc.add(10, "a", sockets=[100])
    proc.add(20, "b", sockets=[200])
    owners = SocketOwners(str(proc.root), min_interval=3600)
    assert owners.find([100]) == {100: 10}
    assert owners.find([200]) == {200: 20}         # continues the walk, no new one
    assert owners.find([100]) == {100: 10}         # from what the walk read
    assert owners.walks == 1


def test_walks_are_rate_limited_and_absent_sockets_remembered(proc):
    proc.add(10, "a", sockets=[100])
    owners = SocketOwners(str(proc.root), min_interval=3600, absent_ttl=3600)
    assert owners.find([100, 999]) == {100: 10}    # complete walk: 999 has no owner
    assert owners.wanted([100, 999, 555]) == [100, 555]
    proc.add(20, "late", sockets=[555])
    assert owners.find([555]) == {}                # a new walk must wait
    owners._next_walk = 0
    assert owners.find([555]) == {555: 20}
    assert owners.walks == 2


def test_budget_bounds_a_walk_which_resumes(proc):
    for pid in range(10, 20):
        proc.add(pid, f"p{pid}", sockets=[pid * 10])
    owners = SocketOwners(str(proc.root), min_interval=0, share=0.0, burst=1.0)
    got = {}
    calls = 0
    while len(got) < 10 and calls < 20:
        owners._tokens = 1e-9   # time for one process per call
        got.update(owners.find([pid * 10 for pid in range(10, 20) if pid * 10 not in got]))
        calls += 1
    assert got == {pid * 10: pid for pid in range(10, 20)}
    assert calls == 10 and owners.walks == 1       # one process per call, one walk
    assert owners.find([999]) == {}                # spent, nothing refills it (share 0)
    assert owners.walks == 1


def test_cgroup_processes_are_read_once_per_poll(proc):
    proc.add(10, "a", sockets=[100, 101])
    proc.add(20, "b", sockets=[200])
    owners = SocketOwners(str(proc.root), reread_after=3600)
    assert owners.find_in([10, 20], [100]) == {100: 10}
    read = owners.links_read
    assert owners.find_in([10, 20], [101, 200]) == {101: 10, 200: 20}   # 10 from memory, 20 read now
    assert owners.links_read == read + 3
    assert owners.find_in([10, 20], [102]) == {}   # both read recently: not again
    assert owners.links_read == read + 3 and owners.walks == 0


def test_a_budget_cut_read_resumes_with_the_processes_not_read_yet(proc):
    """A container's processes when the budget allows one per call: each call reads one
    not read before (re-reading the first ones every poll never reached the last)."""
    for pid in (10, 20, 30):
        proc.add(pid, f"p{pid}", sockets=[pid * 10])
    owners = SocketOwners(str(proc.root), share=0.0, reread_after=0.0)
    got = {}
    for _ in range(3):
        owners._tokens = 1e-9   # time for one process per call
        got.update(owners.find_in([10, 20, 30], [i for i in (100, 200, 300) if i not in got]))
    assert got == {100: 10, 200: 20, 300: 30}


def test_forget_exited_and_reused_pids(proc):
    proc.add(10, "a")
    proc.add(11, "b", start=5)
    owners = SocketOwners(str(proc.root))
    assert owners.process(10).comm == "a" and owners.process(11).comm == "b"
    proc.remove(10)
    proc.remove(11)
    proc.add(11, "reused", start=6)
    assert owners.forget_exited() == 2
    assert owners.process(11).comm == "reused"


def _cols(cookies, inodes, cgroups=None):
    cols = {"inet_diag_msg_socket_cookie": np.array(cookies, np.uint64),
            "inet_diag_msg_inode": np.array(inodes, np.uint32)}
    if cgroups is not None:
        cols["c_group"] = np.array(cgroups, np.uint64)
    return cols


def test_join_columns_encode_to_the_right_records(proc, tmp_path):
    cg = tmp_path / "cg"
    (cg / "docker" / CID).mkdir(parents=True)
    proc.add(10, "nginx", sockets=[100, 101], cgroup=f"0::/docker/{CID}\n")
    proc.add(20, "sshd", sockets=[200])
    j = IdentityJoin(resolve_process=True, resolve_container_id=True, proc_root=str(proc.root), cgroup_root=str(cg))
    cont_cg = os.stat(cg / "docker" / CID).st_ino
    # row 3: TIME_WAIT in the container's namespace (inode 0, no cgroup): the namespace owner
    cols = _cols([1, 2, 3, 4], [100, 200, 0, 101], [cont_cg, os.stat(cg).st_ino, 0, 0])
    consts = {"netns": CID, "netns_inode": 4026532380, "hostname": "h"}
    consts = j.apply(cols, 4, consts)
    body, ends = encode_rows(cols, 4, consts)
    env = pb.Envelope()
    env.ParseFromString(body)   # encode_rows writes Envelope.row fields back to back
    recs = list(env.row)
    assert [(r.pid, r.comm, r.container_id, r.container_runtime) for r in recs] == [
        (10, "nginx", CID, "docker"), (20, "sshd", "", ""), (0, "", CID, "docker"), (10, "nginx", CID, "docker")]


def test_join_caches_by_cookie_and_forgets_on_close(proc):
    proc.add(10, "a", sockets=[100])
    j = IdentityJoin(resolve_process=True, proc_root=str(proc.root))
    j.owners.min_interval = 3600
    out = j.join(_cols([5], [100]), 1, {})
    assert out["pid"] == 10 and out["comm"] == "a"   # one process for the batch: constants
    proc.remove(10)                      # the cache answers, /proc is not read again
    assert j.join(_cols([5], [100]), 1, {})["pid"] == 10
    assert j.owners.walks == 1
    j.join(_cols([5], [100]), 1, {"trigger": 2})   # a close record: the socket leaves the cache
    assert len(j._keys) == 0


def test_join_sweep_drops_unseen_sockets_and_exited_processes(proc):
    proc.add(10, "a", sockets=[100])
    proc.add(11, "b", sockets=[110])
    j = IdentityJoin(resolve_process=True, proc_root=str(proc.root), ttl=60)
    j.join(_cols([1, 2], [100, 110]), 2, {})
    proc.remove(11)
    j.sweep()
    assert j._keys.tolist() == [1] and [p.pid for p in j._procs] == [10]
    j.sweep(now=j._seen[0] + 61)
    assert len(j._keys) == 0


def test_one_container_per_batch_travels_as_constants(proc, tmp_path):
    proc.add(10, "a", sockets=[100], cgroup=f"0::/docker/{CID}\n")
    proc.add(11, "b", sockets=[110], cgroup=f"0::/docker/{CID}\n")
    j = IdentityJoin(resolve_process=True, resolve_container_id=True, proc_root=str(proc.root),
                     cgroup_root=str(tmp_path / "none"))
    cols = _cols([1, 2], [100, 110])
    consts = j.apply(cols, 2, {"hostname": "h"})
    assert consts == {"hostname": "h", "container_id": CID, "container_runtime": "docker"}
    assert cols["pid"].tolist() == [10, 11] and "container_id" not in cols


def test_sink_join_hook_fills_columns_and_constants_in_place(proc):
    proc.add(10, "a", sockets=[100], cgroup=f"0::/docker/{CID}\n")
    j = IdentityJoin(resolve_process=True, resolve_container_id=True, proc_root=str(proc.root),
                     cgroup_root=str(proc.root / "none"))
    cols, consts = _cols([1, 2], [100, 0]), {"trigger": 0}
    j.sink_join(cols, consts)   # two rows, two owners: columns
    assert cols["pid"].tolist() == [10, 0]
    assert [cols["container_id"].value(i) for i in (0, 1)] == [CID.encode(), b""]
    cols, consts = _cols([1], [100]), {"trigger": 0}
    j.sink_join(cols, consts)   # one owner for the batch: constants
    assert (consts["pid"], consts["comm"], consts["container_id"]) == (10, "a", CID) and "pid" not in cols


def test_join_off_adds_nothing(proc):
    proc.add(10, "a", sockets=[100])
    j = IdentityJoin(resolve_process=False, proc_root=str(proc.root))
    assert j.join(_cols([1], [100]), 1, {}) == {}


def test_owners_from_events_answer_misses_without_a_walk(proc):
    """bpf mode's connect()/listen() owners: a record that misses the cache takes its owner
    from them (the process from /proc when alive, else the event's pid and comm)."""
    proc.add(10, "nginx")                   # alive, but holds no socket link a walk could find
    j = IdentityJoin(resolve_process=True, proc_root=str(proc.root))
    j.owners.min_interval = 3600
    assert j.learn(np.array([7, 8, 0], np.uint64), np.array([10, 99, 5], np.uint32),
                   np.array([b"worker-thread", b"gone", b"x"], "S16")) == 2   # cookie 0: no socket
    out = j.join(_cols([7, 8, 9], [700, 800, 900]), 3, {})
    assert out["pid"].tolist() == [10, 99, 0]
    assert [out["comm"].value(i) for i in range(3)] == [b"nginx", b"gone", b""]
    assert j.owners.walks == 1              # only cookie 9 was looked for in /proc


@pytest.mark.parametrize("limit", [20000, 2000])
def test_owner_events_keep_the_latest_unexpired_and_stay_bounded(limit):
    """The side table against a dict doing the same: blocks of events (some cookies seen
    again, later owners win), merged into the big part as it grows, entries expiring
    after ttl, and no more than `limit` kept, the oldest dropped first."""
    from xtcp2.identity.owner_events import SMALL_MAX, OwnerEvents

    rng = np.random.default_rng(5)
    ev = OwnerEvents(ttl=5.0, limit=limit)
    ref: dict[int, tuple[int, float]] = {}
    now = 0.0
    for step in range(120):
        now += 0.25
        ck = rng.integers(1, 3000 + 40 * step, 300, dtype=np.uint64)
        pids = rng.integers(1, 1 << 22, len(ck)).astype(np.uint32)
        ev.add(ck, pids, np.array([b"p%d" % p for p in pids.tolist()], "S16"), now)
        for c, p in zip(ck.tolist(), pids.tolist()):
            ref[c] = (p, now)
        q = np.unique(rng.integers(1, 3000 + 40 * step, 500, dtype=np.uint64))
        found, got, comms = ev.find(q, now)
        for c, f, p, cm in zip(q.tolist(), found.tolist(), got.tolist(), comms.tolist()):
            want = ref.get(c)
            fresh = want is not None and want[1] >= now - 5.0
            if f:   # an entry the limit dropped may be missing, never a wrong or stale one
                assert fresh and p == want[0] and cm == b"p%d" % p, (step, c)
            elif fresh and want[1] >= now - 1.0:
                raise AssertionError(f"recent owner of {c} lost at step {step}")
        assert len(ev) <= limit + SMALL_MAX


def test_socket_cache_merges_and_forgets_like_a_set(proc):
    """The cookie cache stays sorted and exact through merged inserts and forgets."""
    rng = np.random.default_rng(3)
    j = IdentityJoin(resolve_process=True, proc_root=str(proc.root))
    ref: dict[int, int] = {}
    for step in range(30):
        new = np.setdiff1d(rng.integers(1, 1 << 63, 400, dtype=np.uint64), j._keys)
        owners = rng.integers(0, 5, len(new)).astype(np.int32)
        j._insert(new, owners, float(step))
        ref.update(zip(new.tolist(), owners.tolist()))
        gone = rng.choice(j._keys, 150, replace=False)
        j.forget(np.concatenate([gone, np.array([12345], np.uint64)]))   # and one never cached
        for c in gone.tolist():
            del ref[c]
        assert (j._keys[1:] > j._keys[:-1]).all()
        assert dict(zip(j._keys.tolist(), j._owner.tolist())) == ref


def test_close_records_name_their_owner_and_never_walk(proc):
    """A close record names the process that held the socket (even without its inode, as
    BPF close events have), and never sends /proc looking for a socket that is gone."""
    proc.add(10, "a", sockets=[100])
    proc.add(20, "b", sockets=[600])
    j = IdentityJoin(resolve_process=True, proc_root=str(proc.root))
    j.owners.min_interval = 0
    j.join(_cols([5], [100]), 1, {})
    walks = j.owners.walks
    out = j.join(_cols([5, 6], [0, 600]), 2, {"trigger": 2})
    assert out["pid"].tolist() == [10, 0]
    assert j.owners.walks == walks and len(j._keys) == 0


def test_a_slice_bounds_one_call_and_the_walk_resumes(proc):
    """bpf mode's slice: one call reads at most max_slice of CPU, the walk goes on at the next."""
    for pid in range(10, 20):
        proc.add(pid, f"p{pid}", sockets=[pid * 10])
    owners = SocketOwners(str(proc.root), min_interval=0, max_slice=1e-9)   # one process per call
    got, calls = {}, 0
    while len(got) < 10 and calls < 20:
        got.update(owners.find([pid * 10 for pid in range(10, 20) if pid * 10 not in got]))
        calls += 1
    assert got == {pid * 10: pid for pid in range(10, 20)} and calls == 10 and owners.walks == 1

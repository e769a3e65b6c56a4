"""Who may use the gRPC API of the root daemon, tested with real clients run as uid 65534.

The daemon is the real one; the clients are separate processes (upstream's generated
client and xtcp2client) loaded as root and then run as uid 65534 (tests/api/as_user.py), so their sockets are owned
by that uid as a local user's would be.
"""
from __future__ import annotations

import os
import time

import grpc
import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.root

NOBODY = 65534
PROTECTED_OPS = [
    ["unary", "Get", {}],
    ["unary", "SetPollFrequency", {"poll_frequency": "1s", "poll_timeout": "0.5s"}],
    ["unary", "TriggerPoll", {}],
    ["unary", "TriggerPollBurst", {"count": 2, "interval": "2s"}],
    ["unary", "SetS3Upload", {"s3_flush_interval": "5s"}],
    ["stream", {"count": 1, "timeout": 5}],
    ["poll", {"requests": 1, "count": 1, "timeout": 5}],
]


def denied(method: str) -> float:
    return REGISTRY.get_sample_value("xtcp2_grpc_denied_total", {"method": method}) or 0.0


def test_unprivileged_user_is_refused_everything(start_daemon, run_upstream_as, run_upstream):
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5)
    loops = rd.wait_loops(1)
    before = rd.daemon.config.as_dict()
    full = run_upstream(rd.target, [["unary", "Get", {}]])[0]["response"]["config"]  # root may
    set_before = denied("Set")
    res = run_upstream_as(NOBODY, rd.target, PROTECTED_OPS + [["unary", "Set", {"config": dict(full, tag="pwn")}]])
    for op, r in zip(PROTECTED_OPS + [["unary", "Set"]], res):
        assert not r["ok"] and r["code"] == "PERMISSION_DENIED", (op, r)
        assert "uid 65534 may not use the xtcp2 API" in r["details"], r
        assert "response" not in r and not r.get("records")
    assert denied("Set") == set_before + 1
    assert rd.daemon.config.as_dict() == before
    assert rd.daemon.loops == loops  # no poll was triggered
    assert not rd.server.subscribers()


def test_root_is_allowed_over_loopback(start_daemon, run_upstream, socket_netns):
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5)
    first = rd.wait_loops(1)
    res = run_upstream(rd.target, [["unary", "TriggerPoll", {}], ["unary", "Get", {}],
                                   ["poll", {"requests": 1, "count": socket_netns["sockets"], "timeout": 15}]])
    assert all(r["ok"] for r in res), res
    assert len(res[2]["records"]) == socket_netns["sockets"]
    assert rd.wait_loops(first + 2) >= first + 2  # loops counts after the flush that delivered the records


def test_health_stays_open_to_everyone(start_daemon, xtcp2client_as):
    rd = start_daemon()
    res = xtcp2client_as(NOBODY, rd.server.port, "health")
    assert res.returncode == 0 and res.stdout.strip() == "SERVING", res.stderr


def test_issue_attack_leaves_the_victim_untouched(start_daemon, xtcp2client_as, tmp_path):
    """The reproduction from issue 16, by an unprivileged user and then by root."""
    victim = tmp_path / "x"
    victim.write_bytes(b"root's data\n")
    victim.chmod(0o600)
    st = victim.stat()
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5, file_dest_dir=str(tmp_path / "allowed"))
    (tmp_path / "allowed").mkdir(mode=0o750)
    before = rd.daemon.config.as_dict()
    attack = f"dest=file:{victim}?maxBytes=1024&keep=1"

    res = xtcp2client_as(NOBODY, rd.server.port, "set", attack)
    assert res.returncode == 1
    assert res.stderr.startswith("xtcp2client: PERMISSION_DENIED: Get: uid 65534"), res.stderr
    res = xtcp2client_as(NOBODY, rd.server.port, "trigger-poll")
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr

    # root over gRPC: the path is outside -fileDestDir, so refused as well
    res = xtcp2client_as(0, rd.server.port, "set", attack)
    assert res.returncode == 1
    assert res.stderr.strip() == (f"xtcp2client: PERMISSION_DENIED: dest: {victim} is outside -fileDestDir "
                                  f"{tmp_path / 'allowed'}; over gRPC local paths must stay inside it"), res.stderr

    rd.daemon.trigger_poll()
    rd.wait_loops(2)
    assert rd.daemon.config.as_dict() == before
    assert victim.read_bytes() == b"root's data\n"
    now = victim.stat()
    assert (now.st_ino, now.st_mode, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allowed", "x"]  # no x.1, nothing created


def test_file_destination_over_grpc_stays_inside_the_directory(start_daemon, xtcp2client_as, tmp_path):
    allowed = tmp_path / "spool"
    allowed.mkdir(mode=0o750)
    outside = tmp_path / "outside"
    outside.mkdir()
    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4, file_dest_dir=str(allowed))
    before = rd.daemon.config.as_dict()

    def set_(*assignments: str):
        return xtcp2client_as(0, rd.server.port, "set", *assignments)

    (allowed / "escape").symlink_to(outside)
    (allowed / "link.bin").symlink_to(allowed / "real.bin")
    refused = {
        f"dest=file:{allowed}/../outside/a.bin": "PERMISSION_DENIED: dest:",
        f"dest=file:{allowed}/escape/a.bin": "PERMISSION_DENIED: dest:",      # symlinked directory
        f"dest=file:{outside}?perEnvelope=1": "PERMISSION_DENIED: dest:",
        "dest=file:relative.bin": "PERMISSION_DENIED: dest:",
        f"dest=unix:{outside}/s.sock": "PERMISSION_DENIED: dest:",
        f"dest=unixgram:{outside}/s.sock": "PERMISSION_DENIED: dest:",
        f"dest=s3parquet:{outside}": "PERMISSION_DENIED: dest:",
        f"capture_path={outside}": "PERMISSION_DENIED: capture_path:",
        f"dest=file:{allowed}/link.bin": "refused: dest: file: cannot open",  # O_NOFOLLOW: inside, but a symlink
    }
    denied_before = denied("Set")
    for assignment, start in refused.items():
        res = set_(assignment)
        assert res.returncode == 1 and res.stderr.startswith(f"xtcp2client: {start}"), (assignment, res.stderr)
        assert "\n" not in res.stderr.strip()
    assert denied("Set") == denied_before + len(refused) - 1  # all but the O_NOFOLLOW one, which is INVALID_ARGUMENT
    assert "is a symbolic link" in set_(f"dest=file:{allowed}/link.bin").stderr
    assert rd.daemon.config.as_dict() == before
    assert list(outside.iterdir()) == [] and not (allowed / "real.bin").exists()

    res = set_(f"dest=file:{allowed}/records.bin", f"capture_path={allowed}/cap", "write_files=1")
    assert res.returncode == 0, res.stderr
    n = rd.daemon.loops
    rd.wait_loops(n + 2)
    rd.daemon.emitter.flush()
    assert (allowed / "records.bin").stat().st_size > 0
    assert (allowed / "records.bin").stat().st_mode & 0o777 == 0o640
    assert list((allowed / "cap").iterdir())


def test_unchanged_operator_paths_do_not_block_other_changes(start_daemon, run_upstream, tmp_path):
    """-dest given on the command line outside the directory: a Set that keeps it is fine."""
    out = tmp_path / "operator.bin"
    rd = start_daemon(dest=f"file:{out}", poll_frequency=30.0, file_dest_dir="/nonexistent-xtcp2-dir")
    cfg = run_upstream(rd.target, [["unary", "Get", {}]])[0]["response"]["config"]
    res = run_upstream(rd.target, [["unary", "Set", {"config": dict(cfg, tag="kept")}],
                                   ["unary", "Set", {"config": dict(cfg, dest=f"file:{tmp_path}/new.bin")}]])
    assert res[0]["ok"], res[0]
    assert rd.daemon.config.tag == "kept" and rd.daemon.config.dest == f"file:{out}"
    assert res[1]["code"] == "PERMISSION_DENIED" and "-fileDestDir /nonexistent-xtcp2-dir" in res[1]["details"]


def test_allowed_uid_and_group(start_daemon, run_upstream_as, xtcp2client_as):
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5, grpc_allow_uid="65533")
    loops = rd.wait_loops(1)
    ok = run_upstream_as(65533, rd.target, [["unary", "Get", {}], ["unary", "TriggerPoll", {}],
                                           ["stream", {"count": 1, "timeout": 10}]])
    assert all(r["ok"] for r in ok), ok
    assert len(ok[2]["records"]) == 1
    assert rd.wait_loops(loops + 1, timeout=5) >= loops + 1
    res = xtcp2client_as(65533, rd.server.port, "set", "tag=allowed")
    assert res.returncode == 0, res.stderr
    assert rd.daemon.config.tag == "allowed"
    assert run_upstream_as(NOBODY, rd.target, [["unary", "Get", {}]])[0]["code"] == "PERMISSION_DENIED"

    # by group: uid 65534's primary group in the user database is 65534 (nogroup)
    import pwd
    if pwd.getpwuid(NOBODY).pw_gid != NOBODY:
        pytest.fail("this host's uid 65534 does not have primary gid 65534")
    rd2 = start_daemon(poll_frequency=600.0, poll_timeout=0.5, grpc_allow_gid=str(NOBODY))
    assert run_upstream_as(NOBODY, rd2.target, [["unary", "Get", {}]])[0]["ok"]
    assert run_upstream_as(65533, rd2.target, [["unary", "Get", {}]])[0]["code"] == "PERMISSION_DENIED"


def _token_file(path, token: str = "s3cret-token-0123456789", mode: int = 0o600):
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def test_non_loopback_listener_needs_a_token(start_daemon, tmp_path):
    from xtcp2.errors import Xtcp2Error

    with pytest.raises(Xtcp2Error, match=r"^gRPC: refusing to listen on non-loopback address 0\.0\.0\.0 without "
                                          r"-grpcTokenFile"):
        start_daemon(grpc_listen="0.0.0.0")
    loose = _token_file(tmp_path / "loose", mode=0o644)
    with pytest.raises(Xtcp2Error, match="must be owned by root with mode 0600"):
        start_daemon(grpc_listen="0.0.0.0", grpc_token_file=str(loose))
    with pytest.raises(Xtcp2Error, match="shorter than 16"):
        start_daemon(grpc_listen="0.0.0.0", grpc_token_file=str(_token_file(tmp_path / "short", "abc")))

    tok = _token_file(tmp_path / "token")
    rd = start_daemon(grpc_listen="0.0.0.0", grpc_token_file=str(tok), poll_frequency=30.0)
    from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2 as pb
    from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2_grpc as pb_grpc
    with grpc.insecure_channel(f"127.0.0.1:{rd.server.port}") as ch:
        stub = pb_grpc.ConfigServiceStub(ch)
        for md, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                         ((("authorization", "Bearer wrong-token-0123456789"),), grpc.StatusCode.UNAUTHENTICATED)):
            with pytest.raises(grpc.RpcError) as e:
                stub.Get(pb.GetRequest(), timeout=5, metadata=md)
            assert e.value.code() == code  # root, but on this listener only the token counts
        got = stub.Get(pb.GetRequest(), timeout=5, metadata=(("authorization", "Bearer s3cret-token-0123456789"),))
        assert got.config.poll_frequency.seconds == 30


TOKEN = "env-token-0123456789abcdef"


def test_token_from_the_environment_guards_set_and_triggers(start_daemon, monkeypatch):
    from google.protobuf import duration_pb2

    from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2 as pb
    from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2_grpc as pb_grpc

    monkeypatch.setenv("XTCP2_GRPC_TOKEN", TOKEN)
    rd = start_daemon(grpc_listen="0.0.0.0", poll_frequency=30.0)
    good = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.insecure_channel(f"127.0.0.1:{rd.server.port}") as ch:
        stub = pb_grpc.ConfigServiceStub(ch)
        cfg = stub.Get(pb.GetRequest(), timeout=5, metadata=good).config
        cfg.tag = "from-set"
        calls = [("Set", lambda md: stub.Set(pb.SetRequest(config=cfg), timeout=5, metadata=md)),
                 ("TriggerPoll", lambda md: stub.TriggerPoll(pb.TriggerPollRequest(), timeout=5, metadata=md)),
                 ("TriggerPollBurst", lambda md: stub.TriggerPollBurst(
                     pb.TriggerPollBurstRequest(count=1, interval=duration_pb2.Duration(seconds=1)),
                     timeout=5, metadata=md))]
        for name, call in calls:
            for md in (None, (("authorization", "Bearer not-the-token-0123456789"),)):
                with pytest.raises(grpc.RpcError) as e:
                    call(md)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, name   # root, but not loopback
            call(good)
    assert rd.daemon.config.tag == "from-set"


@pytest.mark.parametrize("env,file,msg", [
    ("short", False, "XTCP2_GRPC_TOKEN must be at least 16 printable characters"),
    ("has a space in it 0123456789", False, "without spaces"),
    (TOKEN, True, "both -grpcTokenFile and XTCP2_GRPC_TOKEN are set"),
])
def test_bad_token_setups_are_one_line(start_daemon, monkeypatch, tmp_path, env, file, msg):
    from xtcp2.errors import Xtcp2Error

    monkeypatch.setenv("XTCP2_GRPC_TOKEN", env)
    extra = {"grpc_token_file": str(_token_file(tmp_path / "token"))} if file else {}
    with pytest.raises(Xtcp2Error, match=msg):
        start_daemon(grpc_listen="0.0.0.0", **extra)


def test_xtcp2client_token_from_the_environment(start_daemon, monkeypatch):
    import subprocess
    import sys
    monkeypatch.setenv("XTCP2_GRPC_TOKEN", TOKEN)
    rd = start_daemon(grpc_listen="0.0.0.0")
    base = [sys.executable, "-m", "xtcp2.tools.xtcp2client", "-port", str(rd.server.port)]
    env = {k: v for k, v in os.environ.items() if k != "XTCP2_GRPC_TOKEN"}
    res = subprocess.run(base + ["get"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1 and "UNAUTHENTICATED" in res.stderr
    res = subprocess.run(base + ["set", "tag=envtok"], capture_output=True, text=True, timeout=60,
                         env={**env, "XTCP2_GRPC_TOKEN": TOKEN})
    assert res.returncode == 0, res.stderr
    assert rd.daemon.config.tag == "envtok"


def test_xtcp2client_token_file(start_daemon, tmp_path):
    import subprocess
    import sys
    tok = _token_file(tmp_path / "token")
    rd = start_daemon(grpc_listen="0.0.0.0", grpc_token_file=str(tok))
    base = [sys.executable, "-m", "xtcp2.tools.xtcp2client", "-port", str(rd.server.port)]
    res = subprocess.run(base + ["get"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "UNAUTHENTICATED" in res.stderr
    res = subprocess.run(base + ["-tokenFile", str(tok), "set", "tag=tok"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert rd.daemon.config.tag == "tok"


def test_unix_socket_listener_is_root_only(socket_netns, xtcp2client_as):
    import shutil
    import tempfile

    from xtcp2.config import Config
    from xtcp2.errors import Xtcp2Error

    from .conftest import RunningDaemon

    base = tempfile.mkdtemp(prefix="xtcp2-secgrpc-")
    os.chmod(base, 0o755)  # others may enter this one: only the daemon's own directory keeps them out
    sock = os.path.join(base, "run", "grpc.sock")
    try:
        rd = RunningDaemon(Config(netns=[socket_netns["name"]], dest="null", poll_frequency=60.0, poll_timeout=0.5,
                                  reconcile_before_poll=False, grpc_listen=f"unix:{sock}").validate())
        try:
            assert (os.stat(os.path.dirname(sock)).st_mode & 0o777, os.stat(sock).st_mode & 0o777) == (0o700, 0o600)
            res = xtcp2client_as(0, 0, "-target", f"unix:{sock}", "set", "tag=via-unix")
            assert res.returncode == 0, res.stderr
            assert rd.daemon.config.tag == "via-unix"
            res = xtcp2client_as(NOBODY, 0, "-target", f"unix:{sock}", "get")
            assert res.returncode == 1 and "cannot reach xtcp2" in res.stderr  # cannot even connect
        finally:
            rd.close()
        os.chmod(os.path.dirname(sock), 0o755)  # a directory others can enter is refused at start
        with pytest.raises(Xtcp2Error, match="must be a directory owned by root with mode 0700"):
            RunningDaemon(Config(netns=[socket_netns["name"]], grpc_listen=f"unix:{sock}").validate())
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("listen, targets", [("::1", ["[::1]"]), ("localhost", ["127.0.0.1", "[::1]"])])
def test_ipv6_and_localhost_listeners(start_daemon, run_upstream, run_upstream_as, listen, targets):
    rd = start_daemon(grpc_listen=listen)
    for host in targets:
        target = f"{host}:{rd.server.port}"
        assert run_upstream(target, [["unary", "Get", {}]])[0]["ok"], target
        r = run_upstream_as(NOBODY, target, [["unary", "Get", {}]])[0]
        assert r["code"] == "PERMISSION_DENIED" and "uid 65534" in r["details"], (target, r)


def test_peer_lookup_matches_only_the_exact_connection():
    """A listener on the client's port must not answer for a connection that is gone."""
    import socket
    import time

    from xtcp2.api.grpc_auth import PeerUidLookup

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    lookup = PeerUidLookup("127.0.0.1")
    lookup.port = lst.getsockname()[1]
    try:
        cli = socket.create_connection(lst.getsockname())
        srv, _ = lst.accept()
        port = cli.getsockname()[1]
        assert lookup.uid(f"ipv4:127.0.0.1:{port}") == 0
        # The server closes first and the client waits for its EOF before closing: only the server's end
        # keeps a TIME_WAIT, and the client's port is free. (Closing both at once can be a simultaneous
        # close under load, which leaves the client's port in TIME_WAIT too.)
        srv.close()
        cli.settimeout(10)
        assert cli.recv(1) == b""
        cli.close()
        time.sleep(0.2)
        squat = socket.socket()  # someone now listens on the client's old port
        squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squat.bind(("127.0.0.1", port))
        squat.listen()
        try:
            assert lookup.uid(f"ipv4:127.0.0.1:{port}") is None
        finally:
            squat.close()
        assert lookup.uid("ipv4:127.0.0.1:notaport") is None and lookup.uid("unix:") is None
    finally:
        lookup.close()
        lst.close()


def test_real_daemon_process(socket_netns, xtcp2client_as, tmp_path):
    """`xtcp2` itself: the issue's attack against the process, and start-up refusals (exit 2, one line)."""
    import subprocess
    import sys

    from .test_capabilities import ROOT
    from .test_daemon_cli import free_port

    base = [sys.executable, "-m", "xtcp2", "--mode", "poll", "-netns", socket_netns["name"], "-dest", "null",
            "-frequency", "30s", "-timeout", "0.4s", "-promListen", ""]
    for extra, message in ((["-grpcListen", "0.0.0.0"], "xtcp2: gRPC: refusing to listen on non-loopback address"),
                           (["-grpcAllowUid", "no-such-user-xtcp2"], "xtcp2: gRPC: unknown uid 'no-such-user-xtcp2'")):
        res = subprocess.run(base + ["-grpcPort", str(free_port()), *extra], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("xtcp2: ")]
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), res.stderr

    victim = tmp_path / "x"
    victim.write_bytes(b"root's data\n")
    port = free_port()
    proc = subprocess.Popen(base + ["-grpcPort", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while xtcp2client_as(NOBODY, port, "health").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.3)
        res = xtcp2client_as(NOBODY, port, "set", f"dest=file:{victim}?maxBytes=1024&keep=1")
        assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr, res.stderr
        got = xtcp2client_as(0, port, "get")
        assert got.returncode == 0 and '"dest": "null"' in got.stdout, got.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert victim.read_bytes() == b"root's data\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x"]

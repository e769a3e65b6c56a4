"""Credentials from the environment (never the command line) against real servers that
require them: nats-server with a token or a user/password, valkey with requirepass and
an ACL user. Without or with wrong credentials nothing is delivered and all is counted."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from tests.servers import NatsServer, Valkey
from xtcp2.dest import open_destination

from .. import need
from .helpers import config, decode, make_payloads, make_record

nats = need.module("nats")
redis = need.module("redis")

pytestmark = [pytest.mark.servers]
TOKEN, USER, PASSWORD, USER_PASSWORD = "tok-3f9a1c", "xtcp2", "pw-77be20", "pw-user-5521"
ENV = ("XTCP2_NATS_TOKEN", "XTCP2_NATS_USER", "XTCP2_NATS_PASSWORD", "XTCP2_VALKEY_USER", "XTCP2_VALKEY_PASSWORD")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV:
        monkeypatch.delenv(k, raising=False)


def start(cls, *extra: str):
    binary = cls.locate()
    if binary is None:
        need.missing(cls.name, cls.install_hint)

    class WithAuth(cls):
        def argv(self) -> list[str]:
            return super().argv() + list(extra)

    srv = WithAuth(binary)
    srv.start()
    return srv


@pytest.fixture
def nats_token():
    srv = start(NatsServer, "--auth", TOKEN)
    yield srv
    srv.close()


@pytest.fixture
def nats_userpass():
    srv = start(NatsServer, "--user", USER, "--pass", PASSWORD)
    yield srv
    srv.close()


@pytest.fixture
def valkey_auth():
    srv = start(Valkey, "--requirepass", PASSWORD, "--user", USER, "on", f">{USER_PASSWORD}", "~*", "&*", "+@all")
    yield srv
    srv.close()


def nats_roundtrip(srv, records: int, **auth) -> tuple[object, list[bytes]]:
    """Publish `records` through the destination while an authenticated subscriber listens."""
    got, ready = [], threading.Event()

    async def subscriber():
        nc = await nats.connect(f"nats://127.0.0.1:{srv.port}", **auth)
        sub = await nc.subscribe("xtcp.c")
        await nc.flush()
        ready.set()
        try:
            while True:
                got.append((await sub.next_msg(timeout=3)).data)
        except nats.errors.TimeoutError:
            pass
        finally:
            await nc.close()

    t = threading.Thread(target=lambda: asyncio.run(subscriber()))
    t.start()
    assert ready.wait(10)
    d = open_destination(f"nats:127.0.0.1:{srv.port}?subject=xtcp.c&flushTimeout=1&backoffMax=0.2", config())
    for p, n in make_payloads(records, 50):
        d.send(p, n)
    d.close()
    t.join(20)
    return d, got


def test_nats_token_from_env(nats_token, monkeypatch):
    monkeypatch.setenv("XTCP2_NATS_TOKEN", TOKEN)
    d, got = nats_roundtrip(nats_token, 500, token=TOKEN)
    rows = [r for v in got for r in decode(v)]
    assert d.sent_records == 500 and [r.record_counter for r in rows] == list(range(500))


def test_nats_user_password_from_env(nats_userpass, monkeypatch):
    monkeypatch.setenv("XTCP2_NATS_USER", USER)
    monkeypatch.setenv("XTCP2_NATS_PASSWORD", PASSWORD)
    d, got = nats_roundtrip(nats_userpass, 500, user=USER, password=PASSWORD)
    assert d.sent_records == 500 and len([r for v in got for r in decode(v)]) == 500


@pytest.mark.parametrize("env", [{}, {"XTCP2_NATS_TOKEN": "wrong"}])
def test_nats_without_the_token_delivers_nothing_and_counts_it(nats_token, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    d, got = nats_roundtrip(nats_token, 200, token=TOKEN)
    assert got == [] and d.sent_records == 0
    assert d.dropped_records == 200 and d.errors >= 1


def test_valkey_password_and_acl_user_from_env(valkey_auth, monkeypatch):
    monkeypatch.setenv("XTCP2_VALKEY_PASSWORD", PASSWORD)  # the default user's requirepass
    d = open_destination(f"valkey:127.0.0.1:{valkey_auth.port}?mode=xadd&key=a", config())
    for p, n in make_payloads(300, 50):
        d.send(p, n)
    d.close()
    monkeypatch.setenv("XTCP2_VALKEY_USER", USER)  # a named ACL user, its own password
    monkeypatch.setenv("XTCP2_VALKEY_PASSWORD", USER_PASSWORD)
    d2 = open_destination(f"valkey:127.0.0.1:{valkey_auth.port}?mode=xadd&key=b", config())
    for p, n in make_payloads(300, 50, start=300):
        d2.send(p, n)
    d2.close()
    c = redis.Redis(host="127.0.0.1", port=valkey_auth.port, password=PASSWORD)
    rows = [r for key in ("a", "b") for _, f in c.xrange(key) for r in decode(f[b"d"])]
    assert d.sent_records == d2.sent_records == 300
    assert [r.record_counter for r in rows] == list(range(600))
    assert all(r == make_record(r.record_counter) for r in rows)
    assert c.acl_whoami() == "default"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=valkey_auth.port).xrange("a")


def test_valkey_without_the_password_delivers_nothing_and_counts_it(valkey_auth):
    d = open_destination(f"valkey:127.0.0.1:{valkey_auth.port}?mode=xadd&key=a&flushTimeout=1&backoffMax=0.2", config())
    for p, n in make_payloads(200, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 0 and d.dropped_records == 200 and d.errors >= 1
    assert redis.Redis(host="127.0.0.1", port=valkey_auth.port, password=PASSWORD).exists("a") == 0


@pytest.mark.root
def test_daemon_reads_the_password_from_its_environment(valkey_auth, tmp_path):
    """End to end: the daemon process gets the secret only through its environment; it
    delivers, and the secret shows in neither its command line nor its log."""
    if os.geteuid() != 0:
        need.missing("root", "run the suite as root")
    env = dict(os.environ, XTCP2_VALKEY_PASSWORD=PASSWORD)
    argv = [sys.executable, "-m", "xtcp2", "--once", "--netns", "self", "-dest",
            f"valkey:127.0.0.1:{valkey_auth.port}?mode=xadd&key=d", "-d", "10"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in " ".join(argv) and PASSWORD not in r.stderr + r.stdout
    c = redis.Redis(host="127.0.0.1", port=valkey_auth.port, password=PASSWORD)
    rows = [row for _, f in c.xrange("d") for row in decode(f[b"d"])]
    records = int(r.stderr.rsplit("records=", 1)[1].split()[0])
    assert records > 0 and len(rows) == records

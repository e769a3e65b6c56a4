"""gRPC over TLS and mTLS with real certificates made here by openssl: the right CA (and
client certificate) is accepted, a plain client, a wrong CA, a missing or foreign client
certificate are refused; half a TLS setup is a one-line error at start."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from tests.daemon_process import ROOT, free_port

from .pki import make_pki

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("ops-pki"))


class Daemon:
    def __init__(self, tmp: pathlib.Path, *flags: str) -> None:
        self.port = free_port()
        self.log = tmp / "daemon.log"
        argv = [sys.executable, "-m", "xtcp2", "--mode", "poll", "--netns", "self", "-frequency", "1s", "-dest", "null",
                "-promListen", f"127.0.0.1:{free_port()}", "-grpcPort", str(self.port), *flags]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def client(self, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xtcp2.tools.xtcp2client", "-target", "127.0.0.1",
                               "-port", str(self.port), *flags, "get"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    def wait_serving(self, *flags: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            if self.client(*flags).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(self.log.read_text()[-2000:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(tmp_path):
    made = []

    def make(*flags):
        d = Daemon(tmp_path, *flags)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


def test_tls_accepts_the_right_ca_and_refuses_others(daemon, pki):
    d = daemon("-grpcTlsCert", str(pki / "server.pem"), "-grpcTlsKey", str(pki / "server.key"))
    d.wait_serving("-tlsCa", str(pki / "ca.pem"))
    ok = d.client("-tlsCa", str(pki / "ca.pem"))
    assert ok.returncode == 0 and '"dest": "null"' in ok.stdout.replace('":"', '": "')
    plain = d.client()
    assert plain.returncode == 1 and len(plain.stderr.splitlines()) == 1, plain.stderr
    wrong = d.client("-tlsCa", str(pki / "otherca.pem"))
    assert wrong.returncode == 1, wrong.stdout


def test_mtls_needs_a_client_certificate_from_the_ca(daemon, pki):
    d = daemon("-grpcTlsCert", str(pki / "server.pem"), "-grpcTlsKey", str(pki / "server.key"),
               "-grpcTlsClientCa", str(pki / "ca.pem"))
    good = ("-tlsCa", str(pki / "ca.pem"), "-tlsCert", str(pki / "client.pem"), "-tlsKey", str(pki / "client.key"))
    d.wait_serving(*good)
    assert d.client(*good).returncode == 0
    assert d.client("-tlsCa", str(pki / "ca.pem")).returncode == 1          # no client certificate
    rogue = d.client("-tlsCa", str(pki / "ca.pem"), "-tlsCert", str(pki / "rogue.pem"),
                     "-tlsKey", str(pki / "rogue.key"))
    assert rogue.returncode == 1                                              # signed by another CA
    assert d.client().returncode == 1                                         # plain


@pytest.mark.parametrize("flags,msg", [
    (("-grpcTlsCert", "{p}/server.pem"), "-grpcTlsCert and -grpcTlsKey go together"),
    (("-grpcTlsClientCa", "{p}/ca.pem"), "-grpcTlsCert and -grpcTlsKey go together"),
    (("-grpcTlsCert", "{p}/server.pem", "-grpcTlsKey", "{p}/nope.key"), "cannot read -grpcTlsKey"),
    (("-grpcTlsCert", "{p}/server.ext", "-grpcTlsKey", "{p}/server.key"), "is not a PEM file"),
])
def test_bad_tls_setup_is_one_line(daemon, pki, flags, msg):
    d = daemon(*(f.format(p=pki) for f in flags))
    assert d.proc.wait(60) == 2
    err = d.log.read_text().strip().splitlines()
    assert msg in err[-1], err


def test_key_readable_by_others_is_refused(daemon, pki, tmp_path):
    key = tmp_path / "open.key"
    shutil.copy(pki / "server.key", key)
    os.chmod(key, 0o644)
    d = daemon("-grpcTlsCert", str(pki / "server.pem"), "-grpcTlsKey", str(key))
    assert d.proc.wait(60) == 2
    assert "readable by others" in d.log.read_text()

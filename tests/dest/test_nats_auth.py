"""nats: TLS and every credential kind against a real nats-server configured for it.
What arrived is read from the server's own monitoring endpoint (/varz in_msgs, /connz
with the authorized user), not from our client's counters."""
from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.request

import pytest

from tests import need

nkeys = need.module("nkeys")

from tests.servers import NatsServer, free_port, wait_port  # noqa: E402
from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402

from .helpers import config, make_payloads, outage_run, wait_for  # noqa: E402
from .tls_proxy import make_ca_and_cert  # noqa: E402

pytestmark = [pytest.mark.servers]


class ConfiguredNats(NatsServer):
    def __init__(self, binary: str, conf: str) -> None:
        super().__init__(binary)
        self.mport = free_port()
        self.conf = self.workdir / "nats.conf"
        self.conf.write_text(f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.mport}\n{conf}\n")

    def argv(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    def wait_ready(self) -> None:
        wait_port(self.port, proc=self.proc)
        wait_port(self.mport, proc=self.proc)

    def monitor(self, what: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/{what}", timeout=5) as r:
            return json.loads(r.read())


@pytest.fixture
def nats_conf(tmp_path):
    made = []

    def start(conf: str) -> ConfiguredNats:
        binary = NatsServer.locate()
        if binary is None:
            need.missing("nats-server", "apt-get install -y nats-server")
        srv = ConfiguredNats(binary, conf).start()
        made.append(srv)
        return srv
    yield start
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca_and_cert(tmp_path_factory.mktemp("outputs-nats-pki"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for v in ("XTCP2_NATS_CREDS", "XTCP2_NATS_NKEY_SEED", "XTCP2_NATS_NKEY_SEED_FILE", "XTCP2_NATS_TOKEN",
              "XTCP2_NATS_TOKEN_FILE", "XTCP2_NATS_USER", "XTCP2_NATS_PASSWORD", "XTCP2_NATS_PASSWORD_FILE"):
        monkeypatch.delenv(v, raising=False)


def send(spec: str, n: int = 1000, per: int = 50):
    d = open_destination(spec, config())
    for p, k in make_payloads(n, per):
        d.send(p, k)
    d.close()
    return d


def test_tls_and_user_password_from_file(nats_conf, pki, tmp_path, monkeypatch):
    srv = nats_conf(f'tls {{ cert_file: "{pki["cert"]}", key_file: "{pki["key"]}" }}\n'
                    'authorization { users = [ {user: alice, password: "s3cret-pw"} ] }')
    (tmp_path / "pw").write_text("s3cret-pw\n")
    monkeypatch.setenv("XTCP2_NATS_USER", "alice")
    monkeypatch.setenv("XTCP2_NATS_PASSWORD_FILE", str(tmp_path / "pw"))
    d = send(f"nats:127.0.0.1:{srv.port}?tls=1&caFile={pki['ca']}")
    assert (d.sent_records, d.dropped_records) == (1000, 0)
    assert srv.monitor("varz")["in_msgs"] == 20
    # without TLS the server refuses: a one-line reason, counted
    d = send(f"nats:127.0.0.1:{srv.port}?flushTimeout=0.5&backoffMax=0.1", n=50)
    assert d.dropped_records == 50 and "requires TLS" in d._last_error


def test_wrong_password_refused_and_counted(nats_conf, monkeypatch):
    srv = nats_conf('authorization { users = [ {user: alice, password: "right"} ] }')
    monkeypatch.setenv("XTCP2_NATS_USER", "alice")
    monkeypatch.setenv("XTCP2_NATS_PASSWORD", "wrong")
    d = send(f"nats:127.0.0.1:{srv.port}?flushTimeout=0.5&backoffMax=0.1", n=50)
    assert (d.sent_records, d.dropped_records) == (0, 50)
    assert "Authorization Violation" in d._last_error
    assert srv.monitor("varz")["in_msgs"] == 0


def test_mutual_tls(nats_conf, pki):
    srv = nats_conf(f'tls {{ cert_file: "{pki["cert"]}", key_file: "{pki["key"]}", ca_file: "{pki["ca"]}", '
                    'verify: true }')
    d = send(f"nats:127.0.0.1:{srv.port}?caFile={pki['ca']}&certFile={pki['client_cert']}"
             f"&keyFile={pki['client_key']}", n=500)
    assert d.sent_records == 500 and srv.monitor("varz")["in_msgs"] == 10
    d = send(f"nats:127.0.0.1:{srv.port}?caFile={pki['ca']}&flushTimeout=0.5&backoffMax=0.1", n=50)
    assert d.dropped_records == 50


def test_token_from_file_and_outage(nats_conf, tmp_path, monkeypatch):
    srv = nats_conf('authorization { token: "tok-123" }')
    (tmp_path / "tok").write_text("tok-123\n")
    monkeypatch.setenv("XTCP2_NATS_TOKEN_FILE", str(tmp_path / "tok"))
    d = open_destination(f"nats:127.0.0.1:{srv.port}?queue=100&backoffMax=0.2", config())
    counts = outage_run(d, srv)   # sent + dropped == produced, re-authenticating after the restart
    assert counts["dropped"] > 0
    assert srv.monitor("varz")["in_msgs"] > 0


def test_nkey_signs_the_nonce(nats_conf, tmp_path, monkeypatch):
    kp = nkeys.from_seed(nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER))
    srv = nats_conf(f'authorization {{ users = [ {{nkey: "{kp.public_key.decode()}"}} ] }}')
    (tmp_path / "seed").write_text(kp.seed.decode() + "\n")
    monkeypatch.setenv("XTCP2_NATS_NKEY_SEED_FILE", str(tmp_path / "seed"))
    d = send(f"nats:127.0.0.1:{srv.port}")
    assert (d.sent_records, d.dropped_records) == (1000, 0)
    assert srv.monitor("varz")["in_msgs"] == 20
    # a different key is refused
    other = nkeys.from_seed(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER))
    (tmp_path / "seed").write_text(other.seed.decode())
    d = send(f"nats:127.0.0.1:{srv.port}?flushTimeout=0.5&backoffMax=0.1", n=50)
    assert d.dropped_records == 50 and "Authorization Violation" in d._last_error


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwt(signer, claims: dict) -> str:
    """A NATS JWT (ed25519-nkey), as nsc writes them."""
    claims = {"iat": int(time.time()), **claims}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signer.sign(f'{head}.{body}'.encode()))}"


def test_creds_file_decentralized_auth(nats_conf, tmp_path, monkeypatch):
    op = nkeys.from_seed(nkeys.encode_seed(bytes([1] * 32), nkeys.PREFIX_BYTE_OPERATOR))
    acc = nkeys.from_seed(nkeys.encode_seed(bytes([2] * 32), nkeys.PREFIX_BYTE_ACCOUNT))
    usr = nkeys.from_seed(nkeys.encode_seed(bytes([3] * 32), nkeys.PREFIX_BYTE_USER))
    opk, acck, usrk = (k.public_key.decode() for k in (op, acc, usr))
    op_jwt = _jwt(op, {"iss": opk, "sub": opk, "name": "O", "nats": {"type": "operator", "version": 2}})
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
              "conn": -1, "leaf": -1}
    acc_jwt = _jwt(op, {"iss": opk, "sub": acck, "name": "A",
                        "nats": {"type": "account", "version": 2, "limits": limits}})
    usr_jwt = _jwt(acc, {"iss": acck, "sub": usrk, "name": "U",
                         "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
                                  "payload": -1}})
    srv = nats_conf(f'operator: "{op_jwt}"\nresolver: MEMORY\nresolver_preload: {{ {acck}: "{acc_jwt}" }}')
    creds = tmp_path / "user.creds"
    creds.write_text(f"-----BEGIN NATS USER JWT-----\n{usr_jwt}\n------END NATS USER JWT------\n\n"
                     "************************* IMPORTANT *************************\n"
                     "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                     f"-----BEGIN USER NKEY SEED-----\n{usr.seed.decode()}\n------END USER NKEY SEED------\n")
    monkeypatch.setenv("XTCP2_NATS_CREDS", str(creds))
    d = send(f"nats:127.0.0.1:{srv.port}")
    assert (d.sent_records, d.dropped_records) == (1000, 0), d._last_error
    assert srv.monitor("varz")["in_msgs"] == 20


def test_bad_credentials_config_one_line(tmp_path, monkeypatch):
    (tmp_path / "x.creds").write_text("nothing here")
    monkeypatch.setenv("XTCP2_NATS_CREDS", str(tmp_path / "x.creds"))
    with pytest.raises(DestinationError, match="is not a .creds file"):
        open_destination("nats:127.0.0.1:4222", config())
    monkeypatch.delenv("XTCP2_NATS_CREDS")
    monkeypatch.setenv("XTCP2_NATS_NKEY_SEED", "SUnotaseed")
    with pytest.raises(DestinationError, match="not a valid NKey seed"):
        open_destination("nats:127.0.0.1:4222", config())
    monkeypatch.delenv("XTCP2_NATS_NKEY_SEED")
    with pytest.raises(DestinationError, match="certFile and keyFile go together"):
        open_destination(f"nats:127.0.0.1:4222?certFile={tmp_path / 'x.creds'}", config())

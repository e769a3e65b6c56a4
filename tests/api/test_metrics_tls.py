"""The metrics listener with -webConfigFile (exporter-toolkit format): TLS, client
certificates and basic auth, each accepted and refused, with certificates made here by
openssl and bcrypt hashes made here; the TLS handshake never blocks the listener."""
from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import threading
import time

import pytest
from prometheus_client import REGISTRY

from tests.need import module
from xtcp2.api import metrics_http
from xtcp2.api.metrics_http import start_metrics_server
from xtcp2.config import Config
from xtcp2.errors import Xtcp2Error

from ..daemon_process import end
from .pki import make_pki

bcrypt = module("bcrypt")
PASSWORD = "s3cret-scrape-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("ops-metrics-pki"))


@pytest.fixture(scope="module")
def hashed() -> str:
    # the form htpasswd -nbBC 10 writes
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode().replace("$2b$", "$2y$")


def web_config(tmp_path, text: str):
    p = tmp_path / "web.yml"
    p.write_text(text)
    p.chmod(0o600)
    return p


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(text: str | None):
        path = str(web_config(tmp_path, text)) if text is not None else ""
        ms = start_metrics_server(Config(prom_listen="127.0.0.1:0", web_config_file=path))
        started.append(ms)
        return ms
    yield start
    for ms in started:
        ms.stop()


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("xtcp2_metrics_refused_total", {"reason": reason}) or 0.0


def client_context(pki, ca="ca", cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / f"{ca}.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def get(port: int, path: str = "/metrics", ctx: ssl.SSLContext | None = None, auth: tuple | None = None,
        host: str = "127.0.0.1"):
    """(status, headers, body) over HTTPS when ctx is given."""
    conn = (http.client.HTTPSConnection(host, port, context=ctx, timeout=10) if ctx
            else http.client.HTTPConnection(host, port, timeout=10))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


TLS = """
tls_server_config:
  cert_file: {p}/server.pem
  key_file: {p}/server.key
"""


def test_tls_accepts_the_right_ca_and_refuses_others(serve, pki):
    ms = serve(TLS.format(p=pki))
    assert ms.url.startswith("https://")
    status, _, body = get(ms.port, ctx=client_context(pki))
    assert status == 200 and b"xtcp2_polls_total" in body
    with pytest.raises(ssl.SSLCertVerificationError):
        get(ms.port, ctx=client_context(pki, ca="otherca"))
    before = refused("tls_handshake")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        get(ms.port)   # plain HTTP to a TLS listener
    deadline = time.monotonic() + 5
    while refused("tls_handshake") <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refused("tls_handshake") > before


def test_relative_paths_are_read_from_the_config_directory(serve, pki, tmp_path):
    for f in ("server.pem", "server.key"):
        shutil.copy(pki / f, tmp_path / f)
    ms = serve("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    assert get(ms.port, ctx=client_context(pki))[0] == 200


MTLS = TLS + """  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {p}/ca.pem
"""


def test_mtls_needs_a_client_certificate_from_the_ca(serve, pki):
    ms = serve(MTLS.format(p=pki))
    assert get(ms.port, ctx=client_context(pki, cert="client"))[0] == 200
    before = refused("client_cert")
    status, _, body = get(ms.port, ctx=client_context(pki))          # no client certificate
    assert status == 403 and b"client certificate" in body
    assert refused("client_cert") == before + 1
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        get(ms.port, ctx=client_context(pki, cert="rogue"))          # signed by another CA


def test_client_allowed_sans(serve, pki):
    ms = serve(MTLS.format(p=pki) + "  client_allowed_sans: [client]\n")
    assert get(ms.port, ctx=client_context(pki, cert="client"))[0] == 200
    assert get(ms.port, ctx=client_context(pki, cert="stranger"))[0] == 403   # the CA's, another name


def test_basic_auth_accepts_the_user_and_refuses_others(serve, hashed):
    ms = serve(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    status, _, body = get(ms.port, auth=("prometheus", PASSWORD))
    assert status == 200 and b"xtcp2_polls_total" in body
    assert get(ms.port, auth=("prometheus", PASSWORD))[0] == 200        # again, from the cache
    before = refused("unauthorized")
    for auth in (("prometheus", "wrong-password"), ("nobody", PASSWORD), None):
        status, headers, _ = get(ms.port, auth=auth)
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="xtcp2"', auth
    assert refused("unauthorized") == before + 3


def test_tls_and_basic_auth_together(serve, pki, hashed):
    ms = serve(MTLS.format(p=pki) + f"basic_auth_users:\n  prometheus: '{hashed}'\n"
               "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n")
    ctx = client_context(pki, cert="client")
    status, headers, _ = get(ms.port, ctx=ctx, auth=("prometheus", PASSWORD))
    assert status == 200 and headers["Strict-Transport-Security"] == "max-age=31536000"
    assert get(ms.port, ctx=ctx)[0] == 401
    assert get(ms.port, ctx=client_context(pki), auth=("prometheus", PASSWORD))[0] == 403


def test_a_silent_or_stalled_tls_client_does_not_block_others(serve, pki):
    ms = serve(TLS.format(p=pki))
    silent = [socket.create_connection(("127.0.0.1", ms.port)) for _ in range(10)]
    stalled = socket.create_connection(("127.0.0.1", ms.port))
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # the first bytes of a ClientHello
    try:
        time.sleep(0.3)   # they are accepted and waiting in their handshake
        status, _, body = get(ms.port, ctx=client_context(pki))
        assert status == 200 and b"xtcp2_polls_total" in body
        # served while they were still open: not after their request timeout closed them
        for s in silent + [stalled]:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in silent + [stalled]:
            s.close()


def test_password_checks_do_not_hold_up_a_known_scraper(serve, hashed):
    ms = serve(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    assert get(ms.port, auth=("prometheus", PASSWORD))[0] == 200        # now cached
    results: list[int] = []
    bad = [threading.Thread(target=lambda: results.append(get(ms.port, auth=("prometheus", f"guess-{i}"))[0]))
           for i in range(6)]
    for t in bad:
        t.start()
    time.sleep(0.05)
    status = get(ms.port, auth=("prometheus", PASSWORD))[0]
    pending = len(results)
    for t in bad:
        t.join(30)
    assert status == 200
    # six bcrypt checks run one after another on the worker; the scraper did not wait for them
    assert pending < 6 and results == [401] * 6


def test_certificate_rotation_and_a_broken_change(serve, pki, tmp_path):
    for f in ("server.pem", "server.key"):
        shutil.copy(pki / f, tmp_path / f)
    ms = serve("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    assert get(ms.port, ctx=client_context(pki))[0] == 200
    ok = REGISTRY.get_sample_value("xtcp2_metrics_web_config_reloads_total", {"result": "success"})
    # rotate to a certificate from another CA (written as a new file, then renamed over)
    for f in ("server.pem", "server.key"):
        shutil.copy(pki / f"other-{f}", tmp_path / f"{f}.new")
        os.chmod(tmp_path / f"{f}.new", 0o600)
        os.replace(tmp_path / f"{f}.new", tmp_path / f)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if get(ms.port, ctx=client_context(pki, ca="otherca"))[0] == 200:
                break
        except ssl.SSLError:
            time.sleep(0.3)
    else:
        pytest.fail("the rotated certificate was not served")
    assert REGISTRY.get_sample_value("xtcp2_metrics_web_config_reloads_total", {"result": "success"}) > ok
    # a change that does not load keeps what works
    failed = REGISTRY.get_sample_value("xtcp2_metrics_web_config_reloads_total", {"result": "failure"})
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: nope.pem\n  key_file: server.key\n")
    deadline = time.monotonic() + 10
    while REGISTRY.get_sample_value("xtcp2_metrics_web_config_reloads_total", {"result": "failure"}) == failed:
        assert time.monotonic() < deadline, "the broken config was not noticed"
        get(ms.port, ctx=client_context(pki, ca="otherca"))
        time.sleep(0.3)
    assert get(ms.port, ctx=client_context(pki, ca="otherca"))[0] == 200


@pytest.mark.parametrize("text,msg", [
    ("tls_server_config:\n  cert_file: {p}/server.pem\n", "cert_file and key_file go together"),
    ("tls_server_config:\n  cert_file: {p}/server.pem\n  key_file: {p}/nope.key\n", "cannot read key_file"),
    ("tls_server_config:\n  cert_file: {p}/server.ext\n  key_file: {p}/server.key\n", "unusable certificate"),
    (TLS + "  client_ca_file: {p}/ca.pem\n", "client_ca_file is set without a client_auth_type"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: {p}/ca.pem\n", "not verified"),
    (TLS + "  client_auth_type: Sometimes\n  client_ca_file: {p}/ca.pem\n", "expected one of"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites: not supported"),
    (TLS + "  min_version: TLS14\n", "min_version 'TLS14'"),
    ("tls_server_config:\n  bogus: 1\n", "tls_server_config.bogus: unknown key"),
    ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
    ("http_server_config:\n  headers:\n    Set-Cookie: x\n", "Set-Cookie cannot be set"),
    ("rate_limit:\n  interval: 1s\n", "rate_limit: not supported"),
    ("tls_server_config: [\n", "not valid YAML"),
    ("- a list\n", "the file must be a mapping"),
])
def test_bad_web_config_is_one_line(tmp_path, pki, text, msg):
    path = web_config(tmp_path, text.format(p=pki))
    with pytest.raises(Xtcp2Error) as e:
        start_metrics_server(Config(prom_listen="127.0.0.1:0", web_config_file=str(path)))
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"-webConfigFile {path}: ") and msg in line, line


def test_secrets_must_be_private(tmp_path, pki):
    key = tmp_path / "open.key"
    shutil.copy(pki / "server.key", key)
    key.chmod(0o644)
    path = web_config(tmp_path, f"tls_server_config:\n  cert_file: {pki}/server.pem\n  key_file: {key}\n")
    with pytest.raises(Xtcp2Error, match="readable by others"):
        start_metrics_server(Config(prom_listen="127.0.0.1:0", web_config_file=str(path)))
    path.chmod(0o666)
    with pytest.raises(Xtcp2Error, match="writable by others"):
        start_metrics_server(Config(prom_listen="127.0.0.1:0", web_config_file=str(path)))


def test_without_a_web_config_nothing_changes(serve):
    ms = serve(None)
    assert ms.url.startswith("http://") and get(ms.port)[0] == 200
    assert metrics_http.MAX_CONNECTIONS == 64


@pytest.mark.slow
def test_real_prometheus_scrapes_it_and_reads_the_same_web_config(serve, pki, hashed, tmp_path):
    """Debian's Prometheus (exporter-toolkit inside) serves its own UI with the very web
    config file the daemon uses, and scrapes the daemon over mTLS with basic auth; a job
    with the wrong password is down."""
    import json
    import subprocess
    import urllib.parse

    from tests import need
    from tests.daemon_process import free_port

    prom = need.binary("prometheus", "Debian prometheus, scripts/apt-test.txt")
    text = MTLS.format(p=pki) + f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    ms = serve(text)
    web = tmp_path / "web.yml"
    port = free_port()
    job = ("  - job_name: {name}\n    scheme: https\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
           "    basic_auth: {{username: prometheus, password: '{pw}'}}\n"
           "    tls_config: {{ca_file: {p}/ca.pem, cert_file: {p}/client.pem, key_file: {p}/client.key}}\n")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                   + job.format(name="xtcp2", port=ms.port, pw=PASSWORD, p=pki)
                   + job.format(name="wrongpw", port=ms.port, pw="not-the-password", p=pki))
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        def query(q: str) -> list:
            url = "/api/v1/query?" + urllib.parse.urlencode({"query": q})
            status, _, body = get(port, url, ctx=client_context(pki, cert="client"), auth=("prometheus", PASSWORD))
            assert status == 200, body
            return json.loads(body)["data"]["result"]

        deadline = time.monotonic() + 60
        up: dict = {}
        while time.monotonic() < deadline and set(up) != {"xtcp2", "wrongpw"}:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                up = {r["metric"]["job"]: float(r["value"][1]) for r in query("up")}
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.5)
        assert up == {"xtcp2": 1.0, "wrongpw": 0.0}, log.read_text()[-3000:]
        assert query('xtcp2_build_info{job="xtcp2"}')
        # and Prometheus' own listener refuses what ours refuses
        assert get(port, "/api/v1/query?query=up", ctx=client_context(pki, cert="client"))[0] == 401
    finally:
        end(proc)

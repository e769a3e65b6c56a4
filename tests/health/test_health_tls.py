"""`xtcp2 -healthcheck` against a daemon whose metrics listener has TLS, required client
certificates and basic auth (-webConfigFile, here from the environment as a container
would set it): the probe reads the same file, speaks TLS pinned to the daemon's
certificate, and the health paths need neither a password nor a client certificate."""
from __future__ import annotations

import time

import pytest

from tests.api.pki import make_pki
from tests.need import module

from .daemon import HealthDaemon

pytestmark = pytest.mark.root


def test_healthcheck_through_tls_mtls_and_basic_auth(tmp_path):
    bcrypt = module("bcrypt")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    hashed = bcrypt.hashpw(b"scrape-password-1", bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki}/server.pem\n  key_file: {pki}/server.key\n"
                   f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki}/ca.pem\n"
                   f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    web.chmod(0o600)
    env = {"XTCP_WEB_CONFIG_FILE": str(web)}
    d = HealthDaemon(tmp_path, "--mode", "poll", "--netns", "self", "-frequency", "200ms", "-timeout", "100ms",
                     "-livenessTimeout", "1s", "-dest", "null", env=env)
    try:
        deadline = time.monotonic() + 60
        while (out := d.healthcheck(env)).returncode != 0:
            assert d.proc.poll() is None, d.log()[-2000:]
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.2)
        assert "/healthz 200 ok: the collection loop ran" in out.stdout and "/readyz 200 ready" in out.stdout
        plain = d.healthcheck()   # without the web config: plain HTTP to a TLS listener
        assert plain.returncode == 1 and len(plain.stderr.splitlines()) == 1, plain.stderr

        d.stall.touch()   # a stuck loop is still reported through TLS
        deadline = time.monotonic() + 15
        while (bad := d.healthcheck(env)).returncode == 0:
            assert time.monotonic() < deadline, bad.stdout
            time.sleep(0.2)
        assert "/healthz 503 stuck" in bad.stderr
        d.stall.unlink()
        deadline = time.monotonic() + 15
        while d.healthcheck(env).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert d.stop() == 0
    finally:
        d.close()


def test_healthcheck_with_a_broken_web_config_says_why(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n")
    d = HealthDaemon.__new__(HealthDaemon)
    from tests.daemon_process import free_port
    d.listen = f"127.0.0.1:{free_port()}"
    out = d.healthcheck({"XTCP_WEB_CONFIG_FILE": str(web)})
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1 and "cannot read cert_file /nonexistent.pem" in out.stderr

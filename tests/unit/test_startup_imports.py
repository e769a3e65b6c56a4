"""A one-shot `xtcp2 --once` imports only what one poll needs: no gRPC, Kafka, Parquet,
HTTP exposition or protobuf runtime, no BPF loader when the collector is netlink.
A property of the import graph, checked on sys.modules of a real run (not a timing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a module named here, or under it, must not be imported by `--once -collector netlink`
NOT_FOR_ONCE = (
    "grpc", "grpc_health", "grpc_reflection",           # gRPC server
    "confluent_kafka", "kafka", "pyarrow", "boto3", "botocore", "redis", "nats", "msgpack", "textual",
    "google.protobuf",                                   # the protobuf runtime: records are encoded columnar
    "prometheus_client.exposition", "http.server", "wsgiref", "http.client", "ssl", "email",
    "numpy.ma",                                          # np.unique's lazy import: 16 ms
    "xtcp2.api.grpc_server", "xtcp2.api.metrics_http", "xtcp2.dest.kafka", "xtcp2.dest.s3parquet",
    "xtcp2.identity.docker", "xtcp2.ebpf", "xtcp2.modes.bpf", "xtcp2.collect.iter",
    "subprocess", "shutil",
)

RUN = """
import json, sys
from xtcp2.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def _once(*args: str) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XTCP_CONFIG_JSON", None)
    out = subprocess.run([sys.executable, "-c", RUN, "--once", "--netns", "self", *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["rc"], got["modules"]


def _offending(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in NOT_FOR_ONCE)]


@pytest.mark.root
def test_once_with_netlink_imports_only_what_one_poll_needs():
    rc, modules = _once("-collector", "netlink")
    assert rc == 0
    assert "xtcp2.collect.netlink" in modules and "xtcp2.records.encode" in modules  # it did poll
    assert _offending(modules) == []


def test_light_metrics_share_one_registry_with_the_full_package():
    # in a fresh interpreter: xtcp2's metrics load without prometheus_client's metric
    # classes or its HTTP stack; asking the package for anything else loads the real
    # one, with the same REGISTRY, which exposes them
    code = """
import sys
import xtcp2.metrics
assert "prometheus_client.exposition" not in sys.modules and "http.server" not in sys.modules
assert "prometheus_client.metrics" not in sys.modules
xtcp2.metrics.POLLS.inc()
xtcp2.metrics.POLL_SECONDS.observe(0.2)
xtcp2.metrics.DEST_QUEUE.labels("null").set(3)
from prometheus_client import REGISTRY, generate_latest
import prometheus_client
assert "prometheus_client.exposition" in sys.modules
from xtcp2.prom_light import REGISTRY as light
assert REGISTRY is light
text = generate_latest(REGISTRY).decode()
for line in ("xtcp2_polls_total 1.0", 'xtcp2_poll_duration_seconds_bucket{le="0.1"} 0.0',
             'xtcp2_poll_duration_seconds_bucket{le="0.25"} 1.0', 'xtcp2_poll_duration_seconds_bucket{le="+Inf"} 1.0',
             "xtcp2_poll_duration_seconds_count 1.0", "xtcp2_poll_duration_seconds_sum 0.2",
             'xtcp2_dest_queue_depth{dest="null"} 3.0', "# TYPE xtcp2_polls_total counter"):
    assert line + "\\n" in text, (line, text[:800])
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

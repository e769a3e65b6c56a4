"""The DaemonSet is valid Kubernetes (kubernetes-validate, strict: no unknown fields) and
asks for what a node agent needs and nothing more."""
from __future__ import annotations

import copy
import pathlib
import re

import kubernetes_validate
import pytest
import yaml

from xtcp2.api import capabilities as caps

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "xtcp2-daemonset.yaml"
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def daemonset() -> dict:
    return next(d for d in docs() if d["kind"] == "DaemonSet")


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_manifest_validates(version):
    for doc in docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_refuses_a_broken_manifest():
    bad = copy.deepcopy(daemonset())
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["comand"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_node_agent_shape():
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # exactly what the capability check (and the systemd unit) names
    assert {f"CAP_{n}" for n in sc["capabilities"]["add"]} == set(caps.CAP_NAMES.values())
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/run/netns", "/run/docker/netns", "/sys/kernel/btf", "/sys/fs/bpf"):
        assert path in mounts, path
    hostpaths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/run/netns", "/run/docker/netns", "/sys/kernel/btf", "/sys/fs/bpf"} == hostpaths
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == ["/opt/xtcp2/bin/xtcp2", "-healthcheck"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    env = {e["name"]: e for e in c["env"]}
    assert env["XTCP_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["PROM_LISTEN"]["value"].startswith("127.0.0.1:")


def test_probe_binary_is_the_images_entrypoint():
    text = DOCKERFILE.read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    assert entry == daemonset()["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"][0]
    assert re.search(r'^HEALTHCHECK .*CMD \["/opt/xtcp2/bin/xtcp2", "-healthcheck"\]', text, re.M | re.S)
    assert re.search(r"^FROM debian:12-slim$", text, re.M)

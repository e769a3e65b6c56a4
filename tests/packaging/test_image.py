"""The image scripts/build-image.sh makes (no registry), run under a real dockerd the way
the Dockerfile's comment says: host network and pid, the host's namespace directories,
BTF and bpffs. In bpf mode it must see a socket of the host and one of a container that
has its own network namespace; its HEALTHCHECK (xtcp2 -healthcheck) must pass."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time

import pytest

from tests.daemon_process import free_port

from .dockerd import dockerd  # noqa: F401 - fixture

ROOT = pathlib.Path(__file__).resolve().parents[2]
TAG = "xtcp2-ops-test:1"

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def image(dockerd, built):  # noqa: F811
    _, wheel = built
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh"), str(wheel), TAG], env=dockerd.env,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return TAG


def test_image_config(dockerd, image):  # noqa: F811
    cfg = json.loads(dockerd.docker("image", "inspect", image))[0]["Config"]
    assert cfg["Entrypoint"] == ["/opt/xtcp2/bin/xtcp2"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/opt/xtcp2/bin/xtcp2", "-healthcheck"]
    # no compiler in the image: the wheel brought the BPF object
    probe = dockerd.docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
                           "command -v clang bpftool gcc; /opt/xtcp2/bin/python -c "
                           "'from xtcp2.ebpf.loader import object_path; print(object_path())'")
    assert probe.splitlines() == ["/opt/xtcp2/lib/python3.11/site-packages/xtcp2/ebpf/bpf/tcp_events.bpf.o"]


def _records(dockerd, name: str) -> list[dict]:  # noqa: F811
    out = subprocess.run(["docker", "logs", name], env=dockerd.env, capture_output=True, text=True, timeout=60)
    recs = []
    for line in out.stdout.splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
    return recs


def test_bpf_mode_sees_host_and_container_sockets(dockerd, image, tmp_path):  # noqa: F811
    host_port, ctr_port, prom = free_port(), free_port(), free_port()
    # a container with a network namespace of its own (dockerd --bridge=none: --network none)
    dockerd.docker("run", "-d", "--name", "ops-listener", "--network", "none", "--entrypoint", "/opt/xtcp2/bin/python",
                   image, "-c", "import socket,time\n"
                   f"s=socket.socket(); s.bind(('127.0.0.1',{ctr_port})); s.listen(); time.sleep(600)")
    with socket.socket() as host_sock:
        host_sock.bind(("127.0.0.1", host_port))
        host_sock.listen()
        # Debian's docker 20.10 does not know CAP_BPF / CAP_PERFMON by name; CAP_SYS_ADMIN
        # implies both, and the capability check accepts it for them
        caps = ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
        if "unknown capability" not in dockerd.docker("create", "--cap-add", "BPF", image, "-v", check=False):
            caps += ["BPF", "PERFMON"]
        run = ["run", "-d", "--name", "ops-xtcp2", "--network", "host", "--pid", "host",
               "--cap-drop", "ALL", *[a for c in caps for a in ("--cap-add", c)],
               "--security-opt", "apparmor=unconfined", "--security-opt", "seccomp=unconfined",
               # no rslave here: / of this test machine is a private mount, which rslave refuses
               # (on a systemd host it is shared); the listener's namespace exists already
               "-v", "/run/netns:/run/netns:ro", "-v", "/sys/kernel/btf:/sys/kernel/btf:ro",
               "-v", "/sys/fs/bpf:/sys/fs/bpf",
               "-v", f"{dockerd.root}/exec/netns:/run/docker/netns:ro",
               "--health-interval", "2s", "--health-start-period", "5s",
               "-e", f"PROM_LISTEN=127.0.0.1:{prom}", "-e", f"GRPC_PORT={free_port()}", "-e", "DEST=stdout",
               "-e", "MARSHAL=protoJson", "-e", "XTCP_MODE=bpf", "-e", "POLL_FREQUENCY=2s",
               image]
        os.makedirs(f"{dockerd.root}/exec/netns", exist_ok=True)
        dockerd.docker(*run)
        deadline = time.monotonic() + 120
        seen: set[int] = set()
        status = ""
        while time.monotonic() < deadline:
            state = json.loads(dockerd.docker("inspect", "ops-xtcp2"))[0]["State"]
            assert state["Running"], dockerd.docker("logs", "ops-xtcp2", check=False)[-3000:]
            status = state.get("Health", {}).get("Status", "")
            seen = {r.get("inetDiagMsgSocketSourcePort") for r in _records(dockerd, "ops-xtcp2")}
            if host_port in seen and ctr_port in seen and status == "healthy":
                break
            time.sleep(1)
        logs = subprocess.run(["docker", "logs", "ops-xtcp2"], env=dockerd.env, capture_output=True, text=True).stderr
        assert "mode bpf" in logs, logs[-3000:]
        assert host_port in seen, logs[-3000:]
        assert ctr_port in seen, logs[-3000:]
        assert status == "healthy", logs[-3000:]
        # the image carries py-spy (the profile extra): /debug/profile profiles the daemon
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/debug/profile?seconds=1&format=raw&idle=1",
                                    timeout=60) as r:
            body = r.read()
        assert r.status == 200 and b"(xtcp2/" in body, body[:500]

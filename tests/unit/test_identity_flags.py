"""The identity flags: upstream's names and Go boolean forms, defaults, bad input."""
import subprocess
import sys

import pytest

from xtcp2.cli import build_parser, config_from_args


def cfg(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_upstreams_plus_resolve_process_on():
    c = cfg()
    assert (c.resolve_process, c.resolve_container_id, c.enrich_container_enable, c.docker_socket_path) == \
        (True, False, False, "/run/docker.sock")


@pytest.mark.parametrize("argv,want", [
    (["-enrichContainer"], (True, False, True)),
    (["--enrichContainer=true", "-resolveContainerId"], (True, True, True)),
    (["-resolveProcess=false"], (False, False, False)),
    (["-resolveProcess", "false", "-resolveContainerId", "1"], (False, True, False)),
])
def test_go_boolean_forms(argv, want):
    c = cfg(*argv)
    assert (c.resolve_process, c.resolve_container_id, c.enrich_container_enable) == want


def test_bad_values_are_one_line_errors():
    for argv in (["-dockerSocket", "docker.sock"], ["-resolveProcess=maybe"]):
        r = subprocess.run([sys.executable, "-m", "xtcp2", *argv, "-conf"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, r
        assert len(r.stderr.strip().splitlines()) == 1 and ("docker_socket_path" in r.stderr or "maybe" in r.stderr)

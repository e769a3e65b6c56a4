"""Go-style flag handling shared by the tools: durations, -help, one-line errors."""
import argparse

import pytest

from xtcp2.argparse_go import parse_duration

from .conftest import tool

TOOLS = ["ns", "nstest", "tcp_server", "tcp_client", "selftest", "microvm"]


@pytest.mark.parametrize("text,seconds", [
    ("5s", 5.0), ("100ms", 0.1), ("1m30s", 90.0), ("1h", 3600.0), ("250us", 250e-6),
    ("1.5s", 1.5), ("0", 0.0), ("2", 2.0), ("2h0m1s", 7201.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5x", "s", "-1", "1s5", "ms100", "nan"])
def test_parse_duration_rejects(bad):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(bad)


@pytest.mark.parametrize("module", TOOLS)
@pytest.mark.parametrize("flag", ["-help", "--help", "-h"])
def test_help(module, flag):
    r = tool(module, flag)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


@pytest.mark.parametrize("module", TOOLS)
def test_unknown_flag_is_one_line_error(module):
    r = tool(module, "-no-such-flag")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("module,args", [
    ("tcp_client", ["-sleep", "soon"]),
    ("tcp_client", ["-count", "x"]),
    ("tcp_server", ["-port", "70000"]),
    ("nstest", ["-duration", "5parsecs"]),
])
def test_bad_values(module, args):
    r = tool(module, *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_single_and_double_dash_equal_forms():
    from xtcp2.tools.tcp_client import build_parser
    p = build_parser()
    a = p.parse_args(["-count", "7", "--sleep=250ms", "-pads=10"])
    assert (a.count, a.sleep, a.pads) == (7, 0.25, 10)

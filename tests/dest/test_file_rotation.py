"""file:PATH?maxBytes=N&keep=K: size-based rotation to PATH.1 .. PATH.K, whole payloads only."""
from __future__ import annotations

import os

import pytest

from xtcp2.dest import open_destination
from xtcp2.errors import DestinationError

from .helpers import config, decode, make_payloads


def counters(path) -> list[int]:
    with open(path, "rb") as fh:
        return [r.record_counter for r in decode(fh.read())]


def send_all(dest, payloads) -> None:
    for p, n in payloads:
        dest.send(p, n)
    dest.flush()
    dest.close()


@pytest.mark.parametrize("keep", [1, 3])
def test_rotation_keeps_the_newest_files_of_whole_payloads(tmp_path, keep):
    path = tmp_path / "x.bin"
    payloads = make_payloads(200, 2)  # ~100 payloads of two records, a few hundred bytes each
    size = len(payloads[0][0])
    assert 200 < size < 1024 // 2
    send_all(open_destination(f"file:{path}?maxBytes=1024&keep={keep}", config()), payloads)

    names = sorted(os.listdir(tmp_path))
    assert names == ["x.bin"] + [f"x.bin.{i}" for i in range(1, keep + 1)], names
    files = [path] + [tmp_path / f"x.bin.{i}" for i in range(1, keep + 1)]
    for f in files:
        assert 0 < f.stat().st_size <= 1024, (f, f.stat().st_size)
    # newest last: PATH.K .. PATH.1, PATH hold one unbroken run of counters ending at the last record
    got = [c for f in reversed(files) for c in counters(f)]
    assert got == list(range(200 - len(got), 200))
    # each rotated file was full: one more payload would not have fit
    for f in files[1:]:
        assert f.stat().st_size + max(len(p) for p, _ in payloads) > 1024


def test_keep_zero_keeps_only_the_current_file(tmp_path):
    path = tmp_path / "x.bin"
    send_all(open_destination(f"file:{path}?maxBytes=1024&keep=0", config()), make_payloads(100, 2))
    assert os.listdir(tmp_path) == ["x.bin"]
    got = counters(path)
    assert got and got == list(range(100 - len(got), 100)) and len(got) < 100


def test_reopen_appends_and_rotates_an_existing_file(tmp_path):
    path = tmp_path / "x.bin"
    send_all(open_destination(f"file:{path}?maxBytes=4096&keep=2", config()), make_payloads(4, 2))
    assert counters(path) == [0, 1, 2, 3]
    send_all(open_destination(f"file:{path}?maxBytes=4096&keep=2", config()), make_payloads(60, 2, start=4))
    got = counters(tmp_path / "x.bin.2") + counters(tmp_path / "x.bin.1") + counters(path)
    assert got == list(range(64 - len(got), 64))


def test_payload_larger_than_max_bytes_is_written_whole(tmp_path):
    path = tmp_path / "x.bin"
    big = make_payloads(40, 40)  # one payload of several KiB
    assert len(big[0][0]) > 1024
    send_all(open_destination(f"file:{path}?maxBytes=1024&keep=1", config()), big + make_payloads(2, 2, start=40))
    assert counters(tmp_path / "x.bin.1") == list(range(40)) and counters(path) == [40, 41]


@pytest.mark.parametrize("query, words", [
    ("maxBytes=10", "maxBytes"), ("keep=-1", "keep"), ("maxBytes=abc", "maxBytes"), ("rotate=1", "unknown"),
])
def test_bad_rotation_options_are_one_line_errors(tmp_path, query, words):
    with pytest.raises(DestinationError) as e:
        open_destination(f"file:{tmp_path / 'x.bin'}?{query}", config())
    assert words in str(e.value) and "\n" not in str(e.value)

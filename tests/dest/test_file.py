"""file: destination on a real, small tmpfs that fills up: what is counted sent is
readable back, the rest is counted dropped, and writing resumes when space returns."""
from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import numpy as np
import pytest
from prometheus_client import REGISTRY

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.pipeline import Emitter

from .helpers import config, decode, make_record

pytestmark = pytest.mark.root


@contextlib.contextmanager
def small_tmpfs(tmp_path, size: str = "256k"):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"secrel-tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def rows(start: int, n: int) -> tuple[bytes, np.ndarray]:
    """Encoded rows as the collector hands them to the Emitter: body + end offsets."""
    pieces = [pb.Envelope(row=[make_record(i)]).SerializeToString() for i in range(start, start + n)]
    return b"".join(pieces), np.cumsum([len(p) for p in pieces])


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"dest": "file"}) or 0.0


class Counts:
    NAMES = ("xtcp2_dest_sent_records_total", "xtcp2_dest_dropped_records_total", "xtcp2_dest_errors_total")

    def __init__(self) -> None:
        self.base = {n: sample(n) for n in self.NAMES}

    def now(self) -> tuple[int, int, int]:
        return tuple(int(sample(n) - self.base[n]) for n in self.NAMES)


def read_back(mnt, prefix: str) -> list:
    files = sorted(p for p in mnt.rglob(f"{prefix}*") if p.is_file())
    return [r for f in files for r in decode(f.read_bytes())]  # raises on a torn payload


def check_readable(got: list, sent: int) -> set[int]:
    ids = [r.record_counter for r in got]
    assert len(ids) == len(set(ids)) == sent, f"{sent} counted sent, {len(ids)} readable"
    for r in got:
        assert r == make_record(r.record_counter)
    return set(ids)


def fill_and_recover(em: Emitter, mnt, prefix: str, per_step: int = 20):
    """Produce until the disk is full, keep producing, free space, produce more.
    While the disk is full and after, what was counted sent must be readable back.
    Returns (produced, first counter produced after space returned, counts)."""
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * 96 * 1024)  # the space that will "return" later
    produced = 0
    counts = Counts()
    while counts.now()[1] < 200:  # until ENOSPC has cost a few payloads
        em.add_rows(*rows(produced, per_step))
        produced += per_step
        assert produced < 20000, "the 256k tmpfs never filled up"
    for _ in range(10):  # more while full: all dropped, none may tear the file
        em.add_rows(*rows(produced, per_step))
        produced += per_step
    check_readable(read_back(mnt, prefix), counts.now()[0])  # while still full
    filler.unlink()
    resumed_at = produced
    for _ in range(5):
        em.add_rows(*rows(produced, per_step))
        produced += per_step
    em.close()
    return produced, resumed_at, counts


def test_full_disk_append_keeps_the_file_readable(tmp_path):
    with small_tmpfs(tmp_path) as mnt:
        em = Emitter(config(dest=f"file:{mnt}/x.bin?maxBytes=65536&keep=10", envelope_flush_threshold_rows=20))
        produced, resumed_at, counts = fill_and_recover(em, mnt, "x.bin")
        sent, dropped, errors = counts.now()
        got = read_back(mnt, "x.bin")
    assert dropped > 0 and errors > 0
    assert sent + dropped == produced
    ids = check_readable(got, sent)
    assert set(range(resumed_at, produced)) <= ids, "writing did not resume when space returned"


def test_full_disk_per_envelope_leaves_no_tmp_files(tmp_path):
    with small_tmpfs(tmp_path) as mnt:
        out = mnt / "ch"
        out.mkdir()
        em = Emitter(config(dest=f"file:{out}?perEnvelope=1", envelope_flush_threshold_rows=20))
        produced, resumed_at, counts = fill_and_recover(em, mnt, "ch/")
        sent, dropped, errors = counts.now()
        names = sorted(os.listdir(out))
        got = read_back(mnt, "ch/")
    assert dropped > 0 and errors > 0
    assert sent + dropped == produced
    assert not [n for n in names if not n.endswith(".bin")], "left behind: .tmp files"
    ids = check_readable(got, sent)
    assert set(range(resumed_at, produced)) <= ids, "writing did not resume when space returned"

"""Records, payloads and decoding shared by the destination tests."""
from __future__ import annotations

import time

from xtcp2.config import Config
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.marshal import get_marshaller
from xtcp2.marshal.protobuf_list import unmarshal
from xtcp2.records.envelope import EncodedEnvelope

# an hour ago: recent enough for the MergeTree TTL and the dashboards' time ranges
T0 = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000


def make_record(i: int) -> pb.XtcpFlatRecord:
    """A record whose every kind of field depends on i, so a mix-up shows."""
    return pb.XtcpFlatRecord(
        schema_version=1, daemon_version="test", timestamp_ns=T0 + i * 1_000_000,
        hostname=f"host{i % 3}", location="lab", netns=f"ns{i % 7}", netns_inode=4026531840 + i % 7,
        nsid=i % 7, label="l", tag="t", record_counter=i, netlinker_id=i % 4,
        trigger=i % 5, inet_diag_msg_family=2 if i % 2 else 10, inet_diag_msg_state=1,
        inet_diag_msg_socket_source_port=40000 + i % 1000, inet_diag_msg_socket_destination_port=443,
        inet_diag_msg_socket_source=bytes([127, 0, 0, 1]) if i % 2 else bytes(15) + b"\x01",
        inet_diag_msg_socket_destination=bytes([10, i % 256, (i >> 8) % 256, 1]),
        inet_diag_msg_socket_cookie=(1 << 40) + i, tcp_info_rtt=1000 + i, tcp_info_snd_cwnd=10 + i % 50,
        tcp_info_bytes_acked=i * 1448, tcp_info_pacing_rate=(1 << 33) + i,
        congestion_algorithm_string="cubic" if i % 2 else "bbr", congestion_algorithm_enum=1 if i % 2 else 5,
        sk_mem_info_rmem_alloc=i % 65536, c_group=(1 << 50) + i,
    )


def make_payloads(n_records: int, per_envelope: int, start: int = 0, marshal: str = "protobufList"):
    """[(payload, rows)] covering record_counter start..start+n_records-1."""
    m = get_marshaller(marshal)
    out = []
    for base in range(start, start + n_records, per_envelope):
        recs = [make_record(i) for i in range(base, min(base + per_envelope, start + n_records))]
        out.append((m(EncodedEnvelope.from_records(recs)), len(recs)))
    return out


def decode(data: bytes) -> list[pb.XtcpFlatRecord]:
    rows = []
    for body in unmarshal(data):
        rows.extend(pb.Envelope.FromString(body).row)
    return rows


def config(**kw) -> Config:
    return Config(hostname="testhost", **kw)


def wait_for(cond, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def outage_run(dest, server, before: int = 2000, during: int = 3000, after: int = 1000, per: int = 20,
               pause: float = 0.5, on_restart=None, before_kill=None) -> dict:
    """Send `before` records and wait for them, kill the server, send `during` records,
    restart it, wait for the backlog to drain, send `after`, close. Checks the invariant
    sent + dropped == produced and returns the counts."""
    for p, n in make_payloads(before, per, 0):
        dest.send(p, n)
    assert wait_for(lambda: dest.sent_records == before, 20), f"sent {dest.sent_records} of {before} before the kill"
    if before_kill:
        before_kill()
    server.kill()
    for p, n in make_payloads(during, per, before):
        dest.send(p, n)
    time.sleep(pause)
    server.start()
    if on_restart:
        on_restart()
    assert wait_for(lambda: dest.queue_depth == 0, 30), "backlog did not drain after the restart"
    for p, n in make_payloads(after, per, before + during):
        dest.send(p, n)
    dest.close()
    produced = before + during + after
    assert dest.sent_records + dest.dropped_records == produced
    return {"produced": produced, "sent": dest.sent_records, "dropped": dest.dropped_records}


def check_delivered(rows, counts: dict, after_from: int) -> None:
    """Decoded rows from the server: each intact, every counted-sent record present
    (duplicates allowed: at-least-once), every post-restart record present."""
    ids = [r.record_counter for r in rows]
    for r in rows:
        assert r == make_record(r.record_counter)
    got = set(ids)
    assert len(got) == counts["sent"], f"{len(got)} distinct records on the server, {counts['sent']} counted sent"
    assert set(range(after_from, counts["produced"])) <= got

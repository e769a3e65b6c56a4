"""XtcpFlatRecord columns of close records built from BPF close events.

The BPF program reads at TCP_CLOSE every field tcp_get_info() and tcp_diag_get_info()
would report (the sock_diag destroy broadcast, sent later from sk_destruct(), carries
the same values), plus the congestion control name.
"""
from __future__ import annotations

import socket

import numpy as np

from ..columns import BytesColumn, Columns
from .tcp_info import TO_RECORD

TCP_CLOSE = 7

def close_columns(ev: np.ndarray, last_known: dict[int, tuple[int, int]] | None = None) -> Columns:
    """Columns of close records built from BPF close events (final counters via CO-RE),
    merged with what the open lookup knew (uid, inode) when available."""
    n = len(ev)
    fam = ev["family"].astype(np.uint32)
    alen = np.where(fam == socket.AF_INET6, 16, 4).astype(np.uint8)
    cols = Columns(n, {
        "inet_diag_msg_family": fam,
        "inet_diag_msg_state": np.full(n, TCP_CLOSE, np.uint32),
        "tcp_info_state": np.full(n, TCP_CLOSE, np.uint32),
        "inet_diag_msg_socket_source_port": ev["sport"].astype(np.uint32),
        "inet_diag_msg_socket_destination_port": ev["dport"].astype(np.uint32),
        "inet_diag_msg_socket_source": BytesColumn(np.ascontiguousarray(ev["saddr"]), alen),
        "inet_diag_msg_socket_destination": BytesColumn(np.ascontiguousarray(ev["daddr"]), alen.copy()),
        "inet_diag_msg_socket_cookie": ev["cookie"].astype(np.uint64),
    })
    for src, dst in TO_RECORD.items():
        cols[dst] = ev[src].astype(np.uint64 if ev.dtype[src].itemsize == 8 else np.uint32)
    names = ev["ca_name"]
    cols["congestion_algorithm_string"] = BytesColumn(
        np.frombuffer(names.tobytes(), np.uint8).reshape(n, 16).copy(),
        np.char.str_len(names).astype(np.uint8))
    if last_known:
        uid = np.zeros(n, np.uint32)
        ino = np.zeros(n, np.uint32)
        for i, ck in enumerate(ev["cookie"].tolist()):
            known = last_known.pop(ck, None)
            if known:
                uid[i], ino[i] = known
        cols["inet_diag_msg_uid"] = uid
        cols["inet_diag_msg_inode"] = ino
    return cols

"""Every netlink capture in tests/fixtures decodes to exactly what `ss` printed.

The pcaps are nlmon captures of `ss` itself: one request per address family, and
some files hold several runs. The text of one of those runs is stored next to it.
For each pair the captured runs are decoded with xtcp2's replay decoder, every ss
socket is joined to a decoded socket (state, ports, addresses) and every figure ss
printed is re-printed from the decoded record with ss's own formats (misc/ss.c) and
compared as text. The run the text came from must match on every value; the others
(taken a second or two apart) differ, which shows the comparison can fail.
"""
from __future__ import annotations

import functools
import ipaddress
import re
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from xtcp2.errors import DecodeError
from xtcp2.netlink.pcap import read_packets
from xtcp2.netlink.replay import decode_packets

from .ss_text import SsSocket, fmt_g, parse_ss, print_ms_timer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
ROOT = Path(__file__).resolve().parents[2]

NLM_F_REQUEST = 0x01
SOCK_DIAG_BY_FAMILY = 20
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
TCPI_OPT_ECN, TCPI_OPT_ECN_SEEN, TCPI_OPT_SYN_DATA = 8, 16, 32
TCP_LISTEN = 10
TIMER_NAMES = ["off", "on", "keepalive", "timewait", "persist", "unknown"]
CONGESTION_ENUM = {"cubic": 1, "dctcp": 2, "vegas": 3, "prague": 4, "bbr": 5}
SKMEM = {"r": "rmem_alloc", "rb": "rcv_buf", "t": "wmem_alloc", "tb": "snd_buf", "f": "fwd_alloc",
         "w": "wmem_queued", "o": "optmem", "bl": "backlog", "d": "drops"}
# Plain counters ss prints with %u/%d when non-zero: ss key -> tcp_info field
PLAIN = {
    "mss": "snd_mss", "pmtu": "pmtu", "rcvmss": "rcv_mss", "advmss": "adv_mss", "cwnd": "snd_cwnd",
    "backoff": "backoff", "bytes_sent": "bytes_sent", "bytes_retrans": "bytes_retrans",
    "bytes_acked": "bytes_acked", "bytes_received": "bytes_received", "segs_out": "segs_out",
    "segs_in": "segs_in", "data_segs_out": "data_segs_out", "data_segs_in": "data_segs_in",
    "lastsnd": "last_data_sent", "lastrcv": "last_data_recv", "lastack": "last_ack_recv",
    "delivered": "delivered", "delivered_ce": "delivered_ce", "unacked": "unacked", "lost": "lost",
    "dsack_dups": "dsack_dups", "fackets": "fackets", "reord_seen": "reord_seen",
    "rcv_space": "rcv_space", "rcv_ssthresh": "rcv_ssthresh", "notsent": "not_sent_bytes",
    "rcv_ooopack": "rcv_ooopack", "snd_wnd": "snd_wnd", "rcv_wnd": "rcv_wnd", "rehash": "rehash",
}
# Values from the brief that must have been compared at least once over all fixtures.
REQUIRED_KEYS = {
    "rtt", "cwnd", "mss", "rcvmss", "advmss", "pmtu", "rto", "ato", "bytes_sent", "bytes_acked",
    "bytes_received", "segs_out", "segs_in", "data_segs_out", "data_segs_in", "lastsnd", "lastrcv",
    "lastack", "rcv_space", "rcv_ssthresh", "minrtt", "delivered", "busy", "wscale", "cong", "queues",
    *(f"skmem.{k}" for k in SKMEM),
}
MIN_JOINED = 0.95
# ss_tcp_info_a_10 on 6.6 was printed in another run than tcp_10_sockets.pcap: its
# connections have other ephemeral ports; only the listeners can be joined, and they
# are other instances (other cookie and inode) of the same listening sockets.
OTHER_RUN = {"6_6_44/ss_tcp_info_a_10"}


def c_alt_hex(v: int) -> str:
    """C printf "%#x": no 0x prefix for zero."""
    return "%#x" % v if v else "0"


def all_zero(path: Path) -> bool:
    return not any(path.read_bytes())


def discover_pairs() -> list[tuple[Path, Path]]:
    """(ss text, pcap) pairs: `[K_]ss_tcp_info_a_N[_sfx]` <-> `[K_]tcp_N_sockets[_sfx].pcap`."""
    pairs = []
    for text in sorted(FIXTURES.glob("*/*ss_tcp_info_a_*")):
        if text.suffix == ".pcap":
            continue
        m = re.fullmatch(r"(?P<pre>(?:\d+_\d+_\d+_)?)ss_tcp_info_a_(?P<n>\d+)(?P<sfx>_\w+)?", text.name)
        if not m:
            continue
        for cand in (text.parent / f"{m['pre']}tcp_{m['n']}_sockets{m['sfx'] or ''}.pcap",
                     text.with_name(text.name + ".pcap")):
            if cand.exists():
                pairs.append((text, cand))
                break
    return pairs


PAIRS = discover_pairs()
GOOD_PAIRS = [p for p in PAIRS if not all_zero(p[1])]
CORRUPT_PCAPS = sorted(p for p in FIXTURES.glob("*/*.pcap") if all_zero(p))


def rel(p: Path) -> str:
    return str(p.relative_to(FIXTURES))


# --- splitting a capture into the runs of ss it holds -------------------------

def split_runs(path: Path) -> list[list[bytes]]:
    """Packets grouped per ss run: a run ends when a request repeats an address family."""
    runs: list[list[bytes]] = []
    cur: list[bytes] = []
    families: set[int] = set()
    for _, pkt in read_packets(str(path)):
        _, kind, flags = struct.unpack_from("=IHH", pkt)
        if kind == SOCK_DIAG_BY_FAMILY and flags & NLM_F_REQUEST and len(pkt) > 16:
            family = pkt[16]
            if family in families:
                runs.append(cur)
                cur, families = [], set()
            families.add(family)
        cur.append(pkt)
    if cur:
        runs.append(cur)
    return runs


# --- what ss would print for a decoded socket ---------------------------------

class Row:
    """One decoded socket; fields read as python ints (0 when unset)."""

    def __init__(self, cols: dict, i: int) -> None:
        self.cols, self.i = cols, i

    def __getitem__(self, name: str) -> int:
        col = self.cols.get(name)
        return 0 if col is None else int(col[self.i])

    def has(self, name: str) -> bool:
        return name in self.cols

    def bytes(self, name: str) -> bytes:
        return self.cols[name].value(self.i)

    def t(self, name: str) -> int:
        return self["tcp_info_" + name]


def ss_info_line(r: Row) -> tuple[dict[str, str], set[str]]:
    """key -> text of every tcp_info figure ss prints (ss.c tcp_show_info / tcp_stats_print)."""
    t = r.t
    out: dict[str, str] = {}
    flags = set()
    opts = t("options")
    for bit, word in ((TCPI_OPT_TIMESTAMPS, "ts"), (TCPI_OPT_SACK, "sack"), (TCPI_OPT_ECN, "ecn"),
                      (TCPI_OPT_ECN_SEEN, "ecnseen"), (TCPI_OPT_SYN_DATA, "fastopen")):
        if opts & bit:
            flags.add(word)
    if opts & TCPI_OPT_WSCALE:
        out["wscale"] = f"{t('send_scale')},{t('rcv_scale')}"
    if t("rto") and t("rto") != 3000000:
        out["rto"] = fmt_g(t("rto") / 1000)
    if t("rtt"):
        out["rtt"] = f"{fmt_g(t('rtt') / 1000)}/{fmt_g(t('rtt_var') / 1000)}"
    if t("ato"):
        out["ato"] = fmt_g(t("ato") / 1000)
    for key, field in PLAIN.items():
        if t(field):
            out[key] = str(t(field))
    if 0 < t("snd_ssthresh") < 0xFFFF:
        out["ssthresh"] = str(t("snd_ssthresh"))
    if t("sacked") and t("state") != TCP_LISTEN:
        out["sacked"] = str(t("sacked"))
    if t("retrans") or t("total_retrans"):
        out["retrans"] = f"{t('retrans')}/{t('total_retrans')}"
    if t("reordering") != 3:
        out["reordering"] = str(t("reordering"))
    if t("rcv_rtt"):
        out["rcv_rtt"] = fmt_g(t("rcv_rtt") / 1000)
    if t("min_rtt"):
        out["minrtt"] = fmt_g(t("min_rtt") / 1000)
    busy = t("busy_time")
    if busy:
        out["busy"] = f"{busy // 1000}ms"
        for key in ("rwnd_limited", "sndbuf_limited"):
            if t(key):
                out[key] = f"{t(key) // 1000}ms({100.0 * t(key) / busy:.1f}%)"
    never = (1 << 64) - 1
    pacing = t("pacing_rate")
    if pacing and pacing != never:
        out["pacing_rate"] = "%.0fbps" % (pacing * 8.0)
        top = t("max_pacing_rate")
        if top and top != never:
            out["pacing_rate"] += "/%.0fbps" % (top * 8.0)
    if t("delivery_rate"):
        out["delivery_rate"] = "%.0fbps" % (t("delivery_rate") * 8.0)
    if t("delivery_rate_app_limited"):
        flags.add("app_limited")
    # "send": cwnd * mss over the rtt, vegas' own rtt when it reports one
    rtt = float(t("rtt"))
    v_rtt = r["vegas_info_rtt"]
    if r["vegas_info_enabled"] and v_rtt and v_rtt != 0x7FFFFFFF:
        rtt = float(v_rtt)
    if rtt > 0 and t("snd_mss") and t("snd_cwnd"):
        out["send"] = "%.0fbps" % (float(t("snd_cwnd")) * float(t("snd_mss")) * 8000000.0 / rtt)
    return out, flags


def compare(sock: SsSocket, r: Row, same_socket: bool = True) -> tuple[list[str], Counter]:
    """Differences between what ss printed and what the decoded record says.

    same_socket=False (a listener of another run): its identity (cookie, inode) differs.
    """
    diffs: list[str] = []
    seen: Counter = Counter()

    def check(key: str, printed, ours) -> None:
        seen[key] += 1
        if printed != ours:
            diffs.append(f"line {sock.line} {key}: ss {printed!r} decoded {ours!r}")

    m = lambda name: r["inet_diag_msg_" + name]  # noqa: E731
    check("queues", (sock.recv_q, sock.send_q), (m("rqueue"), m("wqueue")))
    det = sock.details
    if "sk" in det and same_socket:
        check("sk", det["sk"], "%x" % m("socket_cookie"))
    if "ino" in det and same_socket:
        check("ino", det["ino"], str(m("inode")))
    if "uid" in det:
        check("uid", det["uid"], str(m("uid")))
    if "timer" in det:
        check("timer", det["timer"], "(%s,%s,%d)" % (TIMER_NAMES[min(m("timer"), 5)],
                                                     print_ms_timer(m("expires")), m("retrans")))
    for key, field in (("tos", "type_of_service"), ("tclass", "traffic_class"), ("class_id", "class_id")):
        if key in det:
            check(key, det[key], c_alt_hex(r[field]))
    if sock.shutdown is not None:
        check("shutdown", sock.shutdown, r["shutdown_state"])
    if "skmem" in sock.groups:
        for key, field in SKMEM.items():
            check(f"skmem.{key}", sock.groups["skmem"].get(key), str(r["sk_mem_info_" + field]))
    if sock.cong is not None:
        name = r.bytes("congestion_algorithm_string").decode() if r.has("congestion_algorithm_string") else None
        check("cong", sock.cong, name)
        check("cong_enum", CONGESTION_ENUM.get(sock.cong, 0), r["congestion_algorithm_enum"])
    if "bbr" in sock.groups:
        g = sock.groups["bbr"]
        bw = (r["bbr_info_bw_hi"] << 32) | r["bbr_info_bw_lo"]
        check("bbr.bw", g.get("bw"), "%.0fbps" % (bw * 8.0))
        check("bbr.mrtt", g.get("mrtt"), fmt_g(r["bbr_info_min_rtt"] / 1000.0))
        for key in ("pacing_gain", "cwnd_gain"):
            gain = r["bbr_info_" + key]
            check(f"bbr.{key}", g.get(key), fmt_g(gain / 256.0) if gain else None)
    if "dctcp" in sock.groups:
        g = sock.groups["dctcp"]
        check("dctcp.enabled", True, r["dctcp_info_enabled"] != 0)
        for key in ("ce_state", "alpha", "ab_ecn", "ab_tot"):
            check(f"dctcp.{key}", g.get(key), str(r["dctcp_info_" + key]))
    if sock.info.get("dctcp") == "fallback_mode":
        check("dctcp.enabled", False, r["dctcp_info_enabled"] != 0)

    has_info = r.t("state") != 0
    printed_info = {k: v for k, v in sock.info.items() if k != "dctcp"}
    if not printed_info and not has_info:
        return diffs, seen
    check("tcp_info present", bool(printed_info), has_info)
    check("tcp_info_state", m("state"), r.t("state"))
    ours, flags = ss_info_line(r)
    check("flags", sorted(sock.flags), sorted(flags))
    for key in sorted(set(printed_info) | set(ours)):
        # a figure ss printed must match; one ss left out must be one it hides (zero/default)
        check(key, printed_info.get(key), ours.get(key))
    return diffs, seen


# --- joining ss sockets to decoded sockets ------------------------------------

def _addr_matches(printed: str, raw: bytes) -> bool:
    addr = ipaddress.ip_address(raw)
    return addr.is_unspecified if printed == "*" else ipaddress.ip_address(printed) == addr


def join(ss: list[SsSocket], cols: dict) -> tuple[list[tuple[SsSocket, Row]], int]:
    """(ss socket, decoded row) for each ss socket with exactly one match; and the ambiguous count."""
    index: dict[tuple, list[int]] = {}
    n = cols.n
    if n == 0:
        return [], 0
    st = cols["inet_diag_msg_state"]
    sp = cols["inet_diag_msg_socket_source_port"]
    dp = cols["inet_diag_msg_socket_destination_port"]
    for i in range(n):
        index.setdefault((int(st[i]), int(sp[i]), int(dp[i])), []).append(i)
    src, dst = cols["inet_diag_msg_socket_source"], cols["inet_diag_msg_socket_destination"]
    out, ambiguous = [], 0
    for s in ss:
        cands = [i for i in index.get((s.state, s.local_port, s.peer_port), [])
                 if _addr_matches(s.local_addr, src.value(i)) and _addr_matches(s.peer_addr, dst.value(i))]
        if len(cands) == 1:
            out.append((s, Row(cols, cands[0])))
        elif cands:
            ambiguous += 1
    return out, ambiguous


@functools.lru_cache(maxsize=None)
def evaluate(text_path: Path, pcap_path: Path):
    """Per run: (joined, ambiguous, diffs, keys compared). Best run first."""
    ss = parse_ss(text_path.read_text())
    same_socket = rel(text_path) not in OTHER_RUN
    results = []
    for run in split_runs(pcap_path):
        cols = decode_packets(run)
        joined, ambiguous = join(ss, cols)
        diffs: list[str] = []
        seen: Counter = Counter()
        for sock, row in joined:
            d, s = compare(sock, row, same_socket)
            diffs += d
            seen += s
        results.append((joined, ambiguous, diffs, seen))
    results.sort(key=lambda r: (-len(r[0]), len(r[2])))
    return ss, results


def test_fixture_pairs_found():
    names = {rel(t) for t, _ in PAIRS}
    assert len(GOOD_PAIRS) >= 16, names
    for kernel in ("5_4_281", "5_15_164", "6_1_103", "6_6_44"):
        assert any(n.startswith(kernel) for n in names), f"no ss/pcap pair for kernel {kernel}"


@pytest.mark.parametrize("text_path,pcap_path", GOOD_PAIRS, ids=[rel(t) for t, _ in GOOD_PAIRS])
def test_capture_matches_ss(text_path: Path, pcap_path: Path):
    ss, results = evaluate(text_path, pcap_path)
    assert ss, "empty ss text"
    joined, ambiguous, diffs, seen = results[0]
    assert not diffs, f"{len(diffs)} differences, first: " + "\n".join(diffs[:15])
    assert ambiguous == 0
    if rel(text_path) in OTHER_RUN:
        listeners = [s for s in ss if s.state == TCP_LISTEN]
        assert len(joined) == len(listeners) and {s.line for s, _ in joined} == {s.line for s in listeners}
        return
    assert len(joined) >= MIN_JOINED * len(ss), f"joined {len(joined)} of {len(ss)} ss sockets"
    # every joined socket contributed several values
    assert sum(seen.values()) >= 8 * len(joined)


def test_other_run_pair_really_is_another_run():
    """The one pair held to the listeners only: its connections are not in the capture at all."""
    for name in OTHER_RUN:
        text = FIXTURES / name
        pair = [p for t, p in GOOD_PAIRS if t == text]
        assert pair, name
        ss = parse_ss(text.read_text())
        for run in split_runs(pair[0]):
            cols = decode_packets(run)
            ports = set(zip(cols["inet_diag_msg_socket_source_port"].tolist(),
                            cols["inet_diag_msg_socket_destination_port"].tolist()))
            est = [(s.local_port, s.peer_port) for s in ss if s.state == 1]
            assert est and not ports & set(est)


def test_other_runs_differ():
    """Runs captured at other moments do not match: the comparison can fail."""
    multi = [(t, p) for t, p in GOOD_PAIRS if rel(t) not in OTHER_RUN and len(evaluate(t, p)[1]) > 1]
    assert len(multi) >= 4
    for t, p in multi:
        _, results = evaluate(t, p)
        if len(results[1][0]) >= MIN_JOINED * len(results[0][0]):
            assert results[1][2], f"{rel(p)}: a second run matches too"


def test_every_required_value_was_compared():
    seen: Counter = Counter()
    for t, p in GOOD_PAIRS:
        seen += evaluate(t, p)[1][0][3]
    missing = REQUIRED_KEYS - set(seen)
    assert not missing, f"never compared: {sorted(missing)}"
    # congestion-specific figures from the bbr / dctcp / vegas captures
    for key in ("bbr.bw", "bbr.mrtt", "bbr.pacing_gain", "dctcp.alpha", "dctcp.ab_tot", "send", "timer", "sk"):
        assert seen[key] > 0, key
    assert sum(seen.values()) > 100_000


# --- corrupt captures ---------------------------------------------------------

def test_corrupt_fixture_present():
    assert FIXTURES / "6_1_103" / "6_1_103_tcp_1000_sockets.pcap" in CORRUPT_PCAPS


@pytest.mark.parametrize("path", CORRUPT_PCAPS, ids=[rel(p) for p in CORRUPT_PCAPS])
def test_corrupt_capture_raises_decode_error(path: Path):
    with pytest.raises(DecodeError) as err:
        decode_packets(p for _, p in read_packets(str(path)))
    msg = str(err.value)
    assert str(path) in msg and "not a pcap file" in msg and "\n" not in msg


@pytest.mark.parametrize("path", CORRUPT_PCAPS, ids=[rel(p) for p in CORRUPT_PCAPS])
def test_decode_cli_on_corrupt_capture(path: Path):
    proc = subprocess.run([sys.executable, "-m", "xtcp2", "decode", str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "not a pcap file" in lines[0] and path.name in lines[0]


# Single recv() captures whose sockets are part of a stored ss run (found by joining
# each of them against every ss text of its kernel).
SINGLE_PACKET_PAIRS = [
    ("5_15_164/5_15_164_ss_tcp_info_a_100", "5_15_164/netlink_sock_diag_reply_single_packet_port4000.pcap"),
    ("5_4_281/5_4_281_ss_tcp_info_a_1000_sleep1ms", "5_4_281/netlink_sock_diag_reply_single_packet_port4049.pcap"),
]


@pytest.mark.parametrize("text,pcap", SINGLE_PACKET_PAIRS, ids=[p for _, p in SINGLE_PACKET_PAIRS])
def test_single_packet_reply_matches_ss(text: str, pcap: str):
    """Every socket of the packet is in the ss text, with exactly the printed values."""
    ss, results = evaluate(FIXTURES / text, FIXTURES / pcap)
    joined, ambiguous, diffs, seen = results[0]
    n = decode_packets(p for _, p in read_packets(str(FIXTURES / pcap))).n
    assert not diffs, "\n".join(diffs[:15])
    assert ambiguous == 0 and n > 50 and len(joined) == n
    assert seen["rtt"] == n and seen["bytes_acked"] > 0

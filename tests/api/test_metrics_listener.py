"""The metrics listener's HTTP handling and bounds, over real sockets: what a well-behaved
scraper gets, and what happens to malformed, oversized and drip-fed requests."""
from __future__ import annotations

import gzip
import socket
import time

import pytest
from prometheus_client import REGISTRY

from xtcp2.api import metrics_http
from xtcp2.api.metrics_http import start_metrics_server
from xtcp2.config import Config


@pytest.fixture
def server():
    ms = start_metrics_server(Config(prom_listen="127.0.0.1:0", prom_path="/metrics"))
    yield ms
    ms.stop()


def closed(reason: str) -> float:
    return REGISTRY.get_sample_value("xtcp2_metrics_connections_closed_total", {"reason": reason}) or 0.0


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:  # closed with our request unread: the kernel resets
            pass
        return out


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


def test_get_head_gzip_and_404(server):
    status, headers, body = split(exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK" and b"xtcp2_polls_total" in body
    assert int(headers["content-length"]) == len(body) and headers["connection"] == "close"
    status, headers, body = split(exchange(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0
    status, headers, body = split(exchange(server.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"))
    assert headers.get("content-encoding") == "gzip" and b"xtcp2_polls_total" in gzip.decompress(body)
    status, _, body = split(exchange(server.port, b"GET /other HTTP/1.0\r\n\r\n"))
    assert status.startswith("HTTP/1.1 404") and b"metrics are at /metrics" in body


def test_malformed_and_oversized_requests_are_closed_and_counted(server):
    before = closed("bad_request")
    assert exchange(server.port, b"\x16\x03\x01 not http at all\r\n\r\n") == b""
    assert exchange(server.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * metrics_http.MAX_REQUEST_BYTES)) == b""
    assert closed("bad_request") - before == 2


def test_a_drip_fed_request_is_cut_at_the_request_timeout(server):
    """A client sending one byte at a time keeps no slot longer than REQUEST_TIMEOUT."""
    before = closed("timeout")
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.setblocking(False)
        t0 = time.monotonic()
        cut = None
        request = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 1000
        for byte in request:
            try:
                s.send(bytes([byte]))
                if s.recv(1, socket.MSG_PEEK) == b"":
                    cut = time.monotonic() - t0
                    break
            except BlockingIOError:
                pass
            except OSError:
                cut = time.monotonic() - t0
                break
            time.sleep(0.25)
    assert cut is not None, "the server kept a drip-fed connection"
    assert metrics_http.REQUEST_TIMEOUT - 0.5 <= cut <= metrics_http.REQUEST_TIMEOUT + 1.5
    assert closed("timeout") - before == 1

"""`xtcp2 top` in a real terminal (tmux) against a real daemon and real sockets in a namespace.

The screen is read back with `tmux capture-pane`, so these tests see what a person sees.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for ip netns")

HOLDER = r"""
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listeners = {}
for port in (5000, 6000):
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(128); listeners[port] = s
pairs = {5000: [], 6000: []}
def more(port, k):
    for _ in range(k):
        c = socket.create_connection(("127.0.0.1", port)); a, _ = listeners[port].accept()
        pairs[port].append((c, a))
more(5000, 3); more(6000, 4)
print("ok", flush=True)
for line in sys.stdin:
    cmd, port, k = line.split()
    port, k = int(port), int(k)
    if cmd == "more":
        more(port, k)
    else:
        for _ in range(k):
            c, a = pairs[port].pop(); c.close(); a.close()
    print("ok", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Screen:
    def __init__(self, argv: list[str], width: int = 200, height: int = 50) -> None:
        if not shutil.which("tmux"):
            pytest.fail("tmux is not installed (scripts/apt-test.txt lists it)")
        self.sock = f"xtcp2top-{uuid.uuid4().hex[:8]}"
        self.name = "top"
        subprocess.run(["tmux", "-L", self.sock, "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), *argv], check=True, env=dict(os.environ, TERM="xterm-256color"))

    def text(self) -> str:
        p = subprocess.run(["tmux", "-L", self.sock, "capture-pane", "-p", "-t", self.name],
                           capture_output=True, text=True)
        return p.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.sock, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, pred, timeout: float = 20.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if pred(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"screen never showed {what} (rows parsed: {rows(text)}); last screen:\n{text}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.sock, "has-session", "-t", self.name],
                              capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


ENDPOINT = re.compile(r"^(\S+|\[\S+\]):\d+$")


def rows(text: str) -> list[list[str]]:
    """Table rows of the connection view: lines whose STATE column holds a state name."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 12 and parts[3] in ("ESTAB", "LISTEN", "TIME-WAIT", "CLOSE-WAIT", "FIN-WAIT-2") \
                and ENDPOINT.match(parts[4]) and ENDPOINT.match(parts[5]):
            out.append(parts)
    return out


def ports(rs: list[list[str]], col: int) -> list[int]:
    return [int(r[col].rsplit(":", 1)[1]) for r in rs]


@pytest.fixture
def netns_with_sockets():
    name = f"xtcp2top-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", HOLDER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"

        def command(line: str) -> None:
            holder.stdin.write(line + "\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "ok"

        yield name, command
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def daemon(netns_with_sockets):
    ns, _ = netns_with_sockets
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xtcp2", "--mode", "poll", "-frequency", "1s", "-dest", "null",
                             "-grpcPort", str(port), "-promListen", "127.0.0.1:0", "--netns", ns],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("daemon exited at start")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(15)


def top(*args: str) -> list[str]:
    return [sys.executable, "-m", "xtcp2", "top", *args]


def test_filter_sort_and_sockets_coming_and_going(daemon, netns_with_sockets):
    _, command = netns_with_sockets
    screen = Screen(top("-target", daemon, "dport", "=", ":6000"))
    try:
        text = screen.wait_for(lambda t: len(rows(t)) == 4, what="the 4 connections to :6000")
        rs = rows(text)
        assert all(r[5] == "127.0.0.1:6000" and r[3] == "ESTAB" for r in rs)
        assert ":5000" not in text  # nothing else leaks through the filter
        assert "filter: dport = :6000" in text

        # sort by LOCAL (two columns left of RTT_MS): descending, then reversed
        screen.keys("S", "S")
        text = screen.wait_for(lambda t: "sort LOCAL desc" in t, what="sort LOCAL desc")
        desc = ports(rows(text), 4)
        assert desc == sorted(desc, reverse=True) and len(set(desc)) == 4
        screen.keys("r")
        text = screen.wait_for(lambda t: "sort LOCAL asc" in t, what="sort LOCAL asc")
        assert ports(rows(text), 4) == sorted(desc)

        # sockets come and go; the screen follows
        command("more 6000 3")
        screen.wait_for(lambda t: len(rows(t)) == 7, what="7 connections after 3 more")
        command("close 6000 5")
        # the closing side passes through TIME-WAIT, as in ss
        text = screen.wait_for(lambda t: sorted(r[3] for r in rows(t)) == ["ESTAB"] * 2 + ["TIME-WAIT"] * 5,
                               what="2 established and 5 TIME-WAIT connections after closing 5")
        assert ports(rows(text), 4) == sorted(ports(rows(text), 4))  # still sorted ascending
        assert screen.alive()
    finally:
        screen.close()


def edit_filter(screen: Screen, text: str) -> None:
    """f opens the editor holding the current filter; ctrl-u clears it; type; Enter applies."""
    screen.keys("f")
    time.sleep(0.5)
    screen.keys("C-u")  # alone: textual reads a key that arrives glued to it as part of one sequence
    screen.wait_for(lambda t: "Enter to apply" in t, what="an empty filter editor")
    screen.keys(text)
    screen.wait_for(lambda t: text in t, what="the typed filter")
    screen.keys("Enter")


def test_keys_filter_edit_pause_group_help_quit(daemon):
    screen = Screen(top("-target", daemon))
    try:
        screen.wait_for(lambda t: len(rows(t)) == 16, what="all 16 sockets (2 listeners, 7 pairs)")
        # edit the filter: the server side of :5000 (3 accepted sockets + the listener)
        edit_filter(screen, "sport = :5000")
        text = screen.wait_for(lambda t: "filter: sport = :5000" in t and len(rows(t)) == 4,
                               what="the :5000 server side")
        assert sorted(r[3] for r in rows(text)) == ["ESTAB", "ESTAB", "ESTAB", "LISTEN"]
        # a bad filter is reported and the old one stays in force
        edit_filter(screen, "sport = :notaport")
        text = screen.wait_for(lambda t: "bad filter" in t, what="the bad-filter message")
        assert "filter: sport = :5000" in text and len(rows(text)) == 4
        # group by namespace: one aggregate row
        screen.keys("g")
        text = screen.wait_for(lambda t: "grouped by netns" in t, what="grouping")
        assert re.search(r"xtcp2top-\w+\s+4\s+3\s", text)
        screen.keys("g", "g")
        screen.keys("p")
        screen.wait_for(lambda t: "PAUSED" in t, what="PAUSED")
        screen.keys("p")
        screen.keys("?")
        screen.wait_for(lambda t: "live TCP connections" in t, what="the help screen")
        screen.keys("x")
        screen.wait_for(lambda t: "live TCP connections" not in t, what="help closed")
        screen.keys("q")
        deadline = time.monotonic() + 10
        while screen.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not screen.alive(), "q did not quit"
    finally:
        screen.close()


def test_local_mode_reads_the_namespace_itself(netns_with_sockets):
    ns, _ = netns_with_sockets
    screen = Screen(top("--local", "--netns", ns, "-interval", "500ms", "state", "listening"))
    try:
        text = screen.wait_for(lambda t: len(rows(t)) == 2, what="the two listeners")
        assert sorted(ports(rows(text), 4)) == [5000, 6000]
    finally:
        screen.close()


def test_bad_filter_on_the_command_line_is_one_line_and_exit_2():
    p = subprocess.run(top("state", "bogus"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "unknown TCP state 'bogus'" in p.stderr

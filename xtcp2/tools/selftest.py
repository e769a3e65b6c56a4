"""xtcp2-selftest: ten independent checks against a running xtcp2 daemon, one sentinel line each.

    xtcp2-selftest                                  # daemon on 127.0.0.1:9088 / :8889
    xtcp2-selftest -pid 1234 -metrics http://127.0.0.1:9188/metrics -grpcPort 8890

Prints XTCP2_SELF_TEST_<NAME>_PASS or _FAIL for SYSTEMD, METRICS, NETLINK, BINARIES_HELP,
GRPC_ROUNDTRIP, NS_INSPECT, NSTEST, NS_LIFECYCLE, NS_TRAFFIC, NS_DOCKER, preceded by one
line saying what was seen, then XTCP2_SELF_TEST_OVERALL_PASS|FAIL. A failed check never
stops the later ones. Exit status 0 only if all ten passed. Needs root (namespaces).
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from ..argparse_go import GoFlagParser, parse_duration, port_number, positive_int

CHECK_NAMES = ("SYSTEMD", "METRICS", "NETLINK", "BINARIES_HELP", "GRPC_ROUNDTRIP",
               "NS_INSPECT", "NSTEST", "NS_LIFECYCLE", "NS_TRAFFIC", "NS_DOCKER")
SENTINEL = "XTCP2_SELF_TEST_{}_{}"
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
MS_BIND = 4096
DOCKER_NETNS_DIR = "/run/docker/netns"
TRAFFIC_CONNECTIONS = 50   # 101 sockets: a step no idle host's noise hides

_libc = ctypes.CDLL(None, use_errno=True)


class CheckFailed(Exception):
    """Raised by a check with the one-line reason."""


@dataclass
class Options:
    pid: int
    unit: str
    metrics_url: str
    grpc_target: str
    grpc_port: int
    wait: float
    bindir: str
    help_probes: "HelpProbes | None" = None
    docker_socket: str = "/run/docker.sock"


# ---------------------------------------------------------------- helpers

def scrape_timeout(opts: Options) -> float:
    """A slow scrape is not a failed one: an emulated or traced daemon can take several
    seconds to render /metrics; a third of the check's wait, at least 5 s."""
    return max(5.0, opts.wait / 3)


def fetch_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """{sample name: value summed over label sets} of the daemon's xtcp2_* samples."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise CheckFailed(f"GET {url}: HTTP {resp.status}")
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise CheckFailed(f"GET {url}: {getattr(e, 'reason', e)}") from None
    out: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.startswith("xtcp2_"):
                    out[s.name] = out.get(s.name, 0.0) + float(s.value)
    except ValueError as e:
        raise CheckFailed(f"unparsable metrics from {url}: {e}") from None
    return out


def metric(opts: Options, name: str) -> float:
    values = fetch_metrics(opts.metrics_url, scrape_timeout(opts))
    if name not in values:
        raise CheckFailed(f"metric {name} not exported by {opts.metrics_url}")
    return values[name]


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_counter_above(opts: Options, name: str, base: float, what: str) -> float:
    seen = [base]

    def advanced() -> bool:
        seen[0] = metric(opts, name)
        return seen[0] > base

    if not wait_for(advanced, opts.wait):
        raise CheckFailed(f"{what}: {name} stayed at {seen[0]:g} for {opts.wait:g} s")
    return seen[0]


def find_tool(opts: Options, name: str) -> str:
    for candidate in (os.path.join(opts.bindir, name), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CheckFailed(f"{name} not installed (looked in {opts.bindir} and PATH)")


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{' '.join(cmd)} did not finish within {timeout:g} s") from None


def _one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else "(no output)"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_new_thread(fn: Callable[[], object]) -> object:
    """Run fn on a fresh thread (setns/unshare there leave the main thread alone)."""
    box: list = []

    def worker() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001
            box.append(("err", e))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join()
    kind, value = box[0]
    if kind == "err":
        raise value
    return value


def ip(*args: str) -> None:
    r = run(["ip", *args], timeout=30)
    if r.returncode != 0:
        raise CheckFailed(f"ip {' '.join(args)}: {_one_line(r.stderr)}")


def daemon_pid(opts: Options) -> int:
    if opts.pid:
        return opts.pid
    import psutil
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if not cmd or p.info["pid"] == os.getpid():
            continue
        exe = os.path.basename(cmd[0])
        argv1 = os.path.basename(cmd[1]) if len(cmd) > 1 else ""
        is_py = exe.startswith("python")
        if exe == "xtcp2" or (is_py and (argv1 == "xtcp2" or cmd[1:3] == ["-m", "xtcp2"]
                                         or cmd[1:3] == ["-m", "xtcp2.cli"])):
            return p.info["pid"]
    raise CheckFailed("no xtcp2 daemon process found (give -pid)")


# ---------------------------------------------------------------- checks

def check_systemd(opts: Options) -> str:
    if opts.unit and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        state = [""]

        def active() -> bool:
            state[0] = run(["systemctl", "is-active", opts.unit], timeout=10).stdout.strip()
            return state[0] == "active"

        if wait_for(active, 30, 1):
            return f"unit {opts.unit} is active"
        raise CheckFailed(f"unit {opts.unit} is {state[0] or 'unknown'} after 30 s")
    import psutil
    pid = daemon_pid(opts)
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        time.sleep(1.0)  # still the same live process a second later (not crash-looping)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.create_time() != started:
            raise CheckFailed(f"daemon pid {pid} exited")
        rss = proc.memory_info().rss
    except psutil.NoSuchProcess:
        raise CheckFailed(f"daemon pid {pid} is not running") from None
    return f"no systemd here; daemon pid {pid} running, rss {rss / 2**20:.1f} MiB"


def check_metrics(opts: Options) -> str:
    values = fetch_metrics(opts.metrics_url, scrape_timeout(opts))
    if not values:
        raise CheckFailed(f"{opts.metrics_url} has no xtcp2_* samples")
    missing = [m for m in ("xtcp2_polls_total", "xtcp2_namespaces_added_total") if m not in values]
    if missing:
        raise CheckFailed(f"{opts.metrics_url} lacks {', '.join(missing)}")
    return f"{len(values)} xtcp2_* series at {opts.metrics_url}"


def check_netlink(opts: Options) -> str:
    # A listener of our own guarantees the daemon's namespace has a socket to report.
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        polls0 = metric(opts, "xtcp2_polls_total")
        socks0 = metric(opts, "xtcp2_sockets_total")
        wait_counter_above(opts, "xtcp2_polls_total", polls0 + 1, "polling")
        socks1 = wait_counter_above(opts, "xtcp2_sockets_total", socks0, "inet_diag readout")
    return f"xtcp2_sockets_total {socks0:g} -> {socks1:g} while polling"


class HelpProbes:
    """`-help` of every console script, started early on background threads.

    The probes are slow to start in an emulated guest but need no daemon, so they run
    while the daemon-facing checks mostly wait for poll cycles; BINARIES_HELP collects.
    """

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.names: list[str] = []
        self.by_name: dict = {}
        self.error = ""
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="help-probe")
        self.futures = []
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("xtcp2")
            self.names = sorted({ep.name for ep in dist.entry_points if ep.group == "console_scripts"})
        except PackageNotFoundError:
            self.error = "xtcp2 is not installed as a package (no console scripts)"
        self.futures = [self.pool.submit(self._probe, n) for n in self.names]
        self.by_name = dict(zip(self.names, self.futures))

    def _probe(self, name: str) -> str | None:
        try:
            exe = find_tool(self.opts, name)
            r = run([exe, "-help"], timeout=180)
        except CheckFailed as e:
            return str(e)
        if r.returncode != 0 or "usage" not in (r.stdout + r.stderr).lower():
            return f"{name} -help exited {r.returncode}: {_one_line(r.stderr or r.stdout)}"
        return None

    def result(self) -> list[str]:
        problems = [p for p in (f.result() for f in self.futures) if p]
        self.pool.shutdown()
        return problems


def check_binaries_help(opts: Options) -> str:
    probes = opts.help_probes or HelpProbes(opts)
    if probes.error:
        raise CheckFailed(probes.error)
    problems = probes.result()
    if problems:
        raise CheckFailed(f"{len(problems)}/{len(probes.names)} failed; first: {problems[0]}")
    return f"{len(probes.names)} binaries answer -help: {' '.join(probes.names)}"


def check_grpc_roundtrip(opts: Options) -> str:
    """xtcp2client drives a poll over gRPC (PollFlatRecords) and must get a decodable record back."""
    exe = find_tool(opts, "xtcp2client")
    cmd = [exe, "-target", opts.grpc_target, "-port", str(opts.grpc_port), "-poll", "-pollFrequency", "1s",
           "-format", "json", "-count", "1", "-timeout", f"{opts.wait:g}s"]
    # Keep a socket alive so the poll has at least one record to stream back.
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        r = run(cmd, timeout=opts.wait + 60)
    record = None
    for line in r.stdout.splitlines():
        try:
            record = json.loads(line)
            break
        except ValueError:
            continue
    if r.returncode != 0 or not isinstance(record, dict) or "netns" not in record:
        raise CheckFailed(f"xtcp2client got no record from {opts.grpc_target}:{opts.grpc_port} "
                          f"(exit {r.returncode}): {_one_line(r.stderr or r.stdout)}")
    return (f"xtcp2client {opts.grpc_target}:{opts.grpc_port} polled a record: netns {record['netns']}, "
            f"port {record.get('inetDiagMsgSocketSourcePort', '?')}")


def _named_namespaces() -> set[str]:
    try:
        return {p for p in (os.path.join("/run/netns", f) for f in os.listdir("/run/netns")) if _is_mounted(p)}
    except OSError:
        return set()


def check_ns_inspect(opts: Options) -> str:
    exe = find_tool(opts, "ns")
    before = _named_namespaces()
    r = run([exe, "--json"])
    if r.returncode != 0:
        raise CheckFailed(f"ns --json exited {r.returncode}: {_one_line(r.stderr)}")
    try:
        data = json.loads(r.stdout)
    except ValueError:
        raise CheckFailed("ns --json printed invalid JSON") from None
    own = [n for n in data.get("namespaces", []) if n.get("own")]
    if not own or not own[0].get("cookie"):
        raise CheckFailed("ns did not report its own namespace with a cookie")
    listed = {x["path"] for n in data["namespaces"] for x in n["names"]}
    # Only namespaces that existed before and after the run count: others may churn meanwhile.
    unlisted = sorted((before & _named_namespaces()) - listed)
    if unlisted:
        raise CheckFailed(f"ns missed named namespaces: {', '.join(unlisted[:3])}")
    return f"ns listed {data['count']} namespaces, own cookie {own[0]['cookie']}"


def _is_mounted(path: str) -> bool:
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def check_nstest(opts: Options) -> str:
    exe = find_tool(opts, "nsTest")
    early = opts.help_probes.by_name.get("nsTest") if opts.help_probes else None
    if early is not None:  # already run by the BINARIES_HELP probes: no second start-up
        problem = early.result()
        if problem:
            raise CheckFailed(problem)
    else:
        r = run([exe, "-help"])
        if r.returncode != 0:
            raise CheckFailed(f"nsTest -help exited {r.returncode}")
    prefix = f"xtcp2st{uuid.uuid4().hex[:6]}"
    r = run([exe, "-initial", "1", "-count", "1", "-sleep", "10ms", "-prefix", prefix, "-json"], timeout=120)
    if r.returncode != 0:
        raise CheckFailed(f"nsTest churn exited {r.returncode}: {_one_line(r.stderr)}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    left = [n for n in os.listdir("/run/netns") if n.startswith(prefix)] if os.path.isdir("/run/netns") else []
    if summary.get("created") != 2 or summary.get("deleted") != 2 or left:
        raise CheckFailed(f"nsTest churn: created {summary.get('created')} deleted {summary.get('deleted')} "
                          f"left {len(left)}")
    return "nsTest -help ok; churn of 2 namespaces created and cleaned up"


def check_ns_lifecycle(opts: Options) -> str:
    name = f"xtcp2-st-{uuid.uuid4().hex[:8]}"
    added0 = metric(opts, "xtcp2_namespaces_added_total")
    removed0 = metric(opts, "xtcp2_namespaces_removed_total")
    ip("netns", "add", name)
    try:
        added1 = wait_counter_above(opts, "xtcp2_namespaces_added_total", added0, f"ip netns add {name}")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    removed1 = wait_counter_above(opts, "xtcp2_namespaces_removed_total", removed0, f"ip netns del {name}")
    return f"namespaces_added {added0:g}->{added1:g}, namespaces_removed {removed0:g}->{removed1:g}"


def _traffic_in(path: str, n: int) -> list[socket.socket]:
    def make() -> list[socket.socket]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        socks: list[socket.socket] = []
        try:
            _setns(fd)
            try:
                ls = socket.socket()
                socks.append(ls)
                ls.bind(("127.0.0.1", 0))
                ls.listen(n)
                for _ in range(n):
                    c = socket.create_connection(ls.getsockname(), timeout=5)
                    a, _ = ls.accept()
                    socks += [c, a]
                    c.sendall(b"xtcp2 selftest\n")
                    a.recv(64)
            finally:
                _setns(home)
        except BaseException:
            for s in socks:
                s.close()
            raise
        finally:
            os.close(fd)
            os.close(home)
        return socks

    return in_new_thread(make)  # type: ignore[return-value]


class RecordStream:
    """`xtcp2client -netns NAME -format json` running in the background; a thread collects
    its records so a check can wait for exactly the sockets it made."""

    def __init__(self, opts: Options, netns: str, lifetime: float | None = None) -> None:
        """lifetime: how long the client may stream (default -wait + 30 s); it is stopped
        by close() anyway, this only bounds a forgotten one."""
        exe = find_tool(opts, "xtcp2client")
        self.netns = netns
        self.records: list[dict] = []
        self.changed = threading.Condition()
        self.proc = subprocess.Popen([exe, "-target", opts.grpc_target, "-port", str(opts.grpc_port),
                                      "-netns", netns, "-format", "json", "-timeout",
                                      f"{lifetime or opts.wait + 30:g}s"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, name="selftest-stream", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("netns") == self.netns:
                with self.changed:
                    self.records.append(rec)
                    self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_until(self, done: Callable[[list[dict]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done(self.records):
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return done(self.records)
                self.changed.wait(min(left, 0.5))
            return True

    def snapshot(self) -> list[dict]:
        with self.changed:
            return list(self.records)

    def close(self) -> str:
        """Stop the client; its last stderr line if it had ended with an error by itself."""
        failed = self.proc.poll() not in (None, 0)
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)  # stdout is the reader thread's; stderr is ours (a few lines at most)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return _one_line(err) if failed else ""


def _stream_clients(opts: Options) -> float:
    return fetch_metrics(opts.metrics_url, scrape_timeout(opts)).get("xtcp2_grpc_stream_clients", 0.0)


def check_ns_traffic(opts: Options) -> str:
    """A fresh namespace with a listener and 50 connections: the daemon must stream every
    one of those 101 sockets, in its state, to a live-record client of that namespace.

    The client subscribes before the sockets exist, and the check waits for those exact
    sockets (by port pair), not for a number of records: what the daemon reports when
    they open (bpf mode) counts, as does any later poll, refresh or resync. (It used to
    subscribe afterwards and stop at 202 records, so it passed only if the daemon happened
    to re-report unchanged sockets twice within -wait.) Filtered by namespace name, so
    other namespaces' churn on a busy host cannot make it pass or fail.
    """
    name = f"xtcp2-st-{uuid.uuid4().hex[:8]}"
    expect = 2 * TRAFFIC_CONNECTIONS + 1
    ip("netns", "add", name)
    socks: list[socket.socket] = []
    want: dict[tuple[int, int], int] = {}
    stream = None
    failure = ""
    try:
        ip("-n", name, "link", "set", "lo", "up")
        clients0 = _stream_clients(opts)
        stream = RecordStream(opts, name)
        # One more stream client than before: ours is subscribed and sees the sockets' first
        # records. Only a head start: if another client left meanwhile the gauge may not move,
        # and later polls/refreshes still report the sockets, so go on after a few seconds.
        wait_for(lambda: stream.proc.poll() is not None or _stream_clients(opts) > clients0,
                 min(opts.wait, 5.0), 0.1)
        if stream.proc.poll() is not None:
            raise CheckFailed(f"xtcp2client -netns {name} exited {stream.proc.returncode}: {stream.close()}")
        socks = _traffic_in(f"/run/netns/{name}", TRAFFIC_CONNECTIONS)
        for s in socks:  # (local port, peer port) -> state: ESTABLISHED 1, LISTEN 10 (peer port 0)
            try:
                want[(s.getsockname()[1], s.getpeername()[1])] = 1
            except OSError:
                want[(s.getsockname()[1], 0)] = 10
        stream.wait_until(lambda recs: len(_matching(recs, want)) == expect, opts.wait)
    finally:
        if stream is not None:
            failure = stream.close()
        for s in socks:
            s.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    records = stream.snapshot()
    got = _matching(records, want)
    if len(got) < expect or len(set(got.values())) < expect:
        missing = sorted(set(want) - set(got))[:3]
        raise CheckFailed(f"{expect} sockets in {name}: daemon streamed {len(got)} of them within {opts.wait:g} s "
                          f"({len(records)} records); missing e.g. {missing}"
                          + (f"; xtcp2client: {failure}" if failure else ""))
    how = sorted({r.get("trigger", "TRIGGER_POLL").removeprefix("TRIGGER_").lower() for r in records})
    return (f"{expect} sockets inside {name}: daemon streamed all {2 * TRAFFIC_CONNECTIONS} ESTABLISHED "
            f"+ 1 LISTEN ({len(records)} records: {', '.join(how)})")


def _matching(records: list[dict], want: dict[tuple[int, int], int]) -> dict[tuple[int, int], object]:
    """{(local port, peer port): cookie} of the wanted sockets seen in their wanted state."""
    got = {}
    for r in records:
        key = (r.get("inetDiagMsgSocketSourcePort", 0), r.get("inetDiagMsgSocketDestinationPort", 0))
        if key in want and want[key] == r.get("inetDiagMsgState", 0):
            got[key] = r.get("inetDiagMsgSocketCookie")
    return got


def _docker_style_netns(path: str) -> None:
    """What docker's libnetwork does: unshare a thread's netns, bind-mount it onto a file."""
    def make() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare: {os.strerror(err)}")
            try:
                src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
                if _libc.mount(src, path.encode(), b"none", MS_BIND, None) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"bind mount onto {path}: {os.strerror(err)}")
            finally:
                _setns(home)
        finally:
            os.close(home)

    in_new_thread(make)


def check_ns_docker(opts: Options) -> str:
    """Real docker containers where a dockerd answers on -dockerSocket (and an image can
    be made from a static busybox); otherwise what docker's libnetwork does, by hand (a
    bind-mounted namespace under /run/docker/netns). The result line says which ran."""
    from .dockerload import unusable
    why = unusable(opts.docker_socket)
    if why:
        return f"bind-mount fallback ({why}): {_ns_docker_bind_mount(opts)}"
    return f"real docker containers via {opts.docker_socket}: {_ns_docker_containers(opts)}"


def _ns_docker_bind_mount(opts: Options) -> str:
    created_dir = not os.path.isdir(DOCKER_NETNS_DIR)
    os.makedirs(DOCKER_NETNS_DIR, exist_ok=True)
    path = os.path.join(DOCKER_NETNS_DIR, f"xtcp2st{uuid.uuid4().hex[:12]}")
    added0 = metric(opts, "xtcp2_namespaces_added_total")
    removed0 = metric(opts, "xtcp2_namespaces_removed_total")
    mounted = False
    try:
        open(path, "x").close()
        _docker_style_netns(path)
        mounted = True
        added1 = wait_counter_above(opts, "xtcp2_namespaces_added_total", added0, f"docker-style {path}")
    finally:
        if mounted:
            _libc.umount2(path.encode(), MNT_DETACH)
        if os.path.exists(path):
            os.unlink(path)
        if created_dir:
            try:
                os.rmdir(DOCKER_NETNS_DIR)
                os.rmdir(os.path.dirname(DOCKER_NETNS_DIR))
            except OSError:
                pass
    removed1 = wait_counter_above(opts, "xtcp2_namespaces_removed_total", removed0, f"unmount {path}")
    return f"{path}: namespaces_added {added0:g}->{added1:g}, namespaces_removed {removed0:g}->{removed1:g}"


def daemon_config(opts: Options) -> dict:
    """The daemon's running config (xtcp2client get), {} when it cannot be read."""
    try:
        r = run([find_tool(opts, "xtcp2client"), "-target", opts.grpc_target, "-port", str(opts.grpc_port),
                 "get"], timeout=opts.wait + 30)
        return json.loads(r.stdout) if r.returncode == 0 else {}
    except (CheckFailed, ValueError):
        return {}


DOCKER_PORT = 8080


def _ns_docker_containers(opts: Options) -> str:
    """Container A (its own namespace, --network none) listens; B joins A's namespace
    (--network container:A) and connects. The daemon must find the namespace, name it
    after A, stream the three sockets, and, when it resolves containers, name A as the
    owner of the listener and the accepted socket and B as the owner of the client."""
    from .dockerload import IMAGE, TCP_ESTABLISHED, TCP_LISTEN, Docker, DockerError, tcp_sockets
    cfg = daemon_config(opts)
    need_id = bool(cfg.get("resolve_container_id") or cfg.get("enrich_container_enable"))
    need_name = bool(cfg.get("enrich_container_enable")) and \
        os.path.realpath(cfg.get("docker_socket_path") or "/run/docker.sock") == os.path.realpath(opts.docker_socket)
    docker = Docker(opts.docker_socket)
    tag = f"xtcp2st-{uuid.uuid4().hex[:8]}"
    names = {"a": f"{tag}-a", "b": f"{tag}-b"}
    ids: dict[str, str] = {}
    made_image = False
    stream = None
    failure = ""
    want: dict[tuple[int, int], tuple[int, str]] = {}

    def named(rec: dict, who: str) -> bool:
        """Names no container but the right one, and every field the daemon resolves."""
        return (rec.get("containerId", "") in ("", ids[who]) and rec.get("containerName", "") in ("", names[who])
                and bool(rec.get("containerId") or not need_id) and bool(rec.get("containerName") or not need_name))

    def latest(records: list[dict]) -> dict[tuple[int, int], dict]:
        """The last record of each wanted socket (port pair) in its wanted state."""
        out = {}
        for r in records:
            key = (r.get("inetDiagMsgSocketSourcePort", 0), r.get("inetDiagMsgSocketDestinationPort", 0))
            if key in want and r.get("inetDiagMsgState", 0) == want[key][0]:
                out[key] = r
        return out

    added0 = metric(opts, "xtcp2_namespaces_added_total")
    removed0 = metric(opts, "xtcp2_namespaces_removed_total")
    try:
        try:
            made_image = docker.ensure_image()
            ids["a"] = docker("create", "--name", names["a"], "--network", "none", IMAGE,
                              "/bin/nc", "-ll", "-p", str(DOCKER_PORT), "-e", "/bin/cat")
            # the namespace is named after the container owning it: subscribe before it exists
            # it waits for several steps (the listener, B, the namespace, the records)
            stream = RecordStream(opts, ids["a"], lifetime=5 * opts.wait + 300)
            docker("start", ids["a"])
            pid_a = docker.pid(ids["a"])
            if not wait_for(lambda: any(s[0] == DOCKER_PORT and s[2] == TCP_LISTEN for s in tcp_sockets(pid_a)),
                            opts.wait):
                raise CheckFailed(f"container {names['a']} never listened on {DOCKER_PORT}")
            ids["b"] = docker("run", "-d", "--name", names["b"], "--network", f"container:{ids['a']}", IMAGE,
                              "sh", "-c", f"sleep 100000 | nc 127.0.0.1 {DOCKER_PORT}")
        except DockerError as e:
            raise CheckFailed(f"docker: {e}") from None
        added1 = wait_counter_above(opts, "xtcp2_namespaces_added_total", added0, f"container {names['a']}")
        conns: list[tuple[int, int, int, int]] = []

        def connected() -> bool:
            conns[:] = [s for s in tcp_sockets(pid_a) if s[2] == TCP_ESTABLISHED and DOCKER_PORT in s[:2]]
            return len(conns) >= 2

        if not wait_for(connected, opts.wait):
            raise CheckFailed(f"container {names['b']} never connected to {names['a']}")
        want[(DOCKER_PORT, 0)] = (TCP_LISTEN, "a")
        for lport, rport, _, _ in conns:
            want[(lport, rport)] = (TCP_ESTABLISHED, "a" if lport == DOCKER_PORT else "b")
        stream.wait_until(lambda recs: all(k in (got := latest(recs)) and named(got[k], want[k][1]) for k in want),
                          opts.wait)
    finally:
        if stream is not None:
            failure = stream.close()
        docker.remove(*ids.values())
        if made_image:
            try:
                docker("rmi", IMAGE, timeout=120)
            except DockerError:
                pass
        docker.close()
    got = latest(stream.snapshot())
    missing = [k for k in want if k not in got]
    if missing:
        raise CheckFailed(f"namespace of {names['a']}: the daemon streamed {len(got)} of its {len(want)} sockets "
                          f"under netns {ids['a'][:12]}... within {opts.wait:g} s (missing {missing[:3]})"
                          + (f"; xtcp2client: {failure}" if failure else ""))
    wrong = [(k, want[k][1], got[k].get("containerId", "")[:12], got[k].get("containerName", ""))
             for k in want if not named(got[k], want[k][1])]
    if wrong:
        raise CheckFailed(f"sockets not named after their container (port pair, owner, id, name): {wrong[:3]}")
    removed1 = wait_counter_above(opts, "xtcp2_namespaces_removed_total", removed0, f"docker rm {names['a']}")
    fields = [f for f in ("containerId", "containerName") if all(r.get(f) for r in got.values())]
    how = ("by " + " + ".join(fields)) if fields else \
        "records carry no container fields (the daemon runs without -resolveContainerId / -enrichContainer)"
    return (f"{names['a']} (own namespace, named {ids['a'][:12]}...) and {names['b']} (joined it): listener and "
            f"accepted socket -> a, client -> b, {how}; namespaces_added {added0:g}->{added1:g}, "
            f"namespaces_removed {removed0:g}->{removed1:g}")


CHECKS: dict[str, Callable[[Options], str]] = {
    "SYSTEMD": check_systemd, "METRICS": check_metrics, "NETLINK": check_netlink,
    "BINARIES_HELP": check_binaries_help, "GRPC_ROUNDTRIP": check_grpc_roundtrip,
    "NS_INSPECT": check_ns_inspect, "NSTEST": check_nstest, "NS_LIFECYCLE": check_ns_lifecycle,
    "NS_TRAFFIC": check_ns_traffic, "NS_DOCKER": check_ns_docker,
}


def run_all(opts: Options, only: Sequence[str] = (), out=sys.stdout) -> bool:
    ok_all = True
    if (not only or "BINARIES_HELP" in only) and opts.help_probes is None:
        opts.help_probes = HelpProbes(opts)
    for name in CHECK_NAMES:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            detail = CHECKS[name](opts)
            ok = True
        except CheckFailed as e:
            ok, detail = False, str(e)
        except Exception as e:  # noqa: BLE001 - one check's bug must not stop the others
            ok, detail = False, f"{type(e).__name__}: {e}"
        ok_all &= ok
        detail = " ".join(detail.split())
        print(f"selftest: {name} {'ok' if ok else 'FAILED'} ({time.monotonic() - t0:.1f}s): {detail}", file=out)
        print(SENTINEL.format(name, "PASS" if ok else "FAIL"), file=out, flush=True)
    print(SENTINEL.format("OVERALL", "PASS" if ok_all else "FAIL"), file=out, flush=True)
    return ok_all


def build_parser() -> GoFlagParser:
    p = GoFlagParser("xtcp2-selftest", __doc__.split("\n\n")[0])
    p.flag("pid", type=positive_int, default=0, help="daemon pid (default: find the xtcp2 process)")
    p.flag("unit", default="xtcp2", help="systemd unit to check when systemd runs (default xtcp2)")
    p.flag("metrics", default="http://127.0.0.1:9088/metrics", help="daemon metrics URL")
    p.flag("grpcTarget", default="127.0.0.1", help="daemon gRPC host (default 127.0.0.1)")
    p.flag("grpcPort", type=port_number, default=8889, help="daemon gRPC port (default 8889)")
    p.flag("wait", type=parse_duration, default=20.0, help="how long a check waits for the daemon to react (default 20s)")
    p.flag("bindir", default=os.path.dirname(sys.executable), help="where the console scripts are (default: beside python)")
    p.flag("only", default="", help="comma-separated subset of checks to run")
    p.flag("dockerSocket", default="/run/docker.sock",
           help="NS_DOCKER: Docker Engine API socket; real containers when a dockerd answers there, "
                "else a docker-style bind-mounted namespace (default /run/docker.sock)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = [x.strip().upper() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in CHECK_NAMES]
    if unknown:
        print(f"xtcp2-selftest: error: unknown check {unknown[0]}; valid: {', '.join(CHECK_NAMES)}", file=sys.stderr)
        return 2
    if not args.metrics.startswith(("http://", "https://")):
        print(f"xtcp2-selftest: error: -metrics must be an http(s) URL, not {args.metrics!r}", file=sys.stderr)
        return 2
    opts = Options(pid=args.pid, unit=args.unit, metrics_url=args.metrics, grpc_target=args.grpcTarget,
                   grpc_port=args.grpcPort, wait=args.wait, bindir=args.bindir, docker_socket=args.dockerSocket)
    return 0 if run_all(opts, only) else 1


if __name__ == "__main__":
    sys.exit(main())

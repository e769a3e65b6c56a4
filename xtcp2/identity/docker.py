"""Container id -> name, image, runtime and Kubernetes pod, from the Docker Engine API.

Talks HTTP/1.1 over the engine's unix socket (-dockerSocket; podman's docker-compatible
socket answers the same requests). Two background threads keep a cache by container
id: one lists all containers, then follows the /events stream (start adds a container,
destroy drops it) and lists again whenever the stream is re-established; the other
looks up ids a record asked for that the cache does not hold yet. Readers only read
the cache: a poll never waits on the API. Requests have bounded timeouts; every
failure is counted in xtcp2_identity_errors_total{source="docker"} and retried with
backoff, and records carry the container id alone until the name is known.

Kubernetes pod name, namespace and container name come from the io.kubernetes.*
labels that kubelet's docker integration (cri-dockerd) sets.
"""
from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

from . import stats

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/docker.sock"   # upstream's default; /var/run is a link to /run
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_CONTAINER = "io.kubernetes.container.name"
MAX_REPLY = 64 << 20          # a list of thousands of containers is a few MB
MAX_EVENT_LINE = 1 << 20


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    runtime: str
    pod_name: str = ""
    pod_namespace: str = ""
    pod_container: str = ""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class DockerError(Exception):
    pass


def _info(obj: dict, runtime: str) -> ContainerInfo | None:
    """ContainerInfo from a list entry, an inspect reply or an event's Actor."""
    if not isinstance(obj, dict):
        return None
    cid = obj.get("Id") or obj.get("ID") or obj.get("id")
    if not isinstance(cid, str) or len(cid) != 64:
        return None
    if "Names" in obj:                          # GET /containers/json
        names = obj.get("Names") or [""]
        name, image, labels = names[0], obj.get("Image", ""), obj.get("Labels") or {}
    elif "Config" in obj:                       # GET /containers/{id}/json
        cfg = obj.get("Config") or {}
        name, image, labels = obj.get("Name", ""), cfg.get("Image", ""), cfg.get("Labels") or {}
    else:                                       # event Actor: labels are among the attributes
        attrs = obj.get("Attributes") or {}
        name, image, labels = attrs.get("name", ""), attrs.get("image", ""), attrs
    if not isinstance(labels, dict):
        labels = {}
    s = lambda v: v if isinstance(v, str) else ""  # noqa: E731
    return ContainerInfo(cid, s(name).lstrip("/"), s(image), runtime,
                         s(labels.get(POD_NAME)), s(labels.get(POD_NAMESPACE)), s(labels.get(POD_CONTAINER)))


class DockerMetadata:
    """Cache of container metadata kept fresh from the Docker Engine API."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 2.0, retry_max: float = 5.0,
                 negative_ttl: float = 30.0) -> None:
        self.socket_path = socket_path or DEFAULT_SOCKET
        self.timeout = timeout
        self.retry_max = retry_max
        self.negative_ttl = negative_ttl
        self.runtime = "docker"
        self.cache: dict[str, ContainerInfo] = {}
        self.connected = False
        self._unknown: dict[str, float] = {}       # ids the engine does not know -> when asked
        self._asked: set[str] = set()
        self._misses: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stream: _UnixConnection | None = None
        self._threads: list[threading.Thread] = []
        self.generation = 0   # bumps on every cache change: join.py rebuilds its tables then

    # ---- reading (any thread, never blocks) ----------------------------------------------
    def get(self, cid: str) -> ContainerInfo | None:
        info = self.cache.get(cid)
        if info is None and cid not in self._asked:
            t = self._unknown.get(cid)
            if t is None or time.monotonic() - t > self.negative_ttl:
                self._asked.add(cid)
                self._misses.put(cid)
        return info

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "DockerMetadata":
        for target, name in ((self._follow, "docker-events"), (self._lookups, "docker-lookup")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        self._misses.put(None)
        conn = self._stream
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)   # wakes the thread blocked on the stream
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=self.timeout + 1)

    # ---- API -------------------------------------------------------------------------------
    def _request(self, path: str, kind: str):
        stats.DOCKER_REQUESTS.labels(kind).inc()
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read(MAX_REPLY + 1)
        finally:
            conn.close()
        if len(body) > MAX_REPLY:
            raise DockerError(f"{kind}: reply larger than {MAX_REPLY} bytes")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise DockerError(f"{kind}: HTTP {resp.status}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise DockerError(f"{kind}: bad JSON: {e}") from None

    def _detect_runtime(self) -> None:
        v = self._request("/version", "version") or {}
        comps = v.get("Components") if isinstance(v, dict) else None
        names = " ".join(c.get("Name", "") for c in comps if isinstance(c, dict)) if isinstance(comps, list) else ""
        self.runtime = "podman" if "podman" in names.lower() else "docker"

    def _list(self) -> None:
        items = self._request("/containers/json?all=1", "list")
        if not isinstance(items, list):
            raise DockerError("list: not a JSON array")
        fresh = {}
        for obj in items:
            info = _info(obj, self.runtime)
            if info is not None:
                fresh[info.id] = info
        self.cache = fresh
        self._unknown.clear()
        self._asked.clear()
        self.generation += 1
        stats.CACHE.labels("containers").set(len(fresh))

    def refresh(self) -> dict[str, ContainerInfo]:
        """List every container now, on the calling thread (tools; the daemon uses start())."""
        self._detect_runtime()
        self._list()
        return self.cache

    def inspect(self, cid: str) -> ContainerInfo | None:
        obj = self._request(f"/containers/{urllib.parse.quote(cid, safe='')}/json", "inspect")
        return None if obj is None else _info(obj, self.runtime)

    def _put(self, info: ContainerInfo) -> None:
        self.cache = {**self.cache, info.id: info}   # copy-on-write: readers never see a half update
        self._unknown.pop(info.id, None)
        self.generation += 1
        stats.CACHE.labels("containers").set(len(self.cache))

    def _drop(self, cid: str) -> None:
        if cid in self.cache:
            self.cache = {k: v for k, v in self.cache.items() if k != cid}
            self.generation += 1
            stats.CACHE.labels("containers").set(len(self.cache))
        self._asked.discard(cid)

    # ---- threads ---------------------------------------------------------------------------
    def _fail(self, what: str, e: BaseException, delay: float) -> float:
        stats.ERRORS.labels("docker").inc()
        if self.connected or delay <= 1.0:
            log.warning("docker API at %s: %s failed: %s; container names wait for it (retry in %.0fs)",
                        self.socket_path, what, e, delay)
        self.connected = False
        self._stop.wait(delay)
        return min(self.retry_max, delay * 2)

    def _follow(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._detect_runtime()
                conn = _UnixConnection(self.socket_path, self.timeout)
                filters = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["start", "destroy"]}))
                conn.request("GET", f"/events?filters={filters}", headers={"Host": "docker"})
                resp = conn.getresponse()
                if resp.status != 200:
                    conn.close()
                    raise DockerError(f"events: HTTP {resp.status}")
                # listed after subscribing: nothing started in between is missed
                self._list()
                if not self.connected:
                    log.info("docker API at %s: %d containers known (%s)", self.socket_path, len(self.cache),
                             self.runtime)
                self.connected, delay = True, 0.5
                conn.sock.settimeout(None)   # events arrive whenever they happen
                self._stream = conn
                try:
                    self._read_events(resp)
                finally:
                    self._stream = None
                    conn.close()
                if not self._stop.is_set():
                    raise DockerError("events stream ended")
            except (OSError, http.client.HTTPException, DockerError, ValueError) as e:
                if self._stop.is_set():
                    return
                delay = self._fail("events", e, delay)

    def _read_events(self, resp) -> None:
        while not self._stop.is_set():
            line = resp.readline(MAX_EVENT_LINE)
            if not line:
                return
            try:
                ev = json.loads(line)
            except ValueError:
                stats.ERRORS.labels("docker").inc()
                continue
            if not isinstance(ev, dict):
                continue
            action = ev.get("Action") or ev.get("status") or ""
            actor = ev.get("Actor") or {}
            stats.DOCKER_EVENTS.labels(action if action in ("start", "destroy") else "other").inc()
            if action == "start":
                info = _info(actor, self.runtime)
                if info is not None:
                    self._put(info)
            elif action == "destroy":
                cid = actor.get("ID") if isinstance(actor, dict) else None
                if isinstance(cid, str):
                    self._drop(cid)

    def _lookups(self) -> None:
        while not self._stop.is_set():
            cid = self._misses.get()
            if cid is None:
                return
            if cid in self.cache:
                self._asked.discard(cid)
                continue
            try:
                info = self.inspect(cid)
            except (OSError, http.client.HTTPException, DockerError, ValueError) as e:
                stats.ERRORS.labels("docker").inc()
                log.debug("docker inspect %s: %s", cid[:12], e)
                self._unknown[cid] = time.monotonic()   # retried after negative_ttl, or on relist
                self._asked.discard(cid)
                continue
            if info is None:   # the engine does not know it (another runtime's container)
                self._unknown[cid] = time.monotonic()
            else:
                self._put(info)
            self._asked.discard(cid)

"""-webConfigFile: TLS and basic auth for the metrics listener, in the Prometheus
exporter-toolkit format (the `--web.config.file` of node_exporter and Prometheus), so
one file serves both and the usual scrape configs work unchanged:

    tls_server_config:
      cert_file: server.pem          # relative paths: from the file's own directory
      key_file: server.key           # must not be readable by others
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
      client_ca_file: ca.pem
      client_allowed_sans: [prometheus.example]     # optional
      min_version: TLS12             # TLS10..TLS13; max_version too
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...          # bcrypt hashes (htpasswd -nbBC 10 USER PASS)

What the toolkit accepts and xtcp2 cannot honour (cipher_suites, curve_preferences,
inline cert/key, rate_limit) is refused with one line rather than silently ignored.
The file and the files it names are re-read when one of them changes (certificate
rotation needs no restart); a change that does not load keeps the previous setup and
is logged and counted.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import ssl
import stat
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import Counter

from ..errors import Xtcp2Error

log = logging.getLogger(__name__)

MAX_FILE = 1 << 20
CLIENT_AUTH = ("NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# the Go toolkit's names for what Python's ssl cannot do (a client certificate requested
# but never checked against a CA): refused, there is no safe equivalent
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# the toolkit's allow-list of response headers
HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection",
           "Content-Security-Policy")
BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
# a hash of the empty password: unknown users cost one bcrypt check like known ones
_DUMMY_HASH = b"$2b$10$.IWmPxvkWfc2DmRXsFMje.Ms7MbbgRbTL2qEl8TusT2mC.h4JEAQq"
RELOAD_CHECK_S = 1.0
AUTH_CACHE = 128

RELOADS = Counter("xtcp2_metrics_web_config_reloads_total",
                  "Re-reads of -webConfigFile after it or a file it names changed", ["result"])
for _r in ("success", "failure"):
    RELOADS.labels(_r)


class WebConfigError(Xtcp2Error):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"-webConfigFile {path}: {message}")


@dataclass
class Tls:
    cert_file: str
    key_file: str
    client_auth: str = "NoClientCert"
    client_ca_file: str = ""
    allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3

    @property
    def client_cert_required(self) -> bool:
        return self.client_auth == "RequireAndVerifyClientCert"

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass
class WebConfig:
    path: str
    tls: Tls | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    context: ssl.SSLContext | None = None

    @property
    def auth(self) -> bool:
        return bool(self.users)


def _read(path: str, what: str, owner: str, secret: bool = False) -> bytes:
    """A regular file that nobody but root can change (and, for a key, read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise WebConfigError(owner, f"cannot read {what} {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WebConfigError(owner, f"{what} {path} is not a regular file")
        if st.st_mode & 0o022:
            raise WebConfigError(owner, f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
        if secret and st.st_mode & 0o077:
            raise WebConfigError(owner, f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                                        "chmod 0600 it")
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise WebConfigError(owner, f"{what} {path} is larger than {MAX_FILE} bytes")
    return data


def _mapping(value, where: str, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(path, f"{where} must be a mapping")
    return value


def _string(value, where: str, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or any(ord(c) < 32 for c in value):
        raise WebConfigError(path, f"{where} must be a string")
    return value


def _unknown(section: dict, known: tuple[str, ...], where: str, path: str, unsupported: tuple[str, ...] = ()) -> None:
    for key in section:
        if key in unsupported:
            raise WebConfigError(path, f"{where}{key}: not supported by xtcp2 (leave it out)")
        if key not in known:
            raise WebConfigError(path, f"{where}{key}: unknown key")


def parse(path: str) -> WebConfig:
    """The validated config in `path`, with its SSLContext built; WebConfigError (one line) if not."""
    import yaml

    text = _read(path, "file", path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WebConfigError(path, f"not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    doc = _mapping(doc, "the file", path)
    _unknown(doc, ("tls_server_config", "http_server_config", "basic_auth_users"), "", path, ("rate_limit",))
    base = os.path.dirname(os.path.abspath(path))
    cfg = WebConfig(path)

    tls = _mapping(doc.get("tls_server_config"), "tls_server_config", path)
    _unknown(tls, ("cert_file", "key_file", "client_auth_type", "client_ca_file", "client_allowed_sans",
                   "min_version", "max_version", "prefer_server_cipher_suites"), "tls_server_config.", path,
             ("cert", "key", "client_ca", "cipher_suites", "curve_preferences"))
    cert, key = (_string(tls.get(k), f"tls_server_config.{k}", path) for k in ("cert_file", "key_file"))
    auth = _string(tls.get("client_auth_type"), "tls_server_config.client_auth_type", path) or "NoClientCert"
    ca = _string(tls.get("client_ca_file"), "tls_server_config.client_ca_file", path)
    if cert or key:
        if not (cert and key):
            raise WebConfigError(path, "tls_server_config: cert_file and key_file go together")
        if auth in UNVERIFIED_CLIENT_AUTH:
            raise WebConfigError(path, f"client_auth_type {auth}: client certificates that are not verified "
                                       "are not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
        if auth not in CLIENT_AUTH:
            raise WebConfigError(path, f"client_auth_type {auth!r}: expected one of {', '.join(CLIENT_AUTH)}")
        if auth != "NoClientCert" and not ca:
            raise WebConfigError(path, f"client_auth_type {auth} needs client_ca_file")
        if ca and auth == "NoClientCert":
            raise WebConfigError(path, "client_ca_file is set without a client_auth_type")
        sans = tls.get("client_allowed_sans") or []
        if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
            raise WebConfigError(path, "tls_server_config.client_allowed_sans must be a list of strings")
        if sans and auth == "NoClientCert":
            raise WebConfigError(path, "client_allowed_sans needs a client_auth_type that verifies certificates")
        versions = {}
        for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
            name = _string(tls.get(k), f"tls_server_config.{k}", path) or default
            if name not in TLS_VERSIONS:
                raise WebConfigError(path, f"{k} {name!r}: expected one of {', '.join(TLS_VERSIONS)}")
            versions[k] = TLS_VERSIONS[name]
        if versions["min_version"] > versions["max_version"]:
            raise WebConfigError(path, "min_version is above max_version")
        cfg.tls = Tls(os.path.join(base, cert), os.path.join(base, key), auth,
                      os.path.join(base, ca) if ca else "", tuple(sans), **versions)
        cfg.context = _context(cfg.tls, path)
    elif auth != "NoClientCert" or ca:
        raise WebConfigError(path, "client certificates need TLS: set tls_server_config.cert_file and key_file")

    http = _mapping(doc.get("http_server_config"), "http_server_config", path)
    _unknown(http, ("headers", "http2"), "http_server_config.", path)
    headers = []
    for name, value in _mapping(http.get("headers"), "http_server_config.headers", path).items():
        match = [h for h in HEADERS if h.lower() == str(name).lower()]
        if not match:
            raise WebConfigError(path, f"http_server_config.headers: {name} cannot be set (allowed: {', '.join(HEADERS)})")
        headers.append((match[0], _string(value, f"http_server_config.headers.{name}", path)))
    cfg.headers = tuple(headers)

    for user, hashed in _mapping(doc.get("basic_auth_users"), "basic_auth_users", path).items():
        if not isinstance(user, str) or not user or ":" in user or any(ord(c) < 32 for c in user):
            raise WebConfigError(path, f"basic_auth_users: bad user name {user!r}")
        if not isinstance(hashed, str) or not BCRYPT.match(hashed):
            raise WebConfigError(path, f"basic_auth_users.{user}: not a bcrypt hash ($2y$...; htpasswd -nbBC 10 USER PASS)")
        cfg.users[user] = hashed.encode()
    if cfg.users:
        try:
            import bcrypt  # noqa: F401 - a missing package must show at start, not at the first scrape
        except ImportError:
            raise WebConfigError(path, "basic_auth_users needs the bcrypt package (pip install bcrypt)") from None
    return cfg


def _context(tls: Tls, path: str) -> ssl.SSLContext:
    for f, what, secret in ((tls.cert_file, "cert_file", False), (tls.key_file, "key_file", True),
                            (tls.client_ca_file, "client_ca_file", False)):
        if f:
            _read(f, what, path, secret)  # the ownership and mode checks
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = tls.min_version, tls.max_version
    ctx.set_alpn_protocols(["http/1.1"])   # one request per connection; never h2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise WebConfigError(path, f"unusable certificate, key or CA: {getattr(e, 'reason', None) or e}") from None
    # A client certificate is always verified when presented, and only required for the
    # metrics and the profile: /healthz and /readyz answer without one, so that probes
    # (`xtcp2 -healthcheck`) work. RequireAndVerifyClientCert is enforced per request.
    ctx.verify_mode = ssl.CERT_OPTIONAL if tls.client_auth != "NoClientCert" else ssl.CERT_NONE
    return ctx


def client_identity_ok(tls: Tls, peercert: dict | None) -> bool:
    """The request may proceed as far as client certificates go."""
    if tls.client_auth == "NoClientCert":
        return True
    if not peercert:
        return not tls.client_cert_required
    if not tls.allowed_sans:
        return True
    names = {v for _, v in peercert.get("subjectAltName", ())}
    return bool(names & set(tls.allowed_sans))


class WebConfigSource:
    """The current WebConfig, re-read when the file or one it names changes (checked at
    most once a second, by the thread that asks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.config = parse(path)
        self._stamp = self._stamps()
        self._checked = time.monotonic()

    def _stamps(self) -> tuple:
        out = []
        for f in (self.path, *(self.config.tls.files() if self.config.tls else ())):
            try:
                st = os.stat(f)
                out.append((f, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((f, None))
        return tuple(out)

    def current(self) -> WebConfig:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return self.config
        self._checked = now
        stamp = self._stamps()
        if stamp == self._stamp:
            return self.config
        self._stamp = stamp
        try:
            self.config = parse(self.path)
        except Xtcp2Error as e:
            RELOADS.labels("failure").inc()
            log.warning("metrics: %s; keeping the previous TLS and auth setup", e)
            return self.config
        self._stamp = self._stamps()
        RELOADS.labels("success").inc()
        log.info("metrics: -webConfigFile %s reloaded", self.path)
        return self.config


class BasicAuth:
    """Checks `Authorization: Basic` against the users' bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds), so checks run on a worker thread,
    never on the listener's; a verified user:password is cached (by its SHA-256, bounded)
    so a scraper pays once, as in the toolkit.
    """

    def __init__(self) -> None:
        self._ok: dict[bytes, tuple[bytes, ...]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def credentials(header: str | None) -> tuple[str, str] | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    @staticmethod
    def _key(users: dict[str, bytes], user: str, password: str) -> bytes:
        return hashlib.sha256(b"\0".join((user.encode(), password.encode(), users.get(user, b"")))).digest()

    def cached(self, users: dict[str, bytes], creds: tuple[str, str]) -> bool:
        with self._lock:
            return self._key(users, *creds) in self._ok

    def check(self, users: dict[str, bytes], creds: tuple[str, str]) -> bool:
        """The bcrypt check (slow: call from a worker thread)."""
        import bcrypt

        user, password = creds
        hashed = users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) >= AUTH_CACHE:
                    self._ok.pop(next(iter(self._ok)))
                self._ok[self._key(users, user, password)] = ()
        return ok

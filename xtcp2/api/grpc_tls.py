"""TLS for the gRPC API: server credentials from -grpcTlsCert/-grpcTlsKey, client
certificates required with -grpcTlsClientCa (mTLS), and the matching client side for
xtcp2client. Authorization is unchanged (grpc_auth.py): TLS protects the bearer token
and the records in transit; a client certificate proves the caller holds a key the CA
signed, and the token rule for non-loopback listeners still applies on top of it."""
from __future__ import annotations

import os
import stat

import grpc

from ..config import Config
from ..errors import Xtcp2Error

MAX_PEM = 1 << 20


def _read(path: str, what: str, secret: bool = False) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise Xtcp2Error(f"gRPC TLS: cannot read {what} {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Xtcp2Error(f"gRPC TLS: {what} {path} is not a regular file")
        if secret and st.st_mode & 0o077:
            raise Xtcp2Error(f"gRPC TLS: {what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                             "chmod 0600 it")
        data = f.read(MAX_PEM + 1)
    if len(data) > MAX_PEM or b"-----BEGIN " not in data:
        raise Xtcp2Error(f"gRPC TLS: {what} {path} is not a PEM file")
    return data


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """None for a plain listener; Xtcp2Error (one line) for a half or unreadable setup."""
    cert, key, ca = config.grpc_tls_cert, config.grpc_tls_key, config.grpc_tls_client_ca
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise Xtcp2Error("gRPC TLS: -grpcTlsCert and -grpcTlsKey go together"
                         + (" (-grpcTlsClientCa needs both)" if ca else ""))
    if config.grpc_listen.startswith("unix:"):
        raise Xtcp2Error("gRPC TLS: a unix socket listener is root-only already; TLS applies to TCP listeners")
    pair = [(_read(key, "-grpcTlsKey", secret=True), _read(cert, "-grpcTlsCert"))]
    roots = _read(ca, "-grpcTlsClientCa") if ca else None
    try:
        return grpc.ssl_server_credentials(pair, root_certificates=roots, require_client_auth=bool(roots))
    except Exception as e:  # noqa: BLE001 - grpc raises plain errors for bad PEM
        raise Xtcp2Error(f"gRPC TLS: unusable certificate or key: {e}") from None


def channel_credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    """For xtcp2client: trust `ca` (None = the system roots), present cert+key if given."""
    if bool(cert) != bool(key):
        raise Xtcp2Error("-tlsCert and -tlsKey go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "-tlsCa") if ca else None,
        private_key=_read(key, "-tlsKey") if key else None,
        certificate_chain=_read(cert, "-tlsCert") if cert else None)

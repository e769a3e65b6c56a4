"""Where a config set over gRPC may make the root daemon write or connect on this host.

A destination or capture path named on the command line is the operator's choice. One
that arrives through ConfigService is a request: if it is new (differs from the running
config) and names a local path - `file:`, `unix:`, `unixgram:`, `s3parquet:/dir`, or
`capture_path` - that path, with every symlink resolved, must lie inside -fileDestDir
(default /var/lib/xtcp2, the systemd unit's StateDirectory). That directory must belong
to root and be writable by nobody else, so nobody can swap a component for a symlink
between this check and the open; the file destination also opens with O_NOFOLLOW.
Network destinations (kafka, nats, udp, ...) are what the API is for and are not limited.
"""
from __future__ import annotations

import os
import stat

from ..config import Config
from ..errors import ConfigError


class PathDenied(ConfigError):
    """A path outside the allowed directory: PERMISSION_DENIED, nothing applied."""


def dest_local_path(dest: str) -> str | None:
    """The filesystem path a destination writes to or connects to, None for network ones."""
    scheme, _, address = dest.partition(":")
    where = address.partition("?")[0]
    if scheme in ("file", "unix", "unixgram"):
        return where
    if scheme == "s3parquet" and where and not where.startswith(("s3://", "http://", "https://")):
        return where
    return None


def _allowed_root(field: str, root: str) -> str:
    if not root or not os.path.isabs(root):
        raise PathDenied(field, "local paths cannot be set over gRPC (-fileDestDir is not an absolute directory)")
    try:
        st = os.stat(root)
    except OSError as e:
        raise PathDenied(field, f"-fileDestDir {root}: {e.strerror}; create it (root-owned, mode 0750) "
                                f"to allow file destinations over gRPC") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PathDenied(field, f"-fileDestDir {root} must be a directory owned by root and writable only by it")
    return os.path.realpath(root)


def confine(field: str, path: str, root: str) -> None:
    """Raise PathDenied unless `path`, resolved, is `root` or below it."""
    if not os.path.isabs(path):
        raise PathDenied(field, f"{path!r} is not an absolute path; over gRPC local paths must be inside -fileDestDir {root}")
    base = _allowed_root(field, root)
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError) as e:
        raise PathDenied(field, f"unusable path: {e}") from None
    if os.path.commonpath([real, base]) != base:
        shown = path if real == os.path.normpath(path) else f"{path} (resolves to {real})"
        raise PathDenied(field, f"{shown} is outside -fileDestDir {root}; over gRPC local paths must stay inside it")


def check_paths(new: Config, current: Config) -> None:
    """Refuse a changed local dest / capture_path outside current.file_dest_dir."""
    root = current.file_dest_dir
    if new.dest != current.dest:
        path = dest_local_path(new.dest)
        if path is not None:
            confine("dest", path, root)
    if new.capture_path and new.capture_path != current.capture_path:
        confine("capture_path", new.capture_path, root)

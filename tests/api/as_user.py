"""Run a Python gRPC client as another uid: load everything as root, then drop for good.

    python as_user.py UID GID [--path DIR] [--import MOD ...] (-m MODULE | SCRIPT) [ARGS ...]

The interpreter and the checkout may live where a local user cannot read them (pyenv
under /root, a CI clone in any folder). Loading the code first and then giving up
uid, gid and groups irrevocably (setresuid, as setpriv does) yields a process whose
sockets the kernel owns as UID, which is all the daemon's check can see, wherever the
files are. `-m MODULE` calls MODULE.main(ARGS); SCRIPT is run as __main__ and must be
readable by UID.
"""
from __future__ import annotations

import importlib
import os
import runpy
import sys

# Standard modules that grpc, argparse and the clients import only on first use: after
# the drop they could not be read from an interpreter tree that only root may enter.
for _name in ("concurrent.futures", "json", "threading", "time", "shutil", "gettext", "textwrap",
              "ipaddress", "signal", "socket", "selectors", "logging", "base64", "uuid", "locale",
              "encodings.idna", "encodings.ascii", "encodings.latin_1", "unicodedata", "stringprep"):
    importlib.import_module(_name)

import grpc
from google.protobuf import json_format  # noqa: F401


def main() -> None:
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    rest = sys.argv[3:]
    while rest and rest[0] in ("--path", "--import"):
        if rest[0] == "--path":
            sys.path.insert(0, rest[1])
        else:
            importlib.import_module(rest[1])
        rest = rest[2:]
    if rest[0] == "-m":
        module = importlib.import_module(rest[1])
        sys.argv = [rest[1], *rest[2:]]

        def run() -> int | None:
            return module.main(rest[2:])
    else:
        sys.argv = rest

        def run() -> None:
            runpy.run_path(rest[0], run_name="__main__")
    # a throwaway channel pulls in what grpc loads on first use
    grpc.insecure_channel("127.0.0.1:9").close()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        sys.exit(f"as_user: could not become {uid}:{gid}")
    sys.exit(run())


if __name__ == "__main__":
    main()

"""Certificates made by the test with the openssl binary: CAs and leaves signed by them."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: pathlib.Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


def make_leaf(d: pathlib.Path, ca: str, name: str, san: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


def make_pki(d: pathlib.Path) -> pathlib.Path:
    """ca and otherca; server (localhost, 127.0.0.1) and client (DNS:client) from ca; rogue
    (DNS:client) from otherca; other-server from otherca (for rotation)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_leaf(d, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "ca", "client", "DNS:client")
    make_leaf(d, "ca", "stranger", "DNS:stranger")
    make_leaf(d, "otherca", "rogue", "DNS:client")
    make_leaf(d, "otherca", "other-server", "DNS:localhost,IP:127.0.0.1")
    return d

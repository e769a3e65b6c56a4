#!/usr/bin/env python3
"""Regenerate the checked-in protobuf/gRPC Python code from proto/.

The generated modules live in xtcp2/gen/ and are committed, so installing xtcp2 needs
no protoc. tests/unit/test_proto_gen.py runs this into a temporary directory and checks
that the committed files are byte-identical, so proto/ and xtcp2/gen/ cannot drift.

protoc emits absolute imports named after the proto path ("from xtcp_config.v1 import
..."); they are rewritten to live under the xtcp2.gen package.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PKG = "xtcp2.gen"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main([
        "protoc", f"-I{PROTO_DIR}", f"-I{include}",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        *protos,
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    written = []
    # ship the .proto next to its generated code: tools (ClickHouse format schema) need it
    # in installs that have no repository checkout
    for rel in protos:
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((PROTO_DIR / rel).read_bytes())
    top_pkgs = {p.split("/")[0] for p in protos}
    for f in sorted(p for p in out_dir.rglob("*.py*") if p.suffix in (".py", ".pyi")):
        text = f.read_text()
        for top in top_pkgs:
            text = re.sub(rf"^from {top}(\.| )", rf"from {PKG}.{top}\1", text, flags=re.M)
        f.write_text(text)
        written.append(f)
    for d in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "xtcp2" / "gen")
    args = ap.parse_args()
    for f in generate(args.out):
        print(f.relative_to(args.out))


if __name__ == "__main__":
    sys.exit(main())

"""Build a Python gRPC client from upstream xtcp2's own .proto files (tests/fixtures/upstream_proto).

Upstream's protos import buf/validate and google/api annotations, which protoc cannot
resolve here; those imports and every custom option using them are removed. Nothing
else changes, so the generated client speaks exactly upstream's wire contract.

The upstream and our generated modules define the same proto symbols and cannot share
one descriptor pool, so the upstream client always runs in its own process
(tests/api/upstream_runner.py).
"""
from __future__ import annotations

import pathlib
import re

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "upstream_proto"
PROTOS = ("upstream_xtcp_config.proto", "upstream_xtcp_flat_record.proto")
UNRESOLVABLE_IMPORTS = ("buf/validate/validate.proto", "google/api/annotations.proto")


def _strip_comments(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _match(text: str, start: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket closing the one at `start`."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == '"':
            i = text.index('"', i + 1)
        elif c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_c}{close_c}")


def strip_proto(text: str) -> str:
    text = _strip_comments(text)
    for imp in UNRESOLVABLE_IMPORTS:
        text = text.replace(f'import "{imp}";', "")
    # option (custom.ext) = { ... };  and  option (custom.ext).x = value;
    while True:
        m = re.search(r"option\s*\(\s*(buf\.validate|google\.api)[^=]*=\s*", text)
        if not m:
            break
        end = m.end()
        if text[end] == "{":
            end = _match(text, end, "{", "}")
        else:
            end = text.index(";", end)
        end = re.match(r"\s*;?", text[end:]).end() + end
        text = text[:m.start()] + text[end:]
    # field options [ (buf.validate.field)... ]
    while True:
        m = re.search(r"\[\s*\(buf\.validate", text)
        if not m:
            break
        end = _match(text, m.start(), "[", "]")
        text = text[:m.start()] + text[end:]
    if "buf.validate" in text or "google.api" in text:
        raise ValueError("unstripped custom option left in upstream proto")
    return text


def generate(out_dir: pathlib.Path) -> pathlib.Path:
    """Write stripped protos and their generated _pb2/_pb2_grpc modules into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    src = out_dir / "proto"
    src.mkdir(parents=True, exist_ok=True)
    for name in PROTOS:
        (src / name).write_text(strip_proto((FIXTURES / name).read_text()))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *PROTOS])
    if rc != 0:
        raise RuntimeError(f"protoc failed on upstream protos ({rc})")
    return out_dir


def descriptor_set(out_file: pathlib.Path) -> bytes:
    """FileDescriptorSet of the stripped upstream protos (for schema comparison)."""
    import grpc_tools
    from grpc_tools import protoc

    src = out_file.parent / "desc_proto"
    src.mkdir(parents=True, exist_ok=True)
    for name in PROTOS:
        (src / name).write_text(strip_proto((FIXTURES / name).read_text()))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{src}", f"-I{include}", "--include_imports",
                      f"--descriptor_set_out={out_file}", *PROTOS])
    if rc != 0:
        raise RuntimeError(f"protoc failed on upstream protos ({rc})")
    return out_file.read_bytes()

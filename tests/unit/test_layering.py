"""The import rule of docs/architecture.md: layers import downwards only.

Every module's imports (all of them: top-level, inside functions, relative) are read
with ast and checked against LAYERS. A module may import its own group or a group
of a strictly lower rank; two groups of the same rank are independent of each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "xtcp2"

# rank -> groups (a group is a module or package; the longest matching name wins)
LAYERS: dict[int, tuple[str, ...]] = {
    # low: columns, kernel interfaces, record encoding, formats
    0: ("xtcp2", "xtcp2.errors", "xtcp2.values", "xtcp2.columns", "xtcp2.gen", "xtcp2.memory",
        "xtcp2.heartbeat", "xtcp2.logfmt", "xtcp2.prom_light"),
    1: ("xtcp2.argparse_go", "xtcp2.config_sources", "xtcp2.netlink", "xtcp2.ebpf", "xtcp2.records"),
    2: ("xtcp2.netns", "xtcp2.marshal"),
    # collect / sink (and what they are configured and counted with)
    3: ("xtcp2.metrics", "xtcp2.config", "xtcp2.tcp_metrics"),
    4: ("xtcp2.records.sink", "xtcp2.identity"),
    5: ("xtcp2.collect",),
    # modes / destinations / pipeline
    6: ("xtcp2.dest",),
    7: ("xtcp2.pipeline", "xtcp2.modes"),
    # daemon, api, cli, tools, ui
    8: ("xtcp2.daemon", "xtcp2.decode_cmd"),
    9: ("xtcp2.api", "xtcp2.ui"),
    10: ("xtcp2.cli", "xtcp2.tools"),
    11: ("xtcp2.__main__",),
}
RANK = {group: rank for rank, groups in LAYERS.items() for group in groups}

# Known upward imports, each with the issue that removes it. The test fails when one
# is gone, so this list only shrinks.
KNOWN = {
    ("xtcp2.config", "xtcp2.dest"): "issue 16, layering: break the config <-> dest cycle",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(name: str) -> bool:
    p = PKG.parent.joinpath(*name.split("."))
    return p.is_dir() or p.with_suffix(".py").exists()


def imports(mod: str, source: str, is_package: bool = False) -> set[str]:
    """Internal modules that module `mod` (text `source`) imports ("from pkg import mod" names mod)."""
    package = mod if is_package else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source, mod)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "xtcp2")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "xtcp2":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if exists(sub) else target)
    out.discard(mod)
    return out


def group(name: str) -> str | None:
    while name:
        if name in RANK:
            return name
        name = name.rpartition(".")[0]
    return None


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "gen" not in p.relative_to(PKG).parts)


def violations(mod: str, source: str, is_package: bool = False) -> tuple[list[str], set]:
    """(imports against the rule, KNOWN exceptions used) of one module."""
    bad, known = [], set()
    src_group = group(mod)
    for dst in sorted(imports(mod, source, is_package)):
        dst_group = group(dst)
        if dst_group == src_group or RANK[dst_group] < RANK[src_group]:
            continue
        if (src_group, dst_group) in KNOWN:
            known.add((src_group, dst_group))
            continue
        bad.append(f"{mod} (layer {RANK[src_group]}) imports {dst} (layer {RANK[dst_group]})")
    return bad, known


def test_every_module_has_a_layer():
    # xtcp2 itself is the root group: a new top-level module must be placed on purpose
    top_level = {module_name(p) for p in PKG.glob("*.py")} - {"xtcp2"}
    assert not sorted(m for m in top_level if m not in RANK), \
        "place these modules in LAYERS (tests/unit/test_layering.py) and docs/architecture.md"
    packages = {module_name(p) for p in PKG.glob("*/__init__.py")}
    assert not sorted(p for p in packages if p not in RANK), "place these packages in LAYERS"


def test_layers_import_downwards_only():
    bad, seen_known = [], set()
    for path in modules():
        b, k = violations(module_name(path), path.read_text(), path.name == "__init__.py")
        bad += b
        seen_known |= k
    assert not bad, "imports against the layer rule:\n" + "\n".join(bad)
    stale = set(KNOWN) - seen_known
    assert not stale, f"no longer imported, remove from KNOWN: {sorted(stale)}"


def test_the_rule_catches_upward_and_late_imports():
    """The checker can fail: the decoder importing the sink inside a function, relatively,
    and records importing the netlink decoder (what records/encode.py once did)."""
    decode = (PKG / "netlink" / "decode.py").read_text()
    bad, _ = violations("xtcp2.netlink.decode", decode + "\n\ndef _late():\n    from ..records import sink\n")
    assert bad == ["xtcp2.netlink.decode (layer 1) imports xtcp2.records.sink (layer 4)"]
    bad, _ = violations("xtcp2.records.encode", "from ..netlink.decode import decode_messages\n")
    assert bad == ["xtcp2.records.encode (layer 1) imports xtcp2.netlink.decode (layer 1)"]
    assert violations("xtcp2.records.encode", "from ..columns import BytesColumn\n") == ([], set())

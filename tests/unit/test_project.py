"""The project's own promises: README commands, CI, generated code in sync."""
import filecmp
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip()]


def test_readme_starts_with_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert text.index("```sh") < 40, "the set-up commands must open the README"
    cmds = readme_commands()
    assert len(cmds) == 2
    assert cmds[0].startswith("./scripts/install.sh ") and "xtcp2" in cmds[0]
    assert cmds[1].startswith("./scripts/install.sh --test")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "apt-get update" in "\n".join(ci[: ci.index(readme_commands()[1])])
    assert readme_commands()[1] in ci


def test_generated_protobuf_code_matches_proto_files(tmp_path):
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(out)],
                   check=True, capture_output=True)
    committed = ROOT / "xtcp2" / "gen"
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh, "generator produced nothing"
    for rel in fresh:
        assert (committed / rel).exists(), f"{rel} not committed"
        assert filecmp.cmp(out / rel, committed / rel, shallow=False), f"{rel} differs: run scripts/gen_proto.py"


def test_default_config_needs_no_server():
    from xtcp2.config import Config
    cfg = Config().validate()
    assert cfg.dest == "null" and cfg.prom_listen.startswith("127.0.0.1") and cfg.grpc_listen == "127.0.0.1"

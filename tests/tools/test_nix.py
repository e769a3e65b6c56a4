"""Offline Nix verification: every .nix file parses; what needs no nixpkgs is evaluated and
checked against the Python side (daemon CLI parser, microVM runner flavors)."""
import glob
import json
import os
import shutil
import subprocess

import pytest

from xtcp2 import cli
from xtcp2.tools import microvm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NIX_FILES = sorted([os.path.join(ROOT, "flake.nix")] + glob.glob(os.path.join(ROOT, "nix", "**", "*.nix"), recursive=True))
pytestmark = pytest.mark.skipif(not shutil.which("nix-instantiate"), reason="nix-bin not installed (scripts/apt-test.txt)")


def nix_eval(expr: str):
    r = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_expected_files_exist():
    rel = {os.path.relpath(p, ROOT) for p in NIX_FILES}
    assert {"flake.nix", "nix/package.nix", "nix/modules/xtcp2-service.nix", "nix/microvms/mkVm.nix",
            "nix/microvms/default.nix", "nix/flavors.nix"} <= rel


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_parses(path):
    r = subprocess.run(["nix-instantiate", "--parse", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_parse_rejects_broken_nix(tmp_path):
    bad = tmp_path / "bad.nix"
    bad.write_text("{ a = 1; b = ; }")
    assert subprocess.run(["nix-instantiate", "--parse", str(bad)], capture_output=True).returncode != 0


def test_module_default_flags_are_accepted_by_the_daemon_cli():
    argv = nix_eval("(import ./nix/lib/flags.nix).toArgs (import ./nix/lib/defaults.nix)")
    args = cli.build_parser().parse_args(argv)
    cfg = cli.config_from_args(args)
    assert cfg.poll_frequency == 10.0 and cfg.poll_timeout == 5.0
    assert cfg.reconcile_frequency == 6 * 3600.0 and cfg.reconcile_before_poll is True
    assert cfg.prom_listen == "127.0.0.1:9088" and cfg.grpc_port == 8889 and cfg.dest == "null"
    # the module's defaults are the daemon's defaults
    default = cli.Config()
    assert (cfg.netlinkers, cfg.packet_size, cfg.modulus, cfg.envelope_flush_threshold_rows,
            cfg.envelope_flush_threshold_bytes, cfg.marshal_to) == (
        default.netlinkers, default.packet_size, default.modulus, default.envelope_flush_threshold_rows,
        default.envelope_flush_threshold_bytes, default.marshal_to)
    assert (cfg.enrich_nic_enable, cfg.enrich_lldp_enable, cfg.lldpd_socket_path, cfg.uplink_count,
            cfg.uplink_interfaces) == (default.enrich_nic_enable, default.enrich_lldp_enable,
                                       default.lldpd_socket_path, default.uplink_count, default.uplink_interfaces)


def test_flag_rendering_of_bools_and_nulls():
    assert nix_eval('(import ./nix/lib/flags.nix).toArgs { a = true; b = false; c = null; d = 3; }') == [
        "-a", "true", "-b", "false", "-d", "3"]


def test_flavors_match_the_debian_runner():
    flavors = nix_eval("import ./nix/flavors.nix")
    assert set(flavors) == set(microvm.FLAVORS)
    for name, f in flavors.items():
        assert microvm.RESULT_SENTINEL[name].pattern.startswith(f["sentinel"] + "_")
        argv = nix_eval(f'(import ./nix/lib/flags.nix).toArgs (import ./nix/flavors.nix).{name}.daemonFlags')
        cli.config_from_args(cli.build_parser().parse_args(argv))  # valid daemon flags


def test_flavor_details_match_the_debian_runner():
    from xtcp2.tools.microvm_clickpipe import ClickPipe
    flavors = nix_eval("import ./nix/flavors.nix")
    assert {n: f["mem"] for n, f in flavors.items()} == microvm.FLAVOR_MEM
    assert flavors["clickhouse-pipeline"]["daemonFlags"]["dest"] == ClickPipe("/bin").dest
    assert flavors["lifecycle-coverage"]["coverDir"] == microvm.build_parser().parse_args(["lifecycle"]).coverDir \
        or "XTCP2_COVERDIR" in os.environ


def test_microvm_set_has_one_vm_per_flavor_built_by_mkvm():
    # nixpkgs cannot be fetched here: stand in for nixosSystem only, to evaluate our own wiring.
    got = nix_eval("""
      let vms = import ./nix/microvms/default.nix {
            nixpkgs = { lib.nixosSystem = args: args; };
            microvm = { nixosModules.microvm = "microvm-module"; };
            xtcp2Module = "xtcp2-module"; xtcp2Package = "xtcp2-package"; };
      in builtins.mapAttrs (n: v: { system = v.system; nmodules = builtins.length v.modules;
                                     first = builtins.elemAt v.modules 0; }) vms""")
    assert set(got) == {f"microvm-x86_64-{n}" for n in microvm.FLAVORS}
    for v in got.values():
        assert v == {"system": "x86_64-linux", "nmodules": 4, "first": "microvm-module"}


def test_flake_inputs_and_outputs_agree():
    got = nix_eval("let f = import ./flake.nix; in { i = builtins.attrNames f.inputs; "
                   "a = builtins.attrNames (builtins.functionArgs f.outputs); }")
    assert sorted(got["a"]) == sorted(["self"] + got["i"])

"""The lifecycle-coverage microVM flavor: the lifecycle self-test with the daemon and the
self-test measured by coverage.py, merged and reported on the host.

Upstream builds xtcp2 with `-cover`, lets GOCOVERDIR fill during the self-test and dumps
it over the console. Here the guest driver, which runs the self-test in-process, starts
coverage in itself and starts the daemon with COVERAGE_PROCESS_START, which coverage's
subprocess hook (the a1_coverage.pth it installs) acts on. The -help probes and the tools
the checks run are not measured: a dozen more traced interpreter start-ups would more
than double the run under emulation. Each process writes a parallel data file on the
guest's tmpfs; at the end they are copied into the one writable 9p share (the host's
-coverDir), where the runner combines them and writes the reports.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

# Generated protobuf modules: measured upstream neither (coverage-merge.nix skips gen/).
OMIT = ["*/xtcp2/gen/*"]
LOCAL_DIR = "/tmp/xtcp2cov-guest"
REPORT_TXT = "coverage-report.txt"
REPORT_JSON = "coverage.json"
# Modules only the daemon runs and only the self-test runs: data for both proves that
# both processes were measured.
DAEMON_MODULE = os.path.join("xtcp2", "daemon.py")
SELFTEST_MODULE = os.path.join("xtcp2", "tools", "selftest.py")


class CoverageError(Exception):
    """A one-line reason coverage could not be measured or reported."""


def rc_text(data_file: str) -> str:
    # module-not-measured: the guest driver imported xtcp2 before it could start measuring
    return (f"[run]\ndata_file = {data_file}\nparallel = true\nsource_pkgs = xtcp2\n"
            f"disable_warnings = module-not-measured\n"
            f"omit =\n" + "".join(f"    {o}\n" for o in OMIT))


def clear_share(share: str) -> int:
    """Remove an earlier run's data and reports from the share (host side, before boot)."""
    n = 0
    for path in glob.glob(os.path.join(share, ".coverage*")) + [os.path.join(share, REPORT_TXT),
                                                                 os.path.join(share, REPORT_JSON)]:
        if os.path.isfile(path):
            os.unlink(path)
            n += 1
    return n


class GuestCoverage:
    """Inside the guest: measure this process and, through the environment, its children."""

    def __init__(self, share: str, local: str = LOCAL_DIR) -> None:
        self.share = share
        self.local = local
        self.cov = None
        self.daemon_env: dict[str, str] | None = None

    def start(self) -> None:
        try:
            import coverage
        except ImportError:
            raise CoverageError("coverage is not installed in the venv (pip install 'xtcp2[test]')") from None
        os.makedirs(self.local, exist_ok=True)
        rc = os.path.join(self.local, "coveragerc")
        with open(rc, "w") as f:
            f.write(rc_text(os.path.join(self.local, ".coverage")))
        self.daemon_env = {**os.environ, "COVERAGE_PROCESS_START": rc}
        self.cov = coverage.Coverage(config_file=rc)
        self.cov.start()

    def finish(self, daemon_pid: int) -> bool:
        """Stop measuring, copy every process's data file to the share, say what was copied."""
        if self.cov is None:
            return False
        self.cov.stop()
        self.cov.save()
        files = sorted(glob.glob(os.path.join(self.local, ".coverage.*")))
        if not os.path.ismount(self.share):
            print(f"XTCP2_COVERAGE_DUMP_EMPTY ({self.share} is not the host's share)", flush=True)
            return False
        if not files:
            print(f"XTCP2_COVERAGE_DUMP_EMPTY (no data files in {self.local})", flush=True)
            return False
        size = 0
        for path in files:
            shutil.copyfile(path, os.path.join(self.share, os.path.basename(path)))
            size += os.path.getsize(path)
        # parallel data files are named .coverage.<host>.pid<pid>.<random> (older: .<pid>.)
        daemon = any(re.search(rf"\.(?:pid)?{daemon_pid}\.", os.path.basename(p)) for p in files)
        print(f"XTCP2_COVERAGE_DATA files={len(files)} bytes={size} daemon={'yes' if daemon else 'no'} "
              f"dir={self.share}", flush=True)
        if not daemon:
            print(f"XTCP2_COVERAGE_DUMP_EMPTY (no data file from the daemon, pid {daemon_pid}: is coverage's "
                  f"subprocess hook a1_coverage.pth in {sys.prefix}?)", flush=True)
        return daemon and len(files) >= 2


def combine_and_report(share: str, out=sys.stdout) -> bool:
    """Host side: merge the guest's data files into share/.coverage and write the text and
    JSON reports next to it. True when the daemon and the self-test both have data."""
    try:
        import coverage
    except ImportError:
        print("XTCP2_COVERAGE_REPORT_FAIL coverage is not installed (pip install 'xtcp2[test]')", file=out, flush=True)
        return False
    inputs = glob.glob(os.path.join(share, ".coverage.*"))
    print(f"XTCP2_COVERAGE_COMBINED data_files={len(inputs)} dir={share}", file=out, flush=True)
    if not inputs:
        print("XTCP2_COVERAGE_REPORT_FAIL no data files from the guest", file=out, flush=True)
        return False
    cov = coverage.Coverage(data_file=os.path.join(share, ".coverage"), config_file=False, omit=OMIT)
    try:
        cov.combine([share], strict=True)
        cov.save()
        txt, js = os.path.join(share, REPORT_TXT), os.path.join(share, REPORT_JSON)
        with open(txt, "w") as f:
            total = cov.report(file=f, ignore_errors=True)
        cov.json_report(outfile=js, ignore_errors=True)
    except coverage.exceptions.CoverageException as e:
        print(f"XTCP2_COVERAGE_REPORT_FAIL {e}", file=out, flush=True)
        return False
    with open(js) as f:
        totals = json.load(f)["totals"]
    data = cov.get_data()
    executed = {p: len(data.lines(p) or []) for p in data.measured_files()}

    def lines_of(rel: str) -> int:
        return max((n for p, n in executed.items() if p.endswith(os.sep + rel)), default=0)

    daemon_lines, selftest_lines = lines_of(DAEMON_MODULE), lines_of(SELFTEST_MODULE)
    print(f"XTCP2_COVERAGE_TOTAL pct={total:.1f} statements={totals['num_statements']} "
          f"covered={totals['covered_lines']} files={len(executed)} daemon_lines={daemon_lines} "
          f"selftest_lines={selftest_lines} report={txt} json={js}", file=out, flush=True)
    ok = daemon_lines > 0 and selftest_lines > 0 and total > 0
    print(f"XTCP2_COVERAGE_REPORT_{'PASS' if ok else 'FAIL'}", file=out, flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    """python -m xtcp2.tools.microvm_coverage DIR: merge and report a NixOS VM run's data."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m xtcp2.tools.microvm_coverage COVERDIR", file=sys.stderr)
        return 2
    if not os.path.isdir(args[0]):
        print(f"xtcp2.tools.microvm_coverage: error: {args[0]} is not a directory", file=sys.stderr)
        return 2
    return 0 if combine_and_report(args[0]) else 1


if __name__ == "__main__":
    sys.exit(main())

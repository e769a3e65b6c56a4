"""Start-up check of the privileges and kernel features a collection mode needs.

Reads the effective capability set (CapEff in /proc/self/status), not the uid: root
under a systemd unit or container with a reduced bounding set lacks what it lacks.
A missing hard requirement is one line saying what is missing, what it is for and how
to grant it; a missing optional one is a warning naming the degraded behaviour.

    python -m xtcp2.api.capabilities [poll|bpf|auto]   # exit 0 ok, 2 missing
"""
from __future__ import annotations

import os
import sys
from typing import NamedTuple

from ..errors import Xtcp2Error

CAP_NET_ADMIN = 12
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

CAP_NAMES = {
    CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_PTRACE: "CAP_SYS_PTRACE", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
    CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF",
}

BTF_PATH = "/sys/kernel/btf/vmlinux"
TRACEFS_PATHS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")


class CapabilityError(Xtcp2Error):
    """A hard requirement is missing; str() is the one-line message for the operator."""


class Missing(NamedTuple):
    what: str         # e.g. "CAP_NET_ADMIN" or "BTF (/sys/kernel/btf/vmlinux)"
    needed_for: str
    cap: str | None = None  # capability name, when granting a capability fixes it
    fix: str = ""           # how to fix it otherwise (a kernel feature)


class CapabilityReport:
    def __init__(self, mode: str, effective: set[int]) -> None:
        self.mode = mode
        self.effective = effective
        self.missing: list[Missing] = []
        self.warnings: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.missing

    def names(self) -> list[str]:
        return sorted(CAP_NAMES.get(c, f"cap{c}") for c in self.effective if c in CAP_NAMES)

    def message(self) -> str:
        """One line: what is missing, why, and how to grant it. Empty when ok."""
        if self.ok:
            return ""
        parts = "; ".join(f"{m.what} ({m.needed_for})" for m in self.missing)
        caps = [m.cap for m in self.missing if m.cap]
        fixes = []
        if caps:
            c = " ".join(caps)
            fixes.append(f"grant {c}, e.g. add it to systemd AmbientCapabilities= and CapabilityBoundingSet= "
                         f"(deploy/systemd/xtcp2.service), or run as root without dropping it")
        fixes += [m.fix for m in self.missing if m.fix]
        return f"--mode {self.mode} cannot start: missing {parts}; to fix: {'; '.join(fixes)}"


def effective_caps(status_path: str = "/proc/self/status") -> set[int]:
    """Capability numbers in the effective set of this process."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return {bit for bit in range(64) if mask >> bit & 1}
    raise Xtcp2Error(f"no CapEff line in {status_path}")


def _tracefs_mounted() -> bool:
    return any(os.path.isdir(p) for p in TRACEFS_PATHS)


def _poll_requirements(eff: set[int], report: CapabilityReport, hard: bool, own_netns_only: bool) -> None:
    def need(cap: int, why: str, degraded: str, is_hard: bool) -> None:
        if cap in eff:
            return
        if is_hard:
            report.missing.append(Missing(CAP_NAMES[cap], why, CAP_NAMES[cap]))
        else:
            report.warnings.append(f"{CAP_NAMES[cap]} missing: {degraded}")

    need(CAP_NET_ADMIN, "sock_diag detail: socket marks, class ids and complete extension data",
         "socket marks and class ids will be zero", hard)
    need(CAP_SYS_ADMIN, "setns into other network namespaces",
         "only the daemon's own network namespace is polled", hard and not own_netns_only)
    need(CAP_SYS_PTRACE, "reading other users' /proc/<pid>/ns/net",
         "namespaces held only by other users' processes are found only if bind-mounted under /run/netns",
         False)


def _bpf_requirements(eff: set[int], report: CapabilityReport, hard: bool) -> None:
    # Since Linux 5.8 CAP_SYS_ADMIN still implies both; older kernels know only CAP_SYS_ADMIN.
    def add(what: Missing, degraded: str) -> None:
        if hard:
            report.missing.append(what)
        else:
            report.warnings.append(f"{what.what} missing ({what.needed_for}): {degraded}")

    fallback = "--mode auto falls back to poll mode"
    if CAP_BPF not in eff and CAP_SYS_ADMIN not in eff:
        add(Missing("CAP_BPF", "loading BPF programs and maps", "CAP_BPF"), fallback)
    if CAP_PERFMON not in eff and CAP_SYS_ADMIN not in eff:
        add(Missing("CAP_PERFMON", "attaching tracepoint programs", "CAP_PERFMON"), fallback)
    if not os.path.exists(BTF_PATH):
        add(Missing(f"kernel BTF ({BTF_PATH})", "CO-RE relocations of the BPF programs",
                    fix="boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"), fallback)
    if not _tracefs_mounted():
        report.warnings.append(
            "tracefs not mounted: the classic-tracepoint fallback is unavailable (tp_btf still works); "
            "mount it with: mount -t tracefs tracefs /sys/kernel/tracing")


def check(mode: str, *, own_netns_only: bool = False, status_path: str = "/proc/self/status") -> CapabilityReport:
    """What `mode` ("poll", "bpf", "auto") needs and lacks in this process.

    own_netns_only: only the daemon's own namespace is polled (--netns default or self), so
    CAP_SYS_ADMIN is not required.
    """
    if mode not in ("poll", "bpf", "auto"):
        raise Xtcp2Error(f"unknown mode {mode!r}; valid: poll, bpf, auto")
    eff = effective_caps(status_path)
    report = CapabilityReport(mode, eff)
    # every mode reads sockets through sock_diag and enters namespaces
    _poll_requirements(eff, report, hard=True, own_netns_only=own_netns_only)
    if mode in ("bpf", "auto"):
        _bpf_requirements(eff, report, hard=(mode == "bpf"))
    return report


def require(mode: str, *, own_netns_only: bool = False) -> CapabilityReport:
    """check(); raise CapabilityError (exit code 2 in the CLI) when a hard requirement is missing."""
    report = check(mode, own_netns_only=own_netns_only)
    if not report.ok:
        raise CapabilityError(report.message())
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else "poll"
    try:
        report = check(mode)
    except Xtcp2Error as e:
        print(f"xtcp2: {e}", file=sys.stderr)
        return 2
    print(f"mode {mode}: effective {' '.join(report.names()) or '(none)'}")
    for w in report.warnings:
        print(f"warning: {w}")
    if not report.ok:
        print(f"xtcp2: {report.message()}", file=sys.stderr)
        return 2
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

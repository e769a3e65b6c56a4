"""xtcp2-microvm: boot a QEMU guest with Debian's 6.1 kernel and run an xtcp2 test flavor in it.

    xtcp2-microvm lifecycle                  # daemon + 10-check self-test
    xtcp2-microvm soak -duration 10m         # nsTest churn + TCP population, then a health summary
    xtcp2-microvm tcp-stress -namespaces 20 -sockets 100
    xtcp2-microvm clickhouse-pipeline -duration 60s  # xtcp2 -> Tansu -> kafka_to_clickhouse -> chdb
    xtcp2-microvm lifecycle-coverage -coverDir /tmp/xtcp2cov  # self-test under coverage.py
    xtcp2-microvm collectors                 # BPF iterator vs inet_diag, field by field, on 6.1

The guest is assembled from Debian packages and this machine: the kernel comes from
`apt-get download linux-image-6.1.0-N-amd64-unsigned` (the cloud flavour has no 9p),
busybox from busybox-static, and the host's root filesystem is shared read-only over
9p, so the guest runs the very python, venv and xtcp2 tree the host has. A busybox
init mounts proc/sys/dev/tmpfs, loads the 9p/virtio/diag modules, chroots into the
shared root and runs `xtcp2-microvm guest FLAVOR` from the checkout the runner came
from, which prints sentinels on the serial console. The runner greps them and exits 0
on PASS. Kernel, busybox and initramfs are cached under -cacheDir. KVM is used when a
probe boot under it works, else TCG. lifecycle-coverage also shares -coverDir, writable,
for the coverage data the host then merges.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from ..argparse_go import GoFlagParser, parse_duration, positive_int

FLAVORS = ("lifecycle", "soak", "tcp-stress", "clickhouse-pipeline", "lifecycle-coverage", "collectors")
RESULT_SENTINEL = {
    "lifecycle": re.compile(r"XTCP2_SELF_TEST_OVERALL_(PASS|FAIL)"),
    "soak": re.compile(r"XTCP2_SOAK_(PASS|FAIL)"),
    "tcp-stress": re.compile(r"XTCP2_TCP_STRESS_(PASS|FAIL)"),
    "clickhouse-pipeline": re.compile(r"XTCP2_CLICKPIPE_(PASS|FAIL)"),
    "lifecycle-coverage": re.compile(r"XTCP2_LIFECYCLE_COVERAGE_(PASS|FAIL)"),
    "collectors": re.compile(r"XTCP2_MICROVM_ITER_COMPARE_(PASS|FAIL)"),
}
# Guest memory in MiB, as nix/flavors.nix has it (tests/tools/test_nix.py checks they agree).
# clickhouse-pipeline: chdb's 530 MiB library sits in the guest's page cache next to
# ClickHouse itself, the daemon, the bridge and Tansu.
FLAVOR_MEM = {"lifecycle": 1024, "soak": 1024, "tcp-stress": 3072, "clickhouse-pipeline": 3072,
              "lifecycle-coverage": 1024, "collectors": 1024}
COVER_TAG = "xtcp2cov"
KERNEL_PKG_RE = re.compile(r"^linux-image-(6\.1\.0-(\d+))-amd64-unsigned$")
# Loaded in this order by the guest's init (dependencies are added automatically).
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "inet_diag", "tcp_diag", "udp_diag", "veth", "tcp_bbr")
MODULE_DIRS = ("kernel/drivers/virtio/", "kernel/fs/9p/", "kernel/fs/netfs/", "kernel/fs/fscache/",
               "kernel/net/9p/", "kernel/net/ipv4/", "kernel/drivers/net/veth.ko")
MOUNT_TAG = "hostroot"


def log(msg: str) -> None:
    print(f"xtcp2-microvm: {msg}", file=sys.stderr, flush=True)


class MicroVMError(Exception):
    """A one-line reason the VM could not be built or run."""


# ------------------------------------------------------------------ building the guest

def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xtcp2-microvm")


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 600) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise MicroVMError(f"{cmd[0]} not found (install it: see scripts/apt-test.txt)") from None
    except subprocess.TimeoutExpired:
        raise MicroVMError(f"{' '.join(cmd)} timed out") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MicroVMError(f"{' '.join(cmd)} failed: {last}")
    return r.stdout


def pick_kernel_package() -> str:
    """The newest linux-image-6.1.0-N-amd64-unsigned apt knows about."""
    out = _run(["apt-cache", "pkgnames", "linux-image-6.1.0-"])
    best = None
    for name in out.split():
        m = KERNEL_PKG_RE.match(name)
        if m and (best is None or int(m.group(2)) > best[0]):
            best = (int(m.group(2)), name)
    if best is None:
        raise MicroVMError("apt knows no linux-image-6.1.0-*-amd64-unsigned (run apt-get update)")
    return best[1]


def apt_download(package: str, dest: str) -> str:
    """Path of package's .deb in dest, downloading it with apt-get if not cached."""
    os.makedirs(dest, exist_ok=True)
    have = glob.glob(os.path.join(dest, f"{package}_*.deb"))
    if have:
        return sorted(have)[-1]
    log(f"apt-get download {package}")
    _run(["apt-get", "download", "-q", package], cwd=dest)
    have = glob.glob(os.path.join(dest, f"{package}_*.deb"))
    if not have:
        raise MicroVMError(f"apt-get download {package} left no .deb in {dest}")
    return sorted(have)[-1]


def extract_members(deb: str, dest: str, want) -> list[str]:
    """Extract the members of deb's data tarball for which want(name) is true; return their names."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    got = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if (member.isfile() or member.issym()) and want(name):
                    if hasattr(tarfile, "tar_filter"):
                        tar.extract(member, dest, filter="tar")
                    else:
                        tar.extract(member, dest)
                    got.append(name)
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise MicroVMError(f"dpkg-deb --fsys-tarfile {deb} failed")
    return got


@dataclass
class Kernel:
    release: str
    vmlinuz: str
    modules: dict[str, str]   # module name -> path of .ko


def prepare_kernel(cache: str) -> Kernel:
    package = pick_kernel_package()
    kdir = os.path.join(cache, "kernel", package)
    stamp = os.path.join(kdir, ".complete")
    if not os.path.exists(stamp):
        deb = apt_download(package, os.path.join(cache, "debs"))
        shutil.rmtree(kdir, ignore_errors=True)
        log(f"extracting kernel and modules from {os.path.basename(deb)}")

        def want(name: str) -> bool:
            if name.startswith("boot/vmlinuz-"):
                return True
            parts = name.split("/", 4)  # lib/modules/<release>/kernel/...
            return (len(parts) >= 4 and parts[0] == "lib" and parts[1] == "modules"
                    and any("/".join(parts[3:]).startswith(d) for d in MODULE_DIRS))

        extract_members(deb, kdir, want)
        open(stamp, "w").close()
    vmlinuz = sorted(glob.glob(os.path.join(kdir, "boot", "vmlinuz-*")))
    if not vmlinuz:
        raise MicroVMError(f"no vmlinuz in {kdir}")
    release = os.path.basename(vmlinuz[-1])[len("vmlinuz-"):]
    modules = {}
    for ko in glob.glob(os.path.join(kdir, "lib", "modules", release, "**", "*.ko"), recursive=True):
        modules[os.path.basename(ko)[:-3].replace("-", "_")] = ko
    return Kernel(release, vmlinuz[-1], modules)


def module_depends(path: str) -> list[str]:
    """The depends= list of a .ko's .modinfo section (found by its NUL-delimited string)."""
    with open(path, "rb") as f:
        data = f.read()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_load_order(kernel: Kernel, wanted: Sequence[str]) -> list[str]:
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            raise MicroVMError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in kernel.modules:
            raise MicroVMError(f"kernel {kernel.release} has no module {name} (needed by {chain[-1] if chain else 'init'})")
        for dep in module_depends(kernel.modules[name]):
            visit(dep, chain + (name,))
        order.append(name)

    for w in wanted:
        visit(w, ())
    return order


def prepare_busybox(cache: str) -> str:
    bdir = os.path.join(cache, "busybox")
    path = os.path.join(bdir, "bin", "busybox")
    if not os.path.exists(path):
        deb = apt_download("busybox-static", os.path.join(cache, "debs"))
        extract_members(deb, bdir, lambda n: n in ("bin/busybox", "usr/bin/busybox"))
        for cand in (path, os.path.join(bdir, "usr", "bin", "busybox")):
            if os.path.exists(cand) and cand != path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(cand, path)
        if not os.path.exists(path):
            raise MicroVMError(f"busybox-static package had no busybox binary ({deb})")
    return path


class Cpio:
    """A minimal newc cpio writer (what the kernel's initramfs unpacker reads)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


INIT_TEMPLATE = r"""#!/bin/sh
# xtcp2 microVM init: mount the basics, load modules, chroot into the host's root (9p, ro).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "XTCP2_MICROVM_INSMOD_FAIL $m"; done
R=/newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 @TAG@ $R; then
    echo "XTCP2_MICROVM_GUEST_FAIL cannot mount the host root over 9p"
    poweroff -f
fi
@KEEP_ASIDE@
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm 2>/dev/null
mount -t devpts devpts $R/dev/pts
mount -t tmpfs shm $R/dev/shm
for d in @TMPFS_DIRS@; do [ -d $R/$d ] && mount -t tmpfs tmpfs $R/$d; done
@KEEP_BACK@
@EXTRA_MOUNTS@
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mkdir -p $R/run/netns $R/run/docker/netns
hostname xtcp2-microvm
ip link set lo up 2>/dev/null || chroot $R ip link set lo up
echo "XTCP2_MICROVM_GUEST_BOOTED kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"
cd $R
chroot $R /usr/bin/env -i PATH=@PATH@ HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 PYTHONPATH=@PYTHONPATH@ @PYTHON@ -m xtcp2.tools.microvm @ARGS@
echo "XTCP2_MICROVM_GUEST_EXIT rc=$?"
sync
poweroff -f
"""

# Writable scratch in the guest over the read-only host root.
TMPFS_DIRS = ("run", "tmp", "var/tmp", "root/.cache")


def keep_visible(paths: Sequence[str]) -> tuple[str, str]:
    """init lines that keep host paths lying under the guest's tmpfs mounts (a checkout or
    venv under /tmp) visible: bound aside before the tmpfs mounts, bound back after."""
    aside, back = [], []
    wanted = sorted({os.path.abspath(p) for p in paths})
    under = [p for p in wanted if any(p.startswith(f"/{d}/") for d in TMPFS_DIRS)]
    under = [p for p in under if not any(p != q and p.startswith(q + "/") for q in under)]
    for i, p in enumerate(under):
        q = shlex.quote(p)
        aside.append(f"mkdir -p /keep/{i} && mount -o bind $R{q} /keep/{i}")
        back.append(f"mkdir -p $R{q} && mount -o bind /keep/{i} $R{q}")
    return "\n".join(aside), "\n".join(back)


PROBE_INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo XTCP2_MICROVM_PROBE_OK
poweroff -f
"""


def build_initramfs(cache: str, kernel: Kernel, busybox: str, init: str, modules: Sequence[str]) -> str:
    """gzip'd newc archive with busybox, init and modules; cached by content hash."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", "tmp"):
        c.dir(d)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    for applet in ("sh", "mount", "insmod", "poweroff", "chroot", "mkdir", "cat", "echo", "ip",
                   "hostname", "uname", "sync", "sleep", "ls", "dmesg", "cut"):
        c.symlink(f"bin/{applet}", "busybox")
    c.file("init", init.encode(), 0o755)
    c.file("modules.order", "\n".join(modules).encode() + b"\n")
    for m in modules:
        with open(kernel.modules[m], "rb") as f:
            c.file(f"lib/modules/{m}.ko", f.read())
    raw = c.finish()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    path = os.path.join(cache, f"initrd-{digest}.gz")
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            f.write(raw)
        os.replace(tmp, path)
    return path


# ------------------------------------------------------------------ running QEMU

def share_mount(path: str, tag: str) -> str:
    """init lines mounting a writable 9p share at the same path inside the guest."""
    q = shlex.quote(os.path.abspath(path))
    return (f"mkdir -p $R{q} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {tag} $R{q} "
            f"|| echo \"XTCP2_MICROVM_GUEST_FAIL cannot mount the {tag} share\"")


def qemu_command(kernel: Kernel, initrd: str, accel: str, mem: int, cpus: int, share_root: bool,
                 extra_append: str = "", writable_shares: Sequence[tuple[str, str]] = ()) -> list[str]:
    cmd = ["qemu-system-x86_64", "-accel", accel if accel == "kvm" else "tcg,thread=multi",
           "-cpu", "host" if accel == "kvm" else "max",  # numpy wheels need x86-64-v2
           "-m", str(mem), "-smp", str(cpus), "-nodefaults", "-no-user-config", "-display", "none",
           "-serial", "stdio", "-monitor", "none", "-no-reboot", "-nic", "none",
           "-kernel", kernel.vmlinuz, "-initrd", initrd,
           "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init {extra_append}".strip()]
    if share_root:
        cmd += ["-virtfs", f"local,path=/,mount_tag={MOUNT_TAG},security_model=none,readonly=on,multidevs=remap"]
    for path, tag in writable_shares:  # only these host directories are writable from the guest
        if "," in path:
            raise MicroVMError(f"cannot share {path!r} with QEMU: the path has a comma")
        cmd += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,multidevs=remap"]
    return cmd


def run_qemu(cmd: list[str], timeout: float, pattern: re.Pattern, echo: bool, logfile: str) -> tuple[str | None, str]:
    """Run QEMU, stream its console, return (first sentinel group matched or None, last lines)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    found: list[str] = []
    tail: list[str] = []

    def pump() -> None:
        with open(logfile, "w", encoding="utf-8", errors="replace") as lf:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lf.write(line + "\n")
                lf.flush()
                tail.append(line)
                del tail[:-40]
                if echo:
                    print(line, flush=True)
                m = pattern.search(line)
                if m and not found:
                    found.append(m.group(1))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        t.join(5)
        return None, f"timed out after {timeout:g} s; last line: {tail[-1] if tail else '(none)'}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    t.join(10)
    return (found[0] if found else None), "\n".join(tail[-15:])


def choose_accel(cache: str, kernel: Kernel, busybox: str, requested: str) -> str:
    if requested in ("kvm", "tcg"):
        return requested
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    probe_file = os.path.join(cache, "accel-probe.json")
    key = f"{os.uname().release} {kernel.release} {shutil.which('qemu-system-x86_64')}"
    try:
        with open(probe_file) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return saved["accel"]
    except (OSError, ValueError, KeyError):
        pass
    initrd = build_initramfs(cache, kernel, busybox, PROBE_INIT, [])
    result, _ = run_qemu(qemu_command(kernel, initrd, "kvm", 256, 1, False),
                         20, re.compile(r"XTCP2_MICROVM_(PROBE_OK)"), False, os.path.join(cache, "kvm-probe.log"))
    accel = "kvm" if result else "tcg"
    log(f"KVM probe: {'works' if result else 'guest did not boot under KVM, using TCG'}")
    with open(probe_file, "w") as f:
        json.dump({"key": key, "accel": accel}, f)
    return accel


def host_main(args) -> int:
    if os.geteuid() != 0:
        print("xtcp2-microvm: error: must run as root (9p export of / and namespaces in the guest)", file=sys.stderr)
        return 1
    if not shutil.which("qemu-system-x86_64"):
        print("xtcp2-microvm: error: qemu-system-x86_64 not found (apt-get install qemu-system-x86)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    cache = os.path.abspath(args.cacheDir)
    os.makedirs(cache, exist_ok=True)
    try:
        kernel = prepare_kernel(cache)
        busybox = prepare_busybox(cache)
        modules = module_load_order(kernel, GUEST_MODULES)
        guest_args = ["guest", args.flavor, "-duration", f"{args.duration}s", "-namespaces", str(args.namespaces),
                      "-sockets", str(args.sockets), "-readyTimeout", f"{args.readyTimeout}s",
                      f"-docker={str(args.docker).lower()}"]
        shares: list[tuple[str, str]] = []
        if args.flavor == "lifecycle-coverage":
            from .microvm_coverage import clear_share
            cover = os.path.abspath(args.coverDir)
            os.makedirs(cover, exist_ok=True)
            if clear_share(cover):
                log(f"removed an earlier run's coverage data from {cover}")
            shares.append((cover, COVER_TAG))
            guest_args += ["-coverDir", cover]
        bindir = os.path.dirname(sys.executable)
        path = ":".join([bindir, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        # The guest runs the checkout this runner came from, not whichever tree the
        # venv's editable install points at.
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        aside, back = keep_visible([repo, sys.prefix])
        init = (INIT_TEMPLATE.replace("@TAG@", MOUNT_TAG).replace("@PATH@", path)
                .replace("@PYTHON@", sys.executable).replace("@ARGS@", " ".join(guest_args))
                .replace("@PYTHONPATH@", shlex.quote(repo))
                .replace("@TMPFS_DIRS@", " ".join(TMPFS_DIRS))
                .replace("@KEEP_ASIDE@", aside).replace("@KEEP_BACK@", back)
                .replace("@EXTRA_MOUNTS@", "\n".join(share_mount(p, t) for p, t in shares)))
        initrd = build_initramfs(cache, kernel, busybox, init, modules)
        accel = choose_accel(cache, kernel, busybox, args.accel)
    except MicroVMError as e:
        print(f"xtcp2-microvm: error: {e}", file=sys.stderr)
        return 1
    mem = args.mem or FLAVOR_MEM[args.flavor]
    try:
        cmd = qemu_command(kernel, initrd, accel, mem, args.cpus, True, writable_shares=shares)
    except MicroVMError as e:
        print(f"xtcp2-microvm: error: {e}", file=sys.stderr)
        return 1
    logfile = os.path.join(cache, f"console-{args.flavor}.log")
    log(f"booting {kernel.release} with {accel.upper()} ({mem} MiB, {args.cpus} cpus), "
        f"prepared in {time.monotonic() - t0:.1f} s; console log {logfile}")
    timeout = args.timeout or (args.duration + 300)
    result, tail = run_qemu(cmd, timeout, RESULT_SENTINEL[args.flavor], not args.quiet, logfile)
    if result == "PASS":
        result = host_checks(args, logfile, shares)
    took = time.monotonic() - t0
    if result == "PASS":
        log(f"{args.flavor}: PASS in {took:.1f} s")
        return 0
    why = {"FAIL": "reported FAIL", None: "no result sentinel"}.get(result, result)
    log(f"{args.flavor}: FAIL ({why}) after {took:.1f} s")
    if args.quiet:
        sys.stderr.write(tail + "\n")
    return 1


def host_checks(args, logfile: str, shares: Sequence[tuple[str, str]]) -> str:
    """What the runner checks itself after the guest said PASS: "PASS" or why not."""
    if args.flavor == "clickhouse-pipeline":
        from .microvm_clickpipe import parse_rows, rows_grew
        with open(logfile, errors="replace") as f:
            ok, summary = rows_grew([r["rows"] for r in parse_rows(f)])
        log(f"clickhouse-pipeline: {summary}")
        return "PASS" if ok else f"ClickHouse rows did not grow: {summary}"
    if args.flavor == "lifecycle-coverage":
        from .microvm_coverage import combine_and_report
        return "PASS" if combine_and_report(shares[0][0]) else "coverage report failed"
    return "PASS"


# ------------------------------------------------------------------ inside the guest

def _metrics(url: str) -> dict[str, float]:
    from .selftest import CheckFailed, fetch_metrics
    try:
        return fetch_metrics(url)
    except CheckFailed:
        return {}


class Daemon:
    """The xtcp2 daemon under test, started the way a unit file would (restarted if it dies)."""

    def __init__(self, bindir: str, extra: Sequence[str] = (), dest: str = "null",
                 env: dict[str, str] | None = None) -> None:
        self.env = env
        self.cmd = [os.path.join(bindir, "xtcp2"), "-frequency", "1s", "-timeout", "1s", "-dest", dest,
                    "-promListen", "127.0.0.1:9088", "-grpcPort", "8889", *extra]
        self.logpath = "/tmp/xtcp2.log"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.url = "http://127.0.0.1:9088/metrics"

    def start(self) -> None:
        logf = open(self.logpath, "a")
        self.proc = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        logf.close()

    def wait_ready(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                return False
            if _metrics(self.url).get("xtcp2_polls_total", 0) >= 1:
                return True
            time.sleep(0.5)
        return False

    def ensure_running(self) -> None:
        if self.proc and self.proc.poll() is not None:
            self.restarts += 1
            print(f"XTCP2_MICROVM_DAEMON_EXITED rc={self.proc.returncode}; restarting", flush=True)
            self.start()

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            pass
        return 0

    def panics(self) -> int:
        try:
            with open(self.logpath, errors="replace") as f:
                return sum(1 for line in f if line.startswith("Traceback"))
        except OSError:
            return 0

    def startup_lines(self) -> list[str]:
        """The daemon's own start-up INFO lines (mode chosen, listeners), for the transcript."""
        try:
            with open(self.logpath, errors="replace") as f:
                return [x.rstrip() for x in f if " INFO xtcp2: " in x][:4]
        except OSError:
            return []

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                lines = f.readlines()
        except OSError as e:
            return f"(cannot read {self.logpath}: {e})"
        return f"({len(lines)} lines in {self.logpath})\n" + "".join(lines[-n:])

    def stop(self) -> int | None:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def guest_lifecycle(args, bindir: str, daemon: Daemon, probes=None) -> bool:
    """The self-test, run in this process (one python start-up less under emulation)."""
    from .selftest import Options, run_all
    # A traced daemon (lifecycle-coverage) answers about half as fast: give each check longer.
    wait = 60.0 if args.flavor == "lifecycle-coverage" else 30.0
    opts = Options(pid=daemon.proc.pid, unit="xtcp2", metrics_url=daemon.url, grpc_target="127.0.0.1",
                   grpc_port=8889, wait=wait, bindir=bindir, help_probes=probes)
    ok = run_all(opts)
    rc = daemon.stop()
    print(f"XTCP2_MICROVM_DAEMON_STOPPED rc={rc}", flush=True)
    return ok


def guest_collectors_compare() -> bool:
    """The iterator-vs-inet_diag field-by-field test, and bpf mode's owner capture at
    connect() and listen(), run on the guest's kernel: the BPF objects were built against
    the host's BTF, so this is where CO-RE has to prove itself."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    test = os.path.join(repo, "tests", "ebpf", "test_iter.py")
    tests = [test, os.path.join(repo, "tests", "ebpf", "test_owner.py")]
    if not os.path.exists(test):  # an installed wheel has no tests
        print("XTCP2_MICROVM_ITER_COMPARE_SKIP no tests/ in this install", flush=True)
        return True
    from ..ebpf.tcp_iter import TcpIterProgram
    from ..errors import Xtcp2Error
    try:
        TcpIterProgram.load().close()
        print("XTCP2_MICROVM_ITER_LOAD ok", flush=True)
    except (Xtcp2Error, OSError) as e:  # the test below fails too; this says why in one line
        print(f"XTCP2_MICROVM_ITER_LOAD error: {e}", flush=True)
        from ..ebpf.libbpf import recent_lines
        for line in recent_lines(40):
            print(f"XTCP2_MICROVM_ITER_LOAD_LOG {line}", flush=True)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", *tests],
                       cwd=repo, capture_output=True, text=True, timeout=600, env=dict(os.environ, COLUMNS="300"))
    lines = (r.stdout.strip().splitlines() or ["(no output)"])
    ok = r.returncode == 0
    if not ok:
        for line in (r.stdout + r.stderr).splitlines()[-40:]:
            print(f"XTCP2_MICROVM_ITER_COMPARE_SAYS {line}", flush=True)
    print(f"XTCP2_MICROVM_ITER_COMPARE_{'PASS' if ok else 'FAIL'} kernel={os.uname().release} {lines[-1]}", flush=True)
    return ok


def _sleep_watching(daemon: Daemon, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.ensure_running()
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))


def guest_soak(args, bindir: str, daemon: Daemon) -> bool:
    procs = [
        subprocess.Popen([os.path.join(bindir, "tcp_server"), "-count", str(args.sockets), "-quiet"]),
    ]
    time.sleep(2)
    procs.append(subprocess.Popen([os.path.join(bindir, "tcp_client"), "-count", str(args.sockets),
                                   "-sleep", "5s", "-pads", "2048", "-quiet"], stdout=subprocess.DEVNULL))
    churn = subprocess.Popen([os.path.join(bindir, "nsTest"), "-initial", "10", "-sleep", "250ms", "-events",
                              "-duration", f"{args.duration}s", "-traffic"], stdout=subprocess.PIPE, text=True)
    _sleep_watching(daemon, min(10.0, args.duration / 4))
    rss0 = daemon.rss()
    events = 0
    for line in churn.stdout:
        if line.startswith(("add ", "del ")):
            events += 1
        daemon.ensure_running()
    churn.wait()
    rss1 = daemon.rss()
    m = _metrics(daemon.url)
    for p in procs:
        p.terminate()
        p.wait()
    growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
    panics = daemon.panics()
    print(f"XTCP2_SOAK_SUMMARY panics={panics} restarts={daemon.restarts} churn_events={events} "
          f"polls={m.get('xtcp2_polls_total', 0):g} namespaces_added={m.get('xtcp2_namespaces_added_total', 0):g} "
          f"namespaces_removed={m.get('xtcp2_namespaces_removed_total', 0):g} rss_start={rss0} rss_end={rss1} "
          f"rss_growth_pct={growth:.1f}", flush=True)
    rc = daemon.stop()
    return panics == 0 and daemon.restarts == 0 and events > 0 and rc == 0 and growth < 50


def _docker_style_namespace(path: str) -> None:
    from .selftest import _docker_style_netns
    open(path, "x").close()
    _docker_style_netns(path)


class StressLoad:
    """Where the tcp-stress load runs: real docker containers (upstream's tcp-stress: N
    containers x M sockets) when a dockerd answers on /run/docker.sock or one of our own
    can be started, else docker-style bind-mounted namespaces under /run/docker/netns
    (the guest may have no dockerd, or a kernel it cannot run containers on)."""

    ROOT = "/run/xtcp2-stress-docker"        # exec root and API socket of our own dockerd
    DATA = "/tmp/xtcp2-stress-docker"        # its images and containers (tmpfs in the guest)

    def __init__(self) -> None:
        self.mode = "bind-mount"
        self.why = ""
        self.docker = None
        self.dockerd = None

    @classmethod
    def prepare(cls, want_docker: bool = True) -> "StressLoad":
        from .dockerload import DEFAULT_SOCKET, Docker, DockerError, PrivateDockerd, api_ping, static_busybox
        load = cls()
        if not want_docker:
            load.why = "-docker=false"
            return load
        if shutil.which("docker") is None:
            load.why = "no docker CLI"
            return load
        if static_busybox() is None:
            load.why = "no static busybox for the image"
            return load
        try:
            if api_ping(DEFAULT_SOCKET):
                sock = DEFAULT_SOCKET
            else:
                load.dockerd = PrivateDockerd(cls.ROOT, cls.DATA)
                load.dockerd.start(timeout=240)
                sock = load.dockerd.sock
            load.docker = Docker(sock)
            load.docker.ensure_image()
        except DockerError as e:
            load.why = str(e)
            load.close()
            return load
        load.mode = "docker"
        load.why = f"dockerd at {load.docker.sock}" + (" (started for this run)" if load.dockerd else "")
        return load

    def daemon_flags(self) -> list[str]:
        """With containers, the daemon under test names each socket's container too."""
        if self.docker is None:
            return []
        return ["-resolveContainerId", "-enrichContainer", "-dockerSocket", self.docker.sock]

    def close(self) -> None:
        if self.docker is not None:
            ids = []
            try:
                ids = self.docker("ps", "-aq", "--filter", "name=^xtcp2-stress-", timeout=120).split()
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
            self.docker.remove(*ids)
            self.docker.close()
            self.docker = None
        if self.dockerd is not None:
            self.dockerd.stop()
            subprocess.run(["umount", "-R", self.DATA], capture_output=True)
            self.dockerd = None


def _container_labels(url: str) -> dict[tuple[str, str], float]:
    """xtcp2_tcp_sockets by (container label, state), summed over namespaces."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "xtcp2_tcp_sockets":
            for smp in fam.samples:
                key = (smp.labels.get("container", ""), smp.labels.get("state", ""))
                out[key] = out.get(key, 0.0) + smp.value
    return out


def guest_tcp_stress(args, bindir: str, daemon: Daemon, load: StressLoad | None = None) -> bool:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    load = load or StressLoad()
    n, k = args.namespaces, args.sockets
    paths, procs, names = [], [], []
    try:
        if load.mode == "docker":
            from .dockerload import DockerError, run_stress_container
            env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
            for i in range(n):
                name = f"xtcp2-stress-{i}"
                try:
                    run_stress_container(load.docker, name, bindir, k, env)
                except DockerError as e:
                    print(f"XTCP2_TCP_STRESS_CONTAINER_FAILED {name}: {e}", flush=True)
                    continue
                names.append(name)
        else:
            for i in range(n):
                path = f"/run/docker/netns/stress{i:04d}"
                _docker_style_namespace(path)
                paths.append(path)
                enter = ["nsenter", f"--net={path}"]
                subprocess.run(enter + ["ip", "link", "set", "lo", "up"], check=True)
                procs.append(subprocess.Popen(enter + [os.path.join(bindir, "tcp_server"), "-count", str(k), "-quiet"]))
            time.sleep(3)
            for path in paths:
                procs.append(subprocess.Popen(["nsenter", f"--net={path}", os.path.join(bindir, "tcp_client"),
                                               "-count", str(k), "-sleep", "5s", "-pads", "1024", "-quiet"],
                                              stdout=subprocess.DEVNULL))
        _sleep_watching(daemon, args.duration)
        expect = n * 3 * k
        # Clients start slowly under emulation: measure poll windows until the full
        # population is seen (and, with containers, named) or a minute has passed.
        give_up = time.monotonic() + 60
        while True:
            m0 = _metrics(daemon.url)
            _sleep_watching(daemon, 3)
            m1 = _metrics(daemon.url)
            polls = m1.get("xtcp2_polls_total", 0) - m0.get("xtcp2_polls_total", 0)
            per_poll = (m1.get("xtcp2_sockets_total", 0) - m0.get("xtcp2_sockets_total", 0)) / polls if polls else 0
            watched = m1.get("xtcp2_namespaces", 0)
            labels = _container_labels(daemon.url) if names else {}
            # each container's own sockets under its name: k listeners, 2k established
            named = [c for c in names if labels.get((c, "listen"), 0) >= k and labels.get((c, "established"), 0) >= 2 * k]
            done = watched >= n + 1 and per_poll >= expect and len(named) == len(names)
            if done or time.monotonic() > give_up:
                break
        panics = daemon.panics()
        print(f"XTCP2_TCP_STRESS_SUMMARY mode={load.mode} namespaces={n} sockets_each={3 * k} watched={watched:g} "
              f"sockets_per_poll={per_poll:.0f} expected_at_least={expect} "
              + (f"containers={len(names)} named_in_metrics={len(named)} " if load.mode == "docker" else "")
              + f"panics={panics} restarts={daemon.restarts}", flush=True)
        return (done and len(names) == (n if load.mode == "docker" else 0) and panics == 0
                and daemon.restarts == 0)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for path in paths:
            libc.umount2(path.encode(), 2)
            os.unlink(path)
        daemon.stop()
        load.close()


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


FINAL_SENTINEL = {"lifecycle": "XTCP2_SELF_TEST_OVERALL", "soak": "XTCP2_SOAK", "tcp-stress": "XTCP2_TCP_STRESS",
                  "clickhouse-pipeline": "XTCP2_CLICKPIPE", "lifecycle-coverage": "XTCP2_LIFECYCLE_COVERAGE",
                  "collectors": "XTCP2_MICROVM_ITER_COMPARE"}
SELF_TEST_FLAVORS = ("lifecycle", "lifecycle-coverage")


def guest_main(args) -> int:
    bindir = os.path.dirname(sys.executable)
    print(f"XTCP2_MICROVM_GUEST_START flavor={args.flavor} kernel={os.uname().release} "
          f"python={sys.version.split()[0]} uptime={_uptime():.1f}s", flush=True)
    socket.sethostname("xtcp2-microvm")
    if args.flavor == "collectors":  # no daemon: the two collectors read one namespace
        return 0 if guest_collectors_compare() else 1
    final = FINAL_SENTINEL[args.flavor]
    pipe = cov = load = None
    try:
        if args.flavor == "clickhouse-pipeline":
            from .microvm_clickpipe import ClickPipe, PipelineError
            pipe = ClickPipe(bindir)
            try:
                pipe.start_broker()
            except PipelineError as e:
                print(f"XTCP2_CLICKPIPE_BROKER_FAIL {e}\n{final}_FAIL", flush=True)
                return 1
        if args.flavor == "lifecycle-coverage":
            from .microvm_coverage import CoverageError, GuestCoverage
            cov = GuestCoverage(args.coverDir)
            try:
                cov.start()  # before the daemon starts: it inherits COVERAGE_PROCESS_START
            except CoverageError as e:
                print(f"XTCP2_COVERAGE_DUMP_EMPTY ({e})\n{final}_FAIL", flush=True)
                return 1
        if args.flavor == "tcp-stress":
            t = time.monotonic()
            load = StressLoad.prepare(args.docker)
            print(f"XTCP2_TCP_STRESS_MODE {load.mode}: {load.why} ({time.monotonic() - t:.1f} s)", flush=True)
        return _guest_run(args, bindir, final, pipe, cov, load)
    finally:
        if pipe:
            pipe.close()
        if load is not None:
            load.close()


def _guest_run(args, bindir: str, final: str, pipe, cov, load) -> int:
    daemon = Daemon(bindir, dest=pipe.dest if pipe else "null", env=cov.daemon_env if cov else None,
                    extra=load.daemon_flags() if load else ())
    t0 = time.monotonic()
    daemon.start()
    if pipe:
        # chdb takes long to load under emulation: let it while the daemon starts.
        pipe.start_bridge(max(2.0, min(30.0, args.duration / 6)))
    probes = None
    if args.flavor in SELF_TEST_FLAVORS:
        # The -help probes need no daemon: let them use the CPU while the daemon starts.
        from .selftest import HelpProbes, Options
        probes = HelpProbes(Options(pid=0, unit="", metrics_url=daemon.url, grpc_target="127.0.0.1",
                                    grpc_port=8889, wait=30.0, bindir=bindir))
    ready = daemon.wait_ready(args.readyTimeout)
    if not ready:
        print(f"XTCP2_MICROVM_DAEMON_NOT_READY after {time.monotonic() - t0:.1f} s", flush=True)
    if args.flavor in SELF_TEST_FLAVORS and daemon.proc.poll() is None:
        ready = True  # the self-test itself says which checks an unready daemon fails
    if not ready:
        ok = False
    else:
        print(f"XTCP2_MICROVM_DAEMON_READY after {time.monotonic() - t0:.1f} s (uptime {_uptime():.1f}s)", flush=True)
        for line in daemon.startup_lines():
            print(f"XTCP2_MICROVM_DAEMON_SAYS {line}", flush=True)
        if args.flavor in SELF_TEST_FLAVORS:
            ok = guest_lifecycle(args, bindir, daemon, probes)
        elif args.flavor == "clickhouse-pipeline":
            from .microvm_clickpipe import run_pipeline
            ok = run_pipeline(args, bindir, daemon, pipe, _sleep_watching)
        else:
            ok = guest_soak(args, bindir, daemon) if args.flavor == "soak" else \
                guest_tcp_stress(args, bindir, daemon, load)
    if not ok:
        print("---- xtcp2 daemon log (tail) ----\n" + daemon.log_tail(), flush=True)
    daemon.stop()
    if cov:
        ok = cov.finish(daemon.proc.pid) and ok
    if args.flavor != "lifecycle" or not ready:  # a self-test that ran printed its own OVERALL line
        print(f"{final}_{'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


# ------------------------------------------------------------------ command line

def build_parser() -> GoFlagParser:
    p = GoFlagParser("xtcp2-microvm", __doc__.split("\n\n")[0])
    p.add_argument("flavor", choices=FLAVORS + ("guest",), help=" | ".join(FLAVORS))
    p.add_argument("guest_flavor", nargs="?", choices=FLAVORS, help=argparse_suppress())
    p.flag("duration", type=parse_duration, default=60.0, help="soak / tcp-stress / clickhouse-pipeline run time (default 60s)")
    p.flag("namespaces", type=positive_int, default=20, help="tcp-stress: docker-style namespaces (default 20)")
    p.flag("sockets", type=positive_int, default=100, help="soak/tcp-stress: tcp_server/client count (default 100)")
    p.flag("docker", type=_bool, nargs="?", const=True, default=True,
           help="tcp-stress: run the load in docker containers when a dockerd runs or starts in the guest "
                "(default true; else docker-style namespaces)")
    p.flag("cacheDir", default=default_cache_dir(), help="where kernel, busybox and initramfs are cached")
    p.flag("accel", choices=("auto", "kvm", "tcg"), default="auto", help="auto: KVM if a probe boot works, else TCG")
    p.flag("mem", type=int, default=0,
           help="guest memory in MiB (default: the flavor's, as nix/flavors.nix: " +
                ", ".join(f"{k} {v}" for k, v in FLAVOR_MEM.items()) + ")")
    p.flag("cpus", type=positive_int, default=2, help="guest vCPUs (default 2)")
    p.flag("timeout", type=parse_duration, default=0.0, help="give up after this long (default duration+300s)")
    p.flag("readyTimeout", type=parse_duration, default=120.0,
           help="how long the guest waits for the daemon's first poll on /metrics (default 120s)")
    p.flag("coverDir", default=os.environ.get("XTCP2_COVERDIR", "/tmp/xtcp2cov"),
           help="lifecycle-coverage: host directory (shared writable) for the data files and the merged "
                "report (default $XTCP2_COVERDIR or /tmp/xtcp2cov, as upstream)")
    p.flag("quiet", action="store_true", help="do not echo the guest console")
    return p


def _bool(text: str) -> bool:
    """A Go flag boolean (-docker, -docker=false)."""
    import argparse
    t = text.lower()
    if t in ("1", "true", "t"):
        return True
    if t in ("0", "false", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def argparse_suppress() -> str:
    import argparse
    return argparse.SUPPRESS


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.flavor == "guest":
        if not args.guest_flavor:
            print("xtcp2-microvm: error: guest needs a flavor", file=sys.stderr)
            return 2
        args.flavor = args.guest_flavor
        return guest_main(args)
    if args.guest_flavor:
        print(f"xtcp2-microvm: error: unexpected argument {args.guest_flavor!r}", file=sys.stderr)
        return 2
    if not (args.mem == 0 or 64 <= args.mem <= 65536) or not 1 <= args.cpus <= 64:
        print("xtcp2-microvm: error: -mem must be 64..65536 MiB and -cpus 1..64", file=sys.stderr)
        return 2
    cover = os.path.abspath(args.coverDir)
    if args.flavor == "lifecycle-coverage" and (cover == "/" or not re.fullmatch(r"[\w./+-]+", cover)):
        # shared writable into the guest, and written into QEMU's comma-separated -virtfs
        print(f"xtcp2-microvm: error: -coverDir {args.coverDir!r} must be a plain directory path other than /",
              file=sys.stderr)
        return 2
    if args.flavor == "tcp-stress" and not 1 <= args.namespaces <= 1000:
        print("xtcp2-microvm: error: -namespaces must be 1..1000", file=sys.stderr)
        return 2
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())

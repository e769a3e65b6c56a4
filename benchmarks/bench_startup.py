"""Start-up cost of a one-shot `xtcp2 --once --netns self` against `python -c 'import numpy'`.

Both run as whole processes in the same interpreter, in turn (A B A B ...), and each
pair gives a ratio, so a drift in the machine's speed cancels out. The figures are the
kernel's own accounting of each finished child (wait4: user + system CPU, peak RSS)
and its wall time; the medians are quoted.

"A bare host": the whole measurement runs in fresh network, PID and mount namespaces
(`unshare --net --pid --fork --mount-proc`), so neither the sockets nor the processes
of a busy shared machine are in what the one poll reads: its dump walks the socket
hash table, so the network namespace gets its own (net.ipv4.tcp_child_ehash_entries,
set for the moment it is created, then restored), and its owner lookup reads
/proc/PID/fd of every process. The namespace holds one listener and one connection
(3 sockets), so the poll has work to do.

xtcp2's modules are byte-compiled first (compileall into __pycache__), as an installed
package is, while numpy comes compiled from its wheel.

    python benchmarks/bench_startup.py [--runs 15] [--iter]

--iter adds `--once -collector iter` (loads the BPF iterator) as a third command.
"""
from __future__ import annotations

import argparse
import compileall
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INNER = "XTCP2_BENCH_STARTUP_INNER"
CHILD_EHASH = "/proc/sys/net/ipv4/tcp_child_ehash_entries"


def run(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"bench_startup: {' '.join(cmd)} failed ({p.returncode}): {err.decode()[-500:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def inner(runs: int, with_iter: bool) -> int:
    print("namespaces ready", flush=True)  # the outer process restores the sysctl now
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    py = sys.executable
    # xtcp2 sets OPENBLAS_NUM_THREADS=1 for itself (no BLAS threads at numpy's import): the
    # reference is plain `import numpy`, and the same import with that setting is shown too
    cmds = {"numpy": [py, "-c", "import numpy"],
            "numpy_blas1": [py, "-c", "import numpy"],
            "once": [py, "-m", "xtcp2", "--once", "--netns", "self"]}
    if with_iter:
        cmds["once_iter"] = [py, "-m", "xtcp2", "--once", "--netns", "self", "-collector", "iter"]
    envs = {k: env for k in cmds}
    envs["numpy_blas1"] = dict(env, OPENBLAS_NUM_THREADS="1")
    for k, cmd in cmds.items():  # warm-up: page cache, and the kernel's BTF for the iterator
        run(cmd, envs[k])
    res: dict[str, list[dict]] = {k: [] for k in cmds}
    for _ in range(runs):
        for k, cmd in cmds.items():
            res[k].append(run(cmd, envs[k]))
    print(f"load average {os.getloadavg()[0]:.2f}; {runs} runs each, in turn; medians")
    print(f"{'command':<32} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'wall/numpy':>11} {'cpu/numpy':>10}")
    names = {"numpy": "python -c 'import numpy'", "numpy_blas1": "  ... OPENBLAS_NUM_THREADS=1",
             "once": "xtcp2 --once --netns self",
             "once_iter": "  ... -collector iter"}
    for k in cmds:
        med = {f: statistics.median(r[f] for r in res[k]) for f in ("wall", "cpu", "rss_mib")}
        wr = statistics.median(x["wall"] / y["wall"] for x, y in zip(res[k], res["numpy"]))
        cr = statistics.median(x["cpu"] / y["cpu"] for x, y in zip(res[k], res["numpy"]))
        print(f"{names[k]:<32} {med['wall']:8.3f} {med['cpu']:8.3f} {med['rss_mib']:9.1f} {wr:11.2f} {cr:10.2f}")
    a.close()
    c.close()
    ls.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--iter", action="store_true", help="also time --once -collector iter")
    args = ap.parse_args()
    if os.environ.get(INNER):
        return inner(args.runs, args.iter)
    compileall.compile_dir(os.path.join(ROOT, "xtcp2"), quiet=1)
    cmd = ["unshare", "--net", "--pid", "--fork", "--mount-proc", sys.executable, os.path.abspath(__file__),
           "--runs", str(args.runs)] + (["--iter"] if args.iter else [])
    old = None
    try:
        with open(CHILD_EHASH) as f:
            old = f.read().strip()
        with open(CHILD_EHASH, "w") as f:
            f.write("1024")
    except OSError:
        print("bench_startup: no net.ipv4.tcp_child_ehash_entries (kernel < 6.1): the namespace "
              "shares the host's socket table", file=sys.stderr)
    p = subprocess.Popen(cmd, env=dict(os.environ, **{INNER: "1"}), stdout=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
    finally:
        if old is not None:  # other namespaces created from now on share the table again
            with open(CHILD_EHASH, "w") as f:
                f.write(old)
    if first.strip() != "namespaces ready":
        sys.stdout.write(first)
    for line in p.stdout:
        sys.stdout.write(line)
    return p.wait()


if __name__ == "__main__":
    sys.exit(main())

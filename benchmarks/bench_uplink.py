"""What the uplink*_ fields cost a poll, with and without them, same process, interleaved.

The NIC / LLDP values are read by a background thread; the only cost on the poll path is
encoding them: they are constants, pre-encoded once per call and copied into every row,
so the cost is the extra bytes per row. Both uplink slots are filled with values of
realistic length (a dual-homed host with a ConnectX NIC behind a named switch port),
added to every batch's constants by a sink join, as the enricher's stamp() does.

  --encode  encode_rows alone on the rows bench_encode.py builds (close records)
  default   whole in-process polls (dump, decode, encode, marshal, dest null) of a
            namespace holding --connections loopback connections (2 sockets each)

    python benchmarks/bench_uplink.py [--connections 50000] [--repeat 7] [--encode --rows 100000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from bench_encode import CONSTS, events  # noqa: E402
from bench_poll import settle, stop_population  # noqa: E402
from xtcp2.ebpf.records import close_columns  # noqa: E402
from xtcp2.records.encode import encode_rows  # noqa: E402


def uplink_constants() -> dict:
    out = {}
    for slot, (ifname, bus, port) in enumerate((("ens1f0np0", "0000:3b:00.0", "Ethernet12"),
                                               ("ens1f1np1", "0000:3b:00.1", "Ethernet12")), 1):
        out.update({
            f"uplink{slot}_ifname": ifname, f"uplink{slot}_nic_driver": "mlx5_core",
            f"uplink{slot}_nic_model": "MT2892 Family [ConnectX-6 Dx]", f"uplink{slot}_nic_pci_vendor": 0x15B3,
            f"uplink{slot}_nic_pci_device": 0x101D, f"uplink{slot}_nic_bus_info": bus,
            f"uplink{slot}_nic_speed_mbps": 100000, f"uplink{slot}_nic_fw_version": "22.36.1010 (MT_0000000359)",
            f"uplink{slot}_lldp_chassis_name": f"leaf-r04-{slot}.dc1.example.net",
            f"uplink{slot}_lldp_chassis_id": "0c:42:a1:5e:77:0%d" % slot, f"uplink{slot}_lldp_mgmt_ip": "10.0.4.%d" % slot,
            f"uplink{slot}_lldp_port_id": port, f"uplink{slot}_lldp_port_descr": "to r04-host07 port %d" % slot,
        })
    return out


def bench_encode(rows: int, repeat: int) -> None:
    cols = close_columns(events(rows, np.random.default_rng(1)))
    with_uplink = dict(CONSTS, **uplink_constants())
    times: dict[str, list[float]] = {"off": [], "on": []}
    sizes = {}
    for _ in range(repeat):
        for name, consts in (("off", CONSTS), ("on", with_uplink)):
            t = time.perf_counter()
            body, _ = encode_rows(dict(cols), rows, consts)
            times[name].append(time.perf_counter() - t)
            sizes[name] = len(body) / rows
    report(f"encode_rows, {rows} close records", times, sizes)


def bench_poll(connections: int, repeat: int) -> None:
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon
    ns = f"uplinkbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    pop = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        pop = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.join(os.path.dirname(__file__), "population.py"),
                                "--connections", str(connections), "--procs", str(max(1, -(-connections // 8500)))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if not pop.stdout.readline().startswith("READY"):
            raise SystemExit("population failed")
        daemon = Daemon(Config(netns=[ns], dest="null", once=True, debug_level=0))
        daemon.reconcile()
        current = [{}]
        daemon.sink.add_join(lambda cols, consts: consts.update(current[0]))
        plain: dict = {}
        stamped = uplink_constants()
        nic_only = {k: v for k, v in uplink_constants().items() if "_lldp_" not in k}
        times: dict[str, list[float]] = {"off": [], "nic": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "nic": [], "on": []}
        records = 0
        settle(daemon, daemon.collector.poll().sockets)  # warm-up: every socket's owner known
        backend = "iter" if daemon.collector.iter is not None else "netlink"
        for _ in range(repeat):
            for name, consts in (("off", plain), ("nic", nic_only), ("on", stamped)):
                current[0] = consts
                c0, t = time.process_time(), time.perf_counter()
                records = daemon.collector.poll().records
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c0)
        daemon.close()
        report(f"poll of {records} sockets (-collector {backend}), wall", times, {})
        # CPU seconds of the process (every thread, kernel time of the reads included):
        # steadier than wall time when other work shares the cores
        report(f"poll of {records} sockets, CPU", cpu, {})
    finally:
        stop_population(pop, ns)


def report(what: str, times: dict, sizes: dict) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{what}; repeat={len(times['off'])}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, m in med.items():
        extra = f"  {sizes[name]:.0f} B/row" if sizes else ""
        print(f"  uplink fields {name:3}: {m * 1e3:8.1f} ms{extra}   samples {['%.0f' % (v * 1e3) for v in times[name]]}")
    low = {k: min(v) for k, v in times.items()}
    for name in med:
        if name != "off":
            print(f"  {name}/off = {med[name] / med['off']:.3f} (medians), {low[name] / low['off']:.3f} (minima)"
                  + (f"  (+{sizes[name] - sizes['off']:.0f} B/row)" if sizes else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encode", action="store_true")
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    if a.encode:
        bench_encode(a.rows, a.repeat)
    else:
        bench_poll(a.connections, a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

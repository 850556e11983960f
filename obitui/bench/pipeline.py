"""`obitui bench pipeline`: the whole fleet against the simulator at several rates.

For each rate the simulator steps each market R times a second (Binance depth and Bitget books
each get R messages/s, trades and tickers come on top: the total is measured from the feeds'
frame counters). After a warm-up, over a measured window: receive -> engine-applied latency
(from the engine's per-book log2 histograms, so quantiles are bucket-resolution: the bucket's
geometric middle), ring drops, and CPU and RSS of every process (psutil). Idle: the fleet with
the simulator at 1 step/s and the default `block` wait strategy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import psutil

from obitui.bench.machine import machine_info
from obitui.config import load_config
from obitui.core.stats import HIST_BUCKETS, hist_quantile
from obitui.supervisor import Supervisor


def _hist(sup: Supervisor) -> list[int]:
    assert sup.stats is not None
    total = [0] * HIST_BUCKETS
    for j in range(sup.stats.n_books):
        v = sup.stats.read_book(j)
        if v is not None:
            total = [a + b for a, b in zip(total, v.hist_ring_engine)]
    return total


def _frames(sup: Supervisor) -> int:
    assert sup.stats is not None
    return sum(sup.stats.read_feed(i).counters["frames"] for i in range(len(sup.cfg.feeds)))


def pin_layout(cfg: Any) -> set[int]:
    """The pinned layout: the engine spins alone on the last CPU; the feeds, this process and
    (the caller pins it) the simulator get the others. Returns the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("the pinned layout needs 2 CPUs")
    cfg.engine_wait, cfg.engine_cpu = "spin", cpus[-1]
    others = set(cpus[:-1])
    for f in cfg.feeds:
        f.cpu = cpus[0] if len(others) == 1 else None
    os.sched_setaffinity(0, others)
    return others


def measure(rate: float, warmup: float, window: float, wait: str = "block",
            layout: str = "shared") -> dict[str, Any]:
    """``layout`` "shared": no pinning (the default install). "pinned": the engine spins alone on
    the last CPU; the feeds, the simulator and this process share the others (docs/OPERATING.md)."""
    cfg = load_config(None)
    cfg.engine_wait = wait
    mine = os.sched_getaffinity(0)
    others = pin_layout(cfg) if layout == "pinned" else set()
    sup = Supervisor(cfg)
    try:
        sup.cfg = cfg.with_sim(*sup.start_simulator([], seed=1, rate=rate))
        if others and sup.sim_proc is not None:
            os.sched_setaffinity(sup.sim_proc.pid, others)
        sup.start()
        t_end = time.monotonic() + warmup
        while time.monotonic() < t_end:
            sup.poll()
            time.sleep(0.1)
        procs = {name: psutil.Process(pid) for name, pid in sup.pids().items()}
        if sup.sim_proc is not None:
            procs["sim"] = psutil.Process(sup.sim_proc.pid)
        cpu0 = {n: p.cpu_times() for n, p in procs.items()}
        h0, f0 = _hist(sup), _frames(sup)
        d0 = sum(d for _, d in sup.ring_fill())
        t0 = time.monotonic()
        while time.monotonic() - t0 < window:
            sup.poll()
            time.sleep(0.1)
        el = time.monotonic() - t0
        h1, f1 = _hist(sup), _frames(sup)
        d1 = sum(d for _, d in sup.ring_fill())
        cpu = {}
        rss = {}
        for n, p in procs.items():
            c = p.cpu_times()
            cpu[n] = round(100 * (c.user + c.system - cpu0[n].user - cpu0[n].system) / el, 1)
            rss[n] = round(p.memory_info().rss / 2**20, 1)
        h = [b - a for a, b in zip(h0, h1)]
        q = {k: hist_quantile(h, v) for k, v in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}
        return {"rate_steps": rate, "msgs_per_s": round((f1 - f0) / el), "drops": d1 - d0,
                "latency_us": {k: (round(v / 1e3, 1) if v else None) for k, v in q.items()},
                "cpu_pct": cpu, "rss_mib": rss,
                "fleet_cpu_pct": round(sum(v for k, v in cpu.items() if k != "sim"), 1)}
    finally:
        sup.stop()
        if others:
            os.sched_setaffinity(0, mine)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="470,2350,4700", help="simulator steps/s per market")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--layout", choices=("shared", "pinned"), default="shared",
                    help="shared: no pinning, block wait (default); pinned: the engine spins alone "
                         "on the last CPU, everything else on the others")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    if not args.no_idle:
        idle = measure(1.0, args.warmup, args.window, layout=args.layout)
        idle["label"] = "idle (1 step/s)"
        rows.append(idle)
    for r in (float(x) for x in args.rates.split(",")):
        row = measure(r, args.warmup, args.window, layout=args.layout)
        row["label"] = f"{r:g} steps/s"
        rows.append(row)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}))
        return 0
    for row in rows:
        print(f"{row['label']:>18}: {row['msgs_per_s']:6d} msgs/s, drops {row['drops']}, rx->applied "
              f"p50/p99/p99.9 {row['latency_us']['p50']}/{row['latency_us']['p99']}/"
              f"{row['latency_us']['p999']} us, fleet CPU {row['fleet_cpu_pct']}% "
              f"(sim {row['cpu_pct'].get('sim')}%), CPU {row['cpu_pct']}, RSS MiB {row['rss_mib']}")
    return 0

"""`obitui bench ui`: the fleet's latency with the UI off and on, in the same run.

The whole fleet runs against the simulator (default 470 steps/s per market, ~1k msgs/s in
total). Window 1: no UI. Window 2: the Textual app (8 Hz, 120x40, Textual's headless driver, so
it renders every frame without a terminal) runs in its own process attached to the same stats
block and rings. Window 3: no UI again. Per window: receive -> pushed (feeds) and receive ->
applied (engine) from the log2 histograms (bucket-resolution quantiles), and the UI's CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time
from typing import Any

import psutil

from obitui.bench.pipeline import pin_layout
from obitui.config import Config, load_config
from obitui.core.stats import HIST_BUCKETS, hist_quantile
from obitui.supervisor import Supervisor


def _ui_child(cfg: Config, stats_name: str, ring_names: list[str], seconds: float) -> None:
    from obitui.app import ObituiApp
    from obitui.controller import StatsController
    from obitui.core.stats import StatsBlock

    async def run() -> None:
        stats = StatsBlock.attach(stats_name)
        ctl = StatsController(cfg, stats, ring_names)
        app = ObituiApp(cfg, ctl, refresh_hz=8.0)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(seconds)
        ctl.stop()
        stats.close()
    asyncio.run(run())


def _snap(sup: Supervisor) -> tuple[list[int], list[int]]:
    assert sup.stats is not None
    push = [0] * HIST_BUCKETS
    applied = [0] * HIST_BUCKETS
    for i in range(len(sup.cfg.feeds)):
        push = [a + b for a, b in zip(push, sup.stats.read_feed(i).hist_receive_push)]
    for j in range(sup.stats.n_books):
        applied = [a + b for a, b in zip(applied, sup.stats.read_book(j).hist_ring_engine)]
    return push, applied


def _q(h: list[int]) -> str:
    p50, p99 = hist_quantile(h, 0.5), hist_quantile(h, 0.99)
    return f"{(p50 or 0) / 1e3:.1f}/{(p99 or 0) / 1e3:.1f}"


def _window(sup: Supervisor, seconds: float) -> tuple[list[int], list[int]]:
    a_push, a_app = _snap(sup)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        sup.poll()
        time.sleep(0.1)
    b_push, b_app = _snap(sup)
    return ([y - x for x, y in zip(a_push, b_push)], [y - x for x, y in zip(a_app, b_app)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench ui", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=470.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--layout", choices=("shared", "pinned"), default="shared",
                    help="pinned: the engine spins alone on the last CPU; feeds, simulator and UI "
                         "share the others (as in `obitui bench pipeline --layout pinned`)")
    args = ap.parse_args(argv)
    cfg = load_config(None)
    mine = os.sched_getaffinity(0)
    others = pin_layout(cfg) if args.layout == "pinned" else set()
    sup = Supervisor(cfg)
    rows: list[tuple[str, Any, Any, str]] = []
    try:
        sup.cfg = cfg = cfg.with_sim(*sup.start_simulator([], seed=1, rate=args.rate))
        if others and sup.sim_proc is not None:
            os.sched_setaffinity(sup.sim_proc.pid, others)
        sup.start()
        time.sleep(4)
        push, app = _window(sup, args.window)
        rows.append(("UI off", push, app, "-"))
        child = mp.get_context("spawn").Process(
            target=_ui_child, args=(cfg, sup.stats_name, sup.ring_names, args.window + 4))
        child.start()
        time.sleep(3)                        # the app starting up is not part of the window
        proc = psutil.Process(child.pid)
        c0 = proc.cpu_times()
        t0 = time.monotonic()
        push, app = _window(sup, args.window)
        c1 = proc.cpu_times()
        ui_cpu = 100 * (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0)
        rows.append(("UI on", push, app, f"{ui_cpu:.1f}%"))
        child.join(30)
        push, app = _window(sup, args.window)
        rows.append(("UI off again", push, app, "-"))
    finally:
        sup.stop()
        os.sched_setaffinity(0, mine)
    print(f"layout: {args.layout}")
    print(f"{'window':<13} {'rx->pushed p50/p99 us':>22} {'rx->applied p50/p99 us':>23} {'UI CPU':>7}")
    for name, push, app, cpu in rows:
        print(f"{name:<13} {_q(push):>22} {_q(app):>23} {cpu:>7}")
    return 0

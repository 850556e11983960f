"""`obitui bench sim`: the highest message rate the simulator sustains to one client, and its
CPU cost per rate.

The simulator runs as `obitui sim --symbols BTCUSDT --rate R` in its own process (one Binance
and one Bitget market stepping at R steps/s); one websockets client in this process subscribes
to Bitget's `books` channel of BTCUSDT (one update per market step; Binance's depth streams are
paced at 10 or 1 events/s like the venue's, so they no longer show the step rate) and counts the
updates that arrive over a measured window
after a warm-up, while psutil reads the simulator's CPU time. A rate is sustained when the
client receives >= 95% of it. The client shares the machine's 2 cores with the simulator.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import psutil
import websockets

from obitui.bench.machine import machine_info


SUBSCRIBE = json.dumps({"op": "subscribe", "args": [{"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}]})


async def _count(url: str, warmup: float, window: float) -> int:
    """Book updates received over ``window`` s after ``warmup`` s (acks and the snapshot are
    not counted)."""
    async with websockets.connect(url, max_size=1 << 22, max_queue=None) as ws:
        await ws.send(SUBSCRIBE)
        end_warm = time.monotonic() + warmup
        while time.monotonic() < end_warm:
            await ws.recv()
        n = 0
        end = time.monotonic() + window
        while time.monotonic() < end:
            if '"update"' in await ws.recv():
                n += 1
        return n


def measure(rate: float, warmup: float = 1.0, window: float = 3.0) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "sim", "--symbols", "BTCUSDT",
                             "--rate", str(rate), "--depth", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]      # binance ws=... rest=...
        line = proc.stdout.readline()  # type: ignore[union-attr]  # bitget ws=...
        ws_url = line.split()[1].split("=", 1)[1]
        ps = psutil.Process(proc.pid)
        cpu0 = ps.cpu_times()
        t0 = time.monotonic()
        n = asyncio.run(_count(ws_url, warmup, window))
        cpu1 = ps.cpu_times()
        elapsed = time.monotonic() - t0
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
        return {"rate": rate, "received_per_s": n / window, "sim_cpu_pct": 100 * cpu,
                "sustained": n / window >= 0.95 * rate}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,5000,10000,20000,40000")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for r in (float(x) for x in args.rates.split(",")):
        row = measure(r)
        rows.append(row)
        if not args.json:
            print(f"rate {r:8.0f}/s: received {row['received_per_s']:9.0f}/s, simulator CPU "
                  f"{row['sim_cpu_pct']:5.1f}% of a core, {'sustained' if row['sustained'] else 'NOT sustained'}")
    best = max((r["rate"] for r in rows if r["sustained"]), default=0)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows, "highest_sustained": best}))
    else:
        print(f"highest sustained rate to one client: {best:.0f} msgs/s")
    return 0

"""`obitui bench feed`: what one feed process sustains.

The Binance depth feed (Bi-OB) alone, in its own process, with the engine consuming its ring.
Its source is a capture generated from the simulator's market model (a REST snapshot, then depth
frames of 20 level changes each, 1 ms apart) served by the simulator's replay: at speed X the
offered rate is X thousand frames/s, at speed 0 as fast as the feed reads (the live market model
cannot generate 20-level frames fast enough on 2 cores; the replay can). Over a measured window
after a warm-up: frames/s received, receive -> pushed latency (the FeedSlot's log2 histogram:
quantiles are the bucket's geometric middle), the feed's CPU and CPU per 1k frames/s, gaps.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from obitui.bench.machine import machine_info
from obitui.config import load_config, sim_bases
from obitui.core.stats import hist_quantile
from obitui.feeds.binance.venue import SPOT
from obitui.supervisor import Supervisor


def make_capture(path: Path, frames: int, changes: int = 20, spacing_ns: int = 1_000_000) -> None:
    """A Binance session: the REST snapshot, then ``frames`` depth events ``spacing_ns`` apart."""
    import orjson

    from obitui.capture import CaptureRecord, write_capture
    from obitui.sim.binance import DECIMALS
    from obitui.sim.market import ASK, BID, MarketModel, SymbolSpec, fmt
    m = MarketModel(SymbolSpec("BTCUSDT", 2, 5, 2_700_000, 2000), 1, history=10, changes_per_step=changes)
    px = lambda t: fmt(t, 2, DECIMALS)  # noqa: E731
    qx = lambda q: fmt(q, 5, DECIMALS)  # noqa: E731
    t0 = time.time_ns()
    snap = {"lastUpdateId": m.update_id, "bids": [[px(p), qx(q)] for p, q in m.levels(BID, 1000)],
            "asks": [[px(p), qx(q)] for p, q in m.levels(ASK, 1000)]}
    v = SPOT
    recs = [CaptureRecord(t0, v.exchange, "rest", f"{v.rest_url}{v.depth_path}?symbol=BTCUSDT&limit=1000",
                          orjson.dumps(snap).decode())]
    url = f"{v.ws_url}/stream?streams=btcusdt@depth@100ms"
    for i in range(frames):
        st = m.step()
        ts = t0 + (i + 1) * spacing_ns
        data = {"e": "depthUpdate", "E": ts // 1_000_000, "s": "BTCUSDT", "U": st.first_id, "u": st.last_id,
                "b": [[px(p), qx(q)] for s_, p, q in st.changes if s_ == BID],
                "a": [[px(p), qx(q)] for s_, p, q in st.changes if s_ == ASK]}
        recs.append(CaptureRecord(ts, v.exchange, "ws", url,
                                  orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data}).decode()))
    write_capture(path, recs)


def measure(speed: float, capture: Path, warmup: float = 2.0, window: float = 5.0) -> dict[str, Any]:
    cfg = load_config(None)
    cfg.feeds = [f for f in cfg.feeds if f.venue == "binance" and f.channel == "depth"]
    label = cfg.feeds[0].label
    sup = Supervisor(cfg)
    rate = speed * 1000 if speed else 0.0
    try:
        sup.start_simulator([], replay=str(capture), replay_speed=speed)
        sup.cfg = cfg.with_sim_bases(sim_bases(sup.sim_urls))
        sup.start()
        assert sup.stats is not None
        if speed:
            time.sleep(warmup)
        else:
            # as fast as it reads: the whole capture may take about as long as a warm-up, so
            # the window opens once the feed is synced and closes when the frames stop
            t_end = time.monotonic() + 30
            while time.monotonic() < t_end:
                v = sup.stats.read_feed(0)
                if v is not None and v.state.word == "connected_synced" and v.counters["frames"] > 1000:
                    break
                time.sleep(0.01)
        proc = psutil.Process(sup.pids()[label])
        c0 = proc.cpu_times()
        v0 = sup.stats.read_feed(0)
        t0 = time.monotonic()
        last, t_last = v0.counters["frames"], t0
        while time.monotonic() - t0 < window:
            sup.poll()
            time.sleep(0.1)
            n_now = sup.stats.read_feed(0).counters["frames"]
            if n_now != last:
                last, t_last = n_now, time.monotonic()
            elif not speed and time.monotonic() - t_last > 0.3:
                break                     # the capture is done
        el = (t_last if not speed else time.monotonic()) - t0
        c1 = proc.cpu_times()
        v1 = sup.stats.read_feed(0)
        frames = (v1.counters["frames"] - v0.counters["frames"]) / el
        push = [b - a for a, b in zip(v0.hist_receive_push, v1.hist_receive_push)]
        exr = [b - a for a, b in zip(v0.hist_exchange_receive, v1.hist_exchange_receive)]
        cpu = 100 * (c1.user + c1.system - c0.user - c0.system) / el
        gaps = v1.counters["gaps"] - v0.counters["gaps"]
        drops = v1.counters["ring_drops"] - v0.counters["ring_drops"]
        engine_rate = sup.stats.read_engine().records_per_s if sup.stats.read_engine() else 0.0
        del exr
        return {"rate": rate, "frames_per_s": round(frames), "cpu_pct": round(cpu, 1),
                "cpu_pct_per_1k": round(cpu / max(frames, 1) * 1000, 2),
                "push_p50_us": round((hist_quantile(push, 0.5) or 0) / 1e3, 1),
                "push_p99_us": round((hist_quantile(push, 0.99) or 0) / 1e3, 1),
                "gaps": gaps, "ring_drops": drops, "engine_records_per_s": round(engine_rate),
                "state": v1.state.word,
                "sustained": (frames >= 0.95 * rate if rate else True) and gaps == 0}
    finally:
        sup.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench feed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speeds", default="1,10,20,0", help="replay speeds: X = X thousand frames/s, 0 = max")
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        cap = Path(d) / "depth20.jsonl"
        make_capture(cap, args.frames)
        rows = [measure(float(x), cap) for x in args.speeds.split(",")]
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}))
        return 0
    for r in rows:
        offered = f"{r['rate']:7.0f}/s" if r["rate"] else "    max"
        print(f"offered {offered}: received {r['frames_per_s']:6d} frames/s (20 levels), receive->pushed "
              f"p50/p99 {r['push_p50_us']}/{r['push_p99_us']} us, feed CPU {r['cpu_pct']}% "
              f"({r['cpu_pct_per_1k']}% per 1k frames/s), gaps {r['gaps']}, ring drops {r['ring_drops']}, "
              f"state {r['state']}")
    return 0

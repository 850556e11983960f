"""`obitui bench scale`: the default fleet watching 1, 10, 50, 150 markets (issue #19).

For each market count N, one after the other in this process: the simulator with ``--symbols
top:N`` (N = 1: BTCUSDT alone, the setup of `obitui bench pipeline`), the default fleet (Bi-OB,
Bi-TR, Bg-OB, Bg-PR, every feed watching the N markets the supervisor picks with ``top:N``, as
``obitui --sim --symbols top:N`` does), the default CPU layout (no pinning, the config's engine
wait, ``block``; ``--wait batch`` for the other wait, ``--layout pinned`` for the other end). The config as built in: one process per venue-channel, its markets over connections of
the venue's default size (Bitget 50, Binance 200; ``--fit connection`` puts them all on one
connection instead). Then:

- time to all-synced: from the fleet's start (``Supervisor.start``: the venue scales, the
  segments, the processes) until every book feed says all its books are valid (its
  ``books_synced`` gauge equals ``books``) and the engine holds all 2N books valid;
- a warm-up, then a measured window (``--window``), over which: CPU of every process (psutil
  ``cpu_times`` deltas); the supervisor runs in this process, and its share is the CPU time of
  this thread inside ``Supervisor.poll`` (``time.thread_time``), which is all the supervisor
  does once the fleet runs (this process's whole CPU, which also has the simulator's output
  reader thread and the bench's sleeps, is in the JSON as ``bench_proc``); the simulator's CPU
  is reported apart and never counted in obitui's total (feeds + engine + supervisor);
- msgs/s: the feeds' ``frames`` counters; records/s: the engine's ``records``;
- frame receive -> book applied in the engine: the engine's per-book log2 histograms, which
  count ``time.time_ns() - recv_ns`` when a book record is applied, ``recv_ns`` being the
  time the feed's read loop got the frame from the websocket library (``ws.recv()``, carried
  in the record; time in the socket buffer and the library's queue is before it); the bucket
  counts of all 2N books are summed over the window, quantiles are the bucket's geometric
  middle (92.7 us stands for [65, 131) us). Beside it: the feeds' receive -> pushed
  histograms (the feeds' part of it), and the simulator's event time (whole ms) -> receive,
  which bounds what comes before ``recv_ns`` (the simulator's own lag included);
- the engine's batches (polls of a ring that found records) and its voluntary context
  switches (each one a futex sleep, or with ``batch`` also a pause after work):
  records per batch, sleeps/s, CPU per sleep;
- RSS (and PSS, which splits the shared rings and stats block between their users) of every
  process at the end of the window; obitui's total is feeds + engine (the supervisor is this
  benchmark process, whose memory is the benchmark's own); RSS per book beyond the fixed cost:
  (RSS(N) - RSS(1)) / (2N - 2);
- REST weight: the Binance book feeds' ``rest_requests`` x the venue's ``depth_weight`` of the
  snapshot limit the feed asks for (``snapshot_limit``, lowered by the feed when a cold start
  of all its books would not fit its minute's budget); beside it the simulator's count for
  the wall-clock minute (``x-mbx-used-weight-1m`` right after all books synced, when the fleet
  started in that minute), which also holds the market lists of ``top:N`` and the scales;
- gaps (feeds' and the engine's ring-sequence gaps), ring drops, resyncs, since the fleet's
  start; books valid at the end of the window; the simulator's violations of venue limits.

Targets (issue #19) are printed under the tables.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from typing import Any, Callable

import psutil

from obitui.bench.machine import bench_result, publish_result
from obitui.bench.pipeline import pin_layout
from obitui.config import WAIT_STRATEGIES, engine_nap_us, engine_spin_us, load_config
from obitui.core.stats import HIST_BUCKETS, hist_quantile
from obitui.feeds.venue import venue
from obitui.supervisor import Supervisor

# `obitui bench pipeline --rates 470 ...`, shared layout, as BENCHMARKS.md publishes it (the
# single-market figures the N = 1 fleet must not be slower than): two runs, the first pipeline
# table and "Session 3". Since then (#17) the simulator paces Binance's depth@100ms stream as
# the venue does (10 messages/s, each carrying ~47 steps), so msgs/s, Bi-OB's and the engine's
# load are not the same traffic; Bitget's books feed (Bg-OB) still gets one message a step.
PIPELINE_470 = ({"msgs_per_s": 1009, "fleet_cpu_pct": 26.2, "bg_ob_cpu_pct": 7.0, "engine_cpu_pct": 9.8,
                 "p50_us": 92.7, "p99_us": 370.7},
                {"msgs_per_s": 1004, "fleet_cpu_pct": 32.4, "bg_ob_cpu_pct": 9.5, "engine_cpu_pct": 10.3,
                 "p50_us": 92.7, "p99_us": 370.7})
RUN_TO_RUN = 1.3     # BENCHMARKS.md: absolute figures move 10-30 % between runs on this machine

TARGET_MARKETS = 150           # the market count of the CPU targets
TARGET_CPU_PCT = 60.0          # obitui's processes at 150 markets, % of one core
TARGET_CPU_PER_MARKET = 1.2    # CPU per market at 150 / at 10
TARGET_P99_US = 1000.0         # frame arrival -> book applied
TARGET_ENGINE_US = 5.0         # engine CPU per record
TARGET_MIB_PER_BOOK = 2.0      # RSS beyond the fixed cost


class _TimedSupervisor(Supervisor):
    """The supervisor, noting when the fleet starts (what `launch` does after the simulator
    and the ``top:N`` pick) and the CPU time this thread spends in ``poll``."""
    fleet_started = 0.0
    fleet_started_wall = 0.0
    poll_cpu = 0.0

    def start(self) -> None:
        self.fleet_started = time.monotonic()
        self.fleet_started_wall = time.time()
        super().start()

    def poll(self) -> list[str]:
        t = time.thread_time()
        try:
            return super().poll()
        finally:
            self.poll_cpu += time.thread_time() - t


def _retry(read: Callable[[], Any]) -> Any:
    """A seqlock'd slot read (None when the writer was mid-write at every try)."""
    for _ in range(200):
        v = read()
        if v is not None:
            return v
        time.sleep(0.001)
    raise RuntimeError("a stats slot stayed mid-write")


def _sim_stats(sup: Supervisor) -> dict[str, Any]:
    rest = sup.sim_urls["binance"][1].rstrip("/")
    try:
        with urllib.request.urlopen(f"{rest}/sim/stats", timeout=5) as r:
            return json.loads(r.read())
    except OSError as exc:
        return {"error": str(exc)}


def _snapshot_limit(f: Any) -> int:
    """The REST depth limit a Binance book feed asks for: its ``snapshot_limit``, lowered by
    the feed (``BinanceDepthFeed.__init__``, ``venue.fit_limit``) when a cold start of all its
    books would not fit 80 % of its share of the minute's weight."""
    v = f.venue_info
    fit = getattr(v, "fit_limit", None)
    if fit is None:
        return int(f.snapshot_limit)
    return int(fit(f.snapshot_limit, len(f.symbols), v.weight_limit // f.rest_share))


def _sim_minute_weight(sup: Supervisor) -> tuple[int, float] | None:
    """The weight the simulator counted for this IP in the current wall-clock minute (its
    ``x-mbx-used-weight-1m``, less the 1 of the ping that asks) and the time it was read."""
    rest = sup.sim_urls["binance"][1].rstrip("/")
    try:
        with urllib.request.urlopen(f"{rest}/api/v3/ping", timeout=5) as r:
            return int(r.headers.get("x-mbx-used-weight-1m", "0")) - 1, time.time()
    except (OSError, ValueError):
        return None


def _sum_hists(hists: list[list[int]]) -> list[int]:
    total = [0] * HIST_BUCKETS
    for h in hists:
        for i, c in enumerate(h):
            total[i] += c
    return total


def _quantiles_us(h: list[int], qs: tuple[float, ...] = (0.5, 0.99, 0.999)) -> list[float | None]:
    out = []
    for q in qs:
        v = hist_quantile(h, q)
        out.append(round(v / 1e3, 1) if v is not None else None)
    return out


class _Snap:
    """The fleet's counters at one moment."""

    def __init__(self, sup: _TimedSupervisor, procs: dict[str, psutil.Process]) -> None:
        st = sup.stats
        assert st is not None
        self.t = time.monotonic()
        self.feeds = [_retry(lambda i=i: st.read_feed(i)) for i in range(len(sup.cfg.feeds))]
        self.engine = _retry(st.read_engine)
        self.books = [_retry(lambda j=j: st.read_book(j)) for j in range(st.n_books)]
        self.cpu = {}
        self.vcsw = {}
        for name, p in procs.items():
            try:
                c = p.cpu_times()
                self.cpu[name] = c.user + c.system
                self.vcsw[name] = p.num_ctx_switches().voluntary
            except psutil.Error:     # it died (the supervisor restarts it): left out
                pass
        self.sup_cpu = sup.poll_cpu
        self.ring_drops = sum(d for _, d in sup.ring_fill())

    def counter(self, name: str, idx: list[int] | None = None) -> int:
        return sum(f.counters[name] for k, f in enumerate(self.feeds) if idx is None or k in idx)


def _progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench scale: {text}", file=sys.stderr, flush=True)


def _poll_for(sup: Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sup.poll()
        time.sleep(0.1)


def measure(n: int, *, rate: float | None = None, warmup: float = 3.0, window: float = 10.0,
            sync_timeout: float = 240.0, layout: str = "shared", fit: str = "config",
            wait: str = "", spin_us: int | None = None, nap_us: int | None = None) -> dict[str, Any]:
    """One fleet watching ``n`` markets: see the module's docstring. ``layout`` "pinned": the
    engine spins alone on the last CPU, the rest share the others (`bench pipeline --layout
    pinned`, docs/OPERATING.md). ``fit`` "config": the config as built in (one process per
    venue-channel, its markets over connections of the venue's default size: Bitget 50, Binance
    200); "connection": one connection per process taking all N markets. ``wait``: the engine's
    wait strategy ("": the config's)."""
    cfg = load_config(None)
    if wait:
        cfg.engine_wait = wait
    if spin_us is not None:
        cfg.engine_spin = spin_us
    if nap_us is not None:
        cfg.engine_nap = nap_us
    cfg.validate()
    mine = os.sched_getaffinity(0)
    others = pin_layout(cfg) if layout == "pinned" else set()
    if fit == "connection":
        for f in cfg.feeds:
            # one connection per feed process: Bitget's default of 50 channels a connection
            # would refuse or split top:150, so the connection takes them all (the venue allows
            # 1000); the equivalent of `per_connection = N` in a config file
            if n > f.connection_size:
                f.per_connection = n
    sup = _TimedSupervisor(cfg, log_level=logging.WARNING)
    try:
        # launch(): the simulator, the top:N pick, the fleet; N = 1 runs the default BTCUSDT
        if rate:
            sup.launch(sim=True, rate=rate, top=n if n > 1 else None)
        else:
            sup.launch(sim=True, top=n if n > 1 else None)
        if others and sup.sim_proc is not None:
            os.sched_setaffinity(sup.sim_proc.pid, others)
        feeds = sup.cfg.feeds
        labels = [f.label for f in feeds]
        symbols = list(feeds[0].symbols)
        book_idx = [i for i, f in enumerate(feeds) if f.is_book]
        st = sup.stats
        assert st is not None and sup.sim_proc is not None
        n_books = st.n_books
        # --- wait until every book is synced
        synced_at: dict[str, float] = {}
        t_all: float | None = None
        deadline = sup.fleet_started + sync_timeout
        while time.monotonic() < deadline:
            sup.poll()
            now = time.monotonic()
            for i in book_idx:
                v = st.read_feed(i)
                if (v is not None and labels[i] not in synced_at and v.counters["books"] > 0
                        and v.counters["books_synced"] == v.counters["books"]):
                    synced_at[labels[i]] = round(now - sup.fleet_started, 2)
            if len(synced_at) == len(book_idx):
                views = [st.read_book(j) for j in range(n_books)]
                if all(b is not None and b.valid for b in views):
                    t_all = now - sup.fleet_started
                    break
            time.sleep(0.05)
        # the simulator's count, when the fleet started in this wall-clock minute (it then holds
        # every request of the fleet's start; the top:N lists were asked just before)
        sim_weight = _sim_minute_weight(sup)
        if sim_weight is not None and int(sim_weight[1] // 60) != int(sup.fleet_started_wall // 60):
            sim_weight = None
        _progress(f"{n} market(s): all synced after {_f(t_all, '{:.2f}')} s; warm-up, window")
        # --- warm up, then the window
        _poll_for(sup, warmup)
        procs = {name: psutil.Process(pid) for name, pid in sup.pids().items()}
        missing = [name for name in [*labels, "engine"] if name not in procs]   # not running now
        procs["sim"] = psutil.Process(sup.sim_proc.pid)
        me = psutil.Process(os.getpid())
        bench0 = me.cpu_times()
        s0 = _Snap(sup, procs)
        _poll_for(sup, window)
        s1 = _Snap(sup, procs)
        bench1 = me.cpu_times()
        sim_stats = _sim_stats(sup)
        _progress(f"{n} market(s): measured; stopping the fleet")
        el = s1.t - s0.t
        # --- figures
        alive = [name for name in procs if name in s0.cpu and name in s1.cpu]
        missing += [name for name in procs if name not in alive and name not in missing]
        cpu = {name: round(100 * (s1.cpu[name] - s0.cpu[name]) / el, 2) for name in alive}
        cpu["sup"] = round(100 * (s1.sup_cpu - s0.sup_cpu) / el, 2)
        # voluntary context switches/s: how often each process went to sleep (the engine's
        # futex sleeps, and with the batch wait its pauses after work)
        sleeps = {name: round((s1.vcsw[name] - s0.vcsw[name]) / el) for name in alive}
        bench_proc = round(100 * (bench1.user + bench1.system - bench0.user - bench0.system) / el, 2)
        fleet = [*labels, "engine"]
        obitui_cpu = round(sum(cpu.get(k, 0.0) for k in fleet) + cpu["sup"], 2)
        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        for name, p in procs.items():
            try:
                mi = p.memory_full_info()
                rss[name] = round(mi.rss / 2**20, 1)
                pss[name] = round(getattr(mi, "pss", mi.rss) / 2**20, 1)
            except psutil.Error:
                pass
        frames = s1.counter("frames") - s0.counter("frames")
        records = s1.engine.records - s0.engine.records
        engine_cpu_s = s1.cpu.get("engine", 0.0) - s0.cpu.get("engine", 0.0)
        h_applied = [b - a for a, b in zip(_sum_hists([b.hist_ring_engine for b in s0.books]),
                                           _sum_hists([b.hist_ring_engine for b in s1.books]))]
        h_pushed = [b - a for a, b in zip(_sum_hists([f.hist_receive_push for f in s0.feeds]),
                                          _sum_hists([f.hist_receive_push for f in s1.feeds]))]
        h_exch = [b - a for a, b in zip(_sum_hists([f.hist_exchange_receive for f in s0.feeds]),
                                        _sum_hists([f.hist_exchange_receive for f in s1.feeds]))]
        binance_books = [i for i in book_idx if feeds[i].venue_info.exchange == "binance"]
        limits = {labels[i]: _snapshot_limit(feeds[i]) for i in binance_books}
        w_each = {labels[i]: feeds[i].venue_info.depth_weight(limits[labels[i]])  # type: ignore[attr-defined]
                  for i in binance_books}
        weight = sum(s1.feeds[i].counters["rest_requests"] * w_each[labels[i]] for i in binance_books)
        weight_window = sum((s1.feeds[i].counters["rest_requests"] - s0.feeds[i].counters["rest_requests"])
                            * w_each[labels[i]] for i in binance_books)
        batches = s1.engine.batches - s0.engine.batches
        p50, p99, p999 = _quantiles_us(h_applied)
        pp50, pp99, _ = _quantiles_us(h_pushed)
        ep50, ep99, _ = _quantiles_us(h_exch)
        total_rss = round(sum(rss.get(k, 0.0) for k in fleet), 1)
        total_pss = round(sum(pss.get(k, 0.0) for k in fleet), 1)
        return {
            "markets": n, "symbols": symbols if n <= 10 else symbols[:5] + ["..."],
            "books": n_books, "rate": rate or 20.0, "layout": layout, "fit": fit, "wait": cfg.engine_wait,
            "spin_us": engine_spin_us(cfg), "nap_us": engine_nap_us(cfg),
            "per_connection": {f.label: f.connection_size for f in feeds},
            "books_valid": sum(1 for b in s1.books if b.valid),
            "processes_missing": missing,
            "feed_states": {labels[i]: f.state.word for i, f in enumerate(s1.feeds)},
            "fleet_start_second_of_minute": round(sup.fleet_started_wall % 60, 1),
            "time_to_all_synced_s": round(t_all, 2) if t_all is not None else None,
            "feed_synced_s": synced_at,
            "window_s": round(el, 2),
            "msgs_per_s": round(frames / el),
            "records_per_s": round(records / el),
            "cpu_pct": cpu, "bench_proc_cpu_pct": bench_proc,
            "obitui_cpu_pct": obitui_cpu,
            "fleet_cpu_pct": round(sum(cpu.get(k, 0.0) for k in fleet), 2),
            "cpu_per_market_pct": round(obitui_cpu / n, 3),
            "cpu_per_1k_msgs_pct": round(obitui_cpu / (frames / el / 1e3), 2) if frames else None,
            "engine_us_per_record": round(1e6 * engine_cpu_s / records, 2) if records else None,
            # the engine's polls that found records: records per batch, CPU per batch
            "engine_batches_per_s": round(batches / el),
            "sleeps_per_s": sleeps,
            "engine_us_per_sleep": (round(1e6 * engine_cpu_s / (s1.vcsw["engine"] - s0.vcsw["engine"]), 1)
                                    if s1.vcsw.get("engine", 0) > s0.vcsw.get("engine", 0) else None),
            "engine_records_per_batch": round(records / batches, 2) if batches else None,
            "engine_us_per_batch": round(1e6 * engine_cpu_s / batches, 1) if batches else None,
            "rx_applied_us": {"p50": p50, "p99": p99, "p999": p999, "count": sum(h_applied)},
            "rx_pushed_us": {"p50": pp50, "p99": pp99, "count": sum(h_pushed)},
            # the simulator's event time (whole ms) -> the feed's receive: its queues, the socket
            # and the websocket library's, plus 0-1 ms of the ms truncation
            "exch_rx_us": {"p50": ep50, "p99": ep99, "count": sum(h_exch)},
            "rss_mib": rss, "pss_mib": pss,
            "obitui_rss_mib": total_rss, "obitui_pss_mib": total_pss,
            "rest_weight_depth": weight, "rest_weight_depth_window": weight_window,
            "snapshot_limit": limits, "snapshot_weight": w_each,
            "sim_minute_weight": sim_weight[0] if sim_weight is not None else None,
            "rest_requests": s1.counter("rest_requests"),
            "rest_weight_waits": s1.counter("rest_weight_waits"),
            "sim_rest": {k: v for k, v in sim_stats.get("counters", {}).items()
                         if k.startswith(("rest_", "usdm_rest_"))},
            "sim_violations": sim_stats.get("violations", sim_stats.get("error")),
            "gaps": s1.counter("gaps"), "engine_gaps": s1.engine.gaps,
            "ring_drops": s1.counter("ring_drops") + s1.ring_drops,
            "resyncs": s1.counter("resyncs"), "reconnects": s1.counter("reconnects"),
            "bad_records": s1.engine.bad_records,
            "gaps_window": s1.counter("gaps") - s0.counter("gaps"),
            "ring_drops_window": s1.counter("ring_drops") - s0.counter("ring_drops"),
            "resyncs_window": s1.counter("resyncs") - s0.counter("resyncs"),
        }
    finally:
        sup.stop()
        if others:
            os.sched_setaffinity(0, mine)


# ------------------------------------------------------------ report
def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _variants(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r.get("variant", "") for r in rows))


def _add_ratios(rows: list[dict[str, Any]], ref: int) -> None:
    """CPU per market and per 1k msgs/s against the row of ``ref`` markets; RSS per book
    beyond the one-market row (each engine wait variant against its own rows)."""
    for v in _variants(rows):
        _add_ratios_of([r for r in rows if r.get("variant", "") == v], ref)


def _add_ratios_of(rows: list[dict[str, Any]], ref: int) -> None:
    base = next((r for r in rows if r["markets"] == ref and not r.get("pipeline")), None)
    one = next((r for r in rows if r["markets"] == 1 and not r.get("pipeline")), None)
    for r in rows:
        r["cpu_per_market_vs_ref"] = (round(r["cpu_per_market_pct"] / base["cpu_per_market_pct"], 2)
                                      if base and base["cpu_per_market_pct"] and not r.get("pipeline") else None)
        r["cpu_per_1k_msgs_vs_ref"] = (round(r["cpu_per_1k_msgs_pct"] / base["cpu_per_1k_msgs_pct"], 2)
                                       if base and base.get("cpu_per_1k_msgs_pct") and r.get("cpu_per_1k_msgs_pct")
                                       and not r.get("pipeline") else None)
        r["rss_mib_per_book"] = (round((r["obitui_rss_mib"] - one["obitui_rss_mib"]) / (2 * r["markets"] - 2), 3)
                                 if one and r["markets"] > 1 and not r.get("pipeline") else None)
        # the engine's cost of a record beyond what it spends with one market (waking up at
        # least every 50 ms, publishing at 8 Hz): at a few records/s that fixed cost is all
        # the per-record figure shows
        d_rps = r["records_per_s"] - one["records_per_s"] if one else 0
        r["engine_us_per_record_marginal"] = (
            round(1e4 * (r["cpu_pct"].get("engine", 0.0) - one["cpu_pct"].get("engine", 0.0)) / d_rps, 2)
            if one and r is not one and d_rps > 0 and not r.get("pipeline") else None)
        r["pss_mib_per_book"] = (round((r["obitui_pss_mib"] - one["obitui_pss_mib"]) / (2 * r["markets"] - 2), 3)
                                 if one and r["markets"] > 1 and not r.get("pipeline") else None)


def _label(r: dict[str, Any]) -> str:
    base = f"1 @{r['rate']:g}/s" if r.get("pipeline") else str(r["markets"])
    return f"{base} {r['variant']}" if r.get("variant") else base


def tables(rows: list[dict[str, Any]], ref: int) -> list[tuple[list[str], list[list[str]]]]:
    feeds = list(dict.fromkeys(k for r in rows for k in r["cpu_pct"] if k not in ("engine", "sim", "sup")))
    a_head = ["markets", "to synced s", "msgs/s", "records/s", *[f"{f} %" for f in feeds], "engine %",
              "sup %", "obitui %", "sim %", "obitui %/market", f"x at {ref}", "% per 1k msgs/s",
              f"x at {ref}", "engine us/record", "beyond 1 market", "engine records/batch",
              "engine sleeps/s", "engine us/sleep"]
    a = []
    for r in rows:
        c = r["cpu_pct"]
        a.append([_label(r), _f(r["time_to_all_synced_s"]), f"{r['msgs_per_s']:,}", f"{r['records_per_s']:,}",
                  *[_f(c.get(f)) for f in feeds], _f(c.get("engine")), _f(c.get("sup"), "{:.2f}"),
                  _f(r["obitui_cpu_pct"]), _f(c.get("sim")), _f(r["cpu_per_market_pct"], "{:.3f}"),
                  _f(r["cpu_per_market_vs_ref"], "{:.2f}"), _f(r["cpu_per_1k_msgs_pct"], "{:.2f}"),
                  _f(r["cpu_per_1k_msgs_vs_ref"], "{:.2f}"), _f(r["engine_us_per_record"], "{:.2f}"),
                  _f(r.get("engine_us_per_record_marginal"), "{:.2f}"),
                  _f(r.get("engine_records_per_batch"), "{:.2f}"),
                  _f(r.get("sleeps_per_s", {}).get("engine"), "{:,}"), _f(r.get("engine_us_per_sleep"))])
    b_head = ["markets", "books valid", "rx->applied p50/p99/p99.9 us", "rx->pushed p50/p99 us",
              "sim event->rx p50/p99 us",
              "RSS MiB obitui (engine)", "MiB/book beyond 1", "PSS MiB obitui", "PSS MiB/book",
              "sim RSS MiB", "REST weight (limit)", "sim's minute", "gaps", "drops", "resyncs", "violations"]
    b = []
    for r in rows:
        q, p, e = r["rx_applied_us"], r["rx_pushed_us"], r.get("exch_rx_us", {})
        viol = r["sim_violations"]
        b.append([_label(r), f"{r['books_valid']}/{r['books']}",
                  f"{_f(q['p50'])}/{_f(q['p99'])}/{_f(q['p999'])}", f"{_f(p['p50'])}/{_f(p['p99'])}",
                  f"{_f(e.get('p50'))}/{_f(e.get('p99'))}",
                  f"{r['obitui_rss_mib']:.1f} ({r['rss_mib'].get('engine', 0):.1f})",
                  _f(r["rss_mib_per_book"], "{:.3f}"), f"{r['obitui_pss_mib']:.1f}",
                  _f(r["pss_mib_per_book"], "{:.3f}"), _f(r["rss_mib"].get("sim")),
                  f"{r['rest_weight_depth']:,} ({'/'.join(str(x) for x in r.get('snapshot_limit', {}).values())})",
                  _f(r.get("sim_minute_weight"), "{:,}"), f"{r['gaps']}+{r['engine_gaps']}", str(r["ring_drops"]),
                  str(r["resyncs"]), str(len(viol)) if isinstance(viol, dict) else str(viol)])
    return [(a_head, a), (b_head, b)]


def render(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    w = [max(len(h), *(len(row[k]) for row in body)) for k, h in enumerate(head)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w[k]) if k == 0 else c.rjust(w[k]) for k, c in enumerate(cells)).rstrip()
    out = [line(head)] + [line(row) for row in body]
    return "\n".join(out)


def verdicts(rows: list[dict[str, Any]], ref: int, top_n: int) -> list[tuple[str, str, str]]:
    """(target, measured, met / missed) per target of issue #19."""
    scale = [r for r in rows if not r.get("pipeline")]
    out: list[tuple[str, str, str]] = []

    def ok(flag: bool | None) -> str:
        return "n/a" if flag is None else "met" if flag else "MISSED"

    big = next((r for r in scale if r["markets"] == top_n), None) or max(scale, key=lambda r: r["markets"])
    # the CPU targets are judged at TARGET_MARKETS; a run without that count shows its largest
    out.append((f"obitui processes <= {TARGET_CPU_PCT:g} % of one core at {top_n} markets",
                f"{big['obitui_cpu_pct']:.1f} % at {big['markets']} (feeds + engine + supervisor; "
                f"simulator {big['cpu_pct'].get('sim', 0):.1f} % apart)",
                ok(big["obitui_cpu_pct"] <= TARGET_CPU_PCT) if big["markets"] == top_n else "n/a"))
    ratio = big.get("cpu_per_market_vs_ref")
    ratio_msgs = big.get("cpu_per_1k_msgs_vs_ref")
    out.append((f"CPU per market at {top_n} <= {TARGET_CPU_PER_MARKET:g} x at {ref}",
                f"{_f(ratio, '{:.2f}')} x (per 1k msgs/s: {_f(ratio_msgs, '{:.2f}')} x)",
                ok(ratio <= TARGET_CPU_PER_MARKET if ratio is not None and big["markets"] == top_n else None)))
    worst = max(scale, key=lambda r: r["rx_applied_us"]["p99"] or 0)
    p99s = ", ".join(f"{_label(r)}: {_f(r['rx_applied_us']['p99'])}" for r in scale)
    out.append((f"p99 frame arrival -> book applied <= {TARGET_P99_US / 1e3:g} ms", f"{p99s} us",
                ok((worst["rx_applied_us"]["p99"] or 0) <= TARGET_P99_US)))
    # judged at TARGET_MARKETS, as the issue states it (at a few records/s the engine's fixed
    # cost, waking every 50 ms and publishing at 8 Hz, is all a per-record figure shows)
    eng_big = big["engine_us_per_record"] if big["markets"] == top_n else None
    out.append((f"engine <= {TARGET_ENGINE_US:g} us CPU per record at {top_n} markets",
                ", ".join(f"{_label(r)}: {_f(r['engine_us_per_record'], '{:.2f}')}" for r in scale) + " us"
                + " (beyond one market's fixed cost: "
                + ", ".join(f"{_label(r)}: {_f(r.get('engine_us_per_record_marginal'), '{:.2f}')}"
                            for r in scale if r.get("engine_us_per_record_marginal") is not None) + " us)",
                ok(eng_big <= TARGET_ENGINE_US if eng_big is not None else None)))
    per_book = [r["rss_mib_per_book"] for r in scale if r["rss_mib_per_book"] is not None]
    out.append((f"RSS <= {TARGET_MIB_PER_BOOK:g} MiB per book beyond the fixed cost",
                ", ".join(f"{_label(r)}: {_f(r['rss_mib_per_book'], '{:.3f}')}" for r in scale
                          if r["rss_mib_per_book"] is not None) + " MiB",
                ok(max(per_book) <= TARGET_MIB_PER_BOOK if per_book else None)))
    lost = sum(r["ring_drops"] + r["gaps"] + r["engine_gaps"] for r in rows)
    out.append(("0 drops (and 0 gaps: none injected)",
                ", ".join(f"{_label(r)}: {r['ring_drops']} drops, {r['gaps'] + r['engine_gaps']} gaps" for r in rows),
                ok(lost == 0)))
    whole = [r for r in rows if r["books_valid"] != r["books"] or r.get("processes_missing")
             or r["time_to_all_synced_s"] is None]
    out.append(("(precondition) every book synced, every process running",
                "; ".join(f"{_label(r)}: {r['books_valid']}/{r['books']} valid, synced after "
                          f"{_f(r['time_to_all_synced_s'], '{:.1f}')} s, not running: "
                          f"{', '.join(r.get('processes_missing') or []) or '-'}" for r in whole) or "all rows",
                ok(not whole)))
    pipe = next((r for r in rows if r.get("pipeline")), None)
    if pipe is not None:
        pub = PIPELINE_470
        bg_best = min(p["bg_ob_cpu_pct"] for p in pub)
        p99_pub = max(p["p99_us"] for p in pub)
        bg = pipe["cpu_pct"].get(venue("bitget").label("books"), 0.0)
        met = (pipe["rx_applied_us"]["p99"] or 0) <= p99_pub and bg <= RUN_TO_RUN * bg_best
        out.append((f"one market not slower than `bench pipeline` at {pipe['rate']:g} steps/s (BENCHMARKS.md: "
                    f"rx->applied p50/p99 {pub[0]['p50_us']:g}/{p99_pub:g} us; Bg-OB "
                    f"{bg_best:g}-{max(p['bg_ob_cpu_pct'] for p in pub):g} %, engine "
                    f"{min(p['engine_cpu_pct'] for p in pub):g}-{max(p['engine_cpu_pct'] for p in pub):g} % "
                    f"at {pub[1]['msgs_per_s']:,}-{pub[0]['msgs_per_s']:,} msgs/s, before Binance's pacing)",
                    f"p50/p99 {_f(pipe['rx_applied_us']['p50'])}/{_f(pipe['rx_applied_us']['p99'])} us; "
                    f"Bg-OB {bg:.1f} %, engine {pipe['cpu_pct'].get('engine', 0):.1f} % at "
                    f"{pipe['msgs_per_s']:,} msgs/s (met: p99 in the same bucket or lower and Bg-OB, the "
                    f"same traffic as then, <= {RUN_TO_RUN:g} x {bg_best:g} %)",
                    ok(met)))
    return out


def report(result: dict[str, Any], markdown: bool) -> str:
    rows, ref, top_n = result["rows"], result["ref"], result["top"]
    parts = []
    for head, body in tables(rows, ref):
        parts.append(render(head, body, markdown))
    for variant in _variants(rows):
        v = verdicts([r for r in rows if r.get("variant", "") == variant], ref, top_n)
        title = f"target (issue #19), engine wait {variant}" if variant else "target (issue #19)"
        parts.append(render([title, "measured", ""], [list(t) for t in v], markdown))
    sync = "; ".join(f"{_label(r)}: {r['feed_synced_s']} (fleet started at :{r['fleet_start_second_of_minute']:04.1f} "
                     f"of its minute; REST weight {r['rest_weight_depth']:,}, {r['rest_weight_waits']} budget waits)"
                     for r in rows)
    parts.append(f"per book feed, all its books synced after (s): {sync}")
    return "\n\n".join(parts)


def _parse_wait(text: str) -> tuple[str, int | None, int | None]:
    parts = text.strip().split(":")
    if parts[0] not in WAIT_STRATEGIES or len(parts) > 3:
        raise ValueError(f"{text!r}: WAIT[:SPIN_US[:NAP_US]], WAIT one of {', '.join(WAIT_STRATEGIES)}")
    nums = [int(p) if p else None for p in parts[1:]] + [None, None]
    return parts[0], nums[0], nums[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", default="1,10,50,150",
                    help="market counts, one fleet each, in this order (default 1,10,50,150)")
    ap.add_argument("--window", type=float, default=10.0, help="measured window, s (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0, help="after all books are synced, s (default 3)")
    ap.add_argument("--sync-timeout", type=float, default=240.0,
                    help="give up waiting for all books synced after this many s (default 240; the "
                         "Binance REST weight of 6000 a minute takes 120 snapshots of 1000 levels)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="simulator steps/s of the real markets (default: the simulator's, 20)")
    ap.add_argument("--pipeline-rate", type=float, default=470.0,
                    help="also run one market at this rate, the setup of `bench pipeline` whose "
                         "published figures it is compared with (0: skip; default 470)")
    ap.add_argument("--layout", choices=("shared", "pinned"), default="shared",
                    help="shared: no pinning, the config's engine wait (the default install); pinned: "
                         "the engine spins alone on the last CPU (CPU figures then count its spinning)")
    ap.add_argument("--fit", choices=("config", "connection", "processes"), default="config",
                    help="config: the built-in config (one process per venue-channel, its markets "
                         "over connections of the venue's default size; default); connection: one "
                         "connection per process taking all the markets (per_connection raised to N); "
                         "processes: the same as config (kept for older command lines)")
    ap.add_argument("--spin-us", type=int, help="the engine's [engine] spin_us (default: the strategy's)")
    ap.add_argument("--nap-us", type=int, help="the engine's [engine] nap_us (default: the strategy's)")
    ap.add_argument("--waits", metavar="WAIT[:SPIN_US[:NAP_US]],...",
                    help="several engine waits side by side: each market count runs once per variant, "
                         "in turn (rows labelled wait/spin_us/nap_us), e.g. block,block:50,batch:0:300")
    ap.add_argument("--wait", choices=("", "block", "batch", "spin"), default="",
                    help="the engine's wait strategy (default: the config's)")
    ap.add_argument("--ref", type=int, default=10, help="the market count CPU per market is compared with")
    ap.add_argument("--markdown", action="store_true", help="tables in Markdown")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    try:
        counts = [int(x) for x in args.markets.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--markets: comma-separated whole numbers, got {args.markets!r}")
    if not counts or min(counts) < 1:
        ap.error("--markets: at least one count, each >= 1")
    if args.window <= 0 or args.warmup < 0:
        ap.error("--window must be > 0 and --warmup >= 0")
    load_before = os.getloadavg()[0]
    variants: list[tuple[str, int | None, int | None]] = [(args.wait, args.spin_us, args.nap_us)]
    if args.waits:
        try:
            variants = [_parse_wait(w) for w in args.waits.split(",") if w.strip()]
        except ValueError as exc:
            ap.error(f"--waits: {exc}")
    rows = []
    runs = [(n, None) for n in counts] + ([(1, args.pipeline_rate)] if args.pipeline_rate else [])
    for n, rate in runs:
        for wait, spin_us, nap_us in variants:     # side by side: each variant per count in turn
            row = measure(n, rate=rate or args.rate or None, warmup=args.warmup, window=args.window,
                          sync_timeout=args.sync_timeout, layout=args.layout, fit=args.fit,
                          wait=wait, spin_us=spin_us, nap_us=nap_us)
            if len(variants) > 1:
                row["variant"] = f"{row['wait']}/{row['spin_us']}/{row['nap_us']}"
            if rate:
                row["pipeline"] = True
            rows.append(row)
    _add_ratios(rows, args.ref)
    result = bench_result("scale", argv, load_before=load_before, ref=args.ref, top=TARGET_MARKETS,
                          rows=rows, verdicts=verdicts(rows, args.ref, TARGET_MARKETS))
    publish_result(result, args.json,
                   f"layout {args.layout}; fit {args.fit}; wait {args.waits or args.wait or 'config'}; "
                   f"window {args.window:g} s after {args.warmup:g} s of warm-up; load before {load_before:.2f}")
    print(report(result, args.markdown))
    return 0

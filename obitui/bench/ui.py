"""`obitui bench ui`: the console's cost, and the fleet's latency with the UI off and on.

Without ``--markets`` (what this benchmark measured first): one fleet against the simulator at
470 steps/s per market (~1k msgs/s in total), three windows: no UI; the Textual app (8 Hz,
120x40, Textual's headless driver, so it renders every frame without a terminal) in its own
process attached to the same stats block and rings; no UI again. Per window: receive -> pushed
(feeds) and receive -> applied (engine) from the log2 histograms (bucket-resolution
quantiles), and the UI's CPU.

With ``--markets 1,150`` (issue #20): per market count N, one fleet as ``obitui --sim --symbols
top:N`` runs it (``Supervisor.launch(sim=True, top=N)``, the simulator's default rate; N = 1
the default BTCUSDT), every book synced, then:

- "UI off": a window without the UI;
- the app in its own process (120x40, ``--refresh-hz``, default 8), attached to the fleet's
  stats block and rings as the console is (``StatsController``; it reads the stats block
  only). Textual's headless driver skips turning a screen update into terminal bytes; with
  ``--render terminal`` (the default) the app does that too, with a truecolor console, and
  writes the bytes to /dev/null, so its CPU holds what a terminal's output costs short of the
  pty write; ``--render headless`` leaves that out (the figures of the first version);
- on each screen (the home screen first: the watchlist with N > 1, the market view with N =
  1; then the other: Enter on the first watchlist row, or `w`): a CPU window (the UI
  process's whole CPU time, ``time.process_time``, over ``--window`` s with no key pressed),
  then ``--samples`` keystrokes: the watchlist `down`/`up` (the row cursor moves), the market
  view `b` (the focused book changes), at random gaps of 20-150 ms (so they land anywhere in
  the 8 Hz cycle); the latency of one is from the key event handed to the app as a terminal's
  input thread hands it (``driver.send_message``) until the end of the first screen update
  (``App._display``, with ``--render terminal`` after the bytes are written) that shows its
  effect; then ``--samples`` / 4 screen changes (Enter then Esc, timed the same way, until
  the new screen's first update);
- "UI off again".

In every window of the fleet: receive -> pushed and receive -> applied (log2 buckets) and the
CPU of the feeds and the engine (psutil). ``--repeat 2`` runs the counts twice, alternating.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import queue
import random
import sys
import time
from typing import Any

import psutil

from obitui.bench.machine import bench_result, publish_result
from obitui.bench.pipeline import pin_layout
from obitui.config import Config, load_config
from obitui.core.stats import HIST_BUCKETS, hist_quantile
from obitui.supervisor import Supervisor

TARGET_CPU_PCT = 10.0        # issue #20: UI process at 8 Hz, 300 books, watchlist and market view
TARGET_KEY_P99_MS = 50.0     # keystroke -> repaint
TARGET_MARKETS = 150


def _ui_child(cfg: Config, stats_name: str, ring_names: list[str], seconds: float, ready: Any) -> None:
    """The app for ``seconds`` after ``ready`` is set, once it has drawn for a second."""
    from obitui.app import ObituiApp
    from obitui.controller import StatsController
    from obitui.core.stats import StatsBlock

    async def run() -> None:
        stats = StatsBlock.attach(stats_name)
        ctl = StatsController(cfg, stats, ring_names)
        app = ObituiApp(cfg, ctl, refresh_hz=8.0)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.0)
            ready.set()
            await pilot.pause(seconds)
        ctl.stop()
        stats.close()
    asyncio.run(run())


# ---------------------------------------------------------------- --markets: the UI child
def _markets_child(cfg: Config, stats_name: str, ring_names: list[str], pids: dict[str, int],
                   out: Any, window: float, samples: int, render: str, refresh_hz: float,
                   seed: int) -> None:
    """The console in this process; says ("start", phase) / ("end", phase, cpu %) around its
    CPU windows and ("done", result) at the end on ``out``."""
    from obitui.app import ObituiApp        # first: it sets Textual's frame rate (TEXTUAL_FPS)

    from rich.console import Console
    from textual import events
    from textual._compositor import CompositorUpdate

    from obitui.controller import StatsController
    from obitui.core.stats import StatsBlock
    from obitui.ui.market import MarketScreen
    from obitui.ui.watchlist import WatchlistScreen

    class BenchController(StatsController):
        def pids(self) -> dict[str, int]:
            return dict(pids)           # the feeds & system screen samples them, as with the supervisor

    class BenchApp(ObituiApp):
        CSS_PATH = os.path.join(os.path.dirname(sys.modules[ObituiApp.__module__].__file__ or ""), "app.tcss")
        waiter: Any = None              # (predicate, future)
        displays = 0
        out_bytes = 0
        tick_ms: list[float] = []       # the display timer's work (reading, update_data)
        display_ms: list[float] = []    # a screen update turned into terminal bytes

        def _tick(self) -> None:
            t = time.perf_counter()
            super()._tick()
            self.tick_ms.append((time.perf_counter() - t) * 1e3)

        def _display(self, screen: Any, renderable: Any) -> None:
            t = time.perf_counter()
            super()._display(screen, renderable)
            if renderable is None or self._batch_count:
                return
            self.displays += 1
            if term is not None and isinstance(renderable, CompositorUpdate):
                data = renderable.render_segments(term).encode("utf-8")
                self.out_bytes += len(data)
                os.write(null_fd, data)
            self.display_ms.append((time.perf_counter() - t) * 1e3)
            w = self.waiter
            if w is not None and not w[1].done() and w[0](screen):
                w[1].set_result(time.perf_counter())
                self.waiter = None

    null_fd = os.open(os.devnull, os.O_WRONLY)
    term = (Console(file=open(os.devnull, "w"), color_system="truecolor", force_terminal=True,  # noqa: SIM115
                    width=120, height=40, legacy_windows=False) if render == "terminal" else None)
    rng = random.Random(seed)

    async def run() -> dict[str, Any]:
        stats = StatsBlock.attach(stats_name)
        ctl = BenchController(cfg, stats, ring_names)
        app = BenchApp(cfg, ctl, refresh_hz=refresh_hz)
        res: dict[str, Any] = {"screens": {}, "switch": {}}
        async with app.run_test(size=(120, 40)) as pilot:
            loop = asyncio.get_running_loop()
            await pilot.pause(2.0)          # composed, first ticks drawn

            async def timed(key: str, pred: Any) -> float | None:
                fut = loop.create_future()
                app.waiter = (pred, fut)
                char = key if len(key) == 1 else None
                t0 = time.perf_counter()
                app._driver.send_message(events.Key(key, char))   # type: ignore[union-attr]
                try:
                    t1 = await asyncio.wait_for(fut, 3.0)
                except asyncio.TimeoutError:
                    app.waiter = None
                    return None
                return (t1 - t0) * 1e3

            async def cpu_window(name: str) -> float:
                out.put(("start", name))
                app.tick_ms.clear()
                app.display_ms.clear()
                d0, b0 = app.displays, app.out_bytes
                c0, t0 = time.process_time(), time.monotonic()
                await asyncio.sleep(window)
                c1, t1 = time.process_time(), time.monotonic()
                cpu = 100 * (c1 - c0) / (t1 - t0)
                out.put(("end", name, cpu))
                res["screens"].setdefault(name, {}).update(
                    cpu_pct=round(cpu, 2), displays_per_s=round((app.displays - d0) / (t1 - t0), 1),
                    out_kib_per_s=round((app.out_bytes - b0) / (t1 - t0) / 1024, 1),
                    tick_ms=_ms_quantiles(app.tick_ms), display_ms=_ms_quantiles(app.display_ms))
                return cpu

            async def keys(name: str) -> None:
                lat: list[float] = []
                lost = 0
                for i in range(samples):
                    await asyncio.sleep(rng.uniform(0.02, 0.15))
                    scr = app.screen
                    if isinstance(scr, WatchlistScreen):
                        table = scr.table
                        key = "down" if i % 2 == 0 else "up"
                        want = table.cursor + (1 if key == "down" else -1)
                        v = await timed(key, lambda s, t=table, w=want: t.cursor == w)
                    elif isinstance(scr, MarketScreen):
                        want = (scr.focused_book + 1) % max(1, len(scr.shown))
                        v = await timed("b", lambda s, m=scr, w=want: m.focused_book == w)
                    else:
                        raise RuntimeError(f"unexpected screen {scr!r}")
                    if v is None:
                        lost += 1
                    else:
                        lat.append(v)
                res["screens"].setdefault(name, {}).update(keys=_ms_quantiles(lat), key_timeouts=lost)

            home = "watchlist" if isinstance(app.screen, WatchlistScreen) else "market"
            other = "market" if home == "watchlist" else "watchlist"
            await cpu_window(home)
            await keys(home)
            if home == "watchlist":
                t = await timed("enter", lambda s: isinstance(s, MarketScreen) and s is app.screen)
            else:
                t = await timed("w", lambda s: isinstance(s, WatchlistScreen) and s is app.screen)
            if t is None:
                raise RuntimeError(f"{other} screen did not show")
            await pilot.pause(1.0)
            await cpu_window(other)
            await keys(other)
            # screen changes: the market view from the watchlist and back
            opens: list[float] = []
            backs: list[float] = []
            for _ in range(max(4, samples // 4)):
                await asyncio.sleep(rng.uniform(0.1, 0.3))
                if isinstance(app.screen, WatchlistScreen):
                    v = await timed("enter", lambda s: isinstance(s, MarketScreen) and s is app.screen)
                    if v is not None:
                        opens.append(v)
                else:
                    v = await timed("escape", lambda s: isinstance(s, WatchlistScreen) and s is app.screen)
                    if v is not None:
                        backs.append(v)
            res["switch"] = {"open": _ms_quantiles(opens), "back": _ms_quantiles(backs)}
            res["home"] = home
            res["books"] = len(app.books)
        ctl.stop()
        stats.close()
        return res

    try:
        out.put(("done", asyncio.run(run())))
    except Exception as exc:           # the parent reports it
        out.put(("error", repr(exc)))
        raise


def _ms_quantiles(v: list[float]) -> dict[str, Any]:
    if not v:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(v)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 2)
    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(s[-1], 2)}


# ---------------------------------------------------------------- the fleet's side
def _snap(sup: Supervisor) -> tuple[list[int], list[int]]:
    assert sup.stats is not None
    push = [0] * HIST_BUCKETS
    applied = [0] * HIST_BUCKETS
    for i in range(len(sup.cfg.feeds)):
        fv = None
        while fv is None:
            fv = sup.stats.read_feed(i)
        push = [a + b for a, b in zip(push, fv.hist_receive_push)]
    for j in range(sup.stats.n_books):
        bv = None
        while bv is None:
            bv = sup.stats.read_book(j)
        applied = [a + b for a, b in zip(applied, bv.hist_ring_engine)]
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


class _FleetWindow:
    """Histograms and fleet CPU between ``begin`` and ``end``."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.procs = {name: psutil.Process(pid) for name, pid in sup.pids().items()}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                c = p.cpu_times()
                out[name] = c.user + c.system
            except psutil.Error:
                pass
        return out

    def begin(self) -> None:
        self.h0 = _snap(self.sup)
        self.c0 = self._cpu()
        self.t0 = time.monotonic()

    def end(self) -> dict[str, Any]:
        h1 = _snap(self.sup)
        c1 = self._cpu()
        el = time.monotonic() - self.t0
        push = [y - x for x, y in zip(self.h0[0], h1[0])]
        app = [y - x for x, y in zip(self.h0[1], h1[1])]
        cpu = {k: round(100 * (c1[k] - self.c0[k]) / el, 2) for k in c1 if k in self.c0}
        feeds = round(sum(v for k, v in cpu.items() if k != "engine"), 2)

        def qs(h: list[int]) -> dict[str, float | None]:
            return {f"p{int(q * 100)}": (round(v / 1e3, 1) if (v := hist_quantile(h, q)) is not None else None)
                    for q in (0.5, 0.99)}
        return {"seconds": round(el, 2), "rx_pushed_us": qs(push), "rx_applied_us": qs(app),
                "records": sum(app), "feeds_cpu_pct": feeds, "engine_cpu_pct": cpu.get("engine")}


def _progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench ui: {text}", file=sys.stderr, flush=True)


def wait_synced(sup: Supervisor, timeout: float) -> float | None:
    """Seconds until every book of the fleet is valid (polling its supervisor), None after
    ``timeout``."""
    assert sup.stats is not None
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        sup.poll()
        views = [sup.stats.read_book(j) for j in range(sup.stats.n_books)]
        if views and all(v is not None and v.valid for v in views):
            return round(time.monotonic() - t0, 2)
        time.sleep(0.1)
    return None


def measure_markets(n: int, *, window: float = 10.0, samples: int = 200, render: str = "terminal",
                    refresh_hz: float = 8.0, sync_timeout: float = 120.0, seed: int = 1) -> dict[str, Any]:
    """One fleet watching ``n`` markets, the UI off, on (both screens), off again."""
    load = os.getloadavg()[0]
    sup = Supervisor(load_config(None), log_level=logging.WARNING)
    row: dict[str, Any] = {"markets": n, "load_before": round(load, 2), "render": render,
                           "refresh_hz": refresh_hz}
    child = None
    try:
        sup.launch(sim=True, top=n if n > 1 else None)
        row["synced_after_s"] = wait_synced(sup, sync_timeout)
        assert sup.stats is not None
        row["books"] = sup.stats.n_books
        if row["synced_after_s"] is None:
            raise RuntimeError(f"{n} markets: not every book synced in {sync_timeout:g} s")
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            sup.poll()
            time.sleep(0.1)
        fw = _FleetWindow(sup)
        fleet: dict[str, Any] = {}
        fw.begin()
        _window(sup, window)
        fleet["UI off"] = fw.end()
        _progress(f"{n} market(s): UI off measured; the UI starts")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        child = ctx.Process(target=_markets_child,
                            args=(sup.cfg, sup.stats_name, sup.ring_names, sup.pids(), out, window,
                                  samples, render, refresh_hz, seed + n), daemon=True)
        child.start()
        ui = psutil.Process(child.pid)
        result = None
        deadline = time.monotonic() + 120 + 2 * window + samples * 0.6
        while result is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the UI child did not finish in time")
            sup.poll()
            try:
                msg = out.get(timeout=0.1)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the UI child exited with {child.exitcode}") from None
                continue
            if msg[0] == "start":
                fw.begin()
            elif msg[0] == "end":
                fleet[f"UI on: {msg[1]}"] = fw.end()
                _progress(f"{n} market(s): {msg[1]}: UI {msg[2]:.1f} % of a core")
            elif msg[0] == "done":
                result = msg[1]
            elif msg[0] == "error":
                raise RuntimeError(f"the UI child failed: {msg[1]}")
        row["ui_rss_mib"] = round(ui.memory_info().rss / 2**20, 1) if ui.is_running() else None
        child.join(30)
        child = None
        fw.begin()
        _window(sup, window)
        fleet["UI off again"] = fw.end()
        row["ui"] = result
        row["fleet"] = fleet
    finally:
        if child is not None and child.is_alive():
            child.kill()
            child.join(5)
        sup.stop()
    _progress(f"{n} market(s): done")
    return row


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_rows(rows: list[dict[str, Any]], markdown: bool) -> str:
    from obitui.bench.scale import render
    a_head = ["run", "markets", "books", "load", "screen", "UI CPU %", "updates/s", "out KiB/s",
              "tick p50/p99 ms", "update p50/p99 ms", "key p50 ms", "key p99 ms", "key max ms", "keys", "timeouts"]
    a = []
    for k, r in enumerate(rows):
        for name in ("watchlist", "market"):
            s = r["ui"]["screens"].get(name, {})
            kq = s.get("keys", {})
            a.append([str(r.get("run", k + 1)), str(r["markets"]), str(r["books"]), f"{r['load_before']:.2f}",
                      name + (" (home)" if r["ui"].get("home") == name else ""), _f(s.get("cpu_pct")),
                      _f(s.get("displays_per_s")), _f(s.get("out_kib_per_s")),
                      f"{_f(s.get('tick_ms', {}).get('p50'))}/{_f(s.get('tick_ms', {}).get('p99'))}",
                      f"{_f(s.get('display_ms', {}).get('p50'))}/{_f(s.get('display_ms', {}).get('p99'))}",
                      _f(kq.get("p50"), "{:.2f}"),
                      _f(kq.get("p99"), "{:.2f}"), _f(kq.get("max"), "{:.2f}"), str(kq.get("n", 0)),
                      str(s.get("key_timeouts", 0))])
    b_head = ["run", "markets", "Enter (open) p50/p99 ms", "Esc (back) p50/p99 ms", "UI RSS MiB"]
    b = [[str(r.get("run", k + 1)), str(r["markets"]),
          f"{_f(r['ui']['switch']['open']['p50'])}/{_f(r['ui']['switch']['open']['p99'])}",
          f"{_f(r['ui']['switch']['back']['p50'])}/{_f(r['ui']['switch']['back']['p99'])}",
          _f(r.get("ui_rss_mib"))] for k, r in enumerate(rows)]
    c_head = ["run", "markets", "window", "rx->pushed p50/p99 us", "rx->applied p50/p99 us", "feeds CPU %",
              "engine CPU %"]
    c = []
    for k, r in enumerate(rows):
        for name, w in r["fleet"].items():
            c.append([str(r.get("run", k + 1)), str(r["markets"]), name,
                      f"{_f(w['rx_pushed_us']['p50'])}/{_f(w['rx_pushed_us']['p99'])}",
                      f"{_f(w['rx_applied_us']['p50'])}/{_f(w['rx_applied_us']['p99'])}",
                      _f(w["feeds_cpu_pct"]), _f(w["engine_cpu_pct"])])
    return "\n\n".join(render(h, body, markdown) for h, body in ((a_head, a), (b_head, b), (c_head, c)))


def verdicts(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    big = [r for r in rows if r["markets"] == TARGET_MARKETS]
    for name in ("watchlist", "market"):
        cpus = [r["ui"]["screens"][name]["cpu_pct"] for r in big if name in r["ui"]["screens"]]
        out.append([f"UI <= {TARGET_CPU_PCT:g} % of a core at 8 Hz, {2 * TARGET_MARKETS} books, {name}",
                    ", ".join(f"{c:.1f} %" for c in cpus) or "not run",
                    "n/a" if not cpus else "met" if max(cpus) <= TARGET_CPU_PCT else "MISSED"])
    p99s = [(r["markets"], name, s["keys"]["p99"]) for r in rows for name, s in r["ui"]["screens"].items()
            if s.get("keys", {}).get("p99") is not None]
    timeouts = sum(s.get("key_timeouts", 0) for r in rows for s in r["ui"]["screens"].values())
    out.append([f"keystroke -> repaint p99 <= {TARGET_KEY_P99_MS:g} ms",
                "; ".join(f"{m}/{nm}: {p:.1f} ms" for m, nm, p in p99s) + f"; {timeouts} timeouts",
                "n/a" if not p99s else "met" if max(p for _, _, p in p99s) <= TARGET_KEY_P99_MS and not timeouts
                else "MISSED"])
    return out


def main_markets(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        counts = [int(x) for x in args.markets.split(",") if x.strip()]
    except ValueError:
        print(f"obitui bench ui: --markets: comma-separated whole numbers, got {args.markets!r}", file=sys.stderr)
        return 2
    if not counts or min(counts) < 1:
        print("obitui bench ui: --markets: at least one count, each >= 1", file=sys.stderr)
        return 2
    rows = []
    for rep in range(args.repeat):
        for n in counts:
            _progress(f"run {rep + 1}, {n} market(s): load {os.getloadavg()[0]:.2f}")
            row = measure_markets(n, window=args.window, samples=args.samples, render=args.render,
                                  refresh_hz=args.refresh_hz, sync_timeout=args.sync_timeout)
            row["run"] = rep + 1
            rows.append(row)
    result = bench_result("ui", argv, rows=rows, verdicts=verdicts(rows))
    from obitui.bench.scale import render
    publish_result(result, args.json, f"render {args.render}; {args.refresh_hz:g} Hz; CPU windows "
                                      f"{args.window:g} s; {args.samples} keys per screen")
    print(render_rows(rows, args.markdown))
    print()
    print(render(["target (issue #20)", "measured", ""], result["verdicts"], args.markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench ui", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=470.0,
                    help="without --markets: simulator steps/s of the market (default 470)")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--layout", choices=("shared", "pinned"), default="shared",
                    help="without --markets: pinned: the engine spins alone on the last CPU; feeds, "
                         "simulator and UI share the others (as in `obitui bench pipeline --layout pinned`)")
    ap.add_argument("--markets", metavar="N,N",
                    help="market counts (e.g. 1,150): the UI's CPU on the watchlist and the market "
                         "view and keystroke -> repaint latency, one fleet (top:N) each")
    ap.add_argument("--samples", type=int, default=200, help="--markets: keystrokes per screen (default 200)")
    ap.add_argument("--render", choices=("terminal", "headless"), default="terminal",
                    help="--markets: terminal: the app also renders its updates to terminal bytes "
                         "(truecolor, written to /dev/null; default); headless: Textual's headless driver only")
    ap.add_argument("--refresh-hz", type=float, default=8.0, help="--markets: the app's refresh rate (default 8)")
    ap.add_argument("--repeat", type=int, default=1, help="--markets: run the counts this many times, alternating")
    ap.add_argument("--sync-timeout", type=float, default=120.0)
    ap.add_argument("--markdown", action="store_true", help="--markets: tables in Markdown")
    ap.add_argument("--json", metavar="FILE", help="--markets: also write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    if args.markets:
        return main_markets(args, argv)
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
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        child = ctx.Process(target=_ui_child, args=(cfg, sup.stats_name, sup.ring_names, args.window + 2, ready))
        child.start()
        # the app starting up (imports, first screen) is not part of the window: it starts when
        # the app has drawn for a second (on a loaded machine that took more than 3 s)
        if not ready.wait(60):
            raise RuntimeError("the UI did not start within 60 s")
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

"""`obitui --no-ui`: the status line or one JSON object per interval on stdout (contract),
logs on stderr."""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from typing import Any, TextIO

from obitui.config import Config, book_plan
from obitui.core.stats import BookView, StatsBlock, heartbeat_age, is_stale
from obitui.logs import LogSpec, configure
from obitui.supervisor import Supervisor, SupervisorError
from obitui.widgets.format import fmt_fixed

log = logging.getLogger("obitui")


def book_json(bv: BookView, digits: int, qdigits: int | None = None) -> dict[str, Any]:
    """A book view as exact decimal strings; ``digits``/``qdigits``: the fixed-point scales of
    its prices and quantities (qdigits defaults to digits)."""
    qd = digits if qdigits is None else qdigits
    return {
        "valid": bv.valid, "update_id": bv.update_id, "obi": round(bv.obi, 6), "crossed": bv.crossed,
        "bids": [[fmt_fixed(p, digits, bv.price_decimals), fmt_fixed(q, qd, bv.qty_decimals)] for p, q in bv.bids],
        "asks": [[fmt_fixed(p, digits, bv.price_decimals), fmt_fixed(q, qd, bv.qty_decimals)] for p, q in bv.asks],
    }


def _age(age: float | None) -> float | None:
    return None if age is None else round(age, 3)


def snapshot(cfg: Config, stats: StatsBlock, fills: list[tuple[float, int]]) -> dict[str, Any]:
    """The JSON object of one interval (the ``--json`` output of headless mode). A feed or the
    engine whose heartbeat is older than STALE_VIEW_S is marked ``"stale": true`` (a hung or
    stopped process: its figures are frozen); books are stale with the engine that publishes
    them."""
    feeds: dict[str, Any] = {}
    for i, f in enumerate(cfg.feeds):
        fv = stats.read_feed(i)
        if fv is None:
            continue
        c = fv.counters
        fill, drops = fills[i] if i < len(fills) else (0.0, 0)
        age = heartbeat_age(fv.heartbeat_ns)
        feeds[f.label] = {"state": fv.state.word, "reason": fv.reason, "frames": c["frames"],
                          "gaps": c["gaps"], "resyncs": c["resyncs"], "reconnects": c["reconnects"],
                          "ring_fill": round(fill, 6), "ring_drops": drops,
                          "records": c["records"], "parse_errors": c["parse_errors"],
                          "checksum_failures": c["checksum_failures"],
                          "stale": is_stale(age), "age_s": _age(age)}
    ev = stats.read_engine()
    age = heartbeat_age(ev.heartbeat_ns) if ev is not None else None
    engine = {"pid": ev.pid if ev else 0, "stale": is_stale(age), "age_s": _age(age),
              "records_per_s": round(ev.records_per_s, 1) if ev else 0.0, "gaps": ev.gaps if ev else 0}
    books: dict[str, Any] = {}
    for j, key in enumerate(book_plan(cfg.feeds)):
        bv = stats.read_book(j)
        if bv is None or not bv.exchange:
            continue
        f = next(f for f in cfg.feeds if f.book_key == key)
        books[key] = book_json(bv, f.digits, f.qdigits)
        books[key]["stale"] = engine["stale"]
    return {"ts": round(time.time(), 3), "feeds": feeds, "books": books, "engine": engine}


def status_line(cfg: Config, snap: dict[str, Any]) -> str:
    parts = []
    for f in cfg.feeds:
        fv = snap["feeds"].get(f.label)
        if fv is None:
            parts.append(f"{f.label}: stopped")
            continue
        text = f"{f.label}: {fv['state']}"
        book = snap["books"].get(f.book_key) if f.is_book else None
        if fv.get("stale"):
            text += f" (stale {_secs(fv['age_s'])})"
        elif book is not None and book["valid"] and not book.get("stale"):
            text += f" (OBI:{book['obi']:.4f})"
        parts.append(text)
    engine = snap.get("engine")
    if engine is not None and engine["stale"]:
        # frozen figures are never shown as live: the books' OBI is left out above
        parts.append(f"engine: stale {_secs(engine['age_s'])}")
    return "[Main Status] " + " | ".join(parts)


def _secs(age: float | None) -> str:
    return "never beat" if age is None else f"{age:.1f}s"


def setup_logging(as_json: bool, level: int = logging.INFO) -> None:
    """The supervisor's own logging; the fleet's children get the same spec (obitui.logs)."""
    configure(LogSpec(level, as_json), "supervisor")


def run(cfg: Config, *, sim: bool, sim_faults: list[str], as_json: bool, interval: float,
        duration: float | None, record_dir: str | None, replay: str | None,
        replay_speed: float = 1.0, sim_rate: float | None = None, out: TextIO = sys.stdout,
        metrics: tuple[str, int] | None = None) -> int:
    """Run the fleet and print until ``duration``, the end of a replay, the simulator's end or a
    signal. Exit status: 0 for a requested stop (the duration or the replay's end, SIGINT,
    SIGTERM, SIGHUP: every child stopped, every segment removed, the last object printed);
    1 when the start failed (one ``obitui: ...`` line) or the simulator ended on its own (after
    the same clean stop)."""
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    sup = Supervisor(cfg, record_dir, log_json=as_json)
    try:
        cfg = sup.launch(sim=sim, faults=sim_faults, replay=replay, replay_speed=replay_speed,
                         rate=sim_rate, metrics=metrics)
        t0 = time.monotonic()
        next_print = t0 + interval
        code = 0
        while not stop["now"]:
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if sup.sim_finished.is_set():
                log.info("the replay reached the end of the capture: stopping")
                break
            if sup.sim_proc is not None and sup.sim_proc.poll() is not None:
                log.error("the simulator ended unexpectedly (code %s): stopping", sup.sim_proc.returncode)
                code = 1
                break
            sup.poll()
            if now >= next_print:
                next_print += interval
                _emit(cfg, sup, as_json, out)
            time.sleep(min(0.05, max(0.0, next_print - time.monotonic())))
        if sup.stats is not None:
            _emit(cfg, sup, as_json, out)   # the last object holds the final books
        return code
    except SupervisorError as exc:
        print(f"obitui: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop()


def _emit(cfg: Config, sup: Supervisor, as_json: bool, out: TextIO) -> None:
    assert sup.stats is not None
    snap = snapshot(cfg, sup.stats, sup.ring_fill())
    out.write((json.dumps(snap) if as_json else status_line(cfg, snap)) + "\n")
    out.flush()

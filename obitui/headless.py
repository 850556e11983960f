"""`obitui --no-ui`: the status line or one JSON object per interval on stdout (contract),
logs on stderr."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Collection
from typing import Any, TextIO

from obitui.config import Config, FeedConfig, feed_book_ids
from obitui.core.stats import TOP_N, BookView, StatsBlock, heartbeat_age, is_stale
from obitui.logs import LogSpec, configure
from obitui.supervisor import Supervisor, SupervisorError
from obitui.widgets.format import decimals_needed, fmt_fixed

log = logging.getLogger("obitui")


def book_json(bv: BookView, digits: int, qdigits: int | None = None, levels: int = TOP_N) -> dict[str, Any]:
    """A book view as exact decimal strings; ``digits``/``qdigits``: the fixed-point scales of
    its prices and quantities (qdigits defaults to digits); ``levels``: levels per side (at most
    the TOP_N the BookSlot holds). ``state`` is "synced" when the book is valid, else "invalid";
    ``reason`` the last invalidation's ("" when there was none)."""
    qd = digits if qdigits is None else qdigits
    pdec, qdec = bv.price_decimals, bv.qty_decimals
    mid = None
    if bv.bids and bv.asks:
        # (bid + ask) / 2 exactly: one more decimal when the sum is odd
        twice = bv.bids[0][0] + bv.asks[0][0]
        mid = fmt_fixed(twice * 5, digits + 1, max(pdec, decimals_needed(twice * 5, digits + 1)))
    spread = bv.spread_bps
    out = {
        "valid": bv.valid, "update_id": bv.update_id, "obi": round(bv.obi, 6), "crossed": bv.crossed,
        "bids": [[fmt_fixed(p, digits, pdec), fmt_fixed(q, qd, qdec)] for p, q in bv.bids[:levels]],
        "asks": [[fmt_fixed(p, digits, pdec), fmt_fixed(q, qd, qdec)] for p, q in bv.asks[:levels]],
        "state": "synced" if bv.valid else "invalid", "reason": bv.reason,
        "mid": mid, "spread_bps": None if spread is None else round(spread, 4),
        "flow_1s": fmt_fixed(bv.flow_1s, qd, qdec), "trades_1s": bv.buy_count_1s + bv.sell_count_1s,
        "last_trade": None, "ticker": None,
    }
    if bv.last_trade_side:
        out["last_trade"] = {"price": fmt_fixed(bv.last_trade_price, digits, pdec),
                             "qty": fmt_fixed(bv.last_trade_qty, qd, qdec),
                             "side": "buy" if bv.last_trade_side == 1 else "sell",
                             "ts": round(bv.last_trade_ns / 1e9, 3)}
    if bv.ticker_ns:
        t: dict[str, Any] = {"last": fmt_fixed(bv.ticker_last, digits, pdec),
                             "bid": fmt_fixed(bv.ticker_bid, digits, pdec),
                             "ask": fmt_fixed(bv.ticker_ask, digits, pdec),
                             "ts": round(bv.ticker_ns / 1e9, 3)}
        if bv.day_ns:
            t.update({"open_24h": fmt_fixed(bv.day_open, digits, pdec) if bv.day_open else None,
                      "high_24h": fmt_fixed(bv.day_high, digits, pdec),
                      "low_24h": fmt_fixed(bv.day_low, digits, pdec),
                      "volume_24h": fmt_fixed(bv.day_volume, qd, qdec),
                      "change_24h_pct": (round(100.0 * (bv.ticker_last - bv.day_open) / bv.day_open, 4)
                                         if bv.day_open > 0 else None)})
        out["ticker"] = t
    return out


def _age(age: float | None) -> float | None:
    return None if age is None else round(age, 3)


def book_markets(cfg: Config) -> dict[str, tuple[int, FeedConfig]]:
    """The markets a book feed serves: key -> (book slot, that book feed), in slot order."""
    out: dict[str, tuple[int, FeedConfig]] = {}
    for f, ids in zip(cfg.feeds, feed_book_ids(cfg.feeds)):
        if f.is_book:
            for key, j in zip(f.book_keys, ids):
                out.setdefault(key, (j, f))
    return dict(sorted(out.items(), key=lambda kv: kv[1][0]))


def select_books(cfg: Config, names: list[str]) -> list[str]:
    """``--books SYM,...``: the book keys named, each as SYMBOL (every book market of that
    symbol) or venue:SYMBOL; ValueError naming one that is no book market of the config."""
    markets = book_markets(cfg)
    keys: dict[str, None] = {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        venue, sep, symbol = name.rpartition(":")
        want = f"{venue}:{symbol.upper()}" if sep else None
        found = [k for k in markets if (k == want if sep else k.split(":", 1)[1] == symbol.upper())]
        if not found:
            raise ValueError(f"--books {name}: no book market of that name (book markets: "
                             f"{', '.join(list(markets)[:8])}{', ...' if len(markets) > 8 else ''})")
        keys.update(dict.fromkeys(found))
    return list(keys)


def _feed_books(cfg: Config, stats: StatsBlock, i: int, f: FeedConfig, ids: list[int],
                c: dict[str, int]) -> tuple[int, int]:
    """(markets served, valid books) of feed i: its gauges; for a feed that has not set them
    (yet), the config's count and the engine's valid books."""
    if c.get("books", 0) > 0:
        return c["books"], c.get("books_synced", 0)
    if not f.is_book:
        return len(ids), 0
    synced = 0
    for j in ids:
        bv = stats.read_book(j) if j < stats.n_books else None
        synced += bool(bv is not None and bv.valid)
    return len(ids), synced


def snapshot(cfg: Config, stats: StatsBlock, fills: list[tuple[float, int]],
             books: Collection[str] | None = None, levels: int = TOP_N) -> dict[str, Any]:
    """The JSON object of one interval (the ``--json`` output of headless mode). A feed or the
    engine whose heartbeat is older than STALE_VIEW_S is marked ``"stale": true`` (a hung or
    stopped process: its figures are frozen); books are stale with the engine that publishes
    them. ``books``: only these market keys (default: every market a book feed serves);
    ``levels``: levels per side."""
    feeds: dict[str, Any] = {}
    for i, (f, ids) in enumerate(zip(cfg.feeds, feed_book_ids(cfg.feeds))):
        fv = stats.read_feed(i)
        if fv is None:
            continue
        c = fv.counters
        fill, drops = fills[i] if i < len(fills) else (0.0, 0)
        age = heartbeat_age(fv.heartbeat_ns)
        n_books, n_synced = _feed_books(cfg, stats, i, f, ids, c)
        feeds[f.label] = {"state": fv.state.word, "reason": fv.reason, "frames": c["frames"],
                          "gaps": c["gaps"], "resyncs": c["resyncs"], "reconnects": c["reconnects"],
                          "ring_fill": round(fill, 6), "ring_drops": drops,
                          "records": c["records"], "parse_errors": c["parse_errors"],
                          "checksum_failures": c["checksum_failures"],
                          "stale": is_stale(age), "age_s": _age(age), "markets": len(ids)}
        if f.is_book:
            feeds[f.label].update(books=n_books, books_synced=n_synced)
    for i in range(len(cfg.feeds), stats.n_feeds):      # the NATS publisher's slot (--publish)
        fv = stats.read_feed(i)
        if fv is None or not fv.label:
            continue
        c = fv.counters
        age = heartbeat_age(fv.heartbeat_ns)
        feeds[fv.label] = {"kind": "publisher", "state": fv.state.word, "reason": fv.reason,
                           "messages": c["frames"], "sent": c["frames_pushed"],
                           "dropped": c["frames_dropped"], "not_connected": c["frames_discarded"],
                           "bytes": c["bytes"], "reconnects": c["reconnects"],
                           "connect_failures": c["connect_failures"],
                           "jetstream_errors": c["server_errors"],
                           "stale": is_stale(age), "age_s": _age(age)}
    ev = stats.read_engine()
    age = heartbeat_age(ev.heartbeat_ns) if ev is not None else None
    engine = {"pid": ev.pid if ev else 0, "stale": is_stale(age), "age_s": _age(age),
              "records_per_s": round(ev.records_per_s, 1) if ev else 0.0, "gaps": ev.gaps if ev else 0}
    out_books: dict[str, Any] = {}
    wanted = None if books is None else set(books)
    for key, (j, f) in book_markets(cfg).items():
        if wanted is not None and key not in wanted:
            continue
        bv = stats.read_book(j) if j < stats.n_books else None
        if bv is None or not bv.exchange:
            continue
        out_books[key] = book_json(bv, *f.scales_of(key.split(":", 1)[1]), levels)
        out_books[key]["stale"] = engine["stale"]
    return {"ts": round(time.time(), 3), "feeds": feeds, "books": out_books, "engine": engine}


def status_books(cfg: Config) -> list[str]:
    """The books the status line shows (the OBI of each single-market book feed)."""
    return [f.book_key for f in cfg.feeds if f.is_book and len(f.symbols) == 1]


def status_line(cfg: Config, snap: dict[str, Any]) -> str:
    """One line (**contract**): per feed ``label: state``; a single-market book feed adds its
    book's ``(OBI:x.xxxx)`` while the book is valid and live, a book feed of several markets
    ``(synced/markets books)``; a stale feed ``(stale N.Ns)`` instead."""
    parts = []
    for f in cfg.feeds:
        fv = snap["feeds"].get(f.label)
        if fv is None:
            parts.append(f"{f.label}: stopped")
            continue
        text = f"{f.label}: {fv['state']}"
        many = len(f.symbols) > 1
        book = snap["books"].get(f.book_key) if f.is_book and not many else None
        if fv.get("stale"):
            text += f" (stale {_secs(fv['age_s'])})"
        elif many and f.is_book:
            n = fv.get("books", len(f.symbols))
            text += f" ({fv.get('books_synced', 0)}/{n} books)"
        elif book is not None and book["valid"] and not book.get("stale"):
            text += f" (OBI:{book['obi']:.4f})"
        parts.append(text)
    for label, fv in snap["feeds"].items():
        if fv.get("kind") == "publisher":
            parts.append(f"{label}: {fv['state']}" + (f" (stale {_secs(fv['age_s'])})" if fv.get("stale") else ""))
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
        metrics: tuple[str, int] | None = None, books: list[str] | None = None,
        levels: int = TOP_N, top: int | None = None, book_names: list[str] | None = None,
        publish: Any = None, attach: Any = None) -> int:
    """Run the fleet and print until ``duration``, the end of a replay, the simulator's end or a
    signal. Exit status: 0 for a requested stop (the duration or the replay's end, SIGINT,
    SIGTERM, SIGHUP: every child stopped, every segment removed, the last object printed);
    1 when the start failed (one ``obitui: ...`` line) or the simulator ended on its own (after
    the same clean stop). ``books`` (book keys, from ``select_books``; None: all) and
    ``levels`` (per side): what the JSON objects hold (``--books``, ``--levels``); ``top``: watch
    the N most traded markets (``--symbols top:N``); ``book_names``: ``--books`` names to
    resolve once those are known."""
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    sup = Supervisor(cfg, record_dir, log_json=as_json, publish=publish)
    if attach is not None:
        attach.start()          # remote fleets beside the local one (--attach with a fleet)
    try:
        cfg = sup.launch(sim=sim, faults=sim_faults, replay=replay, replay_speed=replay_speed,
                         rate=sim_rate, metrics=metrics, top=top)
        if book_names is not None:
            try:
                books = select_books(cfg, book_names)
            except ValueError as exc:
                print(f"obitui: {exc}", file=sys.stderr)
                return 2
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
                if not emit_or_gone(lambda: _emit(cfg, sup, as_json, out, books, levels, attach), out):
                    return code         # `obitui ... | head`: the reader is gone, stop quietly
            time.sleep(min(0.05, max(0.0, next_print - time.monotonic())))
        if sup.stats is not None:       # the last object holds the final books
            emit_or_gone(lambda: _emit(cfg, sup, as_json, out, books, levels, attach), out)
        return code
    except SupervisorError as exc:
        print(f"obitui: {exc}", file=sys.stderr)
        return 1
    finally:
        if attach is not None:
            attach.close()
        sup.stop()


def emit_or_gone(emit: Callable[[], None], out: TextIO) -> bool:
    """Run ``emit`` (one line or object to ``out``); False when the reader went away (a pipe
    into ``head``): logged, and ``out`` pointed at /dev/null so that nothing more fails on it,
    not even the interpreter's last flush."""
    try:
        emit()
        return True
    except BrokenPipeError:
        log.info("the output's reader is gone (broken pipe): stopping")
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return False


def _emit(cfg: Config, sup: Supervisor, as_json: bool, out: TextIO, books: list[str] | None = None,
          levels: int = TOP_N, attach: Any = None) -> None:
    """One status line or JSON object; with ``attach`` (remote fleets beside this one) the
    remote feeds and books follow the local ones, keyed ``host/...``, with ``hosts``."""
    assert sup.stats is not None
    remote = attach.fleets.snapshot(levels) if attach is not None else None
    if as_json:
        snap = snapshot(cfg, sup.stats, sup.ring_fill(), books, levels)
        if remote is not None:
            snap["feeds"].update(remote["feeds"])
            snap["books"].update(remote["books"])
            snap["hosts"] = remote["hosts"]
        text = json.dumps(snap)
    else:           # the status line reads only the books it shows
        text = status_line(cfg, snapshot(cfg, sup.stats, sup.ring_fill(), status_books(cfg), 0))
        if remote is not None:
            from obitui.bus.attach import status_line as remote_line
            text += " | " + remote_line(remote).removeprefix("[Attached] ")
    out.write(text + "\n")
    out.flush()

"""The engine: sole consumer of every feed ring. Applies records to int64 books, detects lost
records by their ring ``seq``, computes OBI and trade flow, and publishes BookViews and its
own figures into the stats block.

Wait strategies: ``spin`` polls without pause (lowest latency, one busy core); ``block`` (the
default) spins briefly, then flags that it sleeps and waits on a futex word in the stats
block that a producer bumps only when the flag is set (docs/ARCHITECTURE.md, engine wake-up)."""
from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from obitui.config import Config, book_plan
from obitui.core.book import OrderBook
from obitui.core.records import (
    SIDE_BUY, Kind, RecordError, decode_invalid, decode_ticker, decode_trade,
)
from obitui.core.ring import Ring, RingError
from obitui.core.stats import BookSlotWriter, Command, StatsBlock, hist_bucket, publish_engine

log = logging.getLogger("obitui.engine")

BATCH = 512
SPIN_ROUNDS = 200          # empty polls before sleeping (block strategy)
SLEEP_TIMEOUT = 0.05       # the engine wakes at least this often to publish and beat
PUBLISH_EVERY = 0.05
OBI_SAMPLE_EVERY = 0.25    # 256 samples = the last 64 s
INVALID_LOG_EVERY = 5.0    # at most one invalidation line per book this often; the rest are summed
# invalidations that are part of normal operation (logged at INFO, the others at WARNING)
ROUTINE_REASONS = frozenset({"feed_started", "operator_resync"})
MAX_REASON = 64            # a reason is a short word (records.encode_invalid allows 200 bytes)


@dataclass
class EngineBook:
    key: str
    label: str
    book: OrderBook
    slot: BookSlotWriter
    invalidations: int = 0          # valid -> invalid transitions (published in the BookSlot)
    # why: the reason of the latest invalidation, and a count per reason. An invalidation is
    # counted when it made the book invalid or changed the reason it is invalid for; the same
    # reason again while the book is still invalid from it is a repeat (a corrupt ring fails
    # every poll). The BookSlot has no field for these: the engine's log says them.
    last_invalid_reason: str = ""
    invalid_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    invalid_log_at: float = float("-inf")     # monotonic time of the last invalidation line
    invalid_unlogged: int = 0                 # counted invalidations since then, not logged
    applied: int = 0
    dirty: bool = True
    trades: collections.deque = field(default_factory=collections.deque)
    last_trade: tuple[int, int, int, int] = (0, 0, 0, 0)
    ticker: tuple[int, ...] | None = None


class Engine:
    def __init__(self, cfg: Config, ring_names: list[str], stats_name: str,
                 resync_books: bool = False) -> None:
        self.cfg = cfg
        self.stats = StatsBlock.attach(stats_name)
        self.rings = [Ring.attach(n) for n in ring_names]
        # resume loss detection where a previous engine (killed, restarted) stopped
        self.last_seq = [r.last_seq for r in self.rings]
        self.books: dict[str, EngineBook] = {}
        for i, key in enumerate(book_plan(cfg.feeds)):
            venue, symbol = key.split(":", 1)
            label = next(f.label for f in cfg.feeds if f.is_book and f.book_key == key)
            f = next(f for f in cfg.feeds if f.book_key == key)
            book = OrderBook(f.digits, f.qdigits)
            self.books[key] = EngineBook(key, label, book, BookSlotWriter(self.stats, i, label, venue, symbol))
        # ring i -> the book its records go to (trades and tickers of a book's market too)
        self.ring_book = [self.books.get(f.book_key) for f in cfg.feeds]
        self.records = 0
        self.batches = 0
        self.gaps = 0
        self.running = True
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.records_per_s = 0.0
        if resync_books:
            # a restarted engine starts with empty books: every book feed sends a new snapshot
            for i, f in enumerate(cfg.feeds):
                if f.is_book:
                    self.stats.send_command(i, Command.RESYNC)

    # ------------------------------------------------------------ records
    def poll(self) -> int:
        n = 0
        for i, ring in enumerate(self.rings):
            try:
                batch = ring.pop_batch(BATCH)
            except RingError as exc:
                log.error("ring %s is corrupt: %s; its book is invalid until the feed restarts",
                          ring.name, exc)
                self._invalidate(i, "corrupt_ring")
                continue
            if not batch:
                continue
            self.batches += 1
            n += len(batch)
            for kind, seq, payload in batch:
                self._record(i, kind, seq, payload)
        self.records += n
        return n

    def _record(self, i: int, kind: int, seq: int, payload: bytes) -> None:
        last = self.last_seq[i]
        if last and seq != last + 1:
            lost = seq - last - 1
            self.gaps += 1
            log.warning("ring %d: %d record(s) lost before seq %d", i, lost, seq)
            eb = self.ring_book[i]
            if eb is not None and self.cfg.feeds[i].is_book and eb.book.valid:
                # only the feed drops records, and it knows: it sends its book whole again once
                # the ring has room. A RESYNC from here too made a storm: each new snapshot into
                # a still-full ring was dropped in part, seen lost, and asked for again.
                self._invalidate(i, "ring_loss")
        self.last_seq[i] = seq
        eb = self.ring_book[i]
        try:
            if kind == Kind.BOOK_DELTA or kind == Kind.BOOK_SNAPSHOT:
                if eb is None:
                    return
                # header check, levels and update id in one Cython call (decode_book's rules)
                recv_ns = eb.book.apply_record(payload, kind == Kind.BOOK_SNAPSHOT)
                if recv_ns < 0:
                    return      # a delta while waiting for a snapshot
                eb.applied += 1
                eb.dirty = True
                eb.slot.hist[hist_bucket(time.time_ns() - recv_ns)] += 1
            elif kind == Kind.TRADE:
                _, side, exch, recv, tid, price, qty = decode_trade(payload)
                if eb is not None:
                    eb.trades.append((time.monotonic(), side, qty))
                    eb.last_trade = (price, qty, side, exch)
                    eb.dirty = True
            elif kind == Kind.TICKER:
                if eb is not None:
                    eb.ticker = decode_ticker(payload)
            elif kind == Kind.BOOK_INVALID:
                _, _, reason = decode_invalid(payload)
                self._invalidate(i, reason)
            else:
                log.warning("ring %d: unknown record kind %d (seq %d) ignored", i, kind, seq)
        except (RecordError, ValueError) as exc:
            log.error("ring %d: bad record kind %d seq %d: %s", i, kind, seq, exc)
            self._invalidate(i, "bad_record")

    def _invalidate(self, i: int, reason: str) -> None:
        eb = self.ring_book[i]
        if eb is None or not self.cfg.feeds[i].is_book:
            return
        reason = _clean_reason(reason)
        was_valid = bool(eb.book.valid)
        if was_valid:
            eb.invalidations += 1
        if was_valid or reason != eb.last_invalid_reason:
            eb.last_invalid_reason = reason
            eb.invalid_reasons[reason] += 1
            self._log_invalid(eb, reason, was_valid)
        eb.book.reset()
        eb.dirty = True

    def _log_invalid(self, eb: EngineBook, reason: str, was_valid: bool) -> None:
        """One line per book per INVALID_LOG_EVERY at most: a burst (a flapping connection, a
        checksum storm) is one line, and the next line says how many it left out."""
        now = time.monotonic()
        if now - eb.invalid_log_at < INVALID_LOG_EVERY:
            eb.invalid_unlogged += 1
            return
        more = (f"; {eb.invalid_unlogged} more since the last line" if eb.invalid_unlogged else "")
        log.log(logging.INFO if reason in ROUTINE_REASONS else logging.WARNING,
                "book %s %s: %s (invalidations %d, by reason: %s%s)", eb.key,
                "invalidated" if was_valid else "invalid", reason, eb.invalidations,
                _reasons_text(eb.invalid_reasons), more)
        eb.invalid_log_at = now
        eb.invalid_unlogged = 0

    def invalidation_summary(self) -> dict[str, dict[str, Any]]:
        """Per book key: the published ``invalidations``, the last reason and the count per
        reason (kept here only: the stats block's BookSlot has no field for them)."""
        return {key: {"invalidations": eb.invalidations, "last_reason": eb.last_invalid_reason,
                      "reasons": dict(eb.invalid_reasons)}
                for key, eb in self.books.items()}

    # ------------------------------------------------------------ publishing
    def publish(self, sample_obi: bool) -> None:
        now = time.monotonic()
        for eb in self.books.values():
            cutoff = now - 1.0
            while eb.trades and eb.trades[0][0] < cutoff:
                eb.trades.popleft()
            if not eb.dirty and not sample_obi and not eb.trades:
                continue
            b = eb.book
            obi = b.obi(self.cfg.obi_levels) if b.valid else 0.0
            if sample_obi:
                eb.slot.push_obi(obi)
            bq = sum(q for _, s, q in eb.trades if s == SIDE_BUY)
            sq = sum(q for _, s, q in eb.trades if s != SIDE_BUY)
            bn = sum(1 for _, s, _ in eb.trades if s == SIDE_BUY)
            eb.slot.publish(valid=bool(b.valid), crossed=bool(b.crossed), update_id=b.update_id,
                            pdec=b.shown_pdec, qdec=b.shown_qdec, bids=b.bids.fixed_levels(20),
                            asks=b.asks.fixed_levels(20), obi=obi,
                            flow=(bq, sq, bn, len(eb.trades) - bn), last_trade=eb.last_trade,
                            invalidations=eb.invalidations, records_applied=eb.applied)
            eb.dirty = False
        dt = now - self._rate_t
        if dt >= 1.0:
            self.records_per_s = (self.records - self._rate_n) / dt
            self._rate_t, self._rate_n = now, self.records
        publish_engine(self.stats, records=self.records, batches=self.batches,
                       records_per_s=self.records_per_s, obi_levels=self.cfg.obi_levels,
                       wait=self.cfg.engine_wait, gaps=self.gaps,
                       ring_high_water=[r.high_water for r in self.rings])
        for r in self.rings:
            r.heartbeat()

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        spin = self.cfg.engine_wait == "spin"
        stats = self.stats
        rings = self.rings
        last_pub = last_obi = 0.0
        idle = 0
        while self.running:
            n = self.poll()
            now = time.monotonic()
            if now - last_pub >= PUBLISH_EVERY:
                sample = now - last_obi >= OBI_SAMPLE_EVERY
                if sample:
                    last_obi = now
                self.publish(sample)
                last_pub = now
            if n:
                idle = 0
                continue
            idle += 1
            if spin or idle < SPIN_ROUNDS:
                continue
            word = stats.engine_sleep_begin()
            if any(r.used_bytes() for r in rings):   # a push that raced the flag
                stats.engine_sleep_end()
                continue
            stats.engine_sleep(word, SLEEP_TIMEOUT)
            stats.engine_sleep_end()
            idle = 0
        self.publish(False)
        for eb in self.books.values():
            if eb.invalid_reasons:
                log.info("book %s: %d invalidations, last: %s (by reason: %s)", eb.key,
                         eb.invalidations, eb.last_invalid_reason, _reasons_text(eb.invalid_reasons))

    def close(self) -> None:
        for r in self.rings:
            r.close()
        self.stats.close()


def _clean_reason(reason: str) -> str:
    """A reason from a ring record as one short printable word for the log and the counts."""
    text = "".join(c if c.isprintable() else "?" for c in reason.strip()[:MAX_REASON])
    return text or "unspecified"


def _reasons_text(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{r} {n}" for r, n in counts.most_common())


def engine_main(cfg: Config, ring_names: list[str], stats_name: str, resync_books: bool = False) -> None:
    """Process entry, started by the supervisor through ``lifeline.run_child`` (which has armed
    the parent-death signal and set up logging)."""
    if cfg.engine_cpu is not None:
        try:
            os.sched_setaffinity(0, {cfg.engine_cpu})
        except OSError as exc:
            log.warning("cannot pin the engine to CPU %d: %s", cfg.engine_cpu, exc)
    eng = Engine(cfg, ring_names, stats_name, resync_books)
    gc.collect()
    gc.freeze()       # the long-lived objects stay out of every later collection

    def stop(*_: Any) -> None:
        eng.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides; Ctrl+C goes to it
    try:
        eng.run()
    finally:
        eng.close()

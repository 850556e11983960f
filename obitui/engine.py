"""The engine: sole consumer of every feed ring. Applies records to int64 books, detects lost
records by their ring ``seq``, computes OBI and trade flow, and publishes BookViews and its
own figures into the stats block.

Routing: every record names its market by its first field, the book index (``config.book_plan``:
one slot per market of the fleet). A record from ring i is applied only when that index is one of
feed i's markets (``config.feed_book_ids``); any other is a counted, logged ``bad_record`` and
ignored. A trade or ticker goes to its market's slot whether or not a book feed serves it (a
market without a book feed has trades, last trade and ticker, and is never valid).

Publishing: at most ``PUBLISH_EVERY`` (the UI's pace), and only the books whose figures changed
since their last publish; OBI is sampled into each book's history every ``OBI_SAMPLE_EVERY``, and
a book whose only news is its samples is published at most every ``IDLE_PUBLISH_EVERY``.

Wait strategies: ``spin`` polls without pause (lowest latency, one busy core); ``block`` (the
default) flags that it sleeps and waits on a futex word in the stats block as soon as a poll finds
nothing (after ``[engine] spin_us`` of polling, default 0), which a producer bumps only when the
flag is set (docs/ARCHITECTURE.md, engine wake-up); ``batch`` also pauses ``nap_us`` after a
poll that found records (interrupt coalescing: a bounded added latency for less CPU per record)."""
from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import time
from typing import Any

from obitui.config import Config, book_plan, engine_nap_us, engine_spin_us, feed_book_ids
from obitui.core.book import OrderBook
from obitui.core.engine_core import EngineCore, MarketState
from obitui.core.ring import Ring
from obitui.core.stats import Command, StatsBlock, publish_engine

log = logging.getLogger("obitui.engine")

BATCH = 512
SLEEP_TIMEOUT = 0.05       # the engine wakes at least this often to publish and beat
PUBLISH_EVERY = 0.125      # the UI's pace (8 Hz): changed books, the EngineSlot, the ring heartbeats
# a publish round polls the rings after every this many books: a record that arrives during a
# round (300 books: ~1.5 ms) waits for at most a chunk (p99 receive -> applied at 150 markets
# [1.05, 2.1) ms -> [524, 1049) us, BENCHMARKS.md "The engine's wait and publish")
PUBLISH_CHUNK = 16
OBI_SAMPLE_EVERY = 0.25    # 256 samples = the last 64 s
IDLE_PUBLISH_EVERY = 1.0   # a book whose only change is new OBI samples: at most this often
INVALID_LOG_EVERY = 5.0    # at most one invalidation line per book this often; the rest are summed
BAD_LOG_EVERY = 5.0        # at most one bad-record line per ring this often; the rest are summed
# invalidations that are part of normal operation (logged at INFO, the others at WARNING)
ROUTINE_REASONS = frozenset({"feed_started", "operator_resync", "stopped"})
MAX_REASON = 64            # a reason is a short word (records.encode_invalid allows 200 bytes)



class EngineBook(MarketState):
    """One market of the fleet: its book and figures in C (``engine_core.MarketState``: the
    per-record and publish paths), and here what only the rare paths use. An invalidation is
    counted when it made the book invalid or changed the reason it is invalid for; the same
    reason again while the book is still invalid from it is a repeat (a corrupt ring fails
    every poll)."""

    def __init__(self, key: str, label: str, book: OrderBook, stats: StatsBlock, index: int,
                 has_book: bool = True) -> None:
        venue, symbol = key.split(":", 1)
        super().__init__(book, stats, index, label, venue, symbol, has_book)
        self.key = key
        self.label = label
        self.invalid_reasons: collections.Counter[str] = collections.Counter()
        self.invalid_log_at = float("-inf")     # monotonic time of the last invalidation line
        self.invalid_unlogged = 0               # counted invalidations since then, not logged


class Engine:
    def __init__(self, cfg: Config, ring_names: list[str], stats_name: str,
                 resync_books: bool = False) -> None:
        self.cfg = cfg
        self.stats = StatsBlock.attach(stats_name)
        self.rings = [Ring.attach(n) for n in ring_names]
        plan = book_plan(cfg.feeds)
        ids = feed_book_ids(cfg.feeds)
        serving: list[list[int]] = [[] for _ in plan]     # book index -> the feeds serving it
        for i, feed_ids in enumerate(ids):
            for j in feed_ids:
                serving[j].append(i)
        # the books by index (= record id = BookSlot) and by key
        self.books: list[EngineBook] = []
        for j, key in enumerate(plan):
            symbol = key.split(":", 1)[1]
            book_feeds = [i for i in serving[j] if cfg.feeds[i].is_book]
            f = cfg.feeds[(book_feeds or serving[j])[0]]
            self.books.append(EngineBook(key, f.label, OrderBook(*f.scales_of(symbol)), self.stats, j,
                                         has_book=bool(book_feeds)))
        self.by_key: dict[str, EngineBook] = {eb.key: eb for eb in self.books}
        self.feed_books: list[list[EngineBook]] = [[self.books[j] for j in feed_ids] for feed_ids in ids]
        self.ring_is_book = [f.is_book for f in cfg.feeds]
        # the records' path (route by book id, apply, loss by seq) and the publish round, in C;
        # it calls back _lost, _bad, _invalidate, _invalidate_feed and _corrupt
        self.core = EngineCore(self, self.rings, self.books, ids, self.ring_is_book)
        self.gaps = 0
        self.bad_records = 0
        self._bad_log_at = [float("-inf")] * len(self.rings)
        self._bad_unlogged = [0] * len(self.rings)
        self._corrupt_log_at = [float("-inf")] * len(self.rings)
        self._corrupt_polls = [0] * len(self.rings)
        self.running = True
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.records_per_s = 0.0
        if resync_books:
            # a restarted engine starts with empty books: every book feed sends all its books anew
            for i, f in enumerate(cfg.feeds):
                if f.is_book:
                    self.stats.send_command(i, Command.RESYNC)

    @property
    def records(self) -> int:
        return int(self.core.records)

    @property
    def batches(self) -> int:
        return int(self.core.batches)

    # ------------------------------------------------------------ records
    def poll(self) -> int:
        """Read and apply the records of every ring (at most BATCH a ring); returns how many."""
        return int(self.core.poll(BATCH))

    def _corrupt(self, i: int, why: str) -> None:
        """Ring i is corrupt (or closed): never read again; its feed's books invalid. Called at
        every poll of it: logged once per ring every BAD_LOG_EVERY at most, with the count."""
        self._invalidate_feed(i, "corrupt_ring")
        self._corrupt_polls[i] += 1
        now = time.monotonic()
        if now - self._corrupt_log_at[i] < BAD_LOG_EVERY:
            return
        log.error("ring %s is corrupt: %s; its books are invalid until the feed restarts "
                  "(%d polls of it so far)", self.rings[i].name, why, self._corrupt_polls[i])
        self._corrupt_log_at[i] = now

    def _lost(self, i: int, seq: int, last: int) -> None:
        """Records of ring i were lost before ``seq``: any of its feed's books may have missed a
        change. Only the feed drops records, and it knows: it sends its books whole again once
        the ring has room. A RESYNC from here too made a storm: each new snapshot into a
        still-full ring was dropped in part, seen lost, and asked for again."""
        self.gaps += 1
        log.warning("ring %d: %d record(s) lost before seq %d", i, seq - last - 1, seq)
        if self.ring_is_book[i]:
            for eb in self.feed_books[i]:
                if eb.book.valid:
                    self._invalidate(eb, "ring_loss", clean=False)

    def _bad(self, i: int, kind: int, seq: int, why: str) -> None:
        """A record refused: counted, logged (one line per ring per BAD_LOG_EVERY at most)."""
        self.bad_records += 1
        now = time.monotonic()
        if now - self._bad_log_at[i] < BAD_LOG_EVERY:
            self._bad_unlogged[i] += 1
            return
        more = f"; {self._bad_unlogged[i]} more since the last line" if self._bad_unlogged[i] else ""
        log.error("ring %d (%s): bad_record kind %d seq %d: %s (ignored; %d bad records in all%s)",
                  i, self.cfg.feeds[i].label if i < len(self.cfg.feeds) else "?", kind, seq, why,
                  self.bad_records, more)
        self._bad_log_at[i] = now
        self._bad_unlogged[i] = 0

    def _invalidate_feed(self, i: int, reason: str) -> None:
        """Every book of feed i (a book feed) invalid, for ``reason`` (an engine word)."""
        if self.ring_is_book[i]:
            for eb in self.feed_books[i]:
                self._invalidate(eb, reason, clean=False)

    def _invalidate(self, eb: EngineBook, reason: str, clean: bool = True) -> None:
        """``reason``: from a record (made one short printable word here), or with ``clean``
        False one of the engine's own words."""
        if not eb.has_book:
            return
        if clean:
            reason = _clean_reason(reason)
        was_valid = bool(eb.book.valid)
        if was_valid:
            eb.invalidations += 1
        if was_valid or reason != eb.last_invalid_reason:
            eb.last_invalid_reason = reason
            eb.invalid_reasons[reason] += 1
            self._log_invalid(eb, reason, was_valid)
            eb.dirty = True
        eb.book.reset()

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
        reason (the last reason is in the BookSlot too; the counts only here and in the log)."""
        return {eb.key: {"invalidations": eb.invalidations, "last_reason": eb.last_invalid_reason,
                         "reasons": dict(eb.invalid_reasons)}
                for eb in self.books}

    # ------------------------------------------------------------ publishing
    def publish(self, sample_obi: bool, now: float | None = None) -> int:
        """Publish the books that changed (and the EngineSlot, and the ring heartbeats); with
        ``sample_obi``, first push every book's OBI into its history. ``now``: the monotonic
        time the trade windows move to (default: now). Returns the books published."""
        if now is None:
            now = time.monotonic()
        n = int(self.core.publish(sample_obi, now, self.cfg.obi_levels, now - IDLE_PUBLISH_EVERY,
                                  PUBLISH_CHUNK, BATCH))
        dt = now - self._rate_t
        if dt >= 1.0:
            self.records_per_s = (self.records - self._rate_n) / dt
            self._rate_t, self._rate_n = now, self.records
        publish_engine(self.stats, records=self.records, batches=self.batches,
                       records_per_s=self.records_per_s, obi_levels=self.cfg.obi_levels,
                       wait=self.cfg.engine_wait, gaps=self.gaps,
                       ring_high_water=[r.high_water for r in self.rings], bad_records=self.bad_records)
        for r in self.rings:
            r.heartbeat()
        return n

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        cfg = self.cfg
        spin = cfg.engine_wait == "spin"
        spin_s = engine_spin_us(cfg) / 1e6
        nap_s = engine_nap_us(cfg) / 1e6
        mono = time.monotonic
        seg = self.stats.seg
        sleeping_off, wake_off = self.stats.engine_wait_offsets()
        run_until = self.core.run_until
        last_pub = last_obi = 0.0
        while self.running:
            now = mono()
            if now - last_pub >= PUBLISH_EVERY:
                sample = now - last_obi >= OBI_SAMPLE_EVERY
                if sample:
                    last_obi = now
                self.publish(sample)
                last_pub = now
            # poll and wait in C until the next round (flag, check the rings, futex wait, unflag:
            # ring.sleep_until_records)
            run_until(last_pub + PUBLISH_EVERY, seg, sleeping_off, wake_off, spin, spin_s, nap_s,
                      SLEEP_TIMEOUT, BATCH)
        self.publish(False)
        for eb in self.books:
            if eb.invalid_reasons:
                log.info("book %s: %d invalidations, last: %s (by reason: %s)", eb.key,
                         eb.invalidations, eb.last_invalid_reason, _reasons_text(eb.invalid_reasons))
        if self.bad_records:
            log.info("%d bad records refused", self.bad_records)

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

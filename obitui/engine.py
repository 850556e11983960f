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
from dataclasses import dataclass, field
from typing import Any

from obitui.config import Config, book_plan, engine_nap_us, engine_spin_us, feed_book_ids
from obitui.core.book import OrderBook
from obitui.core.records import BOOK_HEADER, DAY, INVALID, SIDE_BUY, TICKER, TRADE, Kind, RecordError
from obitui.core.ring import Ring, RingError, sleep_until_records
from obitui.core.stats import (HIST_BUCKETS, TAPE_N, TAPE_SIZE, TOP_N, BookSlotWriter, Command, StatsBlock,
                               pack_market, publish_engine, tape_entry)

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

_SNAPSHOT = int(Kind.BOOK_SNAPSHOT)
_DELTA = int(Kind.BOOK_DELTA)
_TRADE = int(Kind.TRADE)
_TICKER = int(Kind.TICKER)
_INVALID = int(Kind.BOOK_INVALID)
_DAY = int(Kind.TICKER_DAY)
_DAY_SIZE = DAY.size
time_ns = time.time_ns
assert HIST_BUCKETS >= 64     # a latency (now - an int64 receive time) < 2**64 ns: bucket <= 63
_BOOK_HEADER_SIZE = BOOK_HEADER.size
_TRADE_SIZE = TRADE.size
_TICKER_SIZE = TICKER.size
_INVALID_SIZE = INVALID.size


@dataclass(eq=False)
class EngineBook:
    key: str
    label: str
    book: OrderBook
    slot: BookSlotWriter
    index: int = 0                  # the book slot, the id its records carry
    has_book: bool = True           # a book feed serves this market (else: trades/ticker only)
    invalidations: int = 0          # valid -> invalid transitions (published in the BookSlot)
    # why: the reason of the latest invalidation (published in the BookSlot), and a count per
    # reason (the engine's log). An invalidation is counted when it made the book invalid or
    # changed the reason it is invalid for; the same reason again while the book is still
    # invalid from it is a repeat (a corrupt ring fails every poll).
    last_invalid_reason: str = ""
    invalid_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    invalid_log_at: float = float("-inf")     # monotonic time of the last invalidation line
    invalid_unlogged: int = 0                 # counted invalidations since then, not logged
    applied: int = 0
    dirty: bool = True              # figures changed since the last publish
    sampled: bool = False           # OBI samples pushed since the last publish
    published_at: float = float("-inf")
    obi: float = 0.0                # the OBI of the book as of ``obi_applied`` records
    obi_applied: int = -1
    # trades of the last second (monotonic time, side, qty) and their sums
    trades: collections.deque = field(default_factory=collections.deque)
    buy_qty: int = 0
    sell_qty: int = 0
    buy_count: int = 0
    sell_count: int = 0
    last_trade: tuple[int, int, int, int] = (0, 0, 0, 0)
    ticker: tuple[int, ...] | None = None     # exch ns, last, bid, bid qty, ask, ask qty
    day: tuple[int, ...] | None = None        # exch ns, 24 h open, high, low, volume
    trades_seen: int = 0
    # the last TAPE_N trades, each packed as the slot's tape holds it (pack_tape's entry)
    tape: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAPE_N))
    market_dirty: bool = True       # ticker, 24 h figures or tape changed since the last publish


class Engine:
    def __init__(self, cfg: Config, ring_names: list[str], stats_name: str,
                 resync_books: bool = False) -> None:
        self.cfg = cfg
        self.stats = StatsBlock.attach(stats_name)
        self.rings = [Ring.attach(n) for n in ring_names]
        # resume loss detection where a previous engine (killed, restarted) stopped
        self.last_seq = [r.last_seq for r in self.rings]
        plan = book_plan(cfg.feeds)
        ids = feed_book_ids(cfg.feeds)
        serving: list[list[int]] = [[] for _ in plan]     # book index -> the feeds serving it
        for i, feed_ids in enumerate(ids):
            for j in feed_ids:
                serving[j].append(i)
        # the books by index (= record id = BookSlot) and by key
        self.books: list[EngineBook] = []
        for j, key in enumerate(plan):
            venue, symbol = key.split(":", 1)
            book_feeds = [i for i in serving[j] if cfg.feeds[i].is_book]
            f = cfg.feeds[(book_feeds or serving[j])[0]]
            self.books.append(EngineBook(key, f.label, OrderBook(*f.scales_of(symbol)),
                                         BookSlotWriter(self.stats, j, f.label, venue, symbol),
                                         index=j, has_book=bool(book_feeds)))
        self.by_key: dict[str, EngineBook] = {eb.key: eb for eb in self.books}
        # ring i: its feed's books, and the route of a record id to its book (None: not feed i's)
        self.feed_books: list[list[EngineBook]] = [[self.books[j] for j in feed_ids] for feed_ids in ids]
        self.routes: list[list[EngineBook | None]] = []
        for feed_ids in ids:
            route: list[EngineBook | None] = [None] * len(plan)
            for j in feed_ids:
                route[j] = self.books[j]
            self.routes.append(route)
        self.ring_is_book = [f.is_book for f in cfg.feeds]
        self.records = 0
        self.batches = 0
        self.gaps = 0
        self.bad_records = 0
        self._bad_log_at = [float("-inf")] * len(self.rings)
        self._bad_unlogged = [0] * len(self.rings)
        self.running = True
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.records_per_s = 0.0
        if resync_books:
            # a restarted engine starts with empty books: every book feed sends all its books anew
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
                log.error("ring %s is corrupt: %s; its books are invalid until the feed restarts",
                          ring.name, exc)
                self._invalidate_feed(i, "corrupt_ring")
                continue
            if not batch:
                continue
            self.batches += 1
            n += len(batch)
            self._apply(i, batch)
        self.records += n
        return n

    def _apply(self, i: int, batch: list[tuple[int, int, bytes]]) -> None:
        """The records of one batch of ring i, in order (the per-record path: keep it lean)."""
        route = self.routes[i]
        n_route = len(route)
        is_book = self.ring_is_book[i]
        last = self.last_seq[i]
        for kind, seq, payload in batch:
            if last and seq != last + 1:
                self._lost(i, seq, last)
            last = seq
            if kind == _DELTA or kind == _SNAPSHOT:
                if len(payload) < _BOOK_HEADER_SIZE:
                    # its id cannot be trusted: one of the feed's books missed a change
                    self._bad(i, kind, seq, f"book record of {len(payload)} bytes is shorter than its header")
                    self._invalidate_feed(i, "bad_record")
                    continue
                bid = payload[0] | payload[1] << 8
                eb = route[bid] if bid < n_route else None
                if eb is None or not is_book:
                    self._bad(i, kind, seq, f"book {bid} is not a book of this feed")
                    continue
                try:
                    # header check, levels and update id in one Cython call (decode_book's rules)
                    recv_ns = eb.book.apply_record(payload, kind == _SNAPSHOT)
                except (RecordError, ValueError) as exc:
                    self._bad(i, kind, seq, f"book {eb.key}: {exc}")
                    self._invalidate(eb, "bad_record", clean=False)
                    continue
                if recv_ns < 0:
                    continue        # a delta while waiting for a snapshot
                eb.applied += 1
                eb.dirty = True
                lat = time_ns() - recv_ns      # hist_bucket, inline: [2**i, 2**(i+1)) ns
                eb.slot.hist[lat.bit_length() - 1 if lat > 0 else 0] += 1
            elif kind == _TRADE:
                if len(payload) != _TRADE_SIZE:
                    self._bad(i, kind, seq, f"trade record of {len(payload)} bytes, expected {_TRADE_SIZE}")
                    continue
                bid, side, _, _, exch, _recv, _tid, price, qty = TRADE.unpack(payload)
                eb = route[bid] if bid < n_route else None
                if eb is None:
                    self._bad(i, kind, seq, f"book {bid} is not a market of this feed")
                    continue
                eb.trades.append((time.monotonic(), side, qty))
                if side == SIDE_BUY:
                    eb.buy_qty += qty
                    eb.buy_count += 1
                else:
                    eb.sell_qty += qty
                    eb.sell_count += 1
                eb.last_trade = (price, qty, side, exch)
                eb.tape.append(tape_entry(exch, price, qty, side))
                eb.trades_seen += 1
                eb.dirty = eb.market_dirty = True
            elif kind == _TICKER:
                if len(payload) != _TICKER_SIZE:
                    self._bad(i, kind, seq, f"ticker record of {len(payload)} bytes, expected {_TICKER_SIZE}")
                    continue
                bid, _, _, exch, recv, last_px, bid_px, bid_q, ask_px, ask_q = TICKER.unpack(payload)
                eb = route[bid] if bid < n_route else None
                if eb is None:
                    self._bad(i, kind, seq, f"book {bid} is not a market of this feed")
                    continue
                eb.ticker = (exch, last_px, bid_px, bid_q, ask_px, ask_q)
                eb.dirty = eb.market_dirty = True
            elif kind == _DAY:
                if len(payload) != _DAY_SIZE:
                    self._bad(i, kind, seq, f"24 h record of {len(payload)} bytes, expected {_DAY_SIZE}")
                    continue
                bid, _, _, exch, open_, high, low, volume = DAY.unpack(payload)
                eb = route[bid] if bid < n_route else None
                if eb is None:
                    self._bad(i, kind, seq, f"book {bid} is not a market of this feed")
                    continue
                eb.day = (exch, open_, high, low, volume)
                eb.dirty = eb.market_dirty = True
            elif kind == _INVALID:
                if len(payload) < _INVALID_SIZE:
                    self._bad(i, kind, seq, "book-invalid record too short")
                    self._invalidate_feed(i, "bad_record")
                    continue
                bid = payload[0] | payload[1] << 8
                eb = route[bid] if bid < n_route else None
                if eb is None:
                    self._bad(i, kind, seq, f"book {bid} is not a market of this feed")
                    continue
                if is_book:         # a trade or ticker feed has no book to invalidate
                    self._invalidate(eb, payload[_INVALID_SIZE:].decode("utf-8", "replace"))
            else:
                self._bad(i, kind, seq, "unknown record kind")
        self.last_seq[i] = last

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
    def publish(self, sample_obi: bool) -> int:
        """Publish the books that changed (and the EngineSlot, and the ring heartbeats); with
        ``sample_obi``, first push every book's OBI into its history. Returns the books
        published."""
        now = time.monotonic()
        cutoff = now - 1.0
        idle_before = now - IDLE_PUBLISH_EVERY
        levels = self.cfg.obi_levels
        n = 0
        chunk = PUBLISH_CHUNK
        for k, eb in enumerate(self.books):
            if k % chunk == chunk - 1:
                self.poll()         # records wait at most a chunk of books, not a whole round
            trades = eb.trades
            if trades and trades[0][0] < cutoff:
                while trades and trades[0][0] < cutoff:
                    _, side, qty = trades.popleft()
                    if side == SIDE_BUY:
                        eb.buy_qty -= qty
                        eb.buy_count -= 1
                    else:
                        eb.sell_qty -= qty
                        eb.sell_count -= 1
                eb.dirty = True
            if sample_obi:
                eb.slot.push_obi(self._obi(eb, levels))
                eb.sampled = True
            if eb.dirty or (eb.sampled and eb.published_at < idle_before):
                self._publish_book(eb, now, levels)
                n += 1
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

    @staticmethod
    def _obi(eb: EngineBook, levels: int) -> float:
        """The book's OBI over ``levels`` levels, computed again only when records were applied."""
        b = eb.book
        if not b.valid:
            return 0.0
        if eb.obi_applied != eb.applied:
            eb.obi = b.obi(levels)
            eb.obi_applied = eb.applied
        return eb.obi

    def _publish_book(self, eb: EngineBook, now: float, levels: int) -> None:
        b = eb.book
        packed, nb, na, _, _ = b.packed(TOP_N)
        eb.slot.publish_packed(bool(b.valid), bool(b.crossed), b.update_id, b.shown_pdec, b.shown_qdec,
                               packed, nb, na, self._obi(eb, levels),
                               (eb.buy_qty, eb.sell_qty, eb.buy_count, eb.sell_count), eb.last_trade,
                               eb.invalidations, eb.applied, eb.last_invalid_reason,
                               *self._market(eb))
        eb.dirty = eb.sampled = False
        eb.published_at = now

    @staticmethod
    def _market(eb: EngineBook) -> tuple[bytes | None, bytes | None]:
        """The market section and the tape of a book's slot when they changed, else Nones."""
        if not eb.market_dirty:
            return None, None
        eb.market_dirty = False
        return (pack_market(eb.ticker, eb.day, eb.trades_seen), b"".join(reversed(eb.tape)).ljust(TAPE_SIZE, b"\0"))

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        cfg = self.cfg
        spin = cfg.engine_wait == "spin"
        spin_s = engine_spin_us(cfg) / 1e6
        nap_s = engine_nap_us(cfg) / 1e6
        nap = time.sleep
        mono = time.monotonic
        stats = self.stats
        seg = stats.seg
        sleeping_off, wake_off = stats.engine_wait_offsets()
        rings = self.rings
        last_pub = last_obi = 0.0
        last_work = mono()
        while self.running:
            n = self.poll()
            now = mono()
            if now - last_pub >= PUBLISH_EVERY:
                sample = now - last_obi >= OBI_SAMPLE_EVERY
                if sample:
                    last_obi = now
                self.publish(sample)
                last_pub = now
            if n:
                last_work = now
                if nap_s:
                    nap(nap_s)      # records are coming: let the next ones gather in the rings
                continue
            if spin or now - last_work < spin_s:
                continue
            # flag, check the rings, futex wait, unflag: one call (ring.sleep_until_records)
            sleep_until_records(seg, sleeping_off, wake_off, rings, SLEEP_TIMEOUT)
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

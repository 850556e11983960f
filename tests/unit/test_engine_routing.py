"""The engine routes every record by the book index it carries (issue #19): a record from ring i
is applied to that market's slot when the index is one of feed i's markets, and is otherwise a
counted ``bad_record`` that changes no book. A lost record on a ring invalidates every valid book
of that ring's feed, and only those. Trades and tickers of a market without a book feed get its
slot all the same (never valid). Only the books that changed are published, with the reason.

An in-process engine on real rings and a real stats block (test segments), fed record by record.
The fleet: a depth feed of three markets, a trade feed of two (one with no book feed), and a
one-market book feed whose feed index (2) is not its book index (4)."""
from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from obitui.config import Config, FeedConfig, book_plan, feed_book_ids
from obitui.core.records import Kind, encode_book, encode_invalid, encode_ticker, encode_trade
from obitui.core.ring import Ring
from obitui.core.stats import ALL_BOOKS, Command, StatsBlock
from obitui.engine import Engine, EngineBook
from tests.unit.engine_rig import running_engine
from tests.conftest import release_segments

pytestmark = pytest.mark.timeout(60)

DEPTH, TRADES, BG = 0, 1, 2            # feed (ring) indexes
BTC, ETH, SOL, XRP, BG_BTC = 0, 1, 2, 3, 4     # book indexes (config.book_plan)


def fleet() -> Config:
    return Config(feeds=[FeedConfig("Bi-OB", "binance", "depth", symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")),
                         FeedConfig("Bi-TR", "binance", "trade", symbols=("ETHUSDT", "XRPUSDT")),
                         FeedConfig("Bg-OB", "bitget", "books", symbols=("BTCUSDT",))])


def test_the_fleet_is_what_the_tests_say() -> None:
    cfg = fleet()
    assert book_plan(cfg.feeds) == ["binance:BTCUSDT", "binance:ETHUSDT", "binance:SOLUSDT",
                                    "binance:XRPUSDT", "bitget:BTCUSDT"]
    assert feed_book_ids(cfg.feeds) == [[BTC, ETH, SOL], [ETH, XRP], [BG_BTC]]


@dataclass
class Rig:
    engine: Engine
    stats: StatsBlock
    rings: list[Ring]
    lines: list[logging.LogRecord]

    def push(self, ring: int, kind: Kind, payload: bytes, poll: bool = True) -> bool:
        ok = self.rings[ring].push(payload, int(kind))
        if poll:
            assert ok
            assert self.engine.poll() == 1
        return ok

    def snapshot(self, ring: int, book: int, update_id: int, price: int = 100) -> None:
        levels = [(price * 10**8, 10**8), ((price + 1) * 10**8, 2 * 10**8)]
        packed = b"".join(struct.pack("<qq", p, q) for p, q in levels)
        now = time.time_ns()
        self.push(ring, Kind.BOOK_SNAPSHOT, encode_book(Kind.BOOK_SNAPSHOT, book, now, now, update_id,
                                                        update_id, packed, 1, 1, 8, 8))

    def delta(self, ring: int, book: int, update_id: int, poll: bool = True) -> bool:
        packed = struct.pack("<qq", 99 * 10**8, update_id)
        now = time.time_ns()
        return self.push(ring, Kind.BOOK_DELTA, encode_book(Kind.BOOK_DELTA, book, now, now, update_id,
                                                            update_id, packed, 1, 0, 8, 8), poll)

    def book(self, j: int) -> EngineBook:
        return self.engine.books[j]

    def valid(self) -> list[bool]:
        return [bool(eb.book.valid) for eb in self.engine.books]

    def bad_lines(self) -> list[str]:
        return [r.getMessage() for r in self.lines if "bad_record" in r.getMessage()]


@pytest.fixture
def rig(shm_name: str) -> Iterator[Rig]:
    cfg = fleet()
    with running_engine(cfg, shm_name, with_index=True) as (eng, stats, rings, lines):
        yield Rig(eng, stats, rings, lines)


def test_records_go_to_the_book_their_id_names(rig: Rig) -> None:
    rig.snapshot(DEPTH, SOL, 30, price=300)
    rig.snapshot(DEPTH, BTC, 10, price=100)
    rig.snapshot(BG, BG_BTC, 40, price=400)
    assert rig.valid() == [True, False, True, False, True]
    assert rig.book(SOL).book.update_id == 30 and rig.book(BTC).book.update_id == 10
    rig.delta(DEPTH, SOL, 31)
    assert rig.book(SOL).book.update_id == 31 and rig.book(SOL).applied == 2
    assert rig.book(BTC).applied == 1 and rig.book(ETH).applied == 0
    rig.engine.publish(False)
    for j, (label, exch, sym, uid, best_bid) in {
            BTC: ("Bi-OB", "binance", "BTCUSDT", 10, 100), SOL: ("Bi-OB", "binance", "SOLUSDT", 31, 300),
            BG_BTC: ("Bg-OB", "bitget", "BTCUSDT", 40, 400)}.items():
        bv = rig.stats.read_book(j)
        assert bv is not None and (bv.label, bv.exchange, bv.symbol, bv.update_id) == (label, exch, sym, uid)
        assert bv.valid and bv.bids[0][0] == best_bid * 10**8 and bv.reason == ""
    assert rig.stats.find_book("binance:SOLUSDT") == SOL
    assert rig.engine.bad_records == 0


@pytest.mark.parametrize("ring,book", [(DEPTH, BG_BTC), (DEPTH, XRP), (DEPTH, 999), (BG, BTC), (TRADES, BTC)])
def test_a_record_naming_another_feeds_book_is_a_bad_record(rig: Rig, ring: int, book: int) -> None:
    """Counted and logged, and no book changes: neither the one it names nor its ring's."""
    rig.snapshot(DEPTH, BTC, 10)
    rig.snapshot(DEPTH, ETH, 20)
    rig.snapshot(BG, BG_BTC, 40)
    before = [(eb.book.update_id, eb.applied, eb.invalidations) for eb in rig.engine.books]
    if ring == TRADES:
        rig.push(TRADES, Kind.TRADE, encode_trade(book, 1, 2, 3, 100 * 10**8, 10**8, 1))
    else:
        rig.delta(ring, book, 99)
    assert rig.engine.bad_records == 1
    assert [(eb.book.update_id, eb.applied, eb.invalidations) for eb in rig.engine.books] == before
    assert rig.valid() == [True, True, False, False, True]
    assert rig.book(BTC).last_trade == (0, 0, 0, 0)
    assert len(rig.bad_lines()) == 1 and "not a" in rig.bad_lines()[0]
    rig.engine.publish(False)
    ev = rig.stats.read_engine()
    assert ev is not None and ev.bad_records == 1


def test_bad_records_are_logged_at_most_once_per_interval_per_ring(rig: Rig) -> None:
    for k in range(5):
        rig.delta(DEPTH, BG_BTC, k + 1)
    assert rig.engine.bad_records == 5 and len(rig.bad_lines()) == 1
    rig.engine._bad_log_at[DEPTH] -= 10
    rig.delta(DEPTH, 999, 9)
    assert len(rig.bad_lines()) == 2 and "4 more since the last line" in rig.bad_lines()[1]


def test_a_lost_record_invalidates_every_valid_book_of_its_ring_only(rig: Rig) -> None:
    for j, uid in ((BTC, 10), (ETH, 20), (SOL, 30)):
        rig.snapshot(DEPTH, j, uid)
    rig.snapshot(BG, BG_BTC, 40)
    # the depth ring fills (the engine not reading): a push is refused, its seq consumed
    uid = 30
    while rig.delta(DEPTH, SOL, uid + 1, poll=False):
        uid += 1
    while rig.engine.poll():
        pass
    assert rig.valid() == [True, True, True, False, True] and rig.engine.gaps == 0
    rig.snapshot(DEPTH, ETH, 21)          # the feed sends its books whole again: the gap is seen first
    assert rig.engine.gaps == 1
    assert rig.valid() == [False, True, False, False, True]
    for j in (BTC, SOL):
        eb = rig.book(j)
        assert eb.last_invalid_reason == "ring_loss" and eb.invalidations == 1
    assert rig.book(ETH).last_invalid_reason == "ring_loss" and rig.book(ETH).invalidations == 1
    assert rig.book(BG_BTC).invalidations == 0 and rig.book(BG_BTC).last_invalid_reason == ""
    rig.engine.publish(False)
    assert [rig.stats.read_book(j).reason for j in range(5)] == ["ring_loss", "ring_loss", "ring_loss", "", ""]


def test_a_book_record_too_short_to_name_its_book_invalidates_its_feeds_books(rig: Rig) -> None:
    rig.snapshot(DEPTH, BTC, 10)
    rig.snapshot(DEPTH, ETH, 20)
    rig.snapshot(BG, BG_BTC, 40)
    rig.push(DEPTH, Kind.BOOK_DELTA, b"short")
    assert rig.valid() == [False, False, False, False, True]
    assert rig.book(BTC).last_invalid_reason == "bad_record" and rig.engine.bad_records == 1


def test_a_malformed_record_of_a_named_book_invalidates_that_book(rig: Rig) -> None:
    rig.snapshot(DEPTH, BTC, 10)
    rig.snapshot(DEPTH, ETH, 20)
    now = time.time_ns()
    bad = encode_book(Kind.BOOK_DELTA, ETH, now, now, 21, 21, b"", 1, 0, 8, 8)   # says 1 level, holds none
    rig.push(DEPTH, Kind.BOOK_DELTA, bad)
    assert rig.valid() == [True, False, False, False, False]
    assert rig.book(ETH).last_invalid_reason == "bad_record" and rig.engine.bad_records == 1


def test_trades_and_tickers_reach_a_market_without_a_book_feed(rig: Rig) -> None:
    rig.snapshot(DEPTH, ETH, 20)
    rig.push(TRADES, Kind.TRADE, encode_trade(XRP, 5, 6, 1, 2 * 10**8, 3 * 10**8, 1))     # a buy
    rig.push(TRADES, Kind.TRADE, encode_trade(XRP, 7, 8, 2, 2 * 10**8, 10**8, 2))         # a sell
    rig.push(TRADES, Kind.TRADE, encode_trade(ETH, 9, 9, 3, 20 * 10**8, 4 * 10**8, 1))
    rig.push(TRADES, Kind.TICKER, encode_ticker(XRP, 1, 2, 3, 4, 5, 6, 7))
    rig.push(TRADES, Kind.BOOK_INVALID, encode_invalid(ETH, 1, "gap"))   # a trade feed has no book
    xrp, eth = rig.book(XRP), rig.book(ETH)
    assert not xrp.has_book and xrp.ticker == (1, 3, 4, 5, 6, 7)       # exch ns, last, bid, bq, ask, aq
    assert eth.book.valid and eth.invalidations == 0 and rig.engine.bad_records == 0
    rig.engine.publish(False)
    bv = rig.stats.read_book(XRP)
    assert bv is not None and not bv.valid and (bv.label, bv.exchange, bv.symbol) == ("Bi-TR", "binance", "XRPUSDT")
    assert (bv.buy_qty_1s, bv.sell_qty_1s, bv.buy_count_1s, bv.sell_count_1s) == (3 * 10**8, 10**8, 1, 1)
    assert (bv.last_trade_price, bv.last_trade_qty, bv.last_trade_side) == (2 * 10**8, 10**8, 2)
    # the ticker, the trade count and the tape (newest first) reach the slot
    assert (bv.ticker_ns, bv.ticker_last, bv.ticker_bid, bv.ticker_bid_qty, bv.ticker_ask,
            bv.ticker_ask_qty) == (1, 3, 4, 5, 6, 7)
    assert bv.trades == 2 and bv.tape == [(7, 2 * 10**8, 10**8, 2), (5, 2 * 10**8, 3 * 10**8, 1)]
    assert bv.day_ns == 0 and bv.flow_1s == 2 * 10**8
    bv = rig.stats.read_book(ETH)
    assert bv.valid and bv.label == "Bi-OB" and bv.buy_qty_1s == 4 * 10**8
    # the flow window: a trade older than 1 s leaves the sums (a round 2 s later)
    assert (xrp.trades_in_window, eth.trades_in_window) == (2, 1)
    assert rig.engine.publish(False, now=time.monotonic() + 2.0) == 2
    assert (xrp.trades_in_window, eth.trades_in_window) == (0, 0)
    bv = rig.stats.read_book(XRP)
    assert (bv.buy_qty_1s, bv.sell_qty_1s, bv.buy_count_1s, bv.sell_count_1s) == (0, 0, 0, 0)
    assert bv.last_trade_price == 2 * 10**8


def test_only_changed_books_are_published(rig: Rig) -> None:
    eng = rig.engine
    assert eng.publish(False) == 5                 # the first publish: every slot named
    assert eng.publish(False) == 0
    rig.snapshot(DEPTH, SOL, 30)
    at = rig.stats.read_book(BTC).last_update_ns
    assert eng.publish(False) == 1
    assert rig.stats.read_book(BTC).last_update_ns == at and rig.stats.read_book(SOL).valid
    # OBI samples go into every history; a book whose only news is samples waits its turn
    assert eng.publish(True) == 0
    rig.delta(DEPTH, SOL, 31)
    assert eng.publish(True) == 1
    assert rig.stats.read_book(SOL).obi_history == pytest.approx([rig.book(SOL).obi(20)] * 2)
    for eb in eng.books:
        eb.published_at -= 2.0
    assert eng.publish(False) == 4                 # the samples of the idle books, once a second
    assert not rig.book(SOL).sampled               # (SOL's went out with its change)
    assert len(rig.stats.read_book(BTC).obi_history) == 2
    assert eng.publish(False) == 0
    # an invalidation changes the book and names why
    rig.push(DEPTH, Kind.BOOK_INVALID, encode_invalid(SOL, 1, "checksum"))
    assert eng.publish(False) == 1
    bv = rig.stats.read_book(SOL)
    assert not bv.valid and bv.reason == "checksum" and bv.invalidations == 1 and bv.bids == []


def test_a_restarted_engine_asks_every_book_feed_for_all_its_books(shm_name: str) -> None:
    cfg = fleet()
    plan = book_plan(cfg.feeds)
    stats = StatsBlock.create(shm_name + "-stats", len(cfg.feeds), len(plan), book_keys=plan)
    rings = [Ring.create(f"{shm_name}-ring{i}", 1 << 16) for i in range(len(cfg.feeds))]
    try:
        eng = Engine(cfg, [r.name for r in rings], shm_name + "-stats", resync_books=True)
        eng.close()
        assert [stats.read_command_book(i) for i in range(3)] == [
            (1, Command.RESYNC, ALL_BOOKS), (0, Command.NONE, 0), (1, Command.RESYNC, ALL_BOOKS)]
    finally:
        release_segments(rings, stats)


def test_24h_figures_and_a_long_tape_reach_the_slot(rig: Rig) -> None:
    """TICKER_DAY records set the market's 24 h figures; the tape keeps the newest TAPE_N
    trades, newest first, while the count goes on; a short 24 h record is refused, counted."""
    from obitui.core.records import encode_day
    from obitui.core.stats import TAPE_N
    rig.push(TRADES, Kind.TICKER_DAY, encode_day(XRP, 11, 100, 130, 90, 5000))
    for k in range(TAPE_N + 3):
        rig.push(TRADES, Kind.TRADE, encode_trade(XRP, 100 + k, 100 + k, k + 1, 10 + k, 1 + k, 1 + k % 2))
    rig.push(TRADES, Kind.TICKER_DAY, encode_day(XRP, 12, 100, 130, 90, 5000)[:40])
    assert rig.engine.bad_records == 1
    rig.engine.publish(False)
    bv = rig.stats.read_book(XRP)
    assert (bv.day_ns, bv.day_open, bv.day_high, bv.day_low, bv.day_volume) == (11, 100, 130, 90, 5000)
    assert bv.trades == TAPE_N + 3 and len(bv.tape) == TAPE_N
    assert [t[0] for t in bv.tape] == [100 + k for k in range(TAPE_N + 2, 2, -1)]
    assert bv.tape[0] == (100 + TAPE_N + 2, 10 + TAPE_N + 2, 1 + TAPE_N + 2, 1 + (TAPE_N + 2) % 2)


def test_a_publish_round_applies_records_that_come_during_it(shm_name: str) -> None:
    """A round over many changed books polls the rings between chunks of books
    (``PUBLISH_CHUNK``), so a record does not wait for the whole round: here the records pushed
    before the round are applied by it, and the books published after that chunk show them."""
    from obitui.engine import PUBLISH_CHUNK
    symbols = tuple(f"S{i:03d}USDT" for i in range(3 * PUBLISH_CHUNK))
    cfg = Config(feeds=[FeedConfig("Bi-TR", "binance", "trade", symbols=symbols)])
    with running_engine(cfg, shm_name) as (eng, stats, rings, _):
        for eb in eng.books:
            eb.dirty = True
        last = len(symbols) - 1
        rings[0].push(encode_trade(last, 1, time.time_ns(), 7, 123_000, 5_000, 1), int(Kind.TRADE))
        assert eng.records == 0
        eng.publish(False)
        assert eng.records == 1                 # applied inside the round, not at the next poll
        assert eng.books[last].last_trade[0] == 123_000
        view = stats.read_book(last)
        assert view is not None and view.last_trade_price == 123_000    # and published in it

"""The engine's C paths (``obitui.core.engine_core``, issue #19): its BookSlot writer writes
what ``stats.BookSlotWriter`` (the NATS mirror's writer, the layout's reference) writes for the
same figures, byte for byte; absurd trade sums are held at the int64 bounds instead of ending
the engine; records are read in place, so a batch that ends at a corrupt record still applies
the records before it.

A real engine over real rings and a real stats block (test segments), fed record by record."""
from __future__ import annotations

import os
import struct
import time

import pytest

from obitui.config import Config, FeedConfig
from obitui.core.records import Kind, encode_book, encode_day, encode_invalid, encode_ticker, encode_trade
from obitui.core.ring import HEADER_SIZE, RECORD_HEADER_SIZE, sleep_until_records
from obitui.core.stats import BookSlotWriter, StatsBlock, pack_market, pack_tape, _BOOK_END
from obitui.engine import EngineBook
from tests.unit.engine_rig import running_engine

pytestmark = pytest.mark.timeout(60)

I64_MAX = 2**63 - 1
# the BookSlot's fields that differ between two writers of the same figures: the seqlock word
# and the publish time (the fixed part: u64 seq, 3 x 16 s names, u32 valid, u32 crossed, u64 id, i64 ns)
_TS = slice(8 + 48 + 8 + 8, 8 + 48 + 8 + 8 + 8)


def fleet() -> Config:
    return Config(feeds=[FeedConfig("Bi-OB", "binance", "depth", symbols=("BTCUSDT",)),
                         FeedConfig("Bi-TR", "binance", "trade", symbols=("BTCUSDT",))])


def slot_bytes(stats: StatsBlock, i: int) -> bytes:
    raw = stats.seg.read_consistent(stats.book_offset(i), _BOOK_END)
    assert raw is not None
    return raw[8:_TS.start] + raw[_TS.stop:]


def reference_publish(w: BookSlotWriter, eb: EngineBook, market: bool) -> None:
    """What the engine published before its C writer, from the same figures."""
    b = eb.book
    for k, count in enumerate(eb.latency_histogram):
        w.hist[k] = count
    packed, nb, na, _, _ = b.packed(20)
    tape = pack_tape(eb.tape_entries) if market else None
    w.publish_packed(bool(b.valid), bool(b.crossed), b.update_id, b.shown_pdec, b.shown_qdec, packed, nb, na,
                     eb.obi(20), (eb.buy_qty, eb.sell_qty, eb.buy_count, eb.sell_count), eb.last_trade,
                     eb.invalidations, eb.applied, eb.last_invalid_reason,
                     pack_market(eb.ticker, eb.day, eb.trades_seen) if market else None, tape)


def levels(n: int, price: int, step: int) -> bytes:
    return b"".join(struct.pack("<qq", price + k * step, 10**6 + k) for k in range(n))


def test_the_c_writer_writes_what_the_reference_writer_writes(shm_name: str) -> None:
    with running_engine(fleet(), shm_name, n_books=2) as (eng, stats, rings, _):
        eb = eng.books[0]
        ref = BookSlotWriter(stats, 1, "Bi-OB", "binance", "BTCUSDT")
        now = time.time_ns()
        # more levels than a slot shows (20 a side), and OBI samples before the first publish
        rings[0].push(encode_book(Kind.BOOK_SNAPSHOT, 0, now, now, 5, 5, levels(25, 10**10, -10**6)
                                  + levels(30, 10**10 + 10**6, 10**6), 25, 30, 2, 5), int(Kind.BOOK_SNAPSHOT))
        assert eng.poll() == 1
        for v in (0.5, -0.25):
            eb.push_obi(v)
            ref.push_obi(v)
        eng.publish(False)
        reference_publish(ref, eb, True)
        assert slot_bytes(stats, 0) == slot_bytes(stats, 1)
        # trades, a ticker, 24 h figures, a delta, an invalidation reason, more samples
        for k in range(11):
            rings[1].push(encode_trade(0, 100 + k, now, k, 10**10 + k, 10**5 * (k + 1), 1 + k % 2), int(Kind.TRADE))
        rings[1].push(encode_ticker(0, 7, now, 1, 2, 3, 4, 5), int(Kind.TICKER))
        rings[1].push(encode_day(0, 8, 10, 20, 5, 99), int(Kind.TICKER_DAY))
        rings[0].push(encode_book(Kind.BOOK_DELTA, 0, now, now, 6, 6, struct.pack("<qq", 10**10 - 3 * 10**6, 0)
                                  + struct.pack("<qq", 10**10 + 10**6, 7), 1, 1, 3, 8), int(Kind.BOOK_DELTA))
        assert eng.poll() == 14
        eb.last_invalid_reason = "a reason longer than the slot's twenty-four bytes"
        for v in (0.125,) * 300:
            eb.push_obi(v)
            ref.push_obi(v)
        assert eng.publish(False) == 1
        reference_publish(ref, eb, True)
        assert slot_bytes(stats, 0) == slot_bytes(stats, 1)
        view = stats.read_book(0)
        assert view is not None and view.trades == 11 and view.tape[0][0] == 110 and view.qty_decimals == 8
        assert view.reason == "a reason longer than the"
        # a publish without market news leaves the market section and tape as they were
        eb.push_obi(0.75)
        ref.push_obi(0.75)
        eb.dirty = True
        assert eng.publish(False) == 1
        reference_publish(ref, eb, False)
        assert slot_bytes(stats, 0) == slot_bytes(stats, 1)


def test_an_absurd_trade_sum_is_held_at_the_int64_bound(shm_name: str) -> None:
    """Two trades of 5e18 units in a second sum past int64: the 1 s flow says the bound, the
    engine goes on (the int64 slot field cannot say more), and the window empties again."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, _):
        for k in range(2):
            rings[1].push(encode_trade(0, 1, time.time_ns(), k, 10**8, 5 * 10**18, 1), int(Kind.TRADE))
        assert eng.poll() == 2
        eng.publish(False)
        view = stats.read_book(0)
        assert view is not None and view.buy_qty_1s == I64_MAX and view.buy_count_1s == 2
        eng.publish(False, now=time.monotonic() + 2.0)
        view = stats.read_book(0)
        assert view is not None and view.buy_qty_1s == 0 and view.buy_count_1s == 0


def test_records_before_a_corrupt_one_are_applied(shm_name: str) -> None:
    """The ring is read in place: a batch that meets a corrupt record keeps what came before it
    (the snapshot and the delta are applied); then the corrupt ring's books are invalid, for
    ``corrupt_ring``, and it is logged."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, lines):
        now = time.time_ns()
        snap = encode_book(Kind.BOOK_SNAPSHOT, 0, now, now, 5, 5, levels(2, 10**10, -1) + levels(2, 10**10 + 1, 1),
                           2, 2, 2, 5)
        delta = encode_book(Kind.BOOK_DELTA, 0, now, now, 6, 6, struct.pack("<qq", 10**10 - 7, 3), 1, 0, 2, 5)
        for payload, kind in ((snap, Kind.BOOK_SNAPSHOT), (delta, Kind.BOOK_DELTA), (delta, Kind.BOOK_DELTA)):
            assert rings[0].push(payload, int(kind))
        rings[1].push(encode_trade(0, 1, now, 1, 10**8, 10, 1), int(Kind.TRADE))
        # the third record's length, made to run past the ring's data
        third = RECORD_HEADER_SIZE * 2 + len(snap) + len(delta)
        fd = os.open(f"/dev/shm/{rings[0].name}", os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<I", 0xFFFFFFF0), HEADER_SIZE + third)
        finally:
            os.close(fd)
        assert eng.poll() == 3
        eb = eng.books[0]
        assert eb.applied == 2 and eb.book.update_id == 6 and eb.trades_seen == 1
        assert not eb.book.valid and eb.last_invalid_reason == "corrupt_ring"
        assert any("is corrupt" in r.getMessage() for r in lines)


def snapshot(book: int, uid: int, recv_ns: int | None = None, bid_qty: int = 10**6) -> bytes:
    now = time.time_ns()
    return encode_book(Kind.BOOK_SNAPSHOT, book, now, now if recv_ns is None else recv_ns, uid, uid,
                       struct.pack("<qq", 10**10, bid_qty) + struct.pack("<qq", 10**10 + 1, 10**6), 1, 1, 2, 5)


TAIL_OFF = 64          # obi_ring_header.tail (shm.h asserts it: the producer's cache line)


def test_a_corrupt_ring_is_never_read_again(shm_name: str) -> None:
    """A producer's tail more than a capacity ahead of the head: the ring is corrupt, its books
    invalid; later polls read nothing of it (not the previous lap's records as new ones), count
    it once, log it once, and the engine's wait does not take its bytes for records."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, lines):
        for k in range(1, 700):                          # laps of the 64 KiB ring
            assert rings[0].push(snapshot(0, k), int(Kind.BOOK_SNAPSHOT))
            eng.poll()
        eb = eng.books[0]
        assert eb.book.valid and eb.applied == 699
        head = rings[0].stats()["head"]
        fd = os.open(f"/dev/shm/{rings[0].name}", os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<Q", head + (1 << 16) + 8), TAIL_OFF)
        finally:
            os.close(fd)
        for _ in range(50):
            assert eng.poll() == 0
        assert not eb.book.valid and eb.last_invalid_reason == "corrupt_ring" and eb.applied == 699
        st = rings[0].stats()
        assert st["head"] == head and st["corrupt"] == 1
        assert len([r for r in lines if "is corrupt" in r.getMessage()]) == 1
        off, wake = stats.engine_wait_offsets()
        t0 = time.monotonic()
        assert not sleep_until_records(stats.seg, off, wake, eng.rings, 0.05)     # it slept
        assert time.monotonic() - t0 >= 0.04


def test_a_closed_ring_is_polled_without_harm(shm_name: str) -> None:
    with running_engine(fleet(), shm_name) as (eng, stats, rings, lines):
        rings[0].push(snapshot(0, 1), int(Kind.BOOK_SNAPSHOT))
        eng.rings[0].close()
        assert eng.poll() == 0
        assert eng.books[0].last_invalid_reason == "corrupt_ring"
        assert any("the ring is closed" in r.getMessage() for r in lines)


def test_a_record_length_changed_after_its_check_is_not_read_again(shm_name: str) -> None:
    """The record header's length is read once, when the ring checks it: a producer writing it
    while the engine is in Python (here, logging a gap) changes nothing the engine reads."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, lines):
        first = snapshot(0, 1)
        rings[0].push(first, int(Kind.BOOK_SNAPSHOT))
        rings[0].push(encode_invalid(0, 1, "gap"), int(Kind.BOOK_INVALID))
        second = HEADER_SIZE + RECORD_HEADER_SIZE + len(first)       # the second record's header
        fd = os.open(f"/dev/shm/{rings[0].name}", os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<Q", 9), second + 8)              # its seq: a gap before it
            lost = eng._lost

            def producer_writes_length_zero(i: int, seq: int, last: int) -> None:
                os.pwrite(fd, struct.pack("<I", 0), second)
                lost(i, seq, last)
            eng._lost = producer_writes_length_zero  # type: ignore[method-assign]
            assert eng.poll() == 2
        finally:
            os.close(fd)
        eb = eng.books[0]
        assert eng.bad_records == 0 and not eb.book.valid and eb.last_invalid_reason == "gap"


def test_a_snapshot_without_a_receive_time_is_applied_and_counted(shm_name: str) -> None:
    """A snapshot whose receive time is not a time (<= 0) is still a snapshot: the book is valid,
    counted, published with its OBI; only no latency is counted for it."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, _):
        rings[0].push(snapshot(0, 1, bid_qty=9 * 10**6), int(Kind.BOOK_SNAPSHOT))
        assert eng.poll() == 1
        eb = eng.books[0]
        assert eb.obi(20) == pytest.approx(0.8)
        rings[0].push(encode_invalid(0, 1, "gap"), int(Kind.BOOK_INVALID))
        rings[0].push(snapshot(0, 2, recv_ns=-1, bid_qty=10**5), int(Kind.BOOK_SNAPSHOT))
        assert eng.poll() == 2
        assert eb.book.valid and eb.applied == 2 and sum(eb.latency_histogram) == 1
        eng.publish(False)
        view = stats.read_book(0)
        assert view is not None and view.valid and view.update_id == 2
        assert view.obi == pytest.approx((10**5 - 10**6) / (10**5 + 10**6))


def test_the_wait_spins_only_after_records(shm_name: str) -> None:
    """``spin_s`` counts from the last records, across publish rounds: idle rings put the engine
    to sleep at once in every round, not after spinning ``spin_s`` each time."""
    with running_engine(fleet(), shm_name) as (eng, stats, rings, _):
        off, wake = stats.engine_wait_offsets()
        time.sleep(0.06)
        c0 = time.thread_time()
        for _ in range(4):
            eng.core.run_until(time.monotonic() + 0.1, stats.seg, off, wake, False, 0.05, 0.0, 0.05)
        assert time.thread_time() - c0 < 0.05      # spinning 50 ms a round would be 200 ms

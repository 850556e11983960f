"""The stats block for many markets (issue #19): up to 2048 book slots, the book index (market key
-> slot) written at create and read by ``find_book``, the last invalidation reason in a
BookSlot, the feed gauges (books, books_synced, connections, connections_up), the control word
with a book (``seq << 24 | book << 8 | command``), and the engine's partial publish of a slot
(``publish_packed``), which must read back exactly as a whole-slot publish."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from obitui.core import stats as st
from obitui.core.book import OrderBook
from obitui.core.shm import Segment
from obitui.core.stats import (
    ALL_BOOKS, FEED_COUNTERS, FEED_GAUGES, MAX_BOOK_SLOTS, N_COUNTERS, OBI_HISTORY, AckResult,
    BookSlotWriter, Command, FeedSlotWriter, StatsBlock, StatsError, publish_engine,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def blocks(shm_name: str) -> Iterator[list[StatsBlock]]:
    """Blocks made by a test (closed and unlinked after it): ``make(suffix, ...)``."""
    made: list[StatsBlock] = []
    yield made
    for b in made:
        b.close()
    for p in Path("/dev/shm").glob(f"{shm_name}*"):
        Segment.unlink(p.name)


def make(blocks: list[StatsBlock], name: str, *args: object, **kw: object) -> StatsBlock:
    blk = StatsBlock.create(name, *args, **kw)  # type: ignore[arg-type]
    blocks.append(blk)
    return blk


def test_layout_constants() -> None:
    assert st.VERSION == 4
    assert st._BOOK_LEVELS_OFF == 512 and st._BOOK_FIXED.size <= 512      # the levels did not move
    assert st._BOOK_REASON_OFF + st.REASON_SIZE == st._BOOK_FIXED.size
    assert st._BOOK_PUBLISHED == 3712 and st._BOOK_PUBLISHED <= st.BOOK_SLOT
    assert st._ENGINE_FIXED.size <= st._ENGINE_HW_OFF
    assert MAX_BOOK_SLOTS == 2048
    assert StatsBlock.size_for(4, 2) == 4096 + 4 * 4096 + 2 * 4096 + 1024 + 2 * st.KEY_SIZE


def test_the_book_index_is_written_at_create_and_found_after_attach(shm_name: str,
                                                                    blocks: list[StatsBlock]) -> None:
    keys = ["binance:BTCUSDT", "binance:ETHUSDT", "bitget:BTCUSDT", "binance-usdm:SOLUSDT"]
    blk = make(blocks, shm_name, 3, 5, "r1x", book_keys=keys)       # one slot left unnamed
    assert blk.find_book("bitget:BTCUSDT") == 2
    other = StatsBlock.attach(shm_name)
    blocks.append(other)
    assert other.book_keys() == keys
    assert [other.find_book(k) for k in keys] == [0, 1, 2, 3]
    assert other.find_book("bitget:ETHUSDT") is None and other.find_book("") is None
    assert other.header()["version"] == 4 and other.header()["n_books"] == 5


def test_a_block_without_keys_finds_nothing(shm_name: str, blocks: list[StatsBlock]) -> None:
    blk = make(blocks, shm_name, 1, 2)
    assert blk.book_keys() == [] and blk.find_book("binance:BTCUSDT") is None


def test_2048_book_slots_and_no_more(shm_name: str, blocks: list[StatsBlock]) -> None:
    keys = [f"binance:S{k}USDT" for k in range(MAX_BOOK_SLOTS)]
    blk = make(blocks, shm_name, 16, MAX_BOOK_SLOTS, book_keys=keys)
    w = BookSlotWriter(blk, MAX_BOOK_SLOTS - 1, "Bi-OB#16", "binance", "S2047USDT")
    w.publish(valid=True, crossed=False, update_id=9, pdec=2, qdec=2, bids=[(5, 1)], asks=[(6, 1)], obi=0.0)
    other = StatsBlock.attach(shm_name)
    blocks.append(other)
    assert other.find_book("binance:S2047USDT") == 2047
    bv = other.read_book(2047)
    assert bv is not None and bv.update_id == 9 and bv.label == "Bi-OB#16"
    with pytest.raises(StatsError, match="0-2048 books"):
        StatsBlock.create(shm_name + "-big", 1, MAX_BOOK_SLOTS + 1)


@pytest.mark.parametrize("keys,match", [
    (["a:B", "a:C", "a:D"], "3 book keys for 2"),
    (["a:B", "a:B"], "distinct"),
    (["x" * 64], "1-63 bytes"),
    ([""], "1-63 bytes"),
])
def test_bad_book_keys_are_refused(shm_name: str, keys: list[str], match: str) -> None:
    with pytest.raises(StatsError, match=match):
        StatsBlock.create(shm_name, 1, 2, book_keys=keys)


def test_the_last_invalidation_reason_is_in_the_book_slot(shm_name: str, blocks: list[StatsBlock]) -> None:
    blk = make(blocks, shm_name, 1, 2)
    w = BookSlotWriter(blk, 0, "Bi-OB", "binance", "BTCUSDT")
    w.publish(valid=False, crossed=False, update_id=1, pdec=2, qdec=2, bids=[], asks=[], obi=0.0,
              reason="checksum")
    bv = blk.read_book(0)
    assert bv is not None and bv.reason == "checksum" and not bv.valid
    w.publish(valid=False, crossed=False, update_id=1, pdec=2, qdec=2, bids=[], asks=[], obi=0.0,
              reason="a_reason_longer_than_the_field_holds")
    assert blk.read_book(0).reason == "a_reason_longer_than_the" == "a_reason_longer_than_the_field"[:24]
    w.publish(valid=True, crossed=False, update_id=2, pdec=2, qdec=2, bids=[(1, 1)], asks=[(2, 1)], obi=0.0)
    assert blk.read_book(0).reason == ""
    assert blk.read_book(1) is not None and blk.read_book(1).reason == ""    # never written


def test_feed_gauges_are_set_and_read_back(shm_name: str, blocks: list[StatsBlock]) -> None:
    new = ("books", "books_synced", "connections", "connections_up")
    assert set(new) <= set(FEED_GAUGES) <= set(FEED_COUNTERS) and len(FEED_COUNTERS) <= N_COUNTERS
    assert FEED_COUNTERS[-4:] == new           # appended: the older counters kept their words
    blk = make(blocks, shm_name, 1, 0)
    w = FeedSlotWriter(blk, 0, "Bi-OB", "binance", "btcusdt@depth@100ms +149 more", "BTCUSDT")
    w.set("books", 150)
    w.set("books_synced", 150)
    w.set("connections", 3)
    w.set("connections_up", 3)
    w.inc("frames", 5)
    w.publish()
    c = blk.read_feed(0).counters
    assert (c["books"], c["books_synced"], c["connections"], c["connections_up"], c["frames"]) == (150, 150, 3, 3, 5)
    w.set("books_synced", 149)
    w.set("connections_up", 2)
    w.publish()
    c = blk.read_feed(0).counters
    assert (c["books_synced"], c["connections_up"]) == (149, 2)
    with pytest.raises(KeyError, match="not a feed gauge"):
        w.set("frames", 1)                      # a counter only grows
    assert w.get("frames") == 5


def test_the_control_word_carries_a_book(shm_name: str, blocks: list[StatsBlock]) -> None:
    blk = make(blocks, shm_name, 2, 4)
    assert blk.read_command(0) == (0, Command.NONE) and blk.read_command_book(0) == (0, Command.NONE, 0)
    # the callers of today: no book is every book, and read_command answers as it did
    assert blk.send_command(0, Command.RESYNC) == 1
    assert blk.read_command(0) == (1, Command.RESYNC)
    assert blk.read_command_book(0) == (1, Command.RESYNC, ALL_BOOKS)
    assert blk.seg.load_u64(blk.feed_offset(0) + st.FEED_CONTROL_OFF) == 1 << 24 | 0xFFFF << 8 | 2
    # one book, then a resync of the invalid books only
    assert blk.send_command(0, Command.RESYNC, book=3) == 2
    assert blk.read_command_book(0) == (2, Command.RESYNC, 3)
    assert blk.seg.load_u64(blk.feed_offset(0) + st.FEED_CONTROL_OFF) == 2 << 24 | 3 << 8 | 2
    assert blk.send_command(0, Command.RESYNC_INVALID) == 3
    assert blk.read_command_book(0) == (3, Command.RESYNC_INVALID, ALL_BOOKS)
    assert blk.read_command(1) == (0, Command.NONE)                 # the other feed's word
    for book in (0, 2047, ALL_BOOKS - 1):
        seq = blk.send_command(1, Command.RECONNECT, book)
        assert blk.read_command_book(1) == (seq, Command.RECONNECT, book)
    with pytest.raises(StatsError, match="out of range"):
        blk.send_command(0, Command.RESYNC, book=ALL_BOOKS + 1)
    with pytest.raises(StatsError, match="out of range"):
        blk.send_command(0, Command.RESYNC, book=-1)
    assert blk.read_command_book(0) == (3, Command.RESYNC_INVALID, ALL_BOOKS)   # unchanged
    # the ack word is as it was: seq << 8 | result
    blk.ack_command(0, 3, AckResult.OK, "resyncing 2 invalid books")
    assert blk.read_ack(0) == (3, AckResult.OK, "resyncing 2 invalid books")
    assert blk.seg.load_u64(blk.feed_offset(0) + st.FEED_ACK_OFF) == 3 << 8 | int(AckResult.OK)
    # a seq far past 2**16 keeps counting (40 bits)
    blk.seg.store_u64(blk.feed_offset(1) + st.FEED_CONTROL_OFF, (1 << 30) << 24)
    assert blk.send_command(1, Command.STOP, 7) == (1 << 30) + 1
    assert blk.read_command_book(1) == ((1 << 30) + 1, Command.STOP, 7)


def test_the_engine_slot_counts_bad_records(shm_name: str, blocks: list[StatsBlock]) -> None:
    blk = make(blocks, shm_name, 1, 0)
    publish_engine(blk, records=10, batches=2, records_per_s=1.5, obi_levels=20, wait="block", gaps=1,
                   ring_high_water=[5], bad_records=3)
    ev = blk.read_engine()
    assert ev is not None and (ev.records, ev.gaps, ev.bad_records, ev.ring_high_water[0]) == (10, 1, 3, 5)


def _book(seed: int, n_bids: int, n_asks: int) -> OrderBook:
    b = OrderBook(2, 3)
    b.apply_snapshot([(f"{1000 - k - seed}.5", f"{k + 1}.125") for k in range(n_bids)],
                     [(f"{1001 + k + seed}.25", f"{k + 2}.5") for k in range(n_asks)])
    return b


def _publish_both(fast: BookSlotWriter, whole: BookSlotWriter, b: OrderBook, obi: float, reason: str) -> None:
    packed, nb, na, _, _ = b.packed(st.TOP_N)
    kw = dict(valid=bool(b.valid), crossed=False, update_id=b.update_id, pdec=b.shown_pdec,
              qdec=b.shown_qdec, obi=obi, flow=(1, 2, 3, 4), last_trade=(5, 6, 1, 7),
              invalidations=2, records_applied=9, reason=reason)
    fast.publish_packed(kw["valid"], False, b.update_id, b.shown_pdec, b.shown_qdec, packed, nb, na, obi,
                        (1, 2, 3, 4), (5, 6, 1, 7), 2, 9, reason)
    whole.publish(bids=b.bids.fixed_levels(st.TOP_N), asks=b.asks.fixed_levels(st.TOP_N), **kw)  # type: ignore[arg-type]


def _same(a: st.BookView | None, b: st.BookView | None) -> None:
    assert a is not None and b is not None
    da, db = vars(a).copy(), vars(b).copy()
    assert da.pop("last_update_ns") and db.pop("last_update_ns")
    assert da == db


def test_the_partial_publish_reads_back_as_a_whole_slot(shm_name: str, blocks: list[StatsBlock]) -> None:
    """publish_packed copies only what can have changed; a reader sees what publish() would
    have written, through shrinking and growing books, and more OBI samples than the history
    holds."""
    blk = make(blocks, shm_name, 1, 2)
    fast = BookSlotWriter(blk, 0, "Bi-OB", "binance", "BTCUSDT")
    whole = BookSlotWriter(blk, 1, "Bi-OB", "binance", "BTCUSDT")
    sizes = [(30, 30), (3, 25), (25, 0), (0, 0), (1, 1), (20, 20), (7, 2)]
    pushes = [0, 1, 3, 255, 256, 300, 2]
    for k, ((nb, na), n_obi) in enumerate(zip(sizes, pushes)):
        for p in range(n_obi):
            v = (k * 1000 + p) / 1e6
            fast.push_obi(v)
            whole.push_obi(v)
        _publish_both(fast, whole, _book(k, nb, na), k / 10, "gap" if k % 2 else "")
        _same(blk.read_book(0), blk.read_book(1))
        bv = blk.read_book(0)
        assert len(bv.bids) == min(nb, 20) and len(bv.asks) == min(na, 20)
        assert len(bv.obi_history) == min(fast.obi_pos, OBI_HISTORY)


def test_a_new_writer_writes_the_whole_slot_first(shm_name: str, blocks: list[StatsBlock]) -> None:
    """A restarted engine's writer starts from nothing: its first publish replaces whatever the
    previous one left (levels, OBI history, histogram)."""
    blk = make(blocks, shm_name, 1, 2)
    old = BookSlotWriter(blk, 0, "Bi-OB", "binance", "BTCUSDT")
    for p in range(100):
        old.push_obi(0.5)
    old.hist[3] = 7
    b = _book(0, 20, 20)
    packed, nb, na, _, _ = b.packed(20)
    old.publish_packed(True, False, 1, 2, 3, packed, nb, na, 0.5, (0, 0, 0, 0), (0, 0, 0, 0), 0, 1, "")
    new = BookSlotWriter(blk, 0, "Bi-OB", "binance", "BTCUSDT")
    new.push_obi(-0.25)
    small = _book(5, 2, 1)
    packed, nb, na, _, _ = small.packed(20)
    new.publish_packed(True, False, 2, 2, 3, packed, nb, na, -0.25, (0, 0, 0, 0), (0, 0, 0, 0), 0, 1, "")
    bv = blk.read_book(0)
    assert bv is not None and bv.obi_history == [-0.25] and sum(bv.hist_ring_engine) == 0
    assert bv.bids == small.bids.fixed_levels(20) and bv.asks == small.asks.fixed_levels(20)
    raw = bytes(blk.view[blk.book_offset(0) + st._BOOK_LEVELS_OFF:blk.book_offset(0) + st._BOOK_OBI_OFF])
    assert raw[16 * 2:16 * 20] == bytes(16 * 18)         # the old levels are gone, not just unread
    assert struct.unpack_from("<d", bytes(blk.view[blk.book_offset(0) + st._BOOK_OBI_OFF:][:16]), 8)[0] == 0.0

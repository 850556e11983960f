"""The ring record layouts: records.py builds its struct formats from the C structs of shm.h
(shm.RECORD_LAYOUTS, from sizeof/offsetof), and the bytes stay those of every earlier build."""
from __future__ import annotations

import struct

from obitui.core import records
from obitui.core.book import OrderBook
from obitui.core.ring import RECORD_HEADER_SIZE
from obitui.core.shm import RECORD_LAYOUTS


def test_python_structs_match_the_c_layouts() -> None:
    structs = {"book": records.BOOK_HEADER, "trade": records.TRADE, "ticker": records.TICKER,
               "invalid": records.INVALID, "day": records.DAY,
               "ring_record": records.layout_struct("ring_record")}
    assert set(structs) == set(RECORD_LAYOUTS)
    for kind, st in structs.items():
        size, fields = RECORD_LAYOUTS[kind]
        assert st.size == size, kind
        assert st.format.startswith("<")
        codes = st.format[1:]
        assert len(codes) == len(fields), kind
        for k, (name, offset, code) in enumerate(fields):
            assert codes[k] == code, (kind, name)
            assert struct.calcsize("<" + codes[:k]) == offset, (kind, name)
    assert RECORD_LAYOUTS["ring_record"][0] == RECORD_HEADER_SIZE == 16


def test_layouts_are_the_ones_written_before() -> None:
    """Captures and rings written by earlier builds (hand-written formats) read the same."""
    assert records.BOOK_HEADER.format == "<HBBIIIqqQQ" and records.BOOK_HEADER.size == 48
    assert records.TRADE.format == "<HBBIqqQqq" and records.TRADE.size == 48
    assert records.TICKER.format == "<HHIqqqqqqq" and records.TICKER.size == 64
    assert records.INVALID.format == "<HHIq" and records.INVALID.size == 16
    assert records.DAY.format == "<HHIqqqqq" and records.DAY.size == 48
    assert [f[0] for f in RECORD_LAYOUTS["book"][1]] == [
        "book_id", "pdec", "qdec", "n_bids", "n_asks", "reserved", "exch_ns", "recv_ns", "first_id", "last_id"]
    assert [f[0] for f in RECORD_LAYOUTS["trade"][1]] == [
        "book_id", "side", "flags", "reserved", "exch_ns", "recv_ns", "trade_id", "price", "qty"]
    assert [f[0] for f in RECORD_LAYOUTS["ticker"][1]] == [
        "book_id", "flags", "reserved", "exch_ns", "recv_ns", "last", "bid", "bid_qty", "ask", "ask_qty"]
    assert [f[0] for f in RECORD_LAYOUTS["invalid"][1]] == ["book_id", "flags", "reserved", "ts_ns"]


def test_encoded_bytes_are_unchanged() -> None:
    book = records.encode_book(records.Kind.BOOK_DELTA, 7, 1_700_000_000_000_000_000, 1_700_000_000_000_000_123,
                               41, 42, struct.pack("<qq", 150_000_000, 2 * 10**8), 1, 0, 3, 1)
    assert book == (struct.pack("<HBBIIIqqQQ", 7, 3, 1, 1, 0, 0, 1_700_000_000_000_000_000,
                                1_700_000_000_000_000_123, 41, 42) + struct.pack("<qq", 150_000_000, 2 * 10**8))
    rec = records.decode_book(book)
    assert (rec.book_id, rec.pdec, rec.qdec, rec.n_bids, rec.n_asks, rec.first_id, rec.last_id) == (7, 3, 1, 1, 0, 41, 42)
    trade = records.encode_trade(2, 10, 11, 2**63 + 5, 123, 456, records.SIDE_SELL)
    assert trade == struct.pack("<HBBIqqQqq", 2, records.SIDE_SELL, 0, 0, 10, 11, 2**63 + 5, 123, 456)
    assert records.decode_trade(trade) == (2, records.SIDE_SELL, 10, 11, 2**63 + 5, 123, 456)
    ticker = records.encode_ticker(3, 1, 2, 3, 4, 5, 6, 7)
    assert ticker == struct.pack("<HHIqqqqqqq", 3, 0, 0, 1, 2, 3, 4, 5, 6, 7)
    assert records.decode_ticker(ticker) == (3, 1, 2, 3, 4, 5, 6, 7)
    inv = records.encode_invalid(4, 99, "gap")
    assert inv == struct.pack("<HHIq", 4, 0, 0, 99) + b"gap"
    assert records.decode_invalid(inv) == (4, 99, "gap")


def test_the_book_reads_its_record_header_through_the_c_layout() -> None:
    """OrderBook.apply_record reads the header with the C struct: the same fields as decode_book."""
    src = OrderBook(8)
    payload = src.apply([["1.25", "2"], ["1.2", "0.5"]], [["1.5", "3.000"]], True)
    rec = records.encode_book(records.Kind.BOOK_SNAPSHOT, 1, 5, 777, 10, 12, *payload)
    b = OrderBook(8)
    assert b.apply_record(rec, True) == 777
    assert b.update_id == 12 and b.valid and (b.shown_pdec, b.shown_qdec) == (2, 3)
    assert b.bids.fixed_levels() == src.bids.fixed_levels() and b.asks.fixed_levels() == src.asks.fixed_levels()
    assert b.top(1) == ([("1.25", "2.000")], [("1.50", "3.000")])     # shown with the record's decimals

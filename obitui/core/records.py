"""Normalized ring records (the payloads a feed pushes and the engine pops): fixed-width
little-endian fields, prices and quantities as int64 fixed point with the book's ``digits``
decimals.

BOOK_SNAPSHOT / BOOK_DELTA: header then (price, qty) int64 pairs, bids then asks.
TRADE, TICKER, TICKER_DAY: fixed structs. BOOK_INVALID: the feed tells the engine to drop a book.
The layouts are the C structs of shm.h; the struct formats here are built from them.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from obitui.core.shm import RECORD_LAYOUTS


class Kind(enum.IntEnum):
    BOOK_SNAPSHOT = 1
    BOOK_DELTA = 2
    TRADE = 3
    TICKER = 4
    BOOK_INVALID = 5
    TICKER_DAY = 6       # the venue's rolling 24 h open/high/low/volume of a market


def layout_struct(kind: str) -> struct.Struct:
    """The little-endian struct of a C record layout of shm.h (``RECORD_LAYOUTS[kind]``), its
    fields in order. The layouts have no implicit padding: a gap means a field is missing from
    the table and is refused here rather than read as padding."""
    size, fields = RECORD_LAYOUTS[kind]
    fmt, at = "<", 0
    for name, offset, code in fields:
        if offset != at:
            raise RuntimeError(f"record layout {kind!r}: field {name!r} at offset {offset}, expected {at}")
        fmt += code
        at += struct.calcsize("<" + code)
    if at != size:
        raise RuntimeError(f"record layout {kind!r}: fields end at {at}, the struct is {size} bytes")
    return struct.Struct(fmt)


BOOK_HEADER = layout_struct("book")        # 48 bytes, then the packed levels
TRADE = layout_struct("trade")             # 48 bytes
TICKER = layout_struct("ticker")           # 64 bytes
INVALID = layout_struct("invalid")         # 16 bytes, then the reason (utf-8)
DAY = layout_struct("day")                 # 48 bytes

SIDE_BUY = 1     # the aggressor (taker) bought
SIDE_SELL = 2


MAX_MS = (2**63 - 1) // 1_000_000      # the latest exchange time (ms) whose ns fits an int64


def ms_to_ns(ms: object) -> int:
    """An exchange timestamp in ms (int or decimal string) as ns; ValueError if it is not one."""
    if isinstance(ms, bool) or not isinstance(ms, (int, str)):
        raise ValueError(f"timestamp must be an int of ms, got {ms!r:.40}")
    v = int(ms) if isinstance(ms, int) else int(ms, 10) if ms.isdigit() else -1
    if not 0 <= v <= MAX_MS:
        raise ValueError(f"timestamp {ms!r:.40} is not a time in ms")
    return v * 1_000_000


class RecordError(ValueError):
    """A ring payload that does not decode as its kind."""


def encode_book(kind: Kind, book_id: int, exch_ns: int, recv_ns: int, first_id: int, last_id: int,
                packed: bytes, n_bids: int, n_asks: int, pdec: int, qdec: int) -> bytes:
    try:
        return BOOK_HEADER.pack(book_id, pdec, qdec, n_bids, n_asks, 0, exch_ns, recv_ns,
                                first_id, last_id) + packed
    except struct.error as exc:
        raise RecordError(f"book record out of range: ids {first_id}..{last_id}, time {exch_ns}: {exc}") from None


@dataclass(slots=True)
class BookRecord:
    book_id: int
    pdec: int
    qdec: int
    n_bids: int
    n_asks: int
    exch_ns: int
    recv_ns: int
    first_id: int
    last_id: int
    bids: memoryview
    asks: memoryview


def decode_book(payload: bytes) -> BookRecord:
    if len(payload) < BOOK_HEADER.size:
        raise RecordError(f"book record of {len(payload)} bytes is shorter than its header")
    book_id, pdec, qdec, nb, na, _, exch, recv, first, last = BOOK_HEADER.unpack_from(payload)
    if len(payload) != BOOK_HEADER.size + 16 * (nb + na):
        raise RecordError(f"book record of {len(payload)} bytes does not hold {nb}+{na} levels")
    mv = memoryview(payload)
    cut = BOOK_HEADER.size + 16 * nb
    return BookRecord(book_id, pdec, qdec, nb, na, exch, recv, first, last,
                      mv[BOOK_HEADER.size:cut], mv[cut:])


def encode_trade(book_id: int, exch_ns: int, recv_ns: int, trade_id: int, price: int, qty: int,
                 side: int) -> bytes:
    try:
        return TRADE.pack(book_id, side, 0, 0, exch_ns, recv_ns, trade_id, price, qty)
    except struct.error as exc:
        raise RecordError(f"trade out of range: id {trade_id}, time {exch_ns}: {exc}") from None


def decode_trade(payload: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(book_id, side, exch_ns, recv_ns, trade_id, price, qty)"""
    if len(payload) != TRADE.size:
        raise RecordError(f"trade record of {len(payload)} bytes, expected {TRADE.size}")
    book_id, side, _, _, exch, recv, tid, price, qty = TRADE.unpack(payload)
    return book_id, side, exch, recv, tid, price, qty


def encode_ticker(book_id: int, exch_ns: int, recv_ns: int, last: int, bid: int, bid_qty: int,
                  ask: int, ask_qty: int) -> bytes:
    try:
        return TICKER.pack(book_id, 0, 0, exch_ns, recv_ns, last, bid, bid_qty, ask, ask_qty)
    except struct.error as exc:
        raise RecordError(f"ticker out of range (time {exch_ns}): {exc}") from None


def decode_ticker(payload: bytes) -> tuple[int, ...]:
    if len(payload) != TICKER.size:
        raise RecordError(f"ticker record of {len(payload)} bytes, expected {TICKER.size}")
    book_id, _, _, exch, recv, last, bid, bq, ask, aq = TICKER.unpack(payload)
    return book_id, exch, recv, last, bid, bq, ask, aq


def encode_day(book_id: int, exch_ns: int, open_: int, high: int, low: int, volume: int) -> bytes:
    """A TICKER_DAY record: the 24 h open, high, low (price scale, 0: not given) and base
    volume (quantity scale) of a market."""
    try:
        return DAY.pack(book_id, 0, 0, exch_ns, open_, high, low, volume)
    except struct.error as exc:
        raise RecordError(f"24 h figures out of range (time {exch_ns}): {exc}") from None


def decode_day(payload: bytes) -> tuple[int, int, int, int, int, int]:
    """(book_id, exch_ns, open, high, low, volume)"""
    if len(payload) != DAY.size:
        raise RecordError(f"24 h record of {len(payload)} bytes, expected {DAY.size}")
    book_id, _, _, exch, open_, high, low, volume = DAY.unpack(payload)
    return book_id, exch, open_, high, low, volume


def encode_invalid(book_id: int, ts_ns: int, reason: str) -> bytes:
    return INVALID.pack(book_id, 0, 0, ts_ns) + reason.encode()[:200]


def decode_invalid(payload: bytes) -> tuple[int, int, str]:
    if len(payload) < INVALID.size:
        raise RecordError("book-invalid record too short")
    book_id, _, _, ts = INVALID.unpack_from(payload)
    return book_id, ts, payload[INVALID.size:].decode("utf-8", "replace")

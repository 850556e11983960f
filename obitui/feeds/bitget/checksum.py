"""Bitget's order-book checksum (docs/PROTOCOLS.md): a book update may carry ``checksum``, the
CRC32 of the best 25 bids and asks interleaved as ``bid1 price:bid1 size:ask1 price:ask1 size:
bid2 price:...`` over the price and size strings exactly as Bitget sent them (a side with fewer
levels just stops contributing), as a signed 32-bit integer. The book keeps the decimals each
level was received with, so the venue-free ``level_checksum`` of the core computes exactly that.
"""
from __future__ import annotations

from obitui.core.book import OrderBook, level_checksum


def bitget_checksum(book: OrderBook, depth: int = 25) -> int:
    """The checksum Bitget sends for ``book`` (signed 32-bit) over its best ``depth`` levels."""
    return level_checksum(book, depth)

"""Watchlist row figures (obitui/ui/model.py) from a book view, without Textual."""
from __future__ import annotations

import dataclasses

import pytest

from obitui.config import FeedConfig
from obitui.core.stats import BookView
from obitui.ui.model import DOWN, UP, Book, Row, fill_row

pytestmark = pytest.mark.timeout(30)


def view(**kw: object) -> BookView:
    base = BookView("Bg-OB", "bitget", "BTCUSDT", True, False, 7, 1_000, 2, 3, [(10000, 5)], [(10002, 7)],
                    0.1, [0.1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, [0] * 64, 1)
    return dataclasses.replace(base, **kw)


def test_last_is_the_last_trade_or_else_the_tickers_last_with_its_tick() -> None:
    book = Book(0, "bitget:BTCUSDT", 0, FeedConfig("Bg-OB", "bitget", "books"), 2, 3)
    row = Row(book)
    fill_row(row, view(ticker_ns=1, ticker_last=10001), 2_000, None, "connected_synced")
    assert row.cells["last"][0].startswith("100.01") and row.sort["last"] == pytest.approx(100.01)
    fill_row(row, view(ticker_ns=2, ticker_last=10003), 2_000, None, "connected_synced")
    assert row.cells["last"][0] == f"100.03{UP}"
    # a trade, when there is one, wins over the ticker
    fill_row(row, view(ticker_ns=3, ticker_last=10009, last_trade_price=10000, last_trade_qty=1,
                       last_trade_side=2, last_trade_ns=5), 2_000, None, "connected_synced")
    assert row.cells["last"][0] == f"100.00{DOWN}"
    # neither: empty, sorted last
    row2 = Row(book)
    fill_row(row2, view(), 2_000, None, "connected_synced")
    assert row2.cells["last"] == ("", "")

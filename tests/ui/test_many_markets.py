"""The console with many markets (issues #19, #20): 80 markets on 16 feeds open on the watchlist
(80 rows, no ladder); the feeds screen lists every feed; a book whose slot did not change is not
read again; Enter opens a market, `]` steps to the next; `s` on a watchlist row resyncs that
book; on the feeds screen `s` on a feed of several markets resyncs its invalid books, and a
second `s` within 2 s all of them."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from textual.widgets import DataTable

from obitui.app import ObituiApp
from obitui.config import Config, FeedConfig, book_plan
from obitui.controller import StatsController
from obitui.core.shm import Segment
from obitui.core.stats import ALL_BOOKS, BookSlotWriter, Command, FeedSlotWriter, FeedState, StatsBlock
from obitui.ui.market import MarketScreen
from obitui.ui.watchlist import WatchlistScreen
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.watchtable import WatchTable
from tests.ui.test_app import log_text, wait_for, wait_ticks

pytestmark = pytest.mark.timeout(60)


@dataclass
class Many:
    cfg: Config
    stats: StatsBlock
    controller: StatsController


@pytest.fixture
def many() -> Iterator[Many]:
    feeds = []
    for k in range(8):
        syms = tuple(f"S{10 * k + n}USDT" for n in range(10))
        feeds.append(FeedConfig(f"Bi-OB{k + 1}", "binance", "depth", symbols=syms))
        feeds.append(FeedConfig(f"Bi-TR{k + 1}", "binance", "trade", symbols=syms))
    cfg = Config(feeds=feeds)
    plan = book_plan(cfg.feeds)
    assert len(plan) == 80 and len(cfg.feeds) == 16
    name = f"obitui-{os.getuid()}-test{os.getpid()}-ui-{uuid.uuid4().hex[:8]}-stats"   # the leak check counts it
    stats = StatsBlock.create(name, len(cfg.feeds), len(plan), book_keys=plan)
    for i, f in enumerate(cfg.feeds):
        w = FeedSlotWriter(stats, i, f.label, f.venue, f.stream_name, f.symbol)
        w.set("books", len(f.symbols))
        w.set_state(FeedState.CONNECTED_SYNCED if f.is_book else FeedState.CONNECTED)
    for j, key in enumerate(plan):
        w2 = BookSlotWriter(stats, j, f"Bi-OB{j // 10 + 1}", *key.split(":", 1))
        base = 100_000_000 * (j + 1)
        w2.publish(valid=True, crossed=False, update_id=1000 + j, pdec=8, qdec=8,
                   bids=[(base - k * 10**6, 10**8) for k in range(20)],
                   asks=[(base + (k + 1) * 10**6, 10**8) for k in range(20)], obi=0.1)
    ctl = StatsController(cfg, stats)
    try:
        yield Many(cfg, stats, ctl)
    finally:
        ctl.stop()
        stats.close()
        Segment.unlink(name)


def app_for(m: Many) -> ObituiApp:
    return ObituiApp(m.cfg, m.controller, refresh_hz=10, clock=False)


async def test_the_watchlist_lists_80_markets_and_the_feeds_screen_every_feed(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        assert isinstance(app.screen, WatchlistScreen)      # several symbols: the watchlist is home
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 80, "80 rows")
        assert table.keys[:2] == ["binance:S0USDT", "binance:S1USDT"]
        assert table.cells["binance:S0USDT"]["state"][0] == "synced"
        assert not app.screen.query(DepthLadder)             # no ladder on the watchlist
        await pilot.press("f")
        feeds = app.screen.query_one("#feeds", DataTable)
        assert feeds.row_count == 16
        await wait_for(pilot, lambda: "connected" in str(feeds.get_cell("Bi-TR8", "state")), "the last feed's row")


async def test_a_book_that_did_not_change_is_not_read_again(many: Many, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick reads a book only when its slot's seqlock word moved: 80 books that do not change
    cost 80 word loads, not 80 slot copies."""
    app = app_for(many)
    reads: list[int] = []
    real = many.stats.read_book
    monkeypatch.setattr(many.stats, "read_book", lambda j: (reads.append(j), real(j))[1])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 3)
        assert set(reads) == set(range(80))
        reads.clear()
        app.last_slow = 0.0                         # the next tick reads every row again
        await wait_ticks(pilot, 3)
        assert reads == [], reads


async def test_enter_opens_the_market_and_brackets_step_through_markets(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        await pilot.press("down", "enter")
        assert isinstance(app.screen, MarketScreen)
        lad = app.screen.query_one("#ladder0", DepthLadder)
        assert lad.key == "binance:S1USDT"
        await wait_for(pilot, lambda: lad.view is not None and lad.view.update_id == 1001, "market 1's book")
        await pilot.press("right_square_bracket")
        lad = app.screen.query_one("#ladder0", DepthLadder)
        assert lad.key == "binance:S2USDT"
        await wait_for(pilot, lambda: lad.view is not None and lad.view.update_id == 1002, "market 2's book")
        await pilot.press("escape")
        assert isinstance(app.screen, WatchlistScreen)


async def test_s_on_a_book_resyncs_that_book(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        await pilot.press("down", "down", "s")         # the watchlist's row: binance:S2USDT
        assert many.stats.read_command_book(0) == (1, Command.RESYNC, 2)
        assert "Bi-OB1: resync binance:S2USDT sent" in log_text(app)


async def test_s_resyncs_the_invalid_books_then_all_of_them(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        await pilot.press("f")                        # the feeds screen: `s` acts on the feed
        await pilot.press("s")                        # cursor on Bi-OB1, 10 markets
        assert many.stats.read_command_book(0) == (1, Command.RESYNC_INVALID, ALL_BOOKS)
        await pilot.press("s")                        # again at once: all its books
        assert many.stats.read_command_book(0) == (2, Command.RESYNC, ALL_BOOKS)
        await pilot.press("s")                        # a new round
        assert many.stats.read_command_book(0) == (3, Command.RESYNC_INVALID, ALL_BOOKS)
        app.resync_at["Bi-OB1"] -= 3.0                # more than 2 s later: a new round again
        await pilot.press("s")
        assert many.stats.read_command_book(0) == (4, Command.RESYNC_INVALID, ALL_BOOKS)
        assert "Bi-OB1: resync_invalid sent" in log_text(app) and "Bi-OB1: resync sent" in log_text(app)
        await pilot.press("down", "s")                # Bi-TR1 is not a book feed
        assert many.stats.read_command(1) == (0, Command.NONE)

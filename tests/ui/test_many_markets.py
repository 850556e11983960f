"""The console with many markets (issue #19): 80 markets on 16 feeds build two ladders (the
first two markets, as with the default fleet), not 80; the feeds table lists every feed; a tick
reads only the books on screen; `b` brings every market in turn; `s` on a feed of several
markets resyncs its invalid books, and a second `s` within 2 s all of them."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from textual.css.query import NoMatches
from textual.widgets import DataTable

from obitui.app import ObituiApp
from obitui.config import Config, FeedConfig, book_plan
from obitui.controller import StatsController
from obitui.core.shm import Segment
from obitui.core.stats import ALL_BOOKS, BookSlotWriter, Command, FeedSlotWriter, FeedState, StatsBlock
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.sparkline import ObiSparkline
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


async def test_two_ladders_for_80_markets_and_every_feed_in_the_table(many: Many,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_for(many)
    reads: list[int] = []
    real = many.stats.read_book
    monkeypatch.setattr(many.stats, "read_book", lambda j: (reads.append(j), real(j))[1])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        assert len(app.query(DepthLadder)) == 2 and len(app.query(ObiSparkline)) == 2
        with pytest.raises(NoMatches):
            app.query_one("#ladder2")
        ladders = [app.query_one(f"#ladder{j}", DepthLadder) for j in range(2)]
        assert [lad.key for lad in ladders] == ["binance:S0USDT", "binance:S1USDT"]
        await wait_for(pilot, lambda: all(lad.view is not None for lad in ladders), "both ladders to show a book")
        assert [lad.view.update_id for lad in ladders] == [1000, 1001]
        assert ladders[0].feed_state == "connected_synced"
        table = app.query_one("#feeds", DataTable)
        assert table.row_count == 16
        await wait_for(pilot, lambda: "connected" in str(table.get_cell("Bi-TR8", "state")), "the last feed's row")
        # a tick reads the books on screen, not all 80
        reads.clear()
        await wait_ticks(pilot, 3)
        ticks = 3
        assert set(reads) <= {0, 1} and len(reads) <= 2 * (ticks + 1), reads


async def test_b_brings_every_market_in_turn(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        l0, l1 = app.query_one("#ladder0", DepthLadder), app.query_one("#ladder1", DepthLadder)
        await pilot.press("b")                        # market 1, already on screen
        assert app.focused_book == 1 and l1.has_class("focused") and l0.key == "binance:S0USDT"
        await pilot.press("b")                        # market 2 comes into the other ladder
        assert app.focused_book == 0 and l0.key == "binance:S2USDT" and l0.has_class("focused")
        assert app.query_one("#spark0", ObiSparkline).key == "binance:S2USDT"
        await wait_for(pilot, lambda: l0.view is not None and l0.view.update_id == 1002, "market 2's book")
        await pilot.press("b")
        assert l1.key == "binance:S3USDT" and app.focused_book == 1
        await wait_for(pilot, lambda: l1.view is not None and l1.view.update_id == 1003, "market 3's book")
        app.shown, app.focused_book = [78, 79], 1     # as after 76 more presses
        await pilot.press("b")                        # after the last market: the first again
        assert app.shown == [0, 79] and app.focused_book == 0 and l0.key == "binance:S0USDT"
        await wait_for(pilot, lambda: l0.view is not None and l0.view.update_id == 1000, "market 0's book")


async def test_s_resyncs_the_invalid_books_then_all_of_them(many: Many) -> None:
    app = app_for(many)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
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

"""The screens of issue #20 against a frozen fleet (tests/ui/fake.py: a real stats block
filled by an in-test writer, the wall clock frozen): the watchlist lists every market with its
prices, `/` filters it, Enter opens the market view (both venues' ladders, the trade tape, the
ticker and the cross-venue line), Esc comes back, `f` shows feeds & system, F1 the keys, `q`
exits; and a snapshot of every screen at 120x40 and 80x24."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.color import Color

from obitui.app import ObituiApp
from obitui.ui.help import HelpScreen
from obitui.ui.market import MarketScreen
from obitui.ui.system import SystemScreen
from obitui.ui.watchlist import WatchlistScreen
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.lines import CrossVenueLine, TickerLine
from obitui.widgets.tape import TradeTape
from obitui.widgets.watchtable import WatchTable
from tests.ui.fake import FROZEN_NS, SYMBOLS, FakeWorld, fake_world
from tests.ui.test_app import wait_for, wait_ticks

pytestmark = pytest.mark.timeout(60)
BAD = {"bitget:ETHUSDT": "gap: U=5 after u=3"}


@pytest.fixture(autouse=True)
def truecolor(monkeypatch: pytest.MonkeyPatch) -> None:
    import textual.constants
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    with fake_world(SYMBOLS, bad=BAD) as w:
        yield w


@pytest.fixture
def one() -> Iterator[FakeWorld]:
    with fake_world(["BTCUSDT"]) as w:
        yield w


def app_for(w: FakeWorld) -> ObituiApp:
    return ObituiApp(w.cfg, w.controller, refresh_hz=10, clock=False, now=lambda: FROZEN_NS)


def rows_text(table: WatchTable) -> list[str]:
    return [str(table.render_line(y).text) for y in range(table.size.height)]


async def test_the_watchlist_shows_every_market_with_its_prices(world: FakeWorld) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        assert isinstance(app.screen, WatchlistScreen)
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 2 * len(SYMBOLS), "a row per book")
        assert table.keys[0] == "bitget:ETHUSDT"          # the invalid book floats to the top
        text = "\n".join(rows_text(table))
        for sym in SYMBOLS:
            assert f"Bi {sym}" in text and f"Bg {sym}" in text
        btc = table.cells["binance:BTCUSDT"]
        assert btc["mid"][0] == "95004.75" and btc["spread"][0] == "1.00" and btc["last"][0].startswith("95000")
        assert table.cells["bitget:BTCUSDT"]["chg"][0] == "-1.92%"       # 24 h change from the ticker
        assert table.cells["bitget:ETHUSDT"]["state"] == ("gap", "bad")
        assert "95004.75" in text and "-1.92%" in text
        # sort by spread, widest first: DOGE (300 bps) leads the valid rows
        await pilot.press("4", "4")
        assert table.keys[0] == "bitget:ETHUSDT" and table.keys[1].endswith("DOGEUSDT")


async def test_slash_filters_enter_opens_the_market_esc_returns(world: FakeWorld) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        table = app.screen.query_one("#watch", WatchTable)
        await pilot.press("slash", "s", "o", "l")
        await wait_for(pilot, lambda: table.keys == ["binance:SOLUSDT", "bitget:SOLUSDT"], "the filtered rows")
        await pilot.press("enter")                       # the filter kept, the table focused
        assert table.has_focus and app.screen.filter == "sol"
        await pilot.press("down", "enter")               # bitget:SOLUSDT
        assert isinstance(app.screen, MarketScreen) and app.screen.market.symbol == "SOLUSDT"
        mv = app.screen
        l0, l1 = mv.query_one("#ladder0", DepthLadder), mv.query_one("#ladder1", DepthLadder)
        assert (l0.key, l1.key) == ("binance:SOLUSDT", "bitget:SOLUSDT") and mv.focused_book == 1
        accent = Color.parse(app.theme_variables["accent"])
        assert l1.styles.border_top[1] == accent and l0.styles.border_top[1] != accent     # drawn focused
        await wait_for(pilot, lambda: l0.plan is not None and l1.plan is not None, "both ladders")
        tape = mv.query_one("#tape", TradeTape)
        await wait_for(pilot, lambda: len(tape.lines) == 16, "both venues' trades on the tape")
        assert [t.ts_ns for t in tape.lines] == sorted((t.ts_ns for t in tape.lines), reverse=True)
        assert sum(t.big for t in tape.lines) == 2                       # one big trade a venue
        cross = mv.query_one("#cross", CrossVenueLine)
        line = "".join(t for t, _ in cross.rows[0])
        assert "Bi−Bg mid" in line and "bps" in line
        ticker = "".join(str(mv.query_one("#ticker", TickerLine).render_line(y).text) for y in range(2))
        assert "24h +2.09%" in ticker and "high 187.20" in ticker and "low 174.00" in ticker
        await pilot.press("escape")
        assert isinstance(app.screen, WatchlistScreen)
        await pilot.press("escape")                      # Esc on the watchlist clears the filter
        await wait_for(pilot, lambda: len(table.keys) == 2 * len(SYMBOLS), "every row again")


async def test_crossed_venues_are_flagged(world: FakeWorld) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(MarketScreen(app.market_of["binance:SOLUSDT"]))
        await wait_for(pilot, lambda: isinstance(app.screen, MarketScreen) and app.screen.query_one(
            "#cross", CrossVenueLine).rows, "the cross-venue line")
        line = "".join(t for t, _ in app.screen.query_one("#cross", CrossVenueLine).rows[0])
        assert "-4.00 bps" in line and "CROSSED" in line          # Bitget's bid is above Binance's ask


async def test_one_market_opens_on_the_market_view_and_q_exits(one: FakeWorld) -> None:
    app = app_for(one)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        assert isinstance(app.screen, MarketScreen)
        await pilot.press("escape")                      # the home screen stays
        assert isinstance(app.screen, MarketScreen)
        await pilot.press("w")                           # the watchlist on demand
        assert isinstance(app.screen, WatchlistScreen)
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_feeds_screen_cursor_and_full_reason(world: FakeWorld) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        await pilot.press("f")
        assert isinstance(app.screen, SystemScreen)
        await pilot.press("down", "down")                # Bg-OB
        detail = app.screen.query_one("#detail")
        await wait_for(pilot, lambda: "resync requested (snapshot 1 of 1)" in str(detail.render()),
                       "Bg-OB's whole reason")
        assert app.screen.target() == (2, None)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, WatchlistScreen)


# ---------------------------------------------------------------- snapshots
async def _freeze(pilot) -> None:  # noqa: ANN001
    """Run until the screen shows the block, then stop the timer and draw one last tick (the
    cross-venue sparkline grows a sample a tick: one sample, whatever the machine's speed)."""
    app = pilot.app
    await wait_for(pilot, lambda: app.ticks >= 3, "3 display ticks")
    app.timer.stop()
    app.last_slow = app.last_table = 0.0
    screen = app.data_screen()
    if isinstance(screen, MarketScreen):
        screen.diffs.clear()
    app.tick()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


SIZES = [(120, 40), (80, 24)]
IDS = ["120x40", "80x24"]


async def _to_market(pilot) -> None:  # noqa: ANN001
    await wait_ticks(pilot, 2)
    await pilot.press("down", "enter")                   # Bi BTCUSDT (row 2: the bad book leads)
    await _freeze(pilot)


async def _to_feeds(pilot) -> None:  # noqa: ANN001
    await wait_ticks(pilot, 2)
    await pilot.press("f", "down", "down")
    await _freeze(pilot)


async def _to_help(pilot) -> None:  # noqa: ANN001
    await _freeze(pilot)
    await pilot.press("f1")
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_watchlist(world: FakeWorld, snap_compare, size: tuple[int, int]) -> None:  # noqa: ANN001
    assert snap_compare(app_for(world), terminal_size=size, run_before=_freeze)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_market_view(world: FakeWorld, snap_compare, size: tuple[int, int]) -> None:  # noqa: ANN001
    assert snap_compare(app_for(world), terminal_size=size, run_before=_to_market)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_feeds_and_system(world: FakeWorld, snap_compare, size: tuple[int, int]) -> None:  # noqa: ANN001
    assert snap_compare(app_for(world), terminal_size=size, run_before=_to_feeds)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_help(world: FakeWorld, snap_compare, size: tuple[int, int]) -> None:  # noqa: ANN001
    assert snap_compare(app_for(world), terminal_size=size, run_before=_to_help)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_single_market_home(one: FakeWorld, snap_compare, size: tuple[int, int]) -> None:  # noqa: ANN001
    assert snap_compare(app_for(one), terminal_size=size, run_before=_freeze)

"""The Textual app against a real stats block (filled by an in-test writer, as the engine and
feeds would) and once against the real fleet on the simulator."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable

from obitui.app import ObituiApp
from obitui.ui.market import MarketScreen
from obitui.ui.system import SystemScreen
from obitui.config import load_config
from obitui.controller import StatsController
from obitui.core.ring import Ring
from obitui.core.stats import AckResult, BookSlotWriter, Command, FeedSlotWriter, FeedState, StatsBlock
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.sparkline import ObiSparkline
from tests.conftest import release_segments

pytestmark = pytest.mark.timeout(60)
STATES = [FeedState.CONNECTED_SYNCED, FeedState.CONNECTED, FeedState.RESYNCING, FeedState.LIVE]


@dataclass
class World:
    cfg: object
    stats: StatsBlock
    feeds: list[FeedSlotWriter]
    books: list[BookSlotWriter]
    rings: list[Ring]
    controller: StatsController

    def publish_books(self, update_id: int, valid: bool = True) -> None:
        for j, w in enumerate(self.books):
            base = 2_700_000_000_000 + j * 100_000_000
            bids = [(base - k * 1_000_000, (k + 1) * 1_000_000) for k in range(20)]
            asks = [(base + (k + 1) * 1_000_000, (20 - k) * 500_000) for k in range(20)]
            w.push_obi(0.25 if j == 0 else -0.4)
            w.publish(valid=valid, crossed=False, update_id=update_id, pdec=8, qdec=8, bids=bids,
                      asks=asks, obi=0.25 if j == 0 else -0.4)


@pytest.fixture(autouse=True)
def truecolor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The apps under test render for a truecolor terminal whatever TERM says here, so that the
    snapshots do not depend on the machine (the 16-colour test sets its colour system itself)."""
    import textual.constants
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")


@pytest.fixture
def world() -> Iterator[World]:
    cfg = load_config(None)
    prefix = f"obitui-{os.getuid()}-test{os.getpid()}-ui-{uuid.uuid4().hex[:8]}"   # the leak check counts it
    stats = StatsBlock.create(prefix + "-stats", 4, 2)
    rings = [Ring.create(f"{prefix}-ring{i}", 1 << 16) for i in range(4)]
    feeds = []
    for i, f in enumerate(cfg.feeds):
        w = FeedSlotWriter(stats, i, f.label, f.venue, f.stream_name, f.symbol, rings[i].name)
        w.inc("frames", 100 * (i + 1))
        w.inc("gaps", i)
        w.set_state(STATES[i], "because" if i != 2 else "gap: U=5 after u=3")
        feeds.append(w)
    books = [BookSlotWriter(stats, 0, "Bi-OB", "binance", "BTCUSDT"),
             BookSlotWriter(stats, 1, "Bg-OB", "bitget", "BTCUSDT")]
    rings[0].push(b"x" * 1000)
    ctl = StatsController(cfg, stats, [r.name for r in rings])
    wd = World(cfg, stats, feeds, books, rings, ctl)
    wd.publish_books(42)
    try:
        yield wd
    finally:
        ctl.stop()
        release_segments(rings, stats)


def app_for(world: World, **kw: object) -> ObituiApp:
    return ObituiApp(world.cfg, world.controller, refresh_hz=10, clock=False, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- waiting on state, not on time
STEP = 0.02          # how often a wait looks again (the display ticks at 10 Hz here)
WAIT = 20.0          # generous: a loaded 2-core machine is slow, a passing wait returns at once


async def wait_for(pilot: Pilot, predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Let the app run in small steps until ``predicate()`` holds; fail naming ``what`` (and the
    app's tick count) at ``timeout``. A widget not mounted yet counts as not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except NoMatches:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what} (display ticks so far: {pilot.app.ticks})")
        await pilot.pause(STEP)


async def wait_ticks(pilot: Pilot, n: int = 1, timeout: float = WAIT) -> None:
    """Wait until the display timer has run ``n`` more times (each tick reads the block and
    updates every widget it is due to update before the next step looks)."""
    target = pilot.app.ticks + n
    await wait_for(pilot, lambda: pilot.app.ticks >= target, f"{n} more display tick(s)", timeout)


def log_text(app: ObituiApp) -> str:
    return app.log_text()


async def test_widgets_show_what_the_block_says(world: World) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)          # the first tick updates every widget
        assert isinstance(app.screen, MarketScreen)       # one symbol: the market view is home
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        assert ladder.view is not None and ladder.view.update_id == 42 and ladder.view.valid
        spark = app.screen.query_one("#spark1", ObiSparkline)
        assert spark.current == -0.4 and spark.values == [-0.4]
        world.publish_books(43, valid=False)
        await wait_for(pilot, lambda: ladder.view.update_id == 43, "the ladder to show update 43")
        assert not ladder.view.valid and ladder.view.update_id == 43
        await pilot.press("f")                                # feeds & system
        assert isinstance(app.screen, SystemScreen)
        table = app.screen.query_one("#feeds", DataTable)
        await wait_for(pilot, lambda: "resyncing" in str(table.get_cell("Bg-OB", "state")), "the feeds table")
        assert "connected_synced" in str(table.get_cell("Bi-OB", "state"))
        assert table.get_cell("Bg-OB", "gaps") == "2"
        assert table.get_cell("Bg-OB", "reason").startswith("gap: U=5")
        await wait_for(pilot, lambda: "drops 0" in str(app.screen.query_one("#rings").render()), "the rings")
        await pilot.press("escape")
        assert isinstance(app.screen, MarketScreen)


def _engine_beat(world: World, age_s: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish the engine's figures as if its last heartbeat were ``age_s`` old."""
    import obitui.core.stats as stats_mod
    real = time.monotonic_ns
    monkeypatch.setattr(stats_mod.time, "monotonic_ns", lambda: real() - int(age_s * 1e9))
    try:
        stats_mod.publish_engine(world.stats, records=1, batches=1, records_per_s=0.0, obi_levels=20,
                                 wait="block", gaps=0, ring_high_water=[0] * 4)
    finally:
        monkeypatch.setattr(stats_mod.time, "monotonic_ns", real)


async def test_books_of_a_stale_engine_are_greyed_and_marked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen figures are never shown as live: an engine silent for 5 s greys every ladder and
    marks it STALE; fresh beats bring the live view back."""
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        _engine_beat(world, 0.0, monkeypatch)
        await wait_ticks(pilot, 2)
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        assert ladder.stale_s is None and "VALID" in str(ladder.render_line(0).text)
        _engine_beat(world, 5.0, monkeypatch)
        await wait_for(pilot, lambda: ladder.stale_s is not None, "the ladder to show the stale engine")
        head = str(ladder.render_line(0).text)
        assert "STALE 5." in head and " VALID " not in head
        assert all(app.screen.query_one(f"#ladder{j}", DepthLadder).stale_s for j in range(2))
        _engine_beat(world, 0.0, monkeypatch)
        await wait_for(pilot, lambda: ladder.stale_s is None, "the live view back")


async def test_ladder_sizes_use_the_quantity_scale(world: World) -> None:
    """Prices and sizes have scales of their own (the symbol's tick and step sizes): a size at
    5 decimals under prices at 2 reads as the exchange wrote it."""
    for f in world.cfg.feeds:
        f.digits, f.qty_digits = 2, 5
    world.books[0].publish(valid=True, crossed=False, update_id=7, pdec=2, qdec=5,
                           bids=[(2_700_001, 12_345)], asks=[(2_700_002, 150_000_000_000)], obi=0.0)
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        await wait_for(pilot, lambda: ladder.view is not None and ladder.view.update_id == 7, "update 7")
        rows = [str(ladder.render_line(y).text) for y in range(ladder.size.height)]
        assert any("27000.01" in r and "0.12345" in r for r in rows), rows
        assert any("27000.02" in r and "1500000" in r for r in rows), rows


async def test_size_bars_keep_their_side_colour_with_16_colours(world: World) -> None:
    """A 40% tint has no 16-colour match but grey: there the bars take their side's colour,
    which a 16-colour terminal shows as (bright) green and (bright) red."""
    from rich.color import ColorSystem
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        await wait_for(pilot, lambda: ladder.view is not None and ladder.size.height > 0,
                       "the ladder to show a book")

        def bar_colours() -> set[int]:
            out = set()
            for y in range(ladder.size.height):
                for seg in ladder.render_line(y):
                    if seg.text.strip() and set(seg.text.strip()) == {"█"} and seg.style and seg.style.color:
                        out.add(seg.style.color.downgrade(ColorSystem.STANDARD).number)
            return out
        app.console._color_system = ColorSystem.STANDARD       # as under TERM=xterm, no COLORTERM
        plain = bar_colours()
        assert len(plain) == 2 and plain & {1, 9} and plain & {2, 10}, plain


async def test_ladder_render_line_only_reads(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual calls render_line for every line of every frame, as often as it likes: it must
    change nothing. What it draws is prepared by ``show`` (the update path), for every height,
    so a resize with no update in between (the display paused) draws the right decimals: a
    deep bid with 8 decimals widens the prices only when the ladder is tall enough to show it."""
    deep = 12                                       # the 13th best bid: 8 decimals, the rest 2
    bids = [(2_700_000_000_000 - k * 1_000_000 - (1 if k == deep else 0), (k + 1) * 1_000_000)
            for k in range(20)]
    asks = [(2_700_000_000_000 + (k + 1) * 1_000_000, 1_000_000) for k in range(20)]
    world.books[0].publish(valid=True, crossed=False, update_id=77, pdec=8, qdec=8, bids=bids,
                           asks=asks, obi=0.0)
    app = app_for(world)
    async with app.run_test(size=(120, 60)) as pilot:
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        await wait_for(pilot, lambda: ladder.view is not None and ladder.view.update_id == 77, "update 77")
        await pilot.press("p")                      # no more show(): only draws from here on

        def shown() -> tuple[int, list[str]]:
            return (ladder.size.height - 2) // 2, [str(ladder.render_line(y).text)
                                                   for y in range(ladder.size.height)]

        own = set(vars(ladder)) - set(vars(Widget()))
        writes: list[str] = []
        setattr_ = DepthLadder.__setattr__

        def spy(self: DepthLadder, name: str, value: object) -> None:
            writes.append(name)
            setattr_(self, name, value)

        monkeypatch.setattr(DepthLadder, "__setattr__", spy)
        n_tall, tall = shown()
        assert shown()[1] == tall and [str(ladder.render_line(y).text)
                                       for y in reversed(range(ladder.size.height))][::-1] == tall
        monkeypatch.undo()
        assert not own & set(writes), f"render_line set {sorted(own & set(writes))}"
        assert n_tall > deep, n_tall
        assert any("26999.87999999" in r for r in tall) and any("27000.01000000" in r for r in tall), tall

        await pilot.resize_terminal(120, 24)
        await wait_for(pilot, lambda: (ladder.size.height - 2) // 2 <= deep, "the short ladder")
        n_short, short = shown()
        assert any("27000.01 " in r for r in short) and not any("27000.01000000" in r for r in short), short
        assert ladder.view.update_id == 77 and app.paused


async def test_keys_send_control_words_and_show_the_ack(world: World) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot)
        await pilot.press("s")                      # cursor on Bi-OB
        assert world.stats.read_command(0) == (1, Command.RESYNC)
        world.stats.ack_command(0, 1, AckResult.OK, "resync started, socket kept")
        await wait_for(pilot, lambda: "Bi-OB: resync acknowledged" in log_text(app), "the resync ack in the log")
        log = log_text(app)
        assert "Bi-OB: resync acknowledged: resync started, socket kept" in log
        await pilot.press("r")
        assert world.stats.read_command(0) == (2, Command.RECONNECT)
        world.stats.ack_command(0, 2, AckResult.FAILED, "not connected")
        await wait_for(pilot, lambda: "Bi-OB: reconnect failed" in log_text(app), "the reconnect ack in the log")
        log = log_text(app)
        assert "Bi-OB: reconnect failed: not connected" in log
        await pilot.press("f", "down", "s")          # on the feeds screen: Bi-TR, not a book feed
        assert world.stats.read_command(1) == (0, Command.NONE)
        assert "Bi-TR: resync applies to book feeds only" in log_text(app)
        await pilot.press("a")
        assert [world.stats.read_command(i)[1] for i in range(4)] == [Command.RECONNECT] * 4


async def test_pause_freezes_the_display_only(world: World) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        ladder = app.screen.query_one("#ladder0", DepthLadder)
        await wait_for(pilot, lambda: ladder.view is not None, "the ladder to show a book")
        await pilot.press("p")
        assert "PAUSED" in app.sub_title
        world.publish_books(99)
        await wait_ticks(pilot, 3)      # ticks that would have shown update 99 were it not paused
        assert app.screen.query_one("#ladder0", DepthLadder).view.update_id == 42
        assert world.stats.read_book(0).update_id == 99      # the data kept flowing
        await pilot.press("p")
        await wait_for(pilot, lambda: ladder.view.update_id == 99, "the resumed ladder to show update 99")
        assert app.screen.query_one("#ladder0", DepthLadder).view.update_id == 99


async def test_refresh_rate_keys_and_help(world: World) -> None:
    app = app_for(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("plus")
        assert app.refresh_hz == 16.0
        await pilot.press("minus", "minus")
        assert app.refresh_hz == 8.0
        await pilot.press("f1")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        assert app.screen.__class__.__name__ != "HelpScreen"
        ids = {b.id for b in app.BINDINGS}
        assert {"feed.reconnect", "feed.resync", "feed.reconnect_all", "display.pause",
                "display.cycle_book", "screen.system", "app.help", "app.quit"} <= ids


async def test_compact_layout_at_80x24(world: World) -> None:
    app = app_for(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ticks(pilot)
        l0, l1 = app.screen.query_one("#ladder0"), app.screen.query_one("#ladder1")
        assert l0.display and not l1.display
        await pilot.press("b")
        await wait_for(pilot, lambda: l1.display, "the second book to be shown")
        assert l1.display and not l0.display
        await pilot.press("f")
        table = app.screen.query_one("#feeds", DataTable)
        await wait_for(pilot, lambda: table.row_count == 4, "the feeds table")
        assert [str(table.get_cell(f.label, "label")) for f in world.cfg.feeds] == ["Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"]
        assert "reason" not in table.columns          # the columns that fit
        assert table.virtual_size.width <= table.size.width
        await pilot.resize_terminal(120, 40)
        await wait_for(pilot, lambda: "reason" in table.columns, "the wide layout after the resize")
        await pilot.press("escape")
        await wait_for(pilot, lambda: l0.display and l1.display, "both books in the wide layout")


async def test_a_tick_while_the_app_shuts_down_draws_nothing(world: World) -> None:
    """The timer can fire after Textual has removed the screen's widgets and before the app's
    Unmount (seen once in CI at 80x24): that tick must do nothing rather than fail the app."""
    app = app_for(world)
    ticks_at_close: list[int] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        close_all = app._close_all          # the step of shutdown that removes every widget

        async def close_then_tick() -> None:
            await close_all()
            app.tick()
            ticks_at_close.append(app.ticks)

        app._close_all = close_then_tick    # type: ignore[method-assign]
        before = app.ticks
    assert ticks_at_close and ticks_at_close[0] == before


async def _settle(pilot) -> None:  # noqa: ANN001
    """Wait for a few display ticks (not a fixed time: a loaded machine is slower), then for
    the app to be idle (every refresh those ticks asked for is done)."""
    await wait_for(pilot, lambda: pilot.app.ticks >= 3, "3 display ticks")
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


@pytest.mark.timeout(90)
async def test_against_the_real_fleet_on_the_simulator() -> None:
    from obitui.supervisor import Supervisor, our_segments
    cfg = load_config(None)
    sup = Supervisor(cfg)
    try:
        urls = sup.start_simulator([], seed=6)
        sup.cfg = cfg = cfg.with_sim(*urls)
        sup.start()
        app = ObituiApp(cfg, sup, refresh_hz=8)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f")
            table = app.screen.query_one("#feeds", DataTable)
            await wait_for(pilot, lambda: "connected_synced" in str(table.get_cell("Bi-OB", "state")),
                           "Bi-OB to sync", timeout=30)
            await pilot.press("s")
            await wait_for(pilot, lambda: "Bi-OB: resync acknowledged" in log_text(app),
                           "the resync ack in the log", timeout=10)
            await wait_for(pilot, lambda: "cpu" in str(app.screen.query_one("#procs").render()),
                           "the processes panel", timeout=10)
            assert "cpu" in str(app.screen.query_one("#procs").render())
    finally:
        sup.stop()
    assert not [s for s in our_segments() if f"-r{os.getpid()}x" in s]


def test_the_console_repaints_at_120_frames_a_second() -> None:
    """The console sets Textual's frame rate before Textual is imported (issue #20: Textual's
    screen-update timer waits one to two periods before a repaint; at 60 fps that was most of a
    key's p99), on the CLI's path as in the benchmark's UI process; a user's TEXTUAL_FPS wins."""
    code = ("import sys, obitui.__main__\nassert 'textual' not in sys.modules\n"
            "import obitui.app, textual.constants, textual.screen\n"
            "print(textual.constants.MAX_FPS, round(1 / textual.screen.UPDATE_PERIOD))")
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["120", "120"]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**env, "TEXTUAL_FPS": "30"})
    assert res.stdout.split() == ["30", "30"], res.stderr


def test_hot_path_never_imports_the_ui() -> None:
    mods = ["obitui.core.ring", "obitui.core.book", "obitui.core.stats", "obitui.feeds.process",
            "obitui.feeds.binance.feed", "obitui.feeds.bitget.feed", "obitui.engine",
            "obitui.supervisor", "obitui.sim.server", "obitui.sim.cli", "obitui.headless",
            "obitui.config", "obitui.capture"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('textual', 'rich'))\n"
            + "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""

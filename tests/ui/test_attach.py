"""The console attached to remote fleets (issue #21), without a NATS server: the messages a
publisher sends (docs/NATS.md) are handed to the attachment's ``Fleets`` as its subscription
would, and the app runs on the ``AttachController``'s mirror block, as `obitui --attach` does.

- the watchlist has a host column and the remote books; Enter opens a remote market's ladders;
  the feeds screen lists the remote feeds with their host; a host seen later shows up;
- malformed messages (not JSON, another schema, a price that is no decimal, a label with
  markup) are counted and logged, never shown, never the end of the app;
- a host that stops sending turns stale (state word, reason) and comes back;
- with a local fleet too (`--sim --attach`), local and remote rows side by side, a command to a
  local feed reaches its block and its acknowledgement comes back;
- the mirror's segment is gone when the controller stops."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from obitui.app import ObituiApp
from obitui.bench.nats import free_port
from obitui.bus.attach import Attachment, status_line
from obitui.bus.mirror import REFUSED, AttachController, ack_of
from obitui.core.stats import AckResult, Command
from obitui.ui.market import MarketScreen
from obitui.ui.system import SystemScreen
from obitui.ui.watchlist import WatchlistScreen
from obitui.widgets.feeds import FeedsTable
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.watchtable import WatchTable
from tests.ui.fake import SYMBOLS, FakeWorld, fake_world
from tests.ui.test_app import log_text, wait_for, wait_ticks

pytestmark = pytest.mark.timeout(60)
SHM = Path("/dev/shm")
URL = "nats://127.0.0.1:1"
LABELS = ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR")


@pytest.fixture(autouse=True)
def truecolor(monkeypatch: pytest.MonkeyPatch) -> None:
    import textual.constants
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")


def book(host: str, key: str, label: str, uid: int, bid: str = "26999.98000000", valid: bool = True) -> dict[str, Any]:
    whole, frac = bid.split(".")
    bids = [[f"{int(whole) - k}.{frac}", f"{k + 1}.50000000"] for k in range(5)]
    asks = [[f"{int(whole) + 1 + k}.{frac}", f"{k + 2}.25000000"] for k in range(5)]
    return {"v": 1, "host": host, "key": key, "label": label, "ts": time.time(), "valid": valid,
            "state": "synced" if valid else "invalid", "reason": "" if valid else "gap: U=5 after u=3",
            "update_id": uid, "crossed": False, "obi": 0.25, "bids": bids, "asks": asks, "mid": None,
            "spread_bps": 3.7, "flow_1s": "-0.05000000", "trades_1s": 2,
            "last_trade": {"price": bids[0][0], "qty": "0.01000000", "side": "buy", "ts": time.time()},
            "ticker": ({"last": bids[0][0], "bid": bids[0][0], "ask": asks[0][0], "ts": time.time(),
                        "open_24h": bids[1][0], "high_24h": asks[3][0], "low_24h": bids[4][0],
                        "volume_24h": "1234.5600", "change_24h_pct": 0.1} if key.startswith("bitget") else None)}


def feeds(host: str, state: str = "connected_synced") -> dict[str, Any]:
    fv = {label: {"state": state if label.endswith("OB") else "connected", "reason": f"{label} reason",
                  "frames": 100, "gaps": 1, "resyncs": 0, "reconnects": 0, "ring_fill": 0.25, "ring_drops": 3,
                  "records": 10, "parse_errors": 0, "checksum_failures": 0, "stale": False, "age_s": 0.1,
                  "markets": 2, **({"books": 2, "books_synced": 2} if label.endswith("OB") else {})}
          for label in LABELS}
    fv["NATS"] = {"kind": "publisher", "state": "connected", "reason": "publishing"}
    return {"v": 1, "host": host, "ts": time.time(), "feeds": fv, "order": list(LABELS),
            "engine": {"pid": 1, "stale": False, "age_s": 0.1, "records_per_s": 10.0, "gaps": 0}}


class Fleet:
    """A remote fleet as its messages (two markets on both venues)."""

    def __init__(self, att: Attachment, host: str, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> None:
        self.att, self.host, self.symbols = att, host, symbols
        self.uid = 1000

    def send(self, subject_tail: str, msg: Any) -> Any:
        data = msg if isinstance(msg, bytes) else orjson.dumps(msg)
        return self.att.fleets.on_message(URL, f"obitui.{self.host}.{subject_tail}", data)

    def heartbeat(self, stopping: bool = False) -> None:
        self.send("heartbeat", {"v": 1, "host": self.host, "ts": time.time(), "seq": 1, "pid": 1,
                                "books": 2 * len(self.symbols), "control": False, "feeds": list(LABELS),
                                "stopping": stopping})

    def round(self) -> None:
        self.last = time.monotonic()
        self.uid += 1
        self.heartbeat()
        self.send("feeds", feeds(self.host))
        for sym in self.symbols:
            self.send(f"binance.{sym}.book", book(self.host, f"binance:{sym}", "Bi-OB", self.uid))
            self.send(f"bitget.{sym}.book", book(self.host, f"bitget:{sym}", "Bg-OB", self.uid, "27000.1"))
        self.send("binance.BTCUSDT.trade", {"v": 1, "host": self.host, "key": "binance:BTCUSDT", "missed": 0,
                                           "trades": [{"price": "27000.00000000", "qty": "0.50000000",
                                                       "side": "sell", "ts": time.time()}]})


async def one_market_shown(pilot: Any, app: Any, fleet: Fleet) -> WatchTable:
    """``fleet`` (one market) sends a round; the watchlist once its two books show synced."""
    fleet.round()
    table = app.screen.query_one("#watch", WatchTable)
    await wait_for(pilot, lambda: len(table.keys) == 2 and table.cells[f"{fleet.host}/binance:BTCUSDT"]["state"][0]
                   == "synced", f"{fleet.host}'s books")
    return table


@pytest.fixture
def attached() -> Iterator[AttachController]:
    """A controller on an attachment whose server is not there (nothing comes but what the
    test hands to its Fleets); its block is checked gone after the stop."""
    ctl = AttachController(Attachment([f"nats://127.0.0.1:{free_port()}"]))
    name = ctl.mirror.name
    assert (SHM / name).exists()
    try:
        yield ctl
    finally:
        ctl.stop()
        assert not (SHM / name).exists() and not any(SHM.glob(f"{ctl.mirror.run}*"))


def app_for(ctl: AttachController) -> ObituiApp:
    return ObituiApp(ctl.layout().cfg, ctl, refresh_hz=10, clock=False)


def rows_text(table: WatchTable) -> list[str]:
    return [str(table.render_line(y).text) for y in range(table.size.height)]


async def test_the_watchlist_market_view_and_feeds_show_the_remote_fleet(attached: AttachController) -> None:
    alpha = Fleet(attached.attachment, "alpha")
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 2)
        assert isinstance(app.screen, WatchlistScreen)
        assert "waiting for a remote fleet" in str(app.screen.query_one("#wl-status").render())
        alpha.round()
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 4, "alpha's four books")
        assert sorted(table.keys) == sorted(f"alpha/{v}:{s}" for v in ("binance", "bitget") for s in alpha.symbols)
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("synced", "ok"), "synced")
        text = rows_text(table)
        assert text[0].split()[:2] == ["host", "market"]
        assert any(line.split()[:3] == ["alpha", "Bi", "BTCUSDT"] for line in text), text
        btc = table.cells["alpha/binance:BTCUSDT"]
        assert btc["mid"][0] == "26999.98" or btc["mid"][0].startswith("27000"), btc
        assert btc["flow"] == ("-0.05", "neg") and btc["trades"][0] == "2"
        assert table.cells["alpha/bitget:BTCUSDT"]["chg"][0] != ""            # the ticker's 24 h figures
        # a second host, seen after the start: its rows join
        beta = Fleet(attached.attachment, "beta", ("SOLUSDT",))
        beta.round()
        await wait_for(pilot, lambda: len(table.keys) == 6, "beta's books too")
        assert "2 remote hosts" in str(app.screen.query_one("#wl-status").render())
        # Enter: the market view of the highlighted row's host and symbol, its ladders
        table.move_cursor(table.keys.index("alpha/binance:BTCUSDT"))
        await pilot.press("enter")
        assert isinstance(app.screen, MarketScreen)
        mv = app.screen
        assert mv.market.host == "alpha" and mv.sub_title == "BTCUSDT @ alpha"
        l0, l1 = mv.query_one("#ladder0", DepthLadder), mv.query_one("#ladder1", DepthLadder)
        assert (l0.key, l1.key) == ("alpha/binance:BTCUSDT", "alpha/bitget:BTCUSDT")
        await wait_for(pilot, lambda: l0.plan is not None and l1.plan is not None, "both remote ladders")
        assert l0.plan.bids[0] == (2699998000000, 150000000) and l1.plan.bids[0] == (270001, 150000000)
        assert str(l0.render_line(0).text).startswith(" VALID  mid 27000.48")
        await wait_for(pilot, lambda: any(t.size == "0.5" and not t.buy for t in mv.query_one("#tape").lines), "the remote trade")
        feedline = "".join(t for t, _ in mv.query_one("#feedline").rows[0])
        assert "Bi-OB connected_synced" in feedline and "alpha/" not in feedline
        await pilot.press("escape", "f")
        assert isinstance(app.screen, SystemScreen)
        ft = app.screen.query_one("#feeds", FeedsTable)
        await wait_for(pilot, lambda: ft.row_count == 8 and ft.get_cell("beta/Bg-PR", "state") != "",
                       "both hosts' feeds")
        assert [str(c) for c in ft.get_row("alpha/Bi-OB")[:3]] == ["Bi-OB", "alpha", "[green]connected_synced[/]"]
        assert ft.get_cell("alpha/Bi-OB", "reason") == "Bi-OB reason"
        assert "NATS" not in "".join(str(k.value) for k in ft.rows)           # the publisher is no feed
        # `s` on a remote feed: a request to its host; here no server answers
        ft.move_cursor(row=0)
        await pilot.press("s")
        await wait_for(pilot, lambda: "alpha/Bi-OB: resync_invalid failed: host alpha is not attached"
                       in log_text(app), "the remote command's answer")
        assert "alpha: attached over nats://" in log_text(app)


async def test_bad_messages_are_counted_and_never_shown(attached: AttachController) -> None:
    alpha = Fleet(attached.attachment, "alpha", ("BTCUSDT",))
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        alpha.round()
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 2, "alpha's books")
        fleets = attached.attachment.fleets
        before = fleets.bad
        alpha.send("heartbeat", b"not json")
        alpha.send("feeds", {"v": 2, "host": "alpha", "feeds": {}})                  # a later schema
        alpha.send("feeds", {"v": 1, "host": "alpha/x", "feeds": {}})                # not a host token
        alpha.send("feeds", {"v": 1, "host": "beta", "feeds": {}})                   # another host's subject
        alpha.send("binance.X.book", {"v": 1, "host": "alpha", "key": "binance:X", "bids": 3, "asks": []})
        assert fleets.bad == before + 5
        # taken in, but not showable: counted once, the rest of the fleet shown as before
        bad = book("alpha", "binance:BTCUSDT", "Bi-OB", 5000)
        bad["bids"][0][0] = "12a.5"
        alpha.send("binance.BTCUSDT.book", bad)
        nasty = feeds("alpha")
        nasty["feeds"]["[bold]x"] = dict(nasty["feeds"]["Bi-OB"])
        alpha.send("feeds", nasty)
        alpha.send("nowhere.ZZZ.book", book("alpha", "nowhere:ZZZ", "Zz-OB", 1))     # a venue this build lacks
        await wait_for(pilot, lambda: fleets.bad >= before + 8, "the unshowable messages counted")
        # odd shapes inside well-formed messages: taken as far as they go, never raised
        odd = feeds("alpha")
        odd.update(order=5, engine="x")
        odd["feeds"]["Bi-TR"] = 7
        odd["feeds"]["Bi-OB"].update(frames="many", ring_fill=None, state=3)
        alpha.send("feeds", odd)
        alpha.send("binance.BTCUSDT.trade", {"v": 1, "host": "alpha", "key": "binance:BTCUSDT",
                                             "trades": [{"price": 1, "qty": None}, "x"]})
        await wait_ticks(pilot, 3)
        await wait_ticks(pilot, 3)
        assert len(table.keys) == 2 and "alpha/nowhere:ZZZ" not in table.keys
        assert all("[bold]" not in f.label for f in app.cfg.feeds)
        await wait_for(pilot, lambda: "could not be read or shown" in log_text(app), "the count in the log")
        # good messages after bad ones: written and shown (a new update id, new levels; the
        # bad trades above never reached the tape, so they hold no book back)
        rb = attached.mirror.book_at["alpha/binance:BTCUSDT"]
        alpha.uid = 7000
        fresh = book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid, "26000.50000000")
        alpha.send("binance.BTCUSDT.book", fresh)
        await wait_for(pilot, lambda: (v := attached.stats.read_book(rb.slot, history=False)) is not None
                       and v.update_id == 7000, "the good message after the bad ones written")
        v = attached.stats.read_book(rb.slot, history=False)
        assert v.valid and v.bids[0] == (2600050000000, 150000000) and v.asks[0] == (2600150000000, 225000000)
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("synced", "ok")
                       and table.cells["alpha/binance:BTCUSDT"]["mid"][0].startswith("26001"), "shown")
        assert app.is_running and "the NATS mirror failed" not in log_text(app)


async def test_a_silent_host_turns_stale_and_comes_back(attached: AttachController) -> None:
    alpha = Fleet(attached.attachment, "alpha", ("BTCUSDT",))
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await one_market_shown(pilot, app, alpha)
        await pilot.press("f")
        ft = app.screen.query_one("#feeds", FeedsTable)
        # alpha says nothing from here on
        await wait_for(pilot, lambda: ft.get_cell("alpha/Bi-OB", "state") == "[bold red]stale[/]",
                       "the stale host in the feeds table", timeout=10)
        took = time.monotonic() - alpha.last
        assert 3.0 <= took <= 4.5, took
        assert ft.reasons["alpha/Bi-OB"].startswith("stale: no heartbeat for 3 s")
        assert "alpha: stale: no heartbeat for 3 s" in log_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("stale", "bad")
                       and table.cells["alpha/binance:BTCUSDT"]["host"] == ("alpha", "bad"), "stale rows")
        alpha.round()
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("synced", "ok"), "live again")
        await wait_for(pilot, lambda: "alpha: live again" in log_text(app), "the host live again in the log")


async def test_a_fleet_that_says_it_stops_is_shown_stopped_not_stale(attached: AttachController) -> None:
    """The publisher's last heartbeat says ``stopping``: its feeds show ``stopped`` (its fleet
    stopped), its books invalid ``fleet stopped``, and the host never turns stale (a deliberate
    stop is not a hang); headless says the same; a heartbeat without it brings the host back."""
    alpha = Fleet(attached.attachment, "alpha", ("BTCUSDT",))
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await one_market_shown(pilot, app, alpha)
        alpha.heartbeat(stopping=True)
        t0 = time.monotonic()
        await wait_for(pilot, lambda: "alpha: its fleet stopped" in log_text(app), "the stop in the log")
        stats = attached.stats
        assert stats is not None
        j = next(i for i, b in enumerate(app.books) if b.key == "alpha/binance:BTCUSDT")
        await wait_for(pilot, lambda: (v := stats.read_book(j)) is not None and not v.valid
                       and v.reason == "fleet stopped", "the book invalid: fleet stopped")
        await pilot.press("f")
        ft = app.screen.query_one("#feeds", FeedsTable)
        await wait_for(pilot, lambda: "stopped" in str(ft.get_cell("alpha/Bi-OB", "state")), "stopped feeds")
        while time.monotonic() - t0 < 4.0:          # past STALE_HOST_S: still stopped, never stale
            await pilot.pause(0.2)
        assert "stale" not in str(ft.get_cell("alpha/Bi-OB", "state"))
        assert "alpha: stale" not in log_text(app)
        snap = attached.attachment.fleets.snapshot()
        assert snap["hosts"]["alpha"]["stopped"] and snap["feeds"]["alpha/Bi-OB"]["state"] == "stopped"
        assert "alpha: stopped" in status_line(snap)
        alpha.round()
        await wait_for(pilot, lambda: "alpha: publishing again" in log_text(app), "back")
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("synced", "ok"), "live again")


@pytest.fixture
def local() -> Iterator[FakeWorld]:
    with fake_world(SYMBOLS[:2]) as w:
        yield w


async def test_local_and_remote_side_by_side(local: FakeWorld) -> None:
    ctl = AttachController(Attachment([f"nats://127.0.0.1:{free_port()}"]), local=local.controller)
    try:
        alpha = Fleet(ctl.attachment, "alpha", ("ETHUSDT", "BTCUSDT"))
        app = app_for(ctl)
        async with app.run_test(size=(120, 40)) as pilot:
            alpha.round()
            table = app.screen.query_one("#watch", WatchTable)
            await wait_for(pilot, lambda: len(table.keys) == 8, "4 local and 4 remote books")
            await wait_for(pilot, lambda: table.cells["binance:BTCUSDT"]["state"][0] == "synced"
                           and table.cells["alpha/binance:BTCUSDT"]["state"][0] == "synced", "both synced")
            assert table.cells["binance:BTCUSDT"]["host"][0] == "local"
            assert table.cells["binance:BTCUSDT"]["mid"][0] == "95004.75"       # the local block's figures
            # `s` on a local book: the local feed's control word, its ack back on screen
            table.move_cursor(table.keys.index("binance:BTCUSDT"))
            await pilot.press("s")
            blk = local.stats
            await wait_for(pilot, lambda: blk.read_command_book(0)[1] == Command.RESYNC, "the local control word")
            seq, _, book_id = blk.read_command_book(0)
            assert book_id == 0                              # binance:BTCUSDT's book
            blk.ack_command(0, seq, AckResult.OK, "resync started, socket kept")
            await wait_for(pilot, lambda: "Bi-OB: resync acknowledged: resync started" in log_text(app), "the ack")
            # `s` on a remote row: that host's feed and market (the book index of the mixed
            # layout resolved back to the symbol), its answer as the ack
            asked = []

            def answer(host: str, label: str, cmd: str, symbol: str | None = None, timeout: float = 5.0) -> Any:
                import concurrent.futures
                asked.append((host, label, cmd, symbol))
                fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
                fut.set_result({"v": 1, "host": host, "ok": True,
                                "text": f"{label}: resync acknowledged: resync of {symbol} started"})
                return fut

            ctl.attachment.control_async = answer  # type: ignore[method-assign]
            table.move_cursor(table.keys.index("alpha/bitget:BTCUSDT"))
            await pilot.press("s")
            await wait_for(pilot, lambda: "alpha/Bg-OB: resync acknowledged: resync of BTCUSDT started"
                           in log_text(app), "the remote ack")
            assert asked == [("alpha", "Bg-OB", "resync", "BTCUSDT")]
            await pilot.press("f")
            ft = app.screen.query_one("#feeds", FeedsTable)
            await wait_for(pilot, lambda: ft.row_count == 8, "local and remote feeds")
            assert [str(k.value) for k in ft.rows][:5] == ["Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR", "alpha/Bi-OB"]
            assert str(ft.get_row("Bi-OB")[1]) == "local"
            await pilot.press("a")                           # this machine's feeds only
            await wait_ticks(pilot, 2)
            assert all(blk.read_command_book(i)[1] == Command.RECONNECT for i in range(4))
            assert "alpha/Bi-OB: reconnect sent" not in log_text(app)
    finally:
        ctl.stop()


@pytest.mark.parametrize("host", ["alpha", "tokyo-production-market-data-fleet-1-abc"])
async def test_80x24_hides_columns_never_cuts_words(attached: AttachController, host: str) -> None:
    alpha = Fleet(attached.attachment, host, ("BTCUSDT",))
    app = app_for(attached)
    async with app.run_test(size=(80, 24)) as pilot:
        alpha.round()
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 2, "the books")
        await wait_ticks(pilot, 2)
        text = rows_text(table)
        shown = [c.key for c in table.shown]
        assert {"market", "state", "mid", "obi"} <= set(shown)
        assert all(len(line) <= 80 for line in text)
        if len(host) > 20:                                  # short of room: no host column, no part of it
            assert "host" not in shown and not any("tokyo" in line for line in text)
        else:
            assert shown[0] == "host" and all(line.startswith("alpha ") for line in text[1:3])
        await pilot.press("f")
        ft = app.screen.query_one("#feeds", FeedsTable)
        await wait_for(pilot, lambda: ft.row_count == 4, "the feeds")
        cols = [str(c.value) for c in ft.columns]
        assert {"label", "state", "age"} <= set(cols) and sum(c.width + 2 for c in ft.columns.values()) <= 78
        assert "host" in cols                               # the feeds table keeps it longest


def test_the_answers_of_a_remote_fleet_become_acknowledgements() -> None:
    assert ack_of({"ok": True, "text": "Bi-OB: resync acknowledged: resync started, socket kept"}) == (
        AckResult.OK, "resync started, socket kept")
    refusal = {"ok": False, "error": "remote control is off on alpha: its supervisor was not started with "
                                     "--allow-remote-control"}
    assert ack_of(refusal) == (AckResult.FAILED, REFUSED)
    assert ack_of({"ok": False, "code": "timeout", "error": "no answer from alpha in 6.5 s"}) == (
        AckResult.FAILED, "timed out: no answer from alpha in 6.5 s")
    res, text = ack_of({"ok": False, "error": "x " * 100})
    assert res == AckResult.FAILED and len(text.encode()) <= 55 and text.endswith("…")


async def test_the_block_grows_with_the_books_and_keeps_commands(attached: AttachController) -> None:
    """More books than the first block has room for: a larger block, every slot written again,
    the old one removed; a book written with more decimals later is drawn at its new scale."""
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        small = Fleet(attached.attachment, "alpha", ("BTCUSDT",))
        small.round()
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 2, "alpha's books")
        first = attached.mirror.name
        assert first.endswith("-attach0")
        big = Fleet(attached.attachment, "beta", tuple(f"S{k}USDT" for k in range(40)))
        big.round()
        await wait_for(pilot, lambda: len(table.keys) == 82, "beta's 80 books too")
        assert attached.mirror.name != first and not (SHM / first).exists()
        assert attached.stats is not None and attached.stats.n_books >= 82
        await wait_for(pilot, lambda: all(c["state"][0] == "synced" for c in table.cells.values()), "every row synced")
        # a finer price than the book's scale so far (Bitget: 1 decimal): drawn exactly
        gen = attached.layout().generation
        small.send("bitget.BTCUSDT.book", book("alpha", "bitget:BTCUSDT", "Bg-OB", 9000, "27000.125"))
        await wait_for(pilot, lambda: attached.layout().generation > gen
                       and table.cells["alpha/bitget:BTCUSDT"]["mid"][0] == "27000.625", "the finer scale")
        b = next(b for b in app.books if b.key == "alpha/bitget:BTCUSDT")
        assert (b.digits, b.qdigits) == (3, 8)


async def test_a_hung_remote_engine_or_feed_is_never_shown_live(attached: AttachController) -> None:
    alpha = Fleet(attached.attachment, "alpha", ("BTCUSDT",))
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await one_market_shown(pilot, app, alpha)
        hung = feeds("alpha")
        hung["engine"] = {"pid": 1, "stale": True, "age_s": 4.2, "records_per_s": 0.0, "gaps": 0}
        hung["feeds"]["Bi-TR"].update(stale=True, age_s=5.0)
        alpha.heartbeat()
        alpha.send("feeds", hung)
        await wait_for(pilot, lambda: table.cells["alpha/binance:BTCUSDT"]["state"] == ("engine stale", "bad"),
                       "the books of a stale engine")
        await pilot.press("f")
        ft = app.screen.query_one("#feeds", FeedsTable)
        await wait_for(pilot, lambda: ft.get_cell("alpha/Bi-TR", "state") == "[bold red]stale[/]",
                       "the hung remote feed")
        assert "connected_synced" in str(ft.get_cell("alpha/Bi-OB", "state"))      # its host is live
        assert ft.reasons["alpha/Bi-TR"].startswith("stale: no heartbeat for ")


async def test_no_room_for_a_larger_block_shows_what_fits(attached: AttachController,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import obitui.bus.mirror as mirror_mod
    from obitui.core.stats import StatsError

    def full(*_a: Any, **_k: Any) -> Any:
        raise StatsError("no space left on device")

    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        monkeypatch.setattr(mirror_mod.StatsBlock, "create", full)
        big = Fleet(attached.attachment, "beta", tuple(f"S{k}USDT" for k in range(40)))
        big.round()
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: len(table.keys) == 64, "the books that fit the block")
        await wait_for(pilot, lambda: "no room: no space left on device" in log_text(app), "why the rest is not shown")
        big.round()
        await wait_ticks(pilot, 3)
        assert len(table.keys) == 64 and app.is_running


def test_only_a_host_seen_for_the_first_time_asks_for_everything() -> None:
    """``on_message`` names a host the first time only (the attachment then asks it to send
    everything again): never for later books, trades or feeds."""
    from obitui.bus.attach import Fleets
    f = Fleets()
    fleet = Fleet(Attachment([URL]), "h")
    fleet.att.fleets = f
    assert fleet.send("binance.BTCUSDT.trade", {"v": 1, "host": "h", "key": "binance:BTCUSDT", "missed": 0,
                                                "trades": [{"price": "1.0", "qty": "2.0", "side": "buy",
                                                            "ts": 1.0}]}) == "h"
    assert fleet.send("binance.BTCUSDT.trade", {"v": 1, "host": "h", "key": "binance:BTCUSDT", "missed": 0,
                                                "trades": [{"price": "1.0", "qty": "2.0", "side": "buy",
                                                            "ts": 2.0}]}) is None
    fleet.heartbeat()
    assert fleet.send("feeds", feeds("h")) is None
    assert fleet.send("binance.BTCUSDT.book", book("h", "binance:BTCUSDT", "Bi-OB", 1)) is None
    assert f.trade_count["h/binance:BTCUSDT"] == 2 and f.take_changes() == ({"h/binance:BTCUSDT"}, {"h"})
    assert f.take_changes() == (set(), set())


# ---------------------------------------------------------------- out of range, one book at a time
def placed(ctl: AttachController, *hosts: str) -> list[Fleet]:
    """Fleets of one market each, their books placed and written."""
    fleets = [Fleet(ctl.attachment, h, ("BTCUSDT",)) for h in hosts]
    for f in fleets:
        f.round()
    ctl.sync()
    ctl.sync()
    for f in fleets:
        assert f"{f.host}/binance:BTCUSDT" in ctl.mirror.book_at
    return fleets


def slot_view(ctl: AttachController, hk: str) -> Any:
    assert ctl.stats is not None
    v = ctl.stats.read_book(ctl.mirror.book_at[hk].slot, history=False)
    assert v is not None
    return v


BAD_BOOKS: dict[str, Any] = {
    "update_id -1": lambda b: b.update(update_id=-1),
    "update_id 2**64": lambda b: b.update(update_id=2 ** 64),
    "update_id 1.5": lambda b: b.update(update_id=1.5),
    "trades_1s -1": lambda b: b.update(trades_1s=-1),
    "trades_1s 2**64": lambda b: b.update(trades_1s=2 ** 64),
    "last_trade ts -5": lambda b: b["last_trade"].update(ts=-5),
    "last_trade ts 1e12": lambda b: b["last_trade"].update(ts=1e12),
    "last_trade side": lambda b: b["last_trade"].update(side="hold"),
    "obi not a number": lambda b: b.update(obi="x"),
    "a level of one item": lambda b: b["bids"].append(["26990.00000000"]),
    "a price no scale takes": lambda b: b["bids"][0].__setitem__(0, "26999.9800000000000000001"),
    "a price beyond int64": lambda b: b["asks"].append(["999999999999.00000000", "1.0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BOOKS))
def test_a_book_message_out_of_range_is_counted_and_written_invalid(attached: AttachController, case: str) -> None:
    """One book's message with a value out of its field's range: counted once, that book
    written invalid (``unreadable message``, no levels) instead of its old figures shown live,
    its scale kept; the other books of the same tick (same host, other host) written as
    ever; the mirror never fails; the book's next good message makes it valid again."""
    alpha, beta = placed(attached, "alpha", "beta")
    fleets = attached.attachment.fleets
    bad0, failed0 = fleets.bad, attached.failed_at
    alpha.uid += 1
    beta.uid += 1
    bad = book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid)
    BAD_BOOKS[case](bad)
    alpha.send("binance.BTCUSDT.book", json.dumps(bad).encode())      # orjson writes no int beyond 64 bits
    alpha.send("bitget.BTCUSDT.book", book("alpha", "bitget:BTCUSDT", "Bg-OB", alpha.uid, "27000.1"))
    beta.send("binance.BTCUSDT.book", book("beta", "binance:BTCUSDT", "Bi-OB", beta.uid))
    attached.sync()
    assert fleets.bad == bad0 + 1 and attached.failed_at == failed0
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert (v.valid, v.reason, v.bids, v.asks) == (False, "unreadable message", [], [])
    assert (attached.mirror.book_at["alpha/binance:BTCUSDT"].digits,
            attached.mirror.book_at["alpha/binance:BTCUSDT"].qdigits) == (8, 8)
    for hk, uid in (("alpha/bitget:BTCUSDT", alpha.uid), ("beta/binance:BTCUSDT", beta.uid)):
        other = slot_view(attached, hk)
        assert other.valid and other.update_id == uid, hk
    alpha.uid += 1
    alpha.send("binance.BTCUSDT.book", book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid, "26999.50000000"))
    attached.sync()
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert v.valid and v.update_id == alpha.uid and v.reason == "" and v.bids[0] == (2699950000000, 150000000)
    assert fleets.bad == bad0 + 1 and attached.failed_at == failed0


def test_a_finer_scale_is_taken_only_when_every_value_fits(attached: AttachController) -> None:
    """More decimals than the book's scale: a finer scale when the whole message fits int64
    there (13 decimals at 27000: yes); a first message no scale takes places the book with its
    next one; written decimals beyond 18 that are zeros change nothing."""
    (alpha,) = placed(attached, "alpha")
    fleets = attached.attachment.fleets
    rb = attached.mirror.book_at["alpha/binance:BTCUSDT"]
    bad0 = fleets.bad
    alpha.uid += 1
    zeros = book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid)
    zeros["bids"][0][0] = "26999.980000000000000000000"          # 21 decimals, zeros: the scale stays
    alpha.send("binance.BTCUSDT.book", zeros)
    attached.sync()
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert v.valid and v.update_id == alpha.uid and (rb.digits, fleets.bad) == (8, bad0)
    alpha.uid += 1
    fine = book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid)
    fine["bids"][0][0] = "26999.9800000000001"                    # 13 decimals: 2.7e17 fits
    alpha.send("binance.BTCUSDT.book", fine)
    attached.sync()
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert v.valid and v.update_id == alpha.uid and rb.digits == 13 and v.bids[0][0] == 269999800000000001
    assert fleets.bad == bad0
    # a new market whose first message no scale takes: counted, placed with its next message
    first = book("alpha", "binance:SOLUSDT", "Bi-OB", 1)
    first["asks"][0][0] = "27000.0000000000000000001"
    alpha.send("binance.SOLUSDT.book", first)
    attached.sync()
    assert "alpha/binance:SOLUSDT" not in attached.mirror.book_at and fleets.bad == bad0 + 1
    alpha.send("binance.SOLUSDT.book", book("alpha", "binance:SOLUSDT", "Bi-OB", 2))
    attached.sync()
    sol = attached.mirror.book_at["alpha/binance:SOLUSDT"]
    assert (sol.digits, sol.qdigits) == (8, 8) and slot_view(attached, "alpha/binance:SOLUSDT").update_id == 2


def test_bad_trades_are_left_out_one_by_one(attached: AttachController) -> None:
    """A trade message's items are checked one by one: those that cannot be shown are counted
    and left out, the others go on the tape; a trade no scale of its book takes is dropped
    from the tape (counted once) and the book written without it."""
    (alpha,) = placed(attached, "alpha")
    fleets = attached.attachment.fleets
    bad0 = fleets.bad
    now = time.time()
    good = [{"price": "27001.00000000", "qty": "0.10000000", "side": "buy", "ts": now},
            {"price": "27002.00000000", "qty": "0.20000000", "side": "sell", "ts": now + 0.001}]
    junk = ["x", {"price": 1}, {"price": "1.0", "qty": "1.0", "side": "hold", "ts": now},
            {"price": "1.0", "qty": "1.0", "side": "buy", "ts": -1}, {"price": "1.0", "qty": "1.0", "side": "buy"},
            {"price": "1.0", "qty": "1.0", "side": "buy", "ts": 1e300}, {"price": "1e3", "qty": "1.0", "side": "buy",
                                                                        "ts": now},
            {"price": "26999.9800000000000000001", "qty": "1.0", "side": "buy", "ts": now}]
    alpha.send("binance.BTCUSDT.trade", {"v": 1, "host": "alpha", "key": "binance:BTCUSDT",
                                         "trades": [good[0], *junk, good[1]]})
    assert fleets.bad == bad0 + len(junk)
    assert fleets.trades["alpha/binance:BTCUSDT"][-2:] == good
    alpha.uid += 1
    alpha.send("binance.BTCUSDT.book", book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid))
    attached.sync()
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert v.valid and v.update_id == alpha.uid
    assert [(p, q, side) for _, p, q, side in v.tape[:2]] == [(2700200000000, 20000000, 2), (2700100000000, 10000000, 1)]
    # a trade that fits alone but not with its book (18 decimals at 27000 is beyond int64)
    tiny = {"price": "0.000000000000000001", "qty": "1.00000000", "side": "buy", "ts": now + 0.002}
    alpha.send("binance.BTCUSDT.trade", {"v": 1, "host": "alpha", "key": "binance:BTCUSDT", "trades": [tiny]})
    alpha.uid += 1
    alpha.send("binance.BTCUSDT.book", book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid))
    bad1 = fleets.bad
    attached.sync()
    v = slot_view(attached, "alpha/binance:BTCUSDT")
    assert v.valid and v.update_id == alpha.uid and attached.mirror.book_at["alpha/binance:BTCUSDT"].digits == 8
    assert v.tape[0][1] == 2700200000000 and fleets.bad == bad1 + 1
    assert tiny not in fleets.trades["alpha/binance:BTCUSDT"]
    alpha.uid += 1
    alpha.send("binance.BTCUSDT.book", book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid))
    attached.sync()
    assert slot_view(attached, "alpha/binance:BTCUSDT").update_id == alpha.uid and fleets.bad == bad1 + 1


BAD_FEEDS: dict[str, Any] = {
    "frames -1": lambda f: f["feeds"]["Bi-OB"].update(frames=-1),
    "frames 2**64-1": lambda f: f["feeds"]["Bi-OB"].update(frames=2 ** 64 - 1),
    "stale, age -1e12": lambda f: f["feeds"]["Bi-OB"].update(stale=True, age_s=-1e12),
    "stale, age text": lambda f: f["feeds"]["Bi-OB"].update(stale=True, age_s="long"),
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_a_feed_out_of_range_is_counted_and_the_rest_written(attached: AttachController, case: str) -> None:
    """A feed whose figures do not fit its slot: counted once, that feed's slot left as it
    was; the host's other feeds and the books of the same tick written; the mirror never fails."""
    (alpha,) = placed(attached, "alpha")
    fleets = attached.attachment.fleets
    bad0, failed0 = fleets.bad, attached.failed_at
    f = feeds("alpha")
    BAD_FEEDS[case](f)
    f["feeds"]["Bg-OB"].update(frames=555)
    alpha.send("feeds", f)
    alpha.uid += 1
    alpha.send("binance.BTCUSDT.book", book("alpha", "binance:BTCUSDT", "Bi-OB", alpha.uid))
    attached.sync()
    assert fleets.bad == bad0 + 1 and attached.failed_at == failed0
    assert slot_view(attached, "alpha/binance:BTCUSDT").update_id == alpha.uid
    assert attached.stats is not None
    assert attached.stats.read_feed(attached.mirror.feed_at[("alpha", "Bi-OB")].slot).counters["frames"] == 100
    assert attached.stats.read_feed(attached.mirror.feed_at[("alpha", "Bg-OB")].slot).counters["frames"] == 555


def test_a_feed_stale_for_ages_and_a_counter_that_restarts(attached: AttachController) -> None:
    """``"stale": true, "age_s": 1e30``: stale on screen (its beat as old as a slot says), not
    an error; a counter its host reports lower than before (the feed's process restarted): what
    it counted since is added, the slot's counter never goes back."""
    (alpha,) = placed(attached, "alpha")
    fleets = attached.attachment.fleets
    assert attached.stats is not None
    slot = attached.mirror.feed_at[("alpha", "Bi-OB")].slot
    bad0 = fleets.bad
    f = feeds("alpha")
    f["feeds"]["Bi-OB"].update(stale=True, age_s=1e30, frames=40)
    alpha.send("feeds", f)
    attached.sync()
    fv = attached.stats.read_feed(slot)
    assert fleets.bad == bad0 and fv.heartbeat_ns == 0 and fv.counters["frames"] == 140
    f = feeds("alpha")
    f["feeds"]["Bi-OB"].update(frames=50)
    alpha.send("feeds", f)
    attached.sync()
    assert attached.stats.read_feed(slot).counters["frames"] == 150 and fleets.bad == bad0


def test_a_book_of_an_unknown_venue_is_counted_at_every_message(attached: AttachController) -> None:
    placed(attached, "alpha")
    fleets = attached.attachment.fleets
    bad0 = fleets.bad
    alpha = Fleet(attached.attachment, "alpha")
    for uid in (1, 2, 3):
        alpha.send("nowhere.ZZZ.book", book("alpha", "nowhere:ZZZ", "Zz-OB", uid))
        attached.sync()
    assert fleets.bad == bad0 + 3 and "alpha/nowhere:ZZZ" not in attached.mirror.book_at


def test_junk_keys_and_hosts_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Books (and tapes) of junk keys, hosts of junk names: kept up to a cap, the rest
    counted and left out (memory stays bounded whatever a publisher sends)."""
    import obitui.bus.attach as attach_mod
    from obitui.bus.attach import Fleets
    monkeypatch.setattr(attach_mod, "MAX_BOOKS", 3)
    monkeypatch.setattr(attach_mod, "MAX_HOSTS", 2)
    f = Fleets()
    fleet = Fleet(Attachment([URL]), "h")
    fleet.att.fleets = f
    for k in range(5):
        fleet.send(f"binance.S{k}USDT.book", book("h", f"binance:S{k}USDT", "Bi-OB", 1))
        fleet.send(f"binance.S{k}USDT.trade", {"v": 1, "host": "h", "key": f"binance:S{k}USDT", "trades": []})
    assert len(f.books) == 3 and len(f.trades) == 3 and f.bad == 4
    fleet.send("binance.S0USDT.book", book("h", "binance:S0USDT", "Bi-OB", 2))     # a known key: taken
    assert f.books["h/binance:S0USDT"]["update_id"] == 2 and f.bad == 4
    for h in ("h2", "h3"):
        Fleet(fleet.att, h).heartbeat()
    assert set(f.hosts) == {"h", "h2"} and f.bad == 5


def test_the_feeds_message_is_checked_before_it_is_kept() -> None:
    """What snapshot() and status_line() read is checked as it comes: an order that is no list
    of labels, an engine that is no object: the message counted and not kept; a feed without a
    state word or with counts that are none: that feed left out, counted."""
    from obitui.bus.attach import Fleets, status_line
    f = Fleets()
    fleet = Fleet(Attachment([URL]), "h")
    fleet.att.fleets = f
    fleet.heartbeat()
    fleet.send("feeds", feeds("h"))
    for mut in (lambda m: m.update(order=None), lambda m: m.update(order=[[1]]), lambda m: m.update(order="Bi-OB"),
                lambda m: m.update(engine="x"), lambda m: m.update(feeds=[])):
        m = feeds("h")
        mut(m)
        fleet.send("feeds", m)
    assert f.bad == 5 and f.feeds["h"]["order"] == list(LABELS)
    m = feeds("h")
    del m["feeds"]["Bi-TR"]["state"]
    m["feeds"]["Bg-OB"]["markets"] = "x"
    m["feeds"]["Bg-PR"] = 7
    fleet.send("feeds", m)
    assert f.bad == 8 and sorted(f.feeds["h"]["feeds"]) == ["Bi-OB", "NATS"]
    line = status_line(f.snapshot())
    assert line.startswith("[Attached] h/Bi-OB: connected_synced") and "h/Bg-OB" not in line


def test_attachment_close_right_after_start_is_quick() -> None:
    """close() at once after start(): the loop's thread ends within a second, every time (the
    stop signal exists before the thread does)."""
    for _ in range(5):
        att = Attachment([f"nats://127.0.0.1:{free_port()}"])
        t0 = time.monotonic()
        att.start()
        att.close()
        assert time.monotonic() - t0 < 1.5 and not att.thread.is_alive()


def test_the_mirror_block_is_removed_even_when_closing_it_fails(attached: AttachController,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from obitui.bus.mirror import BOOK_HEADROOM, FEED_HEADROOM
    mirror = attached.mirror
    old = mirror.name
    blk = mirror.block
    assert blk is not None

    def broken() -> None:
        raise OSError("close failed")

    monkeypatch.setattr(blk, "close", broken)
    with pytest.raises(OSError):
        mirror._make_block(FEED_HEADROOM, BOOK_HEADROOM)        # a larger block: the old one goes
    assert not (SHM / old).exists() and (SHM / mirror.name).exists() and mirror.name != old
    new = mirror.block
    assert new is not None
    monkeypatch.setattr(new, "close", broken)
    with pytest.raises(OSError):
        mirror.close()
    assert not (SHM / mirror.name).exists() and mirror.block is None


def test_a_signal_while_the_attached_console_starts_leaves_no_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT (or SIGTERM) after the mirror's block was made and before the controller is
    kept: acted on once it is (exit 128 + signal), the block removed, no KeyboardInterrupt."""
    import os
    import signal

    import obitui.app as app_mod
    import obitui.bus.mirror as mirror_mod
    runs: list[str] = []

    class Interrupted(AttachController):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            runs.append(self.mirror.run)
            os.kill(os.getpid(), signal.SIGINT)      # handled before the next line of Python runs
            time.sleep(0.05)

    monkeypatch.setattr(mirror_mod, "AttachController", Interrupted)
    monkeypatch.setattr(app_mod, "_log_to_file", lambda: "")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        rc = app_mod.run_attach_app([f"nats://127.0.0.1:{free_port()}"], refresh_hz=10, mouse=False)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert rc == 130 and runs and not any(SHM.glob(f"{runs[0]}*"))


async def test_a_command_to_a_feed_beyond_the_block_expires(attached: AttachController) -> None:
    from obitui.app import Pending
    app = app_for(attached)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 1)
        assert attached.stats is not None
        app.pending.append(Pending("gone/Bi-OB", attached.stats.n_feeds + 5, 1, "resync", time.monotonic() - 60, 5.0))
        await wait_for(pilot, lambda: not app.pending, "the command beyond the block expired")
        assert "gone/Bi-OB: resync not acknowledged in 5 s" in log_text(app)

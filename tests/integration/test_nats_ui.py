"""Issue #21, the Textual console attached to remote fleets, against a real NATS server (the
`nats-server` of the test extra, on a random loopback port) and real fleets on the simulator
publishing to it (`--publish`):

- the watchlist shows the remote books with their host, Enter opens the market view with the
  remote ladders, the feeds screen lists the remote feeds with their host;
- `s` on a remote feed is refused with a clear message by a fleet without
  `--allow-remote-control`, and carried out by one with it; a host that starts publishing after
  the console is up shows up;
- a fleet whose publisher stops turns stale on screen once it has been silent for 3 s, and live
  again when it comes back;
- `obitui --attach URL` and `obitui --sim --attach URL` in a terminal: the console with the
  remote (and local) rows; `q` or SIGTERM leave no process and no segment of the run (the
  mirror's block included).

Every fleet, server and console is stopped, and every segment removed, whatever happens."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obitui.app import ObituiApp
from obitui.bench.nats import NatsServer
from obitui.bus.attach import Attachment
from obitui.bus.mirror import REFUSED, AttachController
from obitui.supervisor import Supervisor
from obitui.ui.market import MarketScreen
from obitui.ui.system import SystemScreen
from obitui.ui.watchlist import WatchlistScreen
from obitui.widgets.feeds import FeedsTable
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.watchtable import WatchTable
from obitui.bus.publisher import PublishSpec
from obitui.config import load_config
from tests.integration.test_nats import all_valid, publisher_state, wait_for as wait_sync
from tests.ui.ptyrun import PtyObitui
from tests.ui.test_app import log_text, wait_for, wait_ticks

# heavy: fleets, a server and consoles, one after another on one worker with the other fleets
pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("heavy")]
SHM = Path("/dev/shm")
UP_WITHIN = 60.0            # a fleet's books synced and on the console (a loaded 2-core machine is slow)
STALE_S = 3.0               # schema.STALE_HOST_S: a host silent this long is stale


def fleet(url: str, host: str, allow: bool = False) -> Supervisor:
    """A fleet on the simulator publishing as ``host``; stopped here if its start fails."""
    sup = Supervisor(load_config(None), publish=PublishSpec(url, host, rate=8.0, allow_control=allow))
    try:
        sup.launch(sim=True)
    except BaseException:
        sup.stop()
        raise
    return sup


@pytest.fixture(autouse=True)
def truecolor(monkeypatch: pytest.MonkeyPatch) -> None:
    import textual.constants
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    srv = NatsServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def alpha(server: NatsServer) -> Iterator[Supervisor]:
    """A fleet publishing as host `alpha`, without --allow-remote-control."""
    sup = fleet(server.url, "alpha")
    try:
        wait_sync(lambda: all_valid(sup) and publisher_state(sup) == "connected", UP_WITHIN,
                  "alpha's books and publisher", sup.poll)
        yield sup
    finally:
        sup.stop()


@pytest.fixture
def console(server: NatsServer) -> Iterator[AttachController]:
    """The attached console's controller (its block checked gone after the stop)."""
    ctl = AttachController(Attachment([server.url]))
    try:
        yield ctl
    finally:
        ctl.stop()
        assert not any(SHM.glob(f"{ctl.mirror.run}*")), "the mirror's segment is left"


def app_for(ctl: AttachController) -> ObituiApp:
    return ObituiApp(ctl.layout().cfg, ctl, refresh_hz=10, clock=False)


def synced(table: WatchTable, keys: list[str]) -> bool:
    return all(table.cells.get(k, {}).get("state", ("",))[0] == "synced" for k in keys)


async def test_the_console_shows_a_remote_fleet_and_its_refusal(alpha: Supervisor,
                                                                console: AttachController) -> None:
    keys = ["alpha/binance:BTCUSDT", "alpha/bitget:BTCUSDT"]
    app = app_for(console)
    async with app.run_test(size=(120, 40)) as pilot:
        assert isinstance(app.screen, WatchlistScreen)
        table = app.screen.query_one("#watch", WatchTable)
        await wait_for(pilot, lambda: sorted(table.keys) == keys and synced(table, keys), "alpha's books synced",
                       UP_WITHIN)
        lines = [str(table.render_line(y).text) for y in range(3)]
        assert lines[0].split()[:3] == ["host", "market", "state"], lines
        assert sorted(line.split()[:3] for line in lines[1:]) == [["alpha", "Bg", "BTCUSDT"], ["alpha", "Bi", "BTCUSDT"]]
        # Enter: alpha's market view, both venues' ladders from NATS
        await pilot.press("enter")
        assert isinstance(app.screen, MarketScreen) and app.screen.sub_title == "BTCUSDT @ alpha"
        ladders = [app.screen.query_one(f"#ladder{i}", DepthLadder) for i in range(2)]
        assert sorted(lad.key for lad in ladders) == keys
        await wait_for(pilot, lambda: all(lad.plan is not None and len(lad.plan.bids) >= 5 for lad in ladders),
                       "both remote ladders")
        assert all(str(lad.render_line(0).text).startswith(" VALID ") for lad in ladders)
        # the feeds screen: alpha's four feeds with their host
        await pilot.press("escape", "f")
        assert isinstance(app.screen, SystemScreen)
        ft = app.screen.query_one("#feeds", FeedsTable)
        labels = [f"alpha/{lb}" for lb in ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR")]
        await wait_for(pilot, lambda: [str(k.value) for k in ft.rows] == labels
                       and "connected_synced" in str(ft.get_cell("alpha/Bi-OB", "state")), "alpha's feeds")
        assert [str(c) for c in ft.get_row("alpha/Bi-OB")[:2]] == ["Bi-OB", "alpha"]
        # `s` on alpha's Bi-OB: a request to alpha, which refuses it and says why
        assert alpha.stats is not None
        before = alpha.stats.read_feed(0).counters["resyncs"]
        ft.move_cursor(row=0)
        await pilot.press("s")
        want = f"alpha/Bi-OB: resync {REFUSED}"
        await wait_for(pilot, lambda: want in log_text(app), "alpha's refusal on screen")
        assert alpha.stats.read_feed(0).counters["resyncs"] == before
        await pilot.press("q")


async def test_remote_control_a_host_seen_later_and_a_stale_host(server: NatsServer,
                                                                  console: AttachController) -> None:
    """A fleet that starts after the console (with --allow-remote-control): its rows come, `s`
    on its feed is carried out; its publisher stopped, it turns stale after 3 s of silence, and
    live again."""
    app = app_for(console)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ticks(pilot, 3)
        table = app.screen.query_one("#watch", WatchTable)
        assert not [k for k in table.keys if k.startswith("beta/")]
        stopped: list[int] = []
        sup = fleet(server.url, "beta", allow=True)
        try:
            keys = ["beta/binance:BTCUSDT", "beta/bitget:BTCUSDT"]
            await wait_for(pilot, lambda: set(keys) <= set(table.keys) and synced(table, keys), "beta's books synced",
                           UP_WITHIN)
            await pilot.press("f")
            ft = app.screen.query_one("#feeds", FeedsTable)
            await wait_for(pilot, lambda: "beta/Bi-OB" in [str(k.value) for k in ft.rows], "beta's feeds")
            ft.move_cursor(row=[str(k.value) for k in ft.rows].index("beta/Bi-OB"))
            assert sup.stats is not None
            before = sup.stats.read_feed(0).counters["resyncs"]
            await pilot.press("s")
            await wait_for(pilot, lambda: "beta/Bi-OB: resync acknowledged: " in log_text(app), "beta's ack")
            await wait_for(pilot, lambda: sup.stats.read_feed(0).counters["resyncs"] == before + 1, "the resync done")
            # the publisher stops (hung): no heartbeat, no book from beta
            pub = sup.pids()["publisher"]
            os.kill(pub, signal.SIGSTOP)
            stopped.append(pub)
            t0 = time.monotonic()
            await wait_for(pilot, lambda: ft.get_cell("beta/Bi-OB", "state") == "[bold red]stale[/]",
                           "beta stale in the feeds table", 15)
            took = time.monotonic() - t0
            # its last message came at most a publish round before the stop: stale after 3 s
            # of silence, seen at the next display tick
            assert took <= STALE_S + 1.5, took
            assert ft.reasons["beta/Bi-OB"].startswith("stale: no heartbeat for ")
            await pilot.press("escape")
            await wait_for(pilot, lambda: all(table.cells[k]["state"] == ("stale", "bad") for k in keys), "stale rows")
            assert table.keys[:2] == sorted(table.keys[:2]) and set(table.keys[:2]) == set(keys)   # floated up
            await wait_for(pilot, lambda: "beta: stale: no heartbeat for 3 s" in log_text(app), "the host in the log")
            os.kill(pub, signal.SIGCONT)
            stopped.clear()
            await wait_for(pilot, lambda: synced(table, keys), "beta live again", 20)
            print(f"beta turned stale {took:.2f} s after its publisher stopped")
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            sup.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A home and a state directory of the test's own: the UI log goes to the latter."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.mark.parametrize("how", ["q", "SIGTERM"])
def test_obitui_attach_opens_the_console_and_leaves_nothing(alpha: Supervisor, server: NatsServer,
                                                            tmp_path: Path, env: dict[str, str], how: str) -> None:
    with PtyObitui(["--attach", server.url], tmp_path, env) as run:
        run.wait_until(lambda: "Bi BTCUSDT" in run.screen() and "alpha" in run.screen()
                       and "synced" in run.screen() and len(run.segments()) == 1,
                       "alpha's books on the console and its block", UP_WITHIN)
        assert run.segments()[0].endswith("-attach0")
        if how == "q":
            run.key(b"q")
        else:
            run.signal(signal.SIGTERM)
        run.wait_exit(10)
        report = run.report()
        assert report["left"] == [] and report["rc"] == 0, run.diagnostics()
        assert run.segments() == [], run.segments()
        assert "Traceback" not in run.screen(), run.diagnostics()


def test_obitui_sim_attach_shows_local_and_remote_rows(alpha: Supervisor, server: NatsServer,
                                                       tmp_path: Path, env: dict[str, str]) -> None:
    with PtyObitui(["--sim", "--attach", server.url], tmp_path, env) as run:
        run.wait_until(lambda: "local" in run.screen() and "alpha" in run.screen()
                       and run.screen().count("synced") >= 2,
                       "this machine's and alpha's books on the console", UP_WITHIN)
        assert any(n.endswith("-attach0") for n in run.segments()) and any(n.endswith("-stats") for n in run.segments())
        run.key(b"q")
        run.wait_exit(15)
        report = run.report()
        assert report["left"] == [] and report["rc"] == 0, run.diagnostics()
        assert run.segments() == [], run.segments()

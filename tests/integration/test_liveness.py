"""Liveness and restarts (issue #17 points 1 and 5, and what the operator reads when a connection
cannot be opened): pongs count as life, a quiet book that answers pings is not stale, a dead
connection is found by its missing pong, a restart asked for from a timer or a command is
carried out, and a failed connect names its cause and host."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from obitui.core.stats import Command, FeedState
from obitui.feeds import base
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(SimConfig(seed=3, rate=50.0, depth=200))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_a_restart_asked_for_by_a_command_or_a_timer_is_carried_out(sim: Simulator) -> None:
    """A Bitget books feed whose subscribe budget is spent must get a new connection (with a new
    budget) when it needs to resubscribe, not stay with an invalid book."""
    async with FeedHarness(sim, "Bg-OB") as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        feed = h.feed
        # the command path: a resync needs a subscribe the spent budget refuses
        feed.subscribe_times.extend([time.monotonic()] * 240)
        h.stats.send_command(0, Command.RESYNC)
        await h.wait_for(lambda: h.count("reconnects") >= 1, 10, "a reconnect after the command")
        await h.wait_state(FeedState.CONNECTED_SYNCED, 10)
        assert feed.book.valid
        # the timer path: the snapshot after a resubscribe never comes; the timer resubscribes,
        # which the spent budget refuses
        sim.faults.set("lost_snapshot", 1)
        feed.subscribe_times.extend([time.monotonic()] * 240)
        h.stats.send_command(0, Command.RESYNC)
        await h.wait_for(lambda: h.count("reconnects") >= 2, 15, "a reconnect asked for by the snapshot timer")
        await h.wait_state(FeedState.CONNECTED_SYNCED, 10)
        assert h.count("snapshot_timeouts") >= 1 and h.count("housekeeping_errors") == 0
        assert any(s == FeedState.BACKOFF and r.startswith("subscribe_budget") for s, r in h.states), h.states


async def _quiet_then_dead(sim: Simulator, h: FeedHarness, silenced: asyncio.Event,
                           no_pong: asyncio.Event) -> None:
    await h.wait_state(FeedState.CONNECTED_SYNCED)
    pongs = h.count("pongs")
    await silenced.wait()
    await asyncio.sleep(11)
    assert h.state == FeedState.CONNECTED_SYNCED, h.states[-4:]
    assert h.count("watchdog") == 0 and h.count("reconnects") == 0
    assert h.count("pongs") >= pongs + 5          # ~1 ping a second while quiet
    await no_pong.wait()
    t0 = time.monotonic()
    await h.wait_for(lambda: h.count("pong_timeouts") >= 1, 6, "the missing pong")
    assert time.monotonic() - t0 < 1.0 + 1.5 + 1.5
    assert h.count("watchdog") == 0


async def test_a_quiet_book_that_answers_pings_is_not_stale(sim: Simulator) -> None:
    """11 s without a single update, pongs flowing: the book stays synced (no watchdog, no
    reconnect); then pongs stop too: the connection is found dead within idle_ping + pong_timeout.
    Both venues at once (Binance: WebSocket pings; Bitget: text pings)."""
    silenced, no_pong = asyncio.Event(), asyncio.Event()
    async with FeedHarness(sim, "Bi-OB", idle_ping=1.0, pong_timeout=1.5) as bi, \
            FeedHarness(sim, "Bg-OB", idle_ping=1.0, pong_timeout=1.5) as bg:
        await asyncio.gather(bi.wait_state(FeedState.CONNECTED_SYNCED), bg.wait_state(FeedState.CONNECTED_SYNCED))
        checks = asyncio.gather(_quiet_then_dead(sim, bi, silenced, no_pong),
                                _quiet_then_dead(sim, bg, silenced, no_pong))
        await asyncio.sleep(0.2)
        sim.faults.set("silence", 0.01)          # data stops on every connection; pongs go on
        silenced.set()
        await asyncio.sleep(11.2)
        sim.faults.set("no_pong", True)
        no_pong.set()
        await checks
        sim.faults.clear()
        for h in (bi, bg):
            await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
            assert h.book_matches_truth() or await h.wait_for(h.book_matches_truth, 5, "truth") is None


def test_default_stale_limits_follow_the_update_rates() -> None:
    from obitui.config import default_feeds
    limits = {f.channel: f.stale_limit() for f in default_feeds()}
    assert limits == {"depth": 60.0, "books": 60.0, "ticker": 60.0, "trade": 300.0}
    f = default_feeds()[0]
    f.stale_after = 7.5
    assert f.stale_limit() == 7.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _reason_for(sim: Simulator, url: str, timeout: float = 10.0) -> str:
    async with FeedHarness(sim, "Bg-PR", ws_url=url) as h:
        await h.wait_for(lambda: h.state == FeedState.BACKOFF, timeout, "backoff")
        assert h.count("connect_failures") >= 1
        return h.feed.stats.reason


async def test_connect_failures_name_the_cause_and_the_host(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS: a name that cannot resolve (.invalid is reserved for that)
    dns = await _reason_for(sim, "wss://stream.obitui-test.invalid:9443/ws")
    assert dns.startswith("DNS: stream.obitui-test.invalid not resolved"), dns
    # nothing listens on the port
    port = _free_port()
    assert await _reason_for(sim, f"ws://127.0.0.1:{port}/ws") == f"refused: 127.0.0.1:{port}"

    # an HTTP answer instead of the upgrade (a venue that blocks the region answers 451)
    async def blocked(request: web.Request) -> web.Response:
        return web.Response(status=451, text="Unavailable For Legal Reasons")
    app = web.Application()
    app.router.add_get("/ws", blocked)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    try:
        assert await _reason_for(sim, f"ws://127.0.0.1:{http_port}/ws") == f"HTTP 451 from 127.0.0.1:{http_port}"
        # TLS asked of a server that speaks plain HTTP
        reason = await _reason_for(sim, f"wss://127.0.0.1:{http_port}/ws")
        assert reason.startswith("TLS: ") and reason.endswith(f"(127.0.0.1:{http_port})"), reason
    finally:
        await runner.cleanup()

    # a server that accepts and never answers
    monkeypatch.setattr(base, "CONNECT_TIMEOUT", 1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        p = silent.getsockname()[1]
        assert await _reason_for(sim, f"ws://127.0.0.1:{p}/ws") == f"timeout after 1 s: 127.0.0.1:{p}"
    finally:
        silent.close()

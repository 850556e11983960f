"""Binance spot protocol conformance (issue #17): the simulator enforces the real venue's limits
and counts every breach, sends what the venue sends (serverShutdown, aggTrade, paced depth
streams, exchangeInfo), and the Binance feeds keep within the limits and ride a
serverShutdown without a gap."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import websockets

import obitui.feeds.budget as budget
import obitui.sim.binance as sim_binance
from obitui.core.book import OrderBook
from obitui.core.records import Kind
from obitui.core.stats import Command, FeedState
from obitui.feeds.binance.sync import DepthSync, SyncResult, parse_depth_event, parse_snapshot
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)


async def started(**kw: object) -> Simulator:
    base: dict[str, object] = dict(seed=11, rate=100.0, depth=300, ping_interval=1.0, pong_timeout=3.0)
    base.update(kw)
    s = Simulator(SimConfig(**base))  # type: ignore[arg-type]
    await s.start()
    return s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = await started()
    try:
        yield s
    finally:
        await s.stop()


async def get(sim: Simulator, path: str, **params: object) -> tuple[int, dict[str, str], object]:
    async with aiohttp.ClientSession() as s:
        async with s.get(sim.binance_rest_url + path, params={k: str(v) for k, v in params.items()}) as r:
            return r.status, dict(r.headers), orjson.loads(await r.read())


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


# ------------------------------------------------------------------ WebSocket message rate
@pytest.mark.parametrize("kind", ["text", "ping"])
async def test_ws_more_than_5_messages_a_second_is_cut_and_counted(sim: Simulator, kind: str) -> None:
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@trade") as ws:
        for i in range(6):
            if kind == "text":
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
            else:
                await ws.ping()
        with pytest.raises(websockets.ConnectionClosed) as err:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert err.value.rcvd is not None and err.value.rcvd.code == 1008
    assert sim.violations == {"binance_ws_msg_rate": 1}


async def test_ws_paced_messages_are_served(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/ws") as ws:
        for i in range(8):      # 8 requests over 2 s: at most 5 in any second
            await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
            assert await recv_json(ws) == {"result": [], "id": i}
            await asyncio.sleep(0.25)
    assert sim.violations == {}


# ------------------------------------------------------------------ REST weights and bans
async def test_depth_limit_weights_and_cap(sim: Simulator) -> None:
    used = 0
    for limit, weight in ((1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50),
                          (1001, 250), (5000, 250), (6000, 250)):
        status, headers, body = await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=limit)
        used += weight
        assert status == 200 and int(headers["x-mbx-used-weight-1m"]) == used, (limit, headers)
        # the book holds ~300 levels a side: a limit > 5000 is served (as 5000), not refused
        assert len(body["bids"]) == limit if limit <= 200 else 200 < len(body["bids"]) <= limit
    # errors carry the header too (and use no weight)
    status, headers, body = await get(sim, "/api/v3/depth", symbol="NOPE", limit=5)
    assert status == 400 and body["code"] == -1121 and int(headers["x-mbx-used-weight-1m"]) == used
    assert sim.violations == {}


async def test_weight_over_the_minute_is_429_then_418_for_not_backing_off(sim: Simulator) -> None:
    sim.config.weight_limit = 100
    assert [(await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=1000))[0] for _ in range(2)] == [200, 200]
    status, headers, body = await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=1000)
    assert status == 429 and body["code"] == -1003
    assert 1 <= int(headers["Retry-After"]) <= 60 and headers["x-mbx-used-weight-1m"] == "100"
    assert sim.violations == {"binance_rest_weight": 1}
    # a client that keeps sending before Retry-After ends: banned (418, Retry-After)
    status, headers, body = await get(sim, "/api/v3/ping")
    assert status == 418 and int(headers["Retry-After"]) >= 1 and "x-mbx-used-weight-1m" in headers
    status, headers, _ = await get(sim, "/api/v3/time")
    assert status == 418 and "x-mbx-used-weight-1m" in headers
    assert sim.violations == {"binance_rest_weight": 1, "binance_rest_retry_after": 1, "binance_rest_banned": 1}
    assert sim.counters["http_429"] == 1 and sim.counters["http_418"] == 2


async def test_waiting_for_retry_after_is_not_a_ban(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_binance, "WEIGHT_WINDOW_S", 2.0)     # a 2 s "minute"
    sim.config.weight_limit = 50
    for _ in range(2):
        statuses = []
        while not statuses or statuses[-1] == 200:
            status, headers, _ = await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=1000)
            statuses.append(status)
        assert statuses[-1] == 429
        await asyncio.sleep(float(headers["Retry-After"]))
        assert (await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=1000))[0] == 200
    assert set(sim.violations) == {"binance_rest_weight"}      # the 429s; no ban


async def test_exchange_info(sim: Simulator) -> None:
    status, headers, body = await get(sim, "/api/v3/exchangeInfo")
    assert status == 200 and headers["x-mbx-used-weight-1m"] == "20"
    assert body["timezone"] == "UTC" and isinstance(body["serverTime"], int)
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
            "limit": 6000} in body["rateLimits"]
    by = {s["symbol"]: s for s in body["symbols"]}
    assert set(by) == {"BTCUSDT", "ETHUSDT"}
    btc = by["BTCUSDT"]
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    eth = {f["filterType"]: f for f in by["ETHUSDT"]["filters"]}
    assert eth["LOT_SIZE"]["stepSize"] == "0.00010000"
    # the tick and step agree with what the streams send
    _, _, depth = await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=5)
    assert len(depth["bids"][0][0].split(".")[1]) == 8
    status, headers, body = await get(sim, "/api/v3/exchangeInfo", symbol="ETHUSDT")
    assert status == 200 and [s["symbol"] for s in body["symbols"]] == ["ETHUSDT"]
    assert headers["x-mbx-used-weight-1m"] == "45"
    status, _, body = await get(sim, "/api/v3/exchangeInfo", symbols='["ETHUSDT","BTCUSDT"]')
    assert status == 200 and [s["symbol"] for s in body["symbols"]] == ["ETHUSDT", "BTCUSDT"]
    status, _, body = await get(sim, "/api/v3/exchangeInfo", symbol="NOPEUSDT")
    assert status == 400 and body["code"] == -1121
    status, _, body = await get(sim, "/api/v3/exchangeInfo", symbols="BTCUSDT")
    assert status == 400 and body["code"] == -1100
    assert sim.violations == {}


# ------------------------------------------------------------------ streams
async def test_agg_trade_stream(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/stream?streams=btcusdt@aggTrade") as ws:
        events = []
        while len(events) < 5:
            msg = await recv_json(ws)
            assert msg["stream"] == "btcusdt@aggTrade"
            events.append(msg["data"])
    for d in events:
        assert set(d) >= {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}
        assert d["e"] == "aggTrade" and d["s"] == "BTCUSDT"
        assert all(isinstance(d[k], int) for k in ("E", "a", "f", "l", "T")) and isinstance(d["m"], bool)
        assert d["f"] <= d["l"] and float(d["p"]) > 0 and float(d["q"]) > 0
        assert len(d["p"].split(".")[1]) == 8 and len(d["q"].split(".")[1]) == 8
    ids = [d["a"] for d in events]
    assert ids == sorted(set(ids))


async def test_depth_streams_are_paced_and_continuous(sim: Simulator) -> None:
    """100 steps/s: `@depth@100ms` pushes at most 10 events/s and `@depth` one a second, each
    the diff accumulated since the previous push (U = previous u + 1), and applying them to a
    snapshot gives the true book."""
    url = sim.binance_ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@depth"
    async with websockets.connect(url) as ws:
        events: dict[str, list[tuple[float, dict]]] = {"btcusdt@depth@100ms": [], "btcusdt@depth": []}
        sync = DepthSync(OrderBook(8))
        await recv_json(ws)             # the first push may hold what came before we connected
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            msg = await recv_json(ws)
            events[msg["stream"]].append((time.monotonic(), msg["data"]))
            if msg["stream"] == "btcusdt@depth@100ms":
                res = sync.on_event(parse_depth_event(msg["data"]))
                if res is SyncResult.BUFFERED and len(sync.buffer) == 1:
                    _, _, body = await get(sim, "/api/v3/depth", symbol="BTCUSDT", limit=1000)
                    assert sync.on_snapshot(*parse_snapshot(body)) is SyncResult.SYNCED
                else:
                    assert res in (SyncResult.APPLIED, SyncResult.ALREADY_APPLIED)
    fast, slow = events["btcusdt@depth@100ms"], events["btcusdt@depth"]
    assert 15 <= len(fast) <= 31, len(fast)
    assert 2 <= len(slow) <= 4, len(slow)
    for evs in (fast, slow):
        for (_, a), (_, b) in zip(evs, evs[1:]):
            assert b["U"] == a["u"] + 1
    # many market steps in each push (100 steps/s)
    assert sum(d["u"] - d["U"] + 1 for _, d in fast) > 3 * len(fast)
    truth = sim.truth("binance", "BTCUSDT", sync.book.update_id)
    assert truth is not None
    bids, asks = sync.book.top(100)
    assert [tuple(x) for x in truth["bids"][:100]] == bids and [tuple(x) for x in truth["asks"][:100]] == asks


async def test_server_shutdown_is_announced_then_the_connection_closed(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/stream?streams=btcusdt@trade") as old, \
            websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as raw:
        sim.faults.set("server_shutdown", 1.0)
        t0 = time.monotonic()
        while (msg := await recv_json(old))["stream"] != "!serverShutdown":
            pass
        assert msg["data"]["e"] == "serverShutdown" and isinstance(msg["data"]["E"], int)
        while (d := await recv_json(raw)).get("e") != "serverShutdown":
            pass
        assert set(d) == {"e", "E"}
        assert not sim.faults.server_shutdown           # one-shot
        async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as new:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(old.recv(), 5)
            assert 0.8 < time.monotonic() - t0 < 3.0
            await recv_json(new)                           # opened after the notice: served on
            assert not new.close_code
    assert sim.counters["binance_server_shutdowns"] == 1


# ------------------------------------------------------------------ the feeds
@pytest.mark.parametrize("label", ["Bi-OB", "Bi-TR"])
async def test_feed_rides_server_shutdown_make_before_break(sim: Simulator, label: str) -> None:
    want = FeedState.CONNECTED if label == "Bi-TR" else FeedState.CONNECTED_SYNCED
    async with FeedHarness(sim, label) as h:
        await h.wait_state(want)
        kinds: list[int] = []

        def drain() -> None:
            kinds.extend(k for k, _, _ in h.consumer.pop_batch(100_000))
        drain()
        sim.faults.set("server_shutdown", 2.0)
        await h.wait_for(lambda: (drain(), h.count("server_shutdowns") == 1 and h.count("rotations") == 1)[1],
                         10, "the shutdown counted and a rotation")
        await asyncio.sleep(2.5)          # the old connection is closed by the venue meanwhile
        drain()
        for name in ("gaps", "resyncs", "reconnects", "ring_drops", "parse_errors"):
            assert h.count(name) == 0, (name, h.count(name))
        assert h.state == want and Kind.BOOK_INVALID not in kinds
        assert len(sim.binance.conns) == 1
        if label == "Bi-OB":
            await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth")


async def test_depth_feed_keeps_the_rest_weight_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for two snapshots a (3 s) minute: resyncs beyond that wait for the next minute
    instead of drawing a 429 (the harness asserts the simulator counted no violation)."""
    monkeypatch.setattr(sim_binance, "WEIGHT_WINDOW_S", 3.0)
    monkeypatch.setattr(budget, "WEIGHT_WINDOW_S", 3.0)
    monkeypatch.setattr(budget, "WEIGHT_MARGIN_S", 0.1)
    s = await started(weight_limit=120)
    try:
        h = FeedHarness(s, "Bi-OB", snapshot_limit=1000)       # weight 50
        h.feed.budget.limit = 120                              # type: ignore[attr-defined]
        async with h:
            await h.wait_state(FeedState.CONNECTED_SYNCED)
            for n in range(2, 6):
                seq = h.stats.send_command(0, Command.RESYNC)
                await h.wait_for(lambda: h.stats.read_ack(0)[0] == seq, 5, "ack")
                await h.wait_for(lambda: h.count("snapshots") == n and h.state == FeedState.CONNECTED_SYNCED,
                                 10, f"snapshot {n}")
            assert s.violations == {} and h.count("http_429") == 0
            assert h.count("rest_weight_waits") >= 1
            assert any(r.startswith("rest_weight") for _, r in h.states)
            await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth")
        assert s.violations == {} and s.counters.get("http_429", 0) == 0
    finally:
        await s.stop()


async def test_depth_feed_honours_retry_after_across_a_reconnect() -> None:
    """A 418's Retry-After outlives the connection: the new session does not ask for its
    snapshot before the ban is over."""
    s = await started(retry_after_418=3)
    s.faults.set("http_418", 1)
    try:
        async with FeedHarness(s, "Bi-OB") as h:
            await h.wait_for(lambda: h.count("http_418") == 1, 10, "the 418")
            seq = h.stats.send_command(0, Command.RECONNECT)
            await h.wait_for(lambda: h.stats.read_ack(0)[0] == seq, 5, "ack")
            await h.wait_for(lambda: h.count("reconnects") == 1, 5, "the reconnect")
            await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
        assert s.violations == {}
    finally:
        await s.stop()


# ------------------------------------------------------------------ the soak
def test_soak_has_server_shutdown() -> None:
    from obitui.config import load_config
    from obitui.core.stats import FEED_COUNTERS
    from obitui.sim.faults import Faults
    from obitui.soak import fault_kinds
    k = {k.name: k for k in fault_kinds(load_config(None))}["server_shutdown"]
    assert k.sim == ("server_shutdown", 3.0)
    assert k.detect == {"Bi-OB": ("server_shutdowns",), "Bi-TR": ("server_shutdowns",)}
    assert set(k.unmoved) >= {"gaps", "resyncs"} and k.must_move == ("rotations",)
    assert k.settle > k.sim[1]       # judged after the venue closed the old connections
    assert all(c in FEED_COUNTERS for c in k.unmoved + k.must_move + ("server_shutdowns",))
    f = Faults()
    f.set(*k.sim)
    assert f.server_shutdown == 3.0

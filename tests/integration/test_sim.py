"""The simulator driven by plain websockets/aiohttp clients over loopback: protocol
conformance, every fault knob, truth, replay, determinism and clean shutdown."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets

from obitui.capture import convert_cryptofeed, read_capture, write_capture
from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum
from obitui.feeds.binance.sync import DepthSync, SyncResult, parse_depth_event, parse_snapshot
from obitui.sim.conn import OVERSIZE_BYTES
from obitui.sim.faults import FaultError, Faults, parse_fault
from obitui.sim.market import MarketModel, SymbolSpec
from obitui.sim.replay import ReplaySimulator
from obitui.sim.server import PortInUseError, SimConfig, Simulator

pytestmark = pytest.mark.timeout(60)

BOOKS = {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}


def fast_config(**kw: object) -> SimConfig:
    # Binance pings at 0.5 s: a client's pongs stay well inside the 5 messages/s limit
    base = dict(seed=3, rate=200.0, depth=300, ping_interval=0.5, pong_timeout=1.0,
                bitget_ping_timeout=1.0)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(fast_config())
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def depth_events(ws: websockets.ClientConnection, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        msg = await recv_json(ws)
        data = msg.get("data", msg)
        if data.get("e") == "depthUpdate":
            out.append(data)
    return out


async def rest_depth(sim: Simulator, limit: int = 5000, symbol: str = "BTCUSDT") -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim.binance_rest_url}/api/v3/depth", params={"symbol": symbol, "limit": limit}) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


# ------------------------------------------------------------------ Binance
async def test_binance_combined_and_raw_streams(sim: Simulator) -> None:
    url = sim.binance_ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
    async with websockets.connect(url) as ws:
        seen = set()
        prev_u = None
        while len(seen) < 2:
            msg = await recv_json(ws)
            assert set(msg) == {"stream", "data"}
            seen.add(msg["stream"])
            d = msg["data"]
            if d["e"] == "depthUpdate":
                assert d["s"] == "BTCUSDT" and d["U"] <= d["u"]
                if prev_u is not None:
                    assert d["U"] == prev_u + 1
                prev_u = d["u"]
                for p, q in d["b"] + d["a"]:
                    assert len(p.split(".")[1]) == 8 and len(q.split(".")[1]) == 8
            else:
                assert d["e"] == "trade" and isinstance(d["m"], bool) and isinstance(d["t"], int)
        assert seen == {"btcusdt@depth@100ms", "btcusdt@trade"}
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth") as ws:
        d = await recv_json(ws)
        assert d["e"] == "depthUpdate"  # raw stream: no wrapper


async def test_binance_live_subscribe(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/ws") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@depth@100ms"],"id":7}')
        assert await recv_json(ws) == {"result": None, "id": 7}
        assert (await depth_events(ws, 1))[0]["s"] == "ETHUSDT"
        await asyncio.sleep(0.4)    # the client's messages are paced: 5/s at most
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
        while (m := await recv_json(ws)).get("id") != 8:
            pass
        assert m["result"] == ["ethusdt@depth@100ms"]
        await asyncio.sleep(0.4)
        await ws.send('{"method":"UNSUBSCRIBE","params":["ethusdt@depth@100ms"],"id":9}')
        while (m := await recv_json(ws)).get("id") != 9:
            pass
        assert m == {"result": None, "id": 9}
        await asyncio.sleep(0.4)
        await ws.send('{"method":"SUBSCRIBE","params":["NOT A STREAM"],"id":10}')
        while (m := await recv_json(ws)).get("id") != 10:
            pass
        assert m["error"]["code"] == 2
        await asyncio.sleep(0.4)
        await ws.send('{"method":"EXPLODE","id":11}')
        while (m := await recv_json(ws)).get("id") != 11:
            pass
        assert m["error"]["code"] == 2
        await asyncio.sleep(0.4)
        await ws.send("{not json")
        while "error" not in (m := await recv_json(ws)):
            pass
        assert m["error"]["code"] == 3
    assert sim.violations == {}


async def test_binance_snapshot_consistent_with_stream_and_truth(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as ws:
        sync = DepthSync(OrderBook(8))
        first = await depth_events(ws, 3)
        for d in first:
            assert sync.on_event(parse_depth_event(d)) is SyncResult.BUFFERED
        status, headers, body = await rest_depth(sim)
        assert status == 200 and int(headers["x-mbx-used-weight-1m"]) == 250
        assert sync.on_snapshot(*parse_snapshot(body)) is SyncResult.SYNCED
        for d in await depth_events(ws, 40):
            assert sync.on_event(parse_depth_event(d)) in (SyncResult.APPLIED, SyncResult.ALREADY_APPLIED)
        truth = sim.truth("binance", "BTCUSDT", sync.book.update_id)
        assert truth is not None
        bids, asks = sync.book.top(10_000)
        assert [tuple(x) for x in truth["bids"]] == bids and [tuple(x) for x in truth["asks"]] == asks
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{sim.binance_rest_url}/sim/truth",
                             params={"venue": "binance", "symbol": "BTCUSDT", "id": sync.book.update_id}) as r:
                assert await r.json() == truth


async def test_binance_rest_errors_and_weights(sim: Simulator) -> None:
    assert (await rest_depth(sim, 5, "NOPE"))[2]["code"] == -1121
    assert (await rest_depth(sim, 0))[0] == 400
    sim.config.weight_limit = 600
    codes = [(await rest_depth(sim, 5000))[:2] for _ in range(3)]
    assert [c for c, _ in codes] == [200, 200, 429]
    assert int(codes[2][1]["Retry-After"]) >= 1 and codes[2][1]["x-mbx-used-weight-1m"] == "500"
    # a request before the 429's Retry-After ended, however light: the IP is banned
    status, headers, _ = await rest_depth(sim, 10)
    assert status == 418 and int(headers["Retry-After"]) >= 1 and "x-mbx-used-weight-1m" in headers
    assert (await rest_depth(sim, 10))[0] == 418     # and stays banned meanwhile
    assert sim.violations == {"binance_rest_weight": 1, "binance_rest_retry_after": 1,
                              "binance_rest_banned": 1}


async def test_binance_server_pings_and_pong_timeout(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(sim.binance_ws_url + "/ws/btcusdt@trade", autoping=False) as ws:
            got_ping = False
            t0 = time.monotonic()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.PING:
                    got_ping = True          # and deliberately never answered
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert got_ping
            assert ws.close_code == 1008 and 0.8 < time.monotonic() - t0 < 5
    assert sim.counters["closed_no_pong"] == 1
    # a client that answers (websockets does) stays connected
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth") as ws:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:   # reading, so the library answers the pings
            await depth_events(ws, 1)
    assert sim.counters["closed_no_pong"] == 1


# ------------------------------------------------------------------ Bitget
async def test_bitget_subscribe_snapshot_updates_and_errors(sim: Simulator) -> None:
    sim.config.bitget_checksum = True
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [
            BOOKS, {"instType": "SPOT", "channel": "books", "instId": "NOPEUSDT"},
            {"instType": "SPOT", "channel": "books50", "instId": "BTCUSDT"},
            {"instType": "USDT-FUTURES", "channel": "books", "instId": "ETHUSDT"}]}).decode())
        assert await recv_json(ws) == {"event": "subscribe", "arg": BOOKS}
        snap = await recv_json(ws)
        assert snap["action"] == "snapshot" and snap["data"][0]["pseq"] == 0
        err = await recv_json(ws)
        assert err["event"] == "error" and err["code"] == 30001 and "NOPEUSDT" in err["msg"]
        err = await recv_json(ws)
        assert err["code"] == 30016 and err["msg"] == "Param error"
        ack = await recv_json(ws)  # a real symbol under another instType: acked, then silent
        assert ack["event"] == "subscribe" and ack["arg"]["instType"] == "USDT-FUTURES"
        book = OrderBook(8)
        d = snap["data"][0]
        book.apply_snapshot(d["bids"], d["asks"])
        assert bitget_checksum(book) == d["checksum"]
        prev = d["seq"]
        for _ in range(40):
            m = await recv_json(ws)
            assert m["arg"] == BOOKS and m["action"] == "update"
            d = m["data"][0]
            assert d["pseq"] == prev and d["seq"] > prev
            book.apply(d["bids"], d["asks"])
            assert bitget_checksum(book) == d["checksum"]
            prev = d["seq"]
        truth = sim.truth("bitget", "BTCUSDT", prev)
        assert [tuple(x) for x in truth["bids"]] == book.top(10_000)[0]
        assert [tuple(x) for x in truth["asks"]] == book.top(10_000)[1]


async def test_bitget_ticker_trade_and_ping(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [
            {"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"},
            {"instType": "SPOT", "channel": "trade", "instId": "BTCUSDT"}]}).decode())
        kinds = set()
        while len(kinds) < 3:
            m = await recv_json(ws)
            if m.get("event"):
                continue
            ch, act = m["arg"]["channel"], m["action"]
            kinds.add((ch, act if ch == "trade" else "any"))
            if ch == "ticker":
                t = m["data"][0]
                assert {"lastPr", "bidPr", "askPr", "bidSz", "askSz", "ts"} <= set(t)
                assert float(t["bidPr"]) < float(t["askPr"])
            else:
                for tr in m["data"]:
                    assert tr["side"] in ("buy", "sell") and tr["tradeId"]
        assert kinds == {("ticker", "any"), ("trade", "snapshot"), ("trade", "update")}
        await ws.send("ping")
        for _ in range(200):
            if await asyncio.wait_for(ws.recv(), 5) == "pong":
                break
        else:
            pytest.fail("no pong")


async def test_bitget_disconnects_without_pings(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_ws_url) as ws:
        t0 = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert 0.8 < time.monotonic() - t0 < 5
    assert sim.counters["closed_no_ping"] >= 1


# ------------------------------------------------------------------ faults
async def _collect_binance(sim: Simulator, n: int) -> list[dict]:
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as ws:
        return await depth_events(ws, n)


async def test_fault_gap_reorder_duplicate(sim: Simulator) -> None:
    sim.faults.set("gap", 0.2)
    ev = await _collect_binance(sim, 30)
    assert any(b["U"] > a["u"] + 1 for a, b in zip(ev, ev[1:]))
    assert sim.counters["injected_gap"] > 0
    sim.faults.clear()
    sim.faults.set("reorder", 0.2)
    ev = await _collect_binance(sim, 30)
    assert any(b["u"] < a["U"] for a, b in zip(ev, ev[1:]))
    sim.faults.clear()
    sim.faults.set("duplicate", 0.2)
    ev = await _collect_binance(sim, 30)
    assert any(b["U"] == a["U"] and b["u"] == a["u"] for a, b in zip(ev, ev[1:]))


async def test_fault_gap_on_bitget_breaks_the_seq_chain(sim: Simulator) -> None:
    sim.faults.set("gap", 0.3)
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [BOOKS]}).decode())
        await recv_json(ws)
        prev = (await recv_json(ws))["data"][0]["seq"]
        broken = 0
        for _ in range(40):
            d = (await recv_json(ws))["data"][0]
            broken += d["pseq"] != prev
            prev = d["seq"]
        assert broken > 0


async def test_fault_bad_checksum(sim: Simulator) -> None:
    sim.faults.set("bad_checksum", 0.3)
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [BOOKS]}).decode())
        await recv_json(ws)
        book = OrderBook(8)
        bad = 0
        for i in range(40):
            m = await recv_json(ws)
            d = m["data"][0]
            (book.apply_snapshot if i == 0 else book.apply)(d["bids"], d["asks"])
            bad += bitget_checksum(book) != d["checksum"]
        assert bad > 0 and sim.counters["injected_bad_checksum"] == bad


async def test_fault_stale_snapshot_and_http_codes(sim: Simulator) -> None:
    await asyncio.sleep(3)   # build up history: the stale snapshot comes from it
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as ws:
        first_u = (await depth_events(ws, 1))[0]["U"]
        sim.faults.set("stale_snapshot", 1)
        _, _, body = await rest_depth(sim)
        assert body["lastUpdateId"] < first_u
        _, _, body = await rest_depth(sim)
        assert body["lastUpdateId"] >= first_u
    sim.faults.set("http_429", 1)
    status, headers, body = await rest_depth(sim, 10)
    assert status == 429 and headers["Retry-After"] == "1" and body["code"] == -1003
    await asyncio.sleep(1.0)      # honoured: no ban
    sim.faults.set("http_418", 1)
    status, headers, _ = await rest_depth(sim, 10)
    assert status == 418 and int(headers["Retry-After"]) >= 1
    await asyncio.sleep(int(headers["Retry-After"]))
    assert (await rest_depth(sim, 10))[0] == 200
    assert sim.violations == {}


async def test_fault_disconnect_and_silence(sim: Simulator) -> None:
    sim.faults.set("disconnect", 0.5)
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth") as ws:
        t0 = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert 0.4 < time.monotonic() - t0 < 3
    sim.faults.clear()
    sim.faults.set("silence", 0.5)
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [BOOKS]}).decode())
        await asyncio.sleep(0.7)
        while True:   # drain what was sent before the silence
            try:
                await asyncio.wait_for(ws.recv(), 0.3)
            except asyncio.TimeoutError:
                break
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 2) == "pong"   # socket alive, pings answered
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)               # but no data


async def test_fault_malformed_and_oversize(sim: Simulator) -> None:
    sim.faults.set("malformed", 0.3)
    bad = 0
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as ws:
        for _ in range(60):
            text = await asyncio.wait_for(ws.recv(), 5)
            try:
                d = orjson.loads(text)
                parse_depth_event(d)
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                bad += 1
    assert bad > 0
    sim.faults.clear()
    sim.faults.set("oversize", 0.5)
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth", max_size=1 << 20) as ws:
        with pytest.raises(websockets.ConnectionClosedError) as err:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    # the simulator's 2 MiB frame (a JSON string: 2 quotes more) reached the client, which
    # refused it with 1009 and, failing the connection (RFC 6455 7.1.7), read nothing after it:
    # no Close from the server is ever received
    assert sim.counters["injected_oversize"] >= 1
    assert err.value.sent is not None and err.value.sent.code == 1009, err.value
    assert f"{OVERSIZE_BYTES + 2} bytes" in err.value.sent.reason, err.value.sent.reason
    assert err.value.rcvd is None, err.value


@pytest.mark.parametrize("venue", ["binance", "bitget"])
async def test_sim_closes_1009_on_an_oversize_client_message(sim: Simulator, venue: str) -> None:
    """The other direction: a client message above the simulator's 64 KiB limit is answered
    by the simulator's own Close 1009, which the client echoes."""
    url = sim.binance_ws_url + "/ws/btcusdt@depth" if venue == "binance" else sim.bitget_ws_url
    async with websockets.connect(url) as ws:
        await ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosedError) as err:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert err.value.rcvd is not None and err.value.rcvd.code == 1009, err.value
    assert err.value.rcvd_then_sent is True and err.value.sent is not None
    assert err.value.sent.code == 1009, err.value


async def test_fault_no_pong_and_no_ping_check(sim: Simulator) -> None:
    sim.faults.set("no_pong")
    sim.faults.set("no_ping_check")
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send("ping")
        await asyncio.sleep(1.5)     # longer than bitget_ping_timeout: still connected
        with pytest.raises(asyncio.TimeoutError):
            while True:
                assert await asyncio.wait_for(ws.recv(), 0.5) != "pong"
        await ws.send('{"op":"subscribe","args":[{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"}]}')
        assert (await recv_json(ws))["event"] == "subscribe"


async def test_fault_burst(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@depth@100ms") as ws:
        sim.faults.set("burst", 3000)
        await depth_events(ws, 3)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.0:
            d = await recv_json(ws)
            n += d["u"] - d["U"] + 1     # the pushes are paced; the updates they carry are not
    assert n > 1000, n


def test_fault_parsing() -> None:
    assert parse_fault("gap") == ("gap", 0.05)
    assert parse_fault("gap=0.5") == ("gap", 0.5)
    assert parse_fault("burst=5000") == ("burst", 5000.0)
    assert parse_fault("no_pong=off") == ("no_pong", False)
    for bad in ("nope", "gap=2", "gap=x", "disconnect=-1", "no_pong=maybe"):
        with pytest.raises(FaultError):
            parse_fault(bad)
    f = Faults.from_specs(["gap=0.1", "http_429=3"])
    assert f.active() == {"gap": 0.1, "http_429": 3}


async def test_fault_control_endpoint(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.binance_rest_url}/sim/fault", params={"name": "gap", "value": "0.25"}) as r:
            assert r.status == 200 and (await r.json()) == {"gap": 0.25}
        async with s.post(f"{sim.binance_rest_url}/sim/fault", params={"name": "bogus"}) as r:
            assert r.status == 400
        async with s.post(f"{sim.binance_rest_url}/sim/fault", params={"clear": ""}) as r:
            assert (await r.json()) == {}


# ------------------------------------------------------------------ model, replay, life cycle
def test_market_model_is_deterministic() -> None:
    spec = SymbolSpec("BTCUSDT", 2, 5, 2_700_000, 300)
    a, b, c = MarketModel(spec, 11), MarketModel(spec, 11), MarketModel(spec, 12)
    sa = [a.step() for _ in range(2000)]
    sb = [b.step() for _ in range(2000)]
    assert [(s.first_id, s.last_id, s.seq, s.changes, [t.price for t in s.trades]) for s in sa] == \
           [(s.first_id, s.last_id, s.seq, s.changes, [t.price for t in s.trades]) for s in sb]
    assert [s.changes for s in sa[:50]] != [c.step().changes for _ in range(50)]
    assert a.best_bid() < a.best_ask() and a.best_ask() - a.best_bid() <= 3
    assert 250 <= len(a.bids) <= 360 and 250 <= len(a.asks) <= 360


def test_every_step_changes_the_book_even_with_one_lot_orders() -> None:
    """A market whose typical order is one lot (qty_decimals 0, a low-priced coin) drew the size
    a level already had often enough that a step could carry no change: a Binance diff with
    U = u + 1, which the feed rightly refused as a parse error. Every step changes something."""
    for seed in range(6):
        m = MarketModel(SymbolSpec("PEPEUSDT", 8, 0, 900, 300, typical_lots=1), seed)
        for _ in range(3000):
            st = m.step()
            assert st.changes, f"seed {seed}: a step without changes"
            assert st.first_id <= st.last_id


async def test_replay_serves_a_recording_frame_for_frame(test_data: Path, tmp_path: Path) -> None:
    cap = tmp_path / "bitget.jsonl.zst"
    records = list(convert_cryptofeed(test_data / "recorded" / "BITGET.ws.1.0"))
    assert write_capture(cap, records) == len(records) == 684
    assert [r.data for r in read_capture(cap)] == [r.data for r in records]
    async with ReplaySimulator(cap, speed=0) as rs:
        async with websockets.connect(rs.bitget_ws_url) as ws:   # no subscribe: everything
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in records]
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        assert got == [r.data for r in records]
        # a subscriber gets its channel only, acknowledged by the replay
        arg = {"instType": "SP", "channel": "books", "instId": "EOSUSDT"}
        want = [r.data for r in records if '"channel":"books","instId":"EOSUSDT"}' in r.data
                and '"action"' in r.data]
        async with websockets.connect(rs.bitget_ws_url) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "args": [arg]}).decode())
            assert await recv_json(ws) == {"event": "subscribe", "arg": arg}
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in want]
            assert got == want
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
        assert rs.finished.is_set()


async def test_replay_rest_bodies_by_symbol_and_pacing(test_data: Path, tmp_path: Path) -> None:
    cap = tmp_path / "binance.jsonl"
    http = list(convert_cryptofeed(test_data / "recorded" / "BINANCE.http.0.0"))
    write_capture(cap, http)
    ws_recs = list(convert_cryptofeed(test_data / "recorded" / "BINANCE.ws.1.0"))[:20]
    write_capture(cap, ws_recs)
    async with ReplaySimulator(cap, speed=4.0) as rs:
        async with aiohttp.ClientSession() as s:
            for rec in http:
                sym = rec.url.split("symbol=")[1].split("&")[0]
                async with s.get(rs.binance_rest_url + f"/api/v3/depth?symbol={sym}&limit=1000") as r:
                    assert (await r.json())["lastUpdateId"] == orjson.loads(rec.data)["lastUpdateId"]
            async with s.get(rs.binance_rest_url + "/api/v3/depth?symbol=NOPE") as r:
                assert r.status == 404
        async with websockets.connect(rs.binance_ws_url + "/stream") as ws:
            t0 = time.monotonic()
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in ws_recs]
            took = time.monotonic() - t0
        span = (ws_recs[-1].t - ws_recs[0].t) / 1e9
        assert got == [r.data for r in ws_recs]
        assert took >= span / 4 * 0.8
        async with websockets.connect(rs.binance_ws_url + "/stream?streams=nknusdt@depth@100ms") as ws:
            want = [r.data for r in ws_recs if '"stream":"nknusdt@depth@100ms"' in r.data]
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in want]
            assert got == want


async def test_clean_shutdown_closes_clients_ports_and_tasks() -> None:
    before = asyncio.all_tasks()
    s = Simulator(fast_config())
    await s.start()
    port = s.ports["binance"]
    ws = await websockets.connect(s.binance_ws_url + "/ws/btcusdt@depth")
    await ws.recv()
    await s.stop()
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(10_000):
            await asyncio.wait_for(ws.recv(), 5)
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert asyncio.all_tasks() - before == set()


async def test_taken_port_is_a_clear_error() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=str(port)):
            await Simulator(fast_config(port_base=port)).start()
    finally:
        blocker.close()


def test_cli_prints_the_contract_lines_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "sim", "--seed", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()  # type: ignore[union-attr]
        second = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert first.startswith("binance ws=ws://127.0.0.1:") and " rest=http://127.0.0.1:" in first
        assert second.startswith("bitget ws=ws://127.0.0.1:") and second.endswith("/v2/ws/public")
        third = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert third.startswith("bitget rest=http://127.0.0.1:")   # an extension after the contract lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_rejects_unknown_symbols_and_faults() -> None:
    for args in (["--symbols", "FOOUSDT"], ["--sim-fault", "gap=7"], ["--replay", "/nonexistent.jsonl"]):
        res = subprocess.run([sys.executable, "-m", "obitui", "sim", *args], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 2 and res.stderr.startswith("obitui sim: ")
        assert "Traceback" not in res.stderr

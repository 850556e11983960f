"""The simulator's second dialect of each venue, driven by plain websockets/aiohttp clients:
Binance USD-M futures (/public and /market routes, pu chaining, /fapi/v1 REST, its own limits
and markets) and Bitget v3 UTA (/v3/ws/public over the v2 books and seq space, arg-less
errors, the v3 first-update rule, the v3 ticker)."""
from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

import obitui.sim.binance as sim_binance
from obitui.core.book import OrderBook
from obitui.feeds.binance.sync import DepthSync, SyncResult, parse_depth_event, parse_snapshot
from obitui.sim.binance import served_paths as binance_paths
from obitui.sim.bitget import served_paths as bitget_paths
from obitui.sim.server import SimConfig, Simulator


def config(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(seed=5, rate=200.0, depth=300, ping_interval=0.5, pong_timeout=1.0)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(config())
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def recv_json(ws: Any, timeout: float = 5.0) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def get(url: str, **params: object) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url, params={k: str(v) for k, v in params.items()}) as r:
            return r.status, dict(r.headers), orjson.loads(await r.read())


def sub(op: str, *args: dict[str, str]) -> str:
    return orjson.dumps({"op": op, "args": list(args)}).decode()


async def silent(ws: Any, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return True
    return False


# ================================================================== Binance USD-M futures
async def usdm_depth(ws: Any, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        msg = await recv_json(ws)
        assert set(msg) == {"stream", "data"}
        if msg["data"].get("e") == "depthUpdate":
            out.append(msg["data"])
    return out


def check_chain(events: list[dict]) -> None:
    """pu chains every event to the previous one; ids jump between events."""
    for a, b in zip(events, events[1:]):
        assert b["pu"] == a["u"], (a, b)
        assert b["U"] > a["u"] + 1, (a, b)


@pytest.mark.timeout(60)
async def test_usdm_depth_syncs_with_pu_chaining_to_the_truth(sim: Simulator) -> None:
    url = sim.binance_ws_url + "/public/stream?streams=btcusdt@depth@100ms"
    async with websockets.connect(url) as ws:
        sync = DepthSync(OrderBook(8), futures=True)
        events = await usdm_depth(ws, 3)
        for d in events:
            assert set(d) == {"e", "E", "T", "s", "U", "u", "pu", "b", "a"} and d["s"] == "BTCUSDT"
            assert sync.on_event(parse_depth_event(d)) is SyncResult.BUFFERED
        status, headers, body = await get(sim.binance_rest_url + "/fapi/v1/depth", symbol="BTCUSDT", limit=1000)
        assert status == 200 and headers["x-mbx-used-weight-1m"] == "20"
        assert set(body) == {"lastUpdateId", "E", "T", "bids", "asks"}
        last_id = body["lastUpdateId"]
        assert last_id > 2**32
        # USD-M strings: BTCUSDT tick 0.10 written with 2 decimals, quantities with 3
        p, q = body["bids"][0]
        assert p.endswith("0") and len(p.split(".")[1]) == 2 and len(q.split(".")[1]) == 3
        assert sync.on_snapshot(*parse_snapshot(body)) is SyncResult.SYNCED
        for _ in range(40):
            d = (await usdm_depth(ws, 1))[0]
            events.append(d)
            res = sync.on_event(parse_depth_event(d))
            assert res in (SyncResult.APPLIED, SyncResult.ALREADY_APPLIED), (res, sync.gap_detail)
        # what the client's rule needs: events with u < lastUpdateId dropped, then the first
        # kept one covers it (U <= lastUpdateId <= u)
        kept = [d for d in events if d["u"] >= last_id]
        assert kept and kept[0]["U"] <= last_id <= kept[0]["u"]
        check_chain(events)
        truth = sim.truth("binance-usdm", "BTCUSDT", sync.book.update_id)
        assert truth is not None and truth["update_id"] == sync.book.update_id
        bids, asks = sync.book.top(10_000)
        assert [tuple(x) for x in truth["bids"]] == bids and [tuple(x) for x in truth["asks"]] == asks
        _, _, http_truth = await get(sim.binance_rest_url + "/sim/truth", venue="binance-usdm",
                                     symbol="BTCUSDT", id=sync.book.update_id)
        assert http_truth == truth
    # separate markets: spot's book is another one
    assert sim.truth("binance", "BTCUSDT")["bids"][0] != truth["bids"][0]
    assert sim.models("binance-usdm")["BTCUSDT"] is not sim.models("binance")["BTCUSDT"]
    assert sim.violations == {}


@pytest.mark.timeout(60)
async def test_usdm_routes_trades_on_market_depth_on_public(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/market/stream?streams=btcusdt@aggTrade") as ws:
        events = []
        while len(events) < 5:
            msg = await recv_json(ws)
            assert msg["stream"] == "btcusdt@aggTrade"
            events.append(msg["data"])
    for d in events:
        assert set(d) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}
        assert d["e"] == "aggTrade" and isinstance(d["m"], bool) and d["f"] <= d["l"]
        assert len(d["p"].split(".")[1]) == 2 and len(d["q"].split(".")[1]) == 3
    async with websockets.connect(sim.binance_ws_url + "/market/ws/ethusdt@aggTrade") as ws:
        d = await recv_json(ws)
        assert d["e"] == "aggTrade" and d["s"] == "ETHUSDT"           # raw: no wrapper
    async with websockets.connect(sim.binance_ws_url + "/public/ws/btcusdt@depth@0ms") as ws:
        ev = [await recv_json(ws) for _ in range(5)]
        check_chain(ev)
    # a stream on the wrong route connects and stays silent
    for path in ("/market/stream?streams=btcusdt@depth@100ms", "/market/ws/btcusdt@depth",
                 "/public/ws/btcusdt@aggTrade", "/public/stream?streams=btcusdt@trade"):
        async with websockets.connect(sim.binance_ws_url + path) as ws:
            assert await silent(ws, 1.0), path
            assert ws.protocol.state.name == "OPEN"
    # live subscribe works on the routes too, with the route's rule
    async with websockets.connect(sim.binance_ws_url + "/public/ws") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@500ms","btcusdt@aggTrade"],"id":1}')
        assert await recv_json(ws) == {"result": None, "id": 1}
        for _ in range(3):
            assert (await recv_json(ws))["e"] == "depthUpdate"
    assert sim.violations == {}


@pytest.mark.timeout(60)
async def test_usdm_rest_limits_weights_and_exchange_info(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_binance, "WEIGHT_WINDOW_S", 3600.0)   # no minute boundary in the loop
    rest = sim.binance_rest_url
    status, headers, body = await get(rest + "/fapi/v1/depth", symbol="BTCUSDT", limit=7)
    assert status == 400 and body["code"] == -1130 and isinstance(body["msg"], str)
    assert (await get(rest + "/fapi/v1/depth", symbol="NOPEUSDT", limit=5))[2]["code"] == -1121
    used = 0
    for limit, weight in ((5, 2), (10, 2), (20, 2), (50, 2), (100, 5), (500, 10), (None, 10), (1000, 20)):
        params = {"symbol": "ETHUSDT"} | ({} if limit is None else {"limit": limit})
        status, headers, body = await get(rest + "/fapi/v1/depth", **params)
        used += weight
        assert status == 200 and int(headers["x-mbx-used-weight-1m"]) == used, (limit, headers)
        assert len(body["bids"]) == limit if limit and limit <= 100 else len(body["bids"]) >= 250
    status, headers, info = await get(rest + "/fapi/v1/exchangeInfo")
    used += 1
    assert status == 200 and int(headers["x-mbx-used-weight-1m"]) == used
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
            "limit": 2400} in info["rateLimits"]
    by = {s["symbol"]: s for s in info["symbols"]}
    assert set(by) == {"BTCUSDT", "ETHUSDT"}
    btc = by["BTCUSDT"]
    assert (btc["status"], btc["contractType"], btc["pricePrecision"], btc["quantityPrecision"]) == \
        ("TRADING", "PERPETUAL", 2, 3)
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.10" and filters["LOT_SIZE"]["stepSize"] == "0.001"
    # 20 a call up to the 2400 budget, then 429 + Retry-After and a violation
    while True:
        status, headers, _ = await get(rest + "/fapi/v1/depth", symbol="BTCUSDT", limit=1000)
        if status != 200:
            break
        used += 20
        assert int(headers["x-mbx-used-weight-1m"]) == used
    assert used <= 2400 < used + 20
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert sim.violations == {"binance_usdm_rest_weight": 1}
    # spot keeps a budget of its own
    status, headers, _ = await get(rest + "/api/v3/depth", symbol="BTCUSDT", limit=100)
    assert status == 200 and headers["x-mbx-used-weight-1m"] == "5"
    assert sim.violations == {"binance_usdm_rest_weight": 1}


@pytest.mark.timeout(60)
async def test_usdm_connection_limits(sim: Simulator) -> None:
    async with websockets.connect(sim.binance_ws_url + "/public/ws") as ws:
        for i in range(10):          # 10 a second: USD-M's limit (spot's is 5)
            await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
        for i in range(10):
            assert await recv_json(ws) == {"result": [], "id": i}
        await asyncio.sleep(1.1)
        names = [f"s{i}usdt@depth" for i in range(1025)]
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": names, "id": 99}).decode())
        m = await recv_json(ws)
        assert m["id"] == 99 and m["error"]["code"] == 2
        assert sim.violations == {"binance_usdm_streams": 1}
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": names[:1024], "id": 100}).decode())
        assert await recv_json(ws) == {"result": None, "id": 100}
        for i in range(11):
            await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
        with pytest.raises(websockets.ConnectionClosed) as err:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert err.value.rcvd is not None and err.value.rcvd.code == 1008
    assert sim.violations == {"binance_usdm_streams": 1, "binance_usdm_ws_msg_rate": 1}


@pytest.mark.timeout(60)
async def test_usdm_pings_faults_and_server_shutdown() -> None:
    s = Simulator(config(usdm_ping_interval=0.3, usdm_pong_timeout=1.0))
    await s.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(s.binance_ws_url + "/market/ws/btcusdt@aggTrade", autoping=False) as ws:
                got_ping = False
                async for msg in ws:
                    got_ping |= msg.type == aiohttp.WSMsgType.PING      # never answered
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
                assert got_ping and ws.close_code == 1008
        assert s.counters["closed_no_pong"] == 1
        s.faults.set("gap", 0.3)
        async with websockets.connect(s.binance_ws_url + "/public/ws/btcusdt@depth@100ms") as ws:
            ev = [await recv_json(ws) for _ in range(30)]
        assert any(b["pu"] != a["u"] for a, b in zip(ev, ev[1:]))
        assert s.counters["injected_gap"] > 0
        s.faults.clear()
        async with websockets.connect(s.binance_ws_url + "/public/stream?streams=btcusdt@depth") as usdm, \
                websockets.connect(s.binance_ws_url + "/ws/btcusdt@depth") as spot:
            s.faults.set("server_shutdown", 0.5)
            while (m := await recv_json(usdm))["stream"] != "!serverShutdown":
                pass
            assert m["data"]["e"] == "serverShutdown"
            while (await recv_json(spot)).get("e") != "serverShutdown":
                pass
            for ws in (usdm, spot):
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
        assert s.counters["binance_server_shutdowns"] == 1 and not s.faults.server_shutdown
    finally:
        await s.stop()


# ================================================================== Bitget v3 (UTA)
def v3_arg(topic: str, symbol: str = "BTCUSDT", inst_type: str = "spot") -> dict[str, str]:
    return {"instType": inst_type, "topic": topic, "symbol": symbol}


class V3Book:
    """A plain book and the v3 seq/pseq rules: a snapshot has pseq 0; the first update after it
    must have pseq <= snapshot seq <= seq; every later one pseq == the previous seq."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.fresh = False
        self.snapshot_seqs: list[tuple[int, int]] = []     # (snapshot seq, first update's pseq)

    def on_frame(self, msg: dict) -> None:
        (d,) = msg["data"]
        seq, pseq = int(d["seq"]), int(d["pseq"])
        if msg["action"] == "snapshot":
            assert pseq == 0 and set(d) >= {"a", "b", "seq", "pseq", "ts"}
            self.bids, self.asks = dict(map(tuple, d["b"])), dict(map(tuple, d["a"]))
            self.seq, self.fresh = seq, True
            return
        assert msg["action"] == "update" and self.seq is not None
        if self.fresh:
            assert pseq <= self.seq <= seq, (pseq, self.seq, seq)
            self.snapshot_seqs.append((self.seq, pseq))
        else:
            assert pseq == self.seq, (pseq, self.seq)
        for side, levels in ((self.bids, d["b"]), (self.asks, d["a"])):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.seq, self.fresh = seq, False

    def top(self) -> tuple[list[list[str]], list[list[str]]]:
        return ([[p, self.bids[p]] for p in sorted(self.bids, key=Decimal, reverse=True)],
                [[p, self.asks[p]] for p in sorted(self.asks, key=Decimal)])


def crc(bids: list[list[str]], asks: list[list[str]]) -> int:
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    c = zlib.crc32(":".join(parts).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


@pytest.mark.timeout(60)
async def test_v3_books_follow_the_v3_rule_and_equal_the_truth(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_v3_ws_url) as ws:
        await ws.send(sub("subscribe", v3_arg("books"), v3_arg("ticker"), v3_arg("books", "ETHUSDT")))
        books = {"BTCUSDT": V3Book(), "ETHUSDT": V3Book()}
        seen = dict.fromkeys(books, 0)
        acks: list[dict] = []
        tickers: list[dict] = []
        updates = resubscribed = 0
        inside: list[tuple[str, int, int]] = []     # (symbol, snapshot seq, first update's pseq)
        while updates < 200 or (not inside and updates < 2000):
            m = await recv_json(ws)
            if "event" in m:
                assert m["event"] == "subscribe" and set(m) == {"event", "arg"}
                acks.append(m["arg"])
                continue
            arg = m["arg"]
            if arg["topic"] == "ticker":
                tickers.append(m["data"][0])
                continue
            symbol = arg["symbol"]
            book = books[symbol]
            book.on_frame(m)
            if m["action"] == "snapshot":
                continue
            updates += 1
            if len(book.snapshot_seqs) > seen[symbol]:
                seen[symbol] = len(book.snapshot_seqs)
                s_seq, pseq = book.snapshot_seqs[-1]
                if s_seq != pseq:
                    inside.append((symbol, s_seq, pseq))
            if updates % 40 == 0 and not inside and resubscribed < 12:
                # a new snapshot: some report a seq strictly inside (S, next seq)
                resubscribed += 1
                await ws.send(sub("subscribe", v3_arg("books")))
        assert acks[:3] == [v3_arg("books"), v3_arg("ticker"), v3_arg("books", "ETHUSDT")]
        for symbol, book in books.items():
            truth = sim.truth("bitget-v3", symbol, book.seq)
            assert truth is not None
            assert (truth["bids"], truth["asks"]) == book.top(), symbol
            assert truth == {**sim.truth("bitget", symbol, book.seq), "venue": "bitget-v3"}
        # a snapshot seq inside (S, next seq): its content is the book after S, which the
        # truth gives for that seq too
        assert inside, f"no v3 snapshot reported a seq inside (S, next seq) in {resubscribed + 2} snapshots"
        symbol, s_seq, pseq = inside[0]
        assert pseq < s_seq
        assert sim.truth("bitget-v3", symbol, s_seq)["bids"] == sim.truth("bitget", symbol, pseq)["bids"]
        assert sim.truth("bitget", symbol, s_seq) is None          # not a step end for v2
        assert tickers
    assert sim.counters["bitget_v3_snapshot_seq_inside"] >= 1
    assert sim.violations == {}


@pytest.mark.timeout(60)
async def test_v3_ticker_and_public_trade(sim: Simulator) -> None:
    await asyncio.sleep(0.5)      # some trades for the volumes
    async with websockets.connect(sim.bitget_v3_ws_url) as ws:
        await ws.send(sub("subscribe", v3_arg("ticker"), v3_arg("publicTrade")))
        kinds = set()
        while len(kinds) < 3:
            m = await recv_json(ws)
            if "event" in m:
                continue
            assert set(m) == {"action", "arg", "data", "ts"} and isinstance(m["ts"], int)
            topic = m["arg"]["topic"]
            kinds.add((topic, m["action"] if topic == "publicTrade" else "any"))
            if topic == "ticker":
                t = m["data"][0]
                assert {"symbol", "lastPrice", "bid1Price", "bid1Size", "ask1Price", "ask1Size", "highPrice24h",
                        "lowPrice24h", "volume24h", "price24hPcnt", "ts"} <= set(t)
                assert all(isinstance(v, str) for v in t.values()) and t["symbol"] == "BTCUSDT"
                assert Decimal(t["bid1Price"]) < Decimal(t["ask1Price"])
                assert Decimal(t["lowPrice24h"]) <= Decimal(t["lastPrice"]) <= Decimal(t["highPrice24h"])
            else:
                for tr in m["data"]:
                    assert tr["S"] in ("buy", "sell") and Decimal(tr["p"]) > 0 and Decimal(tr["v"]) > 0
                    assert tr["i"].isdigit() and tr["T"].isdigit()
        assert kinds == {("ticker", "any"), ("publicTrade", "snapshot"), ("publicTrade", "update")}
        await ws.send("ping")
        for _ in range(500):
            if await asyncio.wait_for(ws.recv(), 5) == "pong":
                break
        else:
            pytest.fail("no pong")


@pytest.mark.timeout(60)
async def test_v3_errors_have_no_arg(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_v3_ws_url) as ws:
        await ws.send(sub("subscribe", v3_arg("books", "NOPE")))
        err = await recv_json(ws)
        assert set(err) == {"event", "code", "msg", "connId"} and err["connId"]
        assert err["event"] == "error" and err["code"] == 30001
        assert err["msg"] == '{"instType":"spot","symbol":"NOPE","topic":"books"} doesn\'t exist'
        for bad in (v3_arg("books", inst_type="SPOT"), v3_arg("books15"),
                    {"instType": "spot", "channel": "books", "instId": "BTCUSDT"}):
            await ws.send(sub("subscribe", bad))
            err2 = await recv_json(ws)
            assert err2 == {"event": "error", "code": 30016, "msg": "Param error", "connId": err["connId"]}
        await ws.send("{not json")
        assert (await recv_json(ws))["code"] == 30016
        # a real symbol under another instType: acked, then silent
        await ws.send(sub("subscribe", v3_arg("books", inst_type="usdt-futures")))
        assert await recv_json(ws) == {"event": "subscribe", "arg": v3_arg("books", inst_type="usdt-futures")}
        assert await silent(ws, 0.7)
        await ws.send(sub("unsubscribe", v3_arg("books", inst_type="usdt-futures")))
        assert await recv_json(ws) == {"event": "unsubscribe", "arg": v3_arg("books", inst_type="usdt-futures")}
        # the injected error fault: the v3 shape too
        await ws.send(sub("subscribe", v3_arg("ticker")))
        assert (await recv_json(ws))["event"] == "subscribe"
        sim.faults.set("bitget_error", 30001)
        while "event" not in (m := await recv_json(ws)):
            pass
        sim.faults.clear()
        assert m == {"event": "error", "code": 30001, "connId": err["connId"],
                     "msg": '{"instType":"spot","symbol":"BTCUSDT","topic":"ticker"} doesn\'t exist'}
    assert sim.violations == {}


@pytest.mark.timeout(60)
async def test_v3_and_v2_share_books_seq_strings_and_checksums() -> None:
    s = Simulator(config(bitget_string_seq=True, bitget_checksum=True))
    await s.start()
    try:
        async with websockets.connect(s.bitget_ws_url) as v2, websockets.connect(s.bitget_v3_ws_url) as v3:
            await v2.send(sub("subscribe", {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}))
            await v3.send(sub("subscribe", v3_arg("books")))
            assert "event" in await recv_json(v2) and "event" in await recv_json(v3)
            book = V3Book()
            v3_seqs, v2_seqs = [], []
            for _ in range(30):
                m = await recv_json(v3)
                d = m["data"][0]
                assert isinstance(d["seq"], str) and isinstance(d["pseq"], str) and isinstance(d["checksum"], str)
                assert "bids" not in d and "asks" not in d
                book.on_frame(m)
                assert int(d["checksum"]) == crc(*book.top())
                if m["action"] == "update":
                    v3_seqs.append(d["seq"])
            while not v2_seqs or int(v2_seqs[-1]) < int(v3_seqs[-1]):
                m = await recv_json(v2)
                d = m["data"][0]
                assert "bids" in d and "b" not in d
                if m["action"] == "update":
                    v2_seqs.append(d["seq"])
            # the same exchange book: the same seq values, one update per market step
            assert set(v3_seqs) <= set(v2_seqs)
            t = s.truth("bitget-v3", "BTCUSDT", book.seq)
            assert book.top() == (t["bids"], t["asks"])
        async with aiohttp.ClientSession() as http:
            async with websockets.connect(s.bitget_v3_ws_url), websockets.connect(s.bitget_ws_url), \
                    websockets.connect(s.binance_ws_url + "/public/ws/btcusdt@depth"):
                await asyncio.sleep(0.2)
                async with http.get(s.binance_rest_url + "/sim/stats") as r:
                    conns = (await r.json())["connections"]
        assert conns == {"binance": 0, "binance-usdm": 1, "bitget": 1, "bitget-v3": 1}
        assert s.counters["bitget_v3_connections"] == 2 and s.counters["binance_usdm_connections"] == 1
    finally:
        await s.stop()


@pytest.mark.timeout(60)
async def test_v3_limits_are_the_v2_code_paths() -> None:
    s = Simulator(config(bitget_subscribes_per_hour=3, bitget_ping_timeout=2.0))
    await s.start()
    try:
        async with websockets.connect(s.bitget_v3_ws_url) as ws:
            for _ in range(4):
                await ws.send(sub("subscribe", v3_arg("ticker")))
            events = []
            while len(events) < 4:
                m = await recv_json(ws)
                if "event" in m:
                    events.append(m)
            assert [e["event"] for e in events] == ["subscribe"] * 3 + ["error"]
            assert events[3]["code"] == 30006 and "arg" not in events[3]
            for _ in range(11):
                await ws.send("ping")
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        assert s.violations == {"bitget_v3_subscribe_rate": 1, "bitget_v3_ws_msg_rate": 1}
        async with websockets.connect(s.bitget_v3_ws_url) as ws:     # no ping: cut as v2 is
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert 1.8 < time.monotonic() - t0 < 6
        assert s.counters["closed_no_ping"] == 1
    finally:
        await s.stop()


@pytest.mark.timeout(30)
def test_each_module_names_the_paths_it_serves() -> None:
    b, g = binance_paths(), bitget_paths()
    assert "/stream" in b["binance"] and "/api/v3/depth" in b["binance"]
    assert {"/public/stream", "/public/ws/<stream>", "/market/stream", "/market/ws/<stream>",
            "/fapi/v1/depth", "/fapi/v1/exchangeInfo"} <= set(b["binance-usdm"])
    assert g["bitget"][0] == "/v2/ws/public" and g["bitget-v3"][0] == "/v3/ws/public"

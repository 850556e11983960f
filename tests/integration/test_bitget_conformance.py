"""Bitget v2 protocol conformance (issue #17): seq/pseq/checksum as integers or decimal strings,
error events (30001 terminal, others counted and handled), the venue's per-connection limits in
the simulator (each enforced and counted), the full v2 ticker and the public REST endpoints,
and the soak's fault kinds for them."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from obitui.config import default_feeds, load_config
from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum
from obitui.core.ring import Ring
from obitui.core.stats import FEED_COUNTERS, FeedSlotWriter, FeedState, StatsBlock
from obitui.feeds.base import Failed, Restart
from obitui.feeds.bitget.feed import BitgetBooksFeed, BitgetFeed
from obitui.feeds.process import make_feed
from obitui.feeds.venue import venue, venues
from obitui.sim.faults import FAULTS, Faults
from obitui.sim.server import SimConfig, Simulator
from obitui.soak import fault_kinds
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)

BOOKS = {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}
TICKER = {"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"}
TICKER_FIELDS = {"instId", "lastPr", "open24h", "high24h", "low24h", "change24h", "bidPr", "askPr",
                 "bidSz", "askSz", "baseVolume", "quoteVolume", "openUtc", "changeUtc24h", "ts"}


def sim_config(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(seed=11, rate=100.0, depth=300, ping_interval=1.0, pong_timeout=3.0,
                                bitget_ping_timeout=5.0)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(sim_config(bitget_checksum=True))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def recv_json(ws: Any, timeout: float = 5.0) -> dict:
    while True:
        text = await asyncio.wait_for(ws.recv(), timeout)
        if text != "pong":
            return orjson.loads(text)


async def recv_event(ws: Any, timeout: float = 5.0) -> dict:
    """The next event (ack or error), skipping data frames."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        m = await recv_json(ws, left)
        if "event" in m:
            return m


def sub(op: str, *args: dict[str, str]) -> str:
    return orjson.dumps({"op": op, "args": list(args)}).decode()


# ------------------------------------------------------------------ a feed without a network
class FakeWS:
    """Records what the feed sends."""

    def __init__(self) -> None:
        self.sent: list[dict | str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text if text == "ping" else orjson.loads(text))

    def ops(self) -> list[str]:
        return [m["op"] for m in self.sent if isinstance(m, dict)]


@pytest.fixture
def offline(shm_name: str) -> Iterator[Any]:
    """make(label, **overrides): a real Bitget feed (ring and stats block in /dev/shm) whose
    frames the test hands to ``dispatch``; ``feed.ws`` records what it sends."""
    made: list[tuple[StatsBlock, Ring]] = []

    def make(label: str = "Bg-OB", **overrides: Any) -> BitgetFeed:
        cfg = replace(next(f for f in default_feeds() if f.label == label), **overrides)
        n = len(made)
        stats = StatsBlock.create(f"{shm_name}-s{n}", 1, 1)
        ring = Ring.create(f"{shm_name}-r{n}", 1 << 20)
        made.append((stats, ring))
        slot = FeedSlotWriter(stats, 0, cfg.label, cfg.venue, cfg.stream_name, cfg.symbol, ring.name)
        feed = make_feed(cfg, 0, ring, slot, seed=1)
        feed.ws = FakeWS()
        assert isinstance(feed, BitgetFeed)
        return feed
    yield make
    for stats, ring in made:
        ring.close()
        stats.close()


def frame(action: str, bids: list, asks: list, **fields: Any) -> str:
    d = {"asks": asks, "bids": bids, "ts": "1700000000000", **fields}
    return orjson.dumps({"action": action, "arg": BOOKS, "data": [d], "ts": 1700000000001}).decode()


SNAP_BIDS = [["100.00", "1.01"], ["99.50", "2.00"]]
SNAP_ASKS = [["100.50", "1.00"], ["101.00", "2.50"]]


def crc(bids: list, asks: list, update: tuple[list, list] | None = None) -> int:
    b = OrderBook(8)
    b.apply_snapshot(bids, asks)
    if update:
        b.apply(*update)
    return bitget_checksum(b)


def count(feed: BitgetFeed, name: str) -> int:
    return feed.stats.get(name)


async def synced(feed: BitgetBooksFeed, **fields: Any) -> None:
    await feed.receive(frame("snapshot", SNAP_BIDS, SNAP_ASKS, seq=1001, pseq=0, **fields), time.time_ns())
    assert feed.book.valid and feed.stats.state == FeedState.CONNECTED_SYNCED


# ------------------------------------------------------------------ 1. numbers as strings
async def test_seq_pseq_checksum_as_decimal_strings_are_read(offline: Any) -> None:
    feed = offline()
    c0 = crc(SNAP_BIDS, SNAP_ASKS)
    assert c0 < 0                       # signed, as the venue sends it; we also accept unsigned
    await synced(feed, checksum=str(c0 + 2**32))
    assert count(feed, "string_numbers") == 1 and feed.sync.prev_seq == 1001
    upd = ([["99.50", "0"], ["100.10", "1.20"]], [["100.50", "0.80"]])
    c1 = crc(SNAP_BIDS, SNAP_ASKS, upd)
    await feed.receive(frame("update", *upd, seq="1002", pseq="1001", checksum=str(c1)), time.time_ns())
    assert feed.book.valid and feed.sync.prev_seq == 1002 and feed.book.update_id == 1002
    upd2 = ([["100.10", "1.30"]], [])
    book = OrderBook(8)
    book.apply_snapshot(SNAP_BIDS, SNAP_ASKS)
    book.apply(*upd)
    book.apply(*upd2)
    c2 = bitget_checksum(book) % 2**32          # unsigned, as an integer
    await feed.receive(frame("update", *upd2, seq=1003, pseq=1002, checksum=c2), time.time_ns())
    assert feed.book.valid and feed.sync.prev_seq == 1003
    for name in ("bad_numbers", "parse_errors", "checksum_failures", "gaps", "resyncs"):
        assert count(feed, name) == 0, name
    assert count(feed, "string_numbers") == 2
    assert feed.ws.sent == []


@pytest.mark.parametrize("field,value", [
    ("seq", 1002.0), ("seq", "12a"), ("seq", True), ("seq", -1), ("seq", 2**63), ("seq", "9" * 25),
    ("seq", ""), ("seq", " 1002"), ("seq", "+1002"), ("seq", "1e3"), ("seq", "١٠٠٢"),
    ("pseq", 1001.5), ("pseq", "x"), ("pseq", False), ("pseq", "-1"), ("pseq", [1001]),
    ("checksum", 2**32), ("checksum", -(2**31) - 1), ("checksum", 1.0), ("checksum", "0x10"),
    ("checksum", True),
])
async def test_unreadable_numbers_are_rejected_counted_and_resync(offline: Any, field: str, value: Any) -> None:
    feed = offline()
    await synced(feed)
    fields: dict[str, Any] = {"seq": 1002, "pseq": 1001}
    fields[field] = value
    await feed.receive(frame("update", [["100.10", "1.20"]], [], **fields), time.time_ns())
    assert count(feed, "bad_numbers") == 1 and count(feed, "frames_rejected") == 1
    assert count(feed, "resyncs") == 1 and not feed.book.valid
    assert feed.ws.ops() == ["unsubscribe", "subscribe"]
    assert feed.stats.state == FeedState.RESYNCING and feed.stats.reason.startswith(f"bad_number: {field} ")
    # a snapshot with such a number is refused as well, and asked for again
    feed.ws.sent.clear()
    await feed.receive(frame("snapshot", SNAP_BIDS, SNAP_ASKS, **{"seq": 2000, "pseq": 0, field: value}),
                        time.time_ns())
    assert count(feed, "bad_numbers") == 2 and not feed.book.valid and count(feed, "snapshots") == 1
    assert feed.ws.ops() == ["unsubscribe", "subscribe"]


# ------------------------------------------------------------------ 2. error events
def vector_errors(test_data: Path) -> list[str]:
    lines = (test_data / "vectors" / "bitget_v2_v3_frames_2026.jsonl").read_text().splitlines()
    errors = [line for line in lines if '"event":"error"' in line]
    assert len(errors) == 3
    return errors


async def test_real_error_frames(offline: Any, test_data: Path) -> None:
    classic_30001, v3_30001, param_30016 = vector_errors(test_data)
    # ours (NOPEUSDT books, with arg and op; and the v3 one: no arg, the symbol in msg): terminal
    for text in (classic_30001, v3_30001):
        feed = offline(symbol="NOPEUSDT", inst_type="USDT-FUTURES")
        with pytest.raises(Failed) as err:
            await feed.receive(text, time.time_ns())
        assert str(err.value) == "30001 instId:NOPEUSDT doesn't exist"
        assert count(feed, "venue_errors") == 1 and feed.venue_error_codes == {"30001": 1}
        assert feed.ws.sent == [] and count(feed, "frames_rejected") == 1
    # another subscription's errors (BTCUSDT books here; they name NOPEUSDT and books50):
    # counted per code, shown in the reason, nothing else happens
    feed = offline(inst_type="USDT-FUTURES")
    await synced(feed)
    for text in (classic_30001, v3_30001, param_30016):
        await feed.receive(text, time.time_ns())
    assert feed.venue_error_codes == {"30001": 2, "30016": 1} and count(feed, "venue_errors") == 3
    assert feed.stats.state == FeedState.CONNECTED_SYNCED and feed.book.valid
    assert feed.stats.reason == "venue_error 30016 Param error"
    assert feed.ws.sent == [] and feed.resubscribe_at == 0.0


@pytest.mark.parametrize("label", ["Bg-OB", "Bg-PR"])
async def test_error_for_our_subscription_resubscribes_with_backoff(offline: Any, label: str) -> None:
    feed = offline(label)
    if isinstance(feed, BitgetBooksFeed):
        await synced(feed)
    err = orjson.dumps({"event": "error", "arg": BOOKS if label == "Bg-OB" else TICKER, "code": 30016,
                        "msg": "Param error", "op": "subscribe"}).decode()
    delays = []
    for _ in range(4):
        t0 = time.monotonic()
        await feed.receive(err, time.time_ns())
        delays.append(round(feed.resubscribe_at - t0, 1))
        assert feed.ws.sent == []                     # not at once: after the delay
        await feed.timers(feed.resubscribe_at - 0.01)
        assert feed.ws.sent == []
        await feed.timers(feed.resubscribe_at + 0.01)
        assert feed.ws.ops() == ["subscribe"]
        feed.ws.sent.clear()
    assert delays == [0.5, 1.0, 2.0, 4.0]              # doubling while the errors repeat
    assert feed.venue_error_codes == {"30016": 4}
    assert "30016 Param error" in feed.stats.reason
    if isinstance(feed, BitgetBooksFeed):
        assert not feed.book.valid and feed.stats.state == FeedState.RESYNCING
        await synced(feed)                             # data flows again: the delay starts over
    else:
        assert feed.stats.state == FeedState.SUBSCRIBING
        d = {"instId": "BTCUSDT", "lastPr": "1.5", "bidPr": "1.4", "askPr": "1.6", "bidSz": "1",
             "askSz": "2", "ts": "1700000000000"}
        await feed.receive(orjson.dumps({"action": "snapshot", "arg": TICKER, "data": [d]}).decode(),
                            time.time_ns())
        assert feed.stats.state == FeedState.LIVE
    assert feed.error_streak == 0


async def test_rate_limit_error_backs_off_and_unattributed_errors_are_only_counted(offline: Any) -> None:
    feed = offline()
    await synced(feed)
    await feed.receive('{"event":"error","code":30016}', time.time_ns())   # no arg, no op
    await feed.receive('{"event":"error","code":"30002","msg":"illegal request"}', time.time_ns())
    assert feed.venue_error_codes == {"30016": 1, "30002": 1} and feed.book.valid
    assert feed.resubscribe_at == 0.0 and feed.ws.sent == []
    with pytest.raises(Restart) as err:
        await feed.receive('{"event":"error","code":30006,"msg":"request too many","op":"subscribe"}',
                            time.time_ns())
    assert err.value.reason == "venue_error 30006 request too many" and err.value.delay >= 1.0
    assert count(feed, "venue_errors") == 3


async def test_unknown_symbol_on_the_simulator_is_terminal_without_retries(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bg-PR", symbol="NOPEUSDT") as h:
        await h.wait_state(FeedState.FAILED)
        assert h.feed.stats.reason == "30001 instId:NOPEUSDT doesn't exist"
        await asyncio.sleep(2.0)
        assert (h.state, h.count("subscribes"), h.count("reconnects")) == (FeedState.FAILED, 1, 0)
        assert sim.counters["bitget_connections"] == 1


@pytest.mark.parametrize("label", ["Bg-OB", "Bg-PR"])
async def test_injected_error_event_is_counted_and_the_feed_recovers(sim: Simulator, label: str) -> None:
    healthy = FeedState.CONNECTED_SYNCED if label == "Bg-OB" else FeedState.LIVE
    async with FeedHarness(sim, label) as h:
        await h.wait_state(healthy)
        sim.faults.set("bitget_error", 30016)
        await h.wait_for(lambda: h.count("venue_errors") == 1, 10, "the error event")
        assert any("venue_error 30016 Param error" in r for _, r in h.states)
        await h.wait_for(lambda: h.state == healthy and h.count("subscribes") >= 2, 10, "healthy again")
        if label == "Bg-OB":
            await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth")
        assert h.count("reconnects") == 0 and sim.counters["injected_bitget_error"] == 1
        sim.faults.clear()


async def test_rate_limit_error_event_reconnects_after_a_backoff(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bg-OB") as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        sim.faults.set("bitget_error", 30006)
        await h.wait_for(lambda: h.count("reconnects") == 1, 10, "a reconnect")
        sim.faults.clear()
        assert (FeedState.BACKOFF, "venue_error 30006 request too many") in h.states
        await h.wait_state(FeedState.CONNECTED_SYNCED, 10)
        await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth")


# ------------------------------------------------------------------ 1 + 3. the simulator
async def test_sim_string_seq_mode_config_and_fault(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(sub("subscribe", BOOKS))
        await recv_event(ws)
        d = (await recv_json(ws))["data"][0]
        assert type(d["seq"]) is int and type(d["pseq"]) is int and type(d["checksum"]) is int
        sim.faults.set("string_seq")
        for _ in range(50):
            d = (await recv_json(ws))["data"][0]
            if isinstance(d["seq"], str):
                break
        assert all(isinstance(d[k], str) and int(d[k]) for k in ("seq", "pseq", "checksum"))
    cfg_sim = Simulator(sim_config(bitget_string_seq=True))
    await cfg_sim.start()
    try:
        async with websockets.connect(cfg_sim.bitget_ws_url) as ws:
            await ws.send(sub("subscribe", BOOKS))
            await recv_event(ws)
            d = (await recv_json(ws))["data"][0]
            assert d["pseq"] == "0" and d["seq"].isdigit() and "checksum" not in d
    finally:
        await cfg_sim.stop()


def test_sim_cli_string_seq_flag() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "sim", "--string-seq", "--seed", "4",
                             "--duration", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = next(w[3:] for w in line.split() if w.startswith("ws="))

        async def first_snapshot() -> dict:
            async with websockets.connect(url) as ws:
                await ws.send(sub("subscribe", BOOKS))
                await recv_event(ws)
                return (await recv_json(ws))["data"][0]
        d = asyncio.run(first_snapshot())
        assert isinstance(d["seq"], str) and d["pseq"] == "0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sim_limits_default_to_the_real_venue() -> None:
    c = SimConfig()
    assert (c.bitget_msgs_per_s, c.bitget_subscribes_per_hour, c.bitget_max_channels) == (10, 240, 1000)
    assert not c.bitget_string_seq


async def test_sim_cuts_a_connection_over_10_messages_a_second(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_ws_url) as ws:       # 10 in a second: allowed
        for _ in range(10):
            await ws.send("ping")
        for _ in range(10):
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        await asyncio.sleep(1.05)
        await ws.send(sub("subscribe", TICKER))                    # the window moved on
        assert (await recv_event(ws))["event"] == "subscribe"
    assert sim.violations == {}
    async with websockets.connect(sim.bitget_ws_url) as ws:       # the 11th closes it
        for _ in range(11):
            await ws.send("ping")
        with pytest.raises(websockets.ConnectionClosed) as err:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert err.value.rcvd is not None and err.value.rcvd.code == 1008
    assert sim.violations == {"bitget_ws_msg_rate": 1}


async def test_sim_refuses_subscription_requests_over_the_hourly_budget() -> None:
    s = Simulator(sim_config(bitget_subscribes_per_hour=6))
    await s.start()
    try:
        async with websockets.connect(s.bitget_ws_url) as ws:
            for i in range(6):                 # subscribe and unsubscribe both count
                await ws.send(sub("unsubscribe" if i % 2 else "subscribe", TICKER))
                assert (await recv_event(ws))["event"] in ("subscribe", "unsubscribe")
            assert s.violations == {}
            await ws.send(sub("subscribe", TICKER))
            err = await recv_event(ws)
            assert err == {"event": "error", "code": 30006, "msg": "request too many", "op": "subscribe"}
            assert s.violations == {"bitget_subscribe_rate": 1}
        async with websockets.connect(s.bitget_ws_url) as ws:   # the budget is per connection
            await ws.send(sub("subscribe", TICKER))
            assert (await recv_event(ws))["event"] == "subscribe"
    finally:
        await s.stop()


async def test_sim_refuses_channels_beyond_the_limit() -> None:
    s = Simulator(sim_config(bitget_max_channels=3))
    await s.start()
    try:
        async with websockets.connect(s.bitget_ws_url) as ws:
            args = [dict(BOOKS, channel=ch) for ch in ("books", "ticker", "trade", "books5")]
            await ws.send(sub("subscribe", *args))
            events = [await recv_event(ws) for _ in range(4)]
            assert [e["event"] for e in events] == ["subscribe", "subscribe", "subscribe", "error"]
            assert events[3]["code"] == 30016 and events[3]["arg"]["channel"] == "books5"
            assert s.violations == {"bitget_channels": 1}
            await ws.send(sub("subscribe", BOOKS))       # one it has: no new channel
            assert (await recv_event(ws))["event"] == "subscribe"
            assert s.violations == {"bitget_channels": 1}
    finally:
        await s.stop()


async def test_sim_ticker_carries_every_v2_field(sim: Simulator) -> None:
    await asyncio.sleep(1.0)       # some trades for the volumes
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(sub("subscribe", TICKER))
        await recv_event(ws)
        t = (await recv_json(ws))["data"][0]
    assert set(t) == TICKER_FIELDS and all(isinstance(v, str) for v in t.values())
    assert float(t["low24h"]) <= float(t["lastPr"]) <= float(t["high24h"])
    assert float(t["bidPr"]) < float(t["askPr"]) and float(t["baseVolume"]) > 0
    assert float(t["quoteVolume"]) > float(t["baseVolume"])
    assert t["openUtc"] == t["open24h"]
    assert abs(float(t["change24h"]) - (float(t["lastPr"]) / float(t["open24h"]) - 1)) < 1e-3


async def test_sim_rest_symbols_and_tickers(sim: Simulator) -> None:
    base = f"http://127.0.0.1:{sim.ports['bitget']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/v2/spot/public/symbols") as r:
            assert r.status == 200
            body = await r.json()
        assert body["code"] == "00000" and body["msg"] == "success" and isinstance(body["requestTime"], int)
        syms = {d["symbol"]: d for d in body["data"]}
        assert set(syms) == {"BTCUSDT", "ETHUSDT"}
        btc = syms["BTCUSDT"]
        assert (btc["baseCoin"], btc["quoteCoin"], btc["status"]) == ("BTC", "USDT", "online")
        assert (btc["pricePrecision"], btc["quantityPrecision"]) == ("2", "6")
        async with http.get(base + "/api/v2/spot/market/tickers", params={"symbol": "ETHUSDT"}) as r:
            body = await r.json()
        assert body["code"] == "00000" and len(body["data"]) == 1
        t = body["data"][0]
        assert t["symbol"] == "ETHUSDT" and {"lastPr", "bidPr", "askPr", "bidSz", "askSz", "high24h",
                                             "low24h", "open", "baseVolume", "quoteVolume", "usdtVolume",
                                             "change24h", "changeUtc24h", "openUtc", "ts"} <= set(t)
        async with http.get(base + "/api/v2/spot/market/tickers", params={"symbol": "NOPEUSDT"}) as r:
            assert r.status == 400 and (await r.json())["code"] != "00000"


async def test_sim_bitget_error_fault_drops_one_subscription_per_connection(sim: Simulator) -> None:
    async with websockets.connect(sim.bitget_ws_url) as ws:
        await ws.send(sub("subscribe", BOOKS))
        await recv_event(ws)
        sim.faults.set("bitget_error", 30016)
        err = await recv_event(ws)
        assert err == {"event": "error", "arg": BOOKS, "code": 30016, "msg": "Param error", "op": "subscribe"}
        assert ws.protocol.state.name == "OPEN"
        await ws.send(sub("subscribe", BOOKS))          # subscribed again: no second error
        assert (await recv_event(ws))["event"] == "subscribe"
        with pytest.raises(asyncio.TimeoutError):
            await recv_event(ws, 1.0)
    assert sim.counters["injected_bitget_error"] == 1


# ------------------------------------------------------------------ 4. the feeds keep the limits
async def test_books_stay_true_with_string_numbers(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bg-OB") as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        sim.faults.set("string_seq")
        await h.wait_for(lambda: h.count("string_numbers") > 50, 10, "string numbers")
        sim.faults.clear()
        await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth")
        for name in ("bad_numbers", "parse_errors", "checksum_failures", "gaps", "resyncs"):
            assert h.count(name) == 0, name


async def test_resync_storm_keeps_the_message_rate() -> None:
    """Gaps everywhere: the feed resyncs (2 messages each) as fast as the venue lets it, pings
    included, and the simulator never counts a breach (the harness asserts none)."""
    s = Simulator(sim_config(rate=200.0))
    await s.start()
    try:
        async with FeedHarness(s, "Bg-OB", ping_interval=0.3, idle_ping=0.3) as h:
            await h.wait_state(FeedState.CONNECTED_SYNCED)
            s.faults.set("gap", 0.5)
            await asyncio.sleep(5.0)
            s.faults.clear()
            assert h.count("resyncs") >= 10 and h.count("pings") >= 5
            await h.wait_for(h.book_matches_truth, 15, "the book to equal the truth")
            assert s.violations == {}
    finally:
        await s.stop()


async def test_subscribe_budget_starts_a_new_connection_before_the_venue_refuses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The feed's per-connection budget stays under the venue's (here both shrunk to 12)."""
    monkeypatch.setitem(venues(), "bitget", replace(venue("bitget"), subscribes_per_hour=12))
    s = Simulator(sim_config(bitget_subscribes_per_hour=12))
    await s.start()
    try:
        async with FeedHarness(s, "Bg-OB") as h:
            await h.wait_state(FeedState.CONNECTED_SYNCED)
            s.faults.set("gap", 0.5)
            await h.wait_for(lambda: h.count("reconnects") >= 2, 20, "new connections")
            s.faults.clear()
            assert any(r == "subscribe_budget" for _, r in h.states)
            await h.wait_for(h.book_matches_truth, 15, "the book to equal the truth")
            assert s.violations == {}
    finally:
        await s.stop()


# ------------------------------------------------------------------ 5. soak fault kinds
def test_soak_has_string_seq_and_bitget_error() -> None:
    kinds = {k.name: k for k in fault_kinds(load_config(None))}
    s, e = kinds["string_seq"], kinds["bitget_error"]
    assert s.sim == ("string_seq", True) and s.detect == {"Bg-OB": ("string_numbers",)}
    assert e.sim == ("bitget_error", 30016) and e.detect == {"Bg-OB": ("venue_errors",),
                                                             "Bg-PR": ("venue_errors",)}
    for k in (s, e):
        assert k.sim is not None and k.sim[0] in FAULTS
        f = Faults()
        f.set(k.sim[0], str(k.sim[1]))          # as the soak sets it, over HTTP
        assert getattr(f, k.sim[0]) == k.sim[1]
        assert all(c in FEED_COUNTERS for names in k.detect.values() for c in names)

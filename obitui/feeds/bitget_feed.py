"""Bitget v2 public feeds: `books` (snapshot + updates, seq/pseq continuity on every update,
checksum when present and non-zero, resync by resubscribing) and `ticker`.

The parser also reads v1 frames (no seq/pseq: checksum only; seq without pseq: seq must grow)
and v3 field names (`topic`/`symbol`, levels under `a`/`b`)."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import orjson
import websockets

from obitui.core.book import OrderBook, bitget_checksum
from obitui.core.fixed import parse_fixed
from obitui.core.records import Kind, encode_ticker, ms_to_ns
from obitui.core.stats import AckResult, Command, FeedState
from obitui.feeds.base import F_IGNORED, F_REJECTED, Failed, Feed, Restart

log = logging.getLogger("obitui.feed")

SUBSCRIBE_BUDGET_PER_HOUR = 240    # per connection
SNAPSHOT_TIMEOUT = 5.0             # subscribed this long without the books snapshot: ask again
CLIENT_MESSAGES_PER_S = 9          # the limit is 10/s per connection: one spare


class BitgetFeed(Feed):
    def url(self) -> str:
        return self.cfg.ws_url

    def arg(self) -> dict[str, str]:
        return {"instType": self.cfg.inst_type, "channel": self.cfg.channel, "instId": self.cfg.symbol}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.subscribe_times: collections.deque[float] = collections.deque()
        self.pong = asyncio.Event()
        self.send_times: collections.deque[float] = collections.deque()

    async def subscribe(self, ws: Any, op: str = "subscribe") -> None:
        now = time.monotonic()
        while self.subscribe_times and now - self.subscribe_times[0] > 3600:
            self.subscribe_times.popleft()
        if len(self.subscribe_times) >= SUBSCRIBE_BUDGET_PER_HOUR - 2:
            # the per-connection budget is nearly spent: a new connection starts a new one
            raise Restart("subscribe_budget", "240 subscribes/hour reached", delay=1.0)
        self.subscribe_times.append(now)
        self.stats.inc("subscribes")
        await self.send(ws, orjson.dumps({"op": op, "args": [self.arg()]}).decode())

    async def send(self, ws: Any, text: str) -> None:
        """Every client message goes through here: at most 10 per second per connection
        (PROTOCOLS.md), so a resync storm waits instead of getting the socket cut."""
        now = time.monotonic()
        sent = self.send_times
        while sent and now - sent[0] >= 1.0:
            sent.popleft()
        if len(sent) >= CLIENT_MESSAGES_PER_S:
            await asyncio.sleep(1.0 - (now - sent[0]))
            sent.popleft()
        sent.append(time.monotonic())
        await ws.send(text)

    async def _pinger(self) -> None:
        """Text ping every ``ping_interval`` on the current connection; no pong within
        ``pong_timeout``: reconnect."""
        while True:
            await asyncio.sleep(self.cfg.ping_interval)
            ws = self.ws
            if ws is None:
                return
            self.stats.inc("pings")
            self.pong.clear()
            try:
                await self.send(ws, "ping")
            except websockets.ConnectionClosed:
                continue          # rotated away, or closing: the session notices
            try:
                await asyncio.wait_for(self.pong.wait(), self.cfg.pong_timeout)
            except asyncio.TimeoutError:
                self.stats.inc("pong_timeouts")
                self.request_restart(Restart("pong_timeout", f"no pong {self.cfg.pong_timeout:g} s after a ping"))
                return

    def decode(self, text: str | bytes) -> dict[str, Any] | None:
        msg = self.load_object(text)
        if msg is None:
            return None
        event = msg.get("event")
        if event == "error":
            arg = msg.get("arg") or {}
            code = str(msg.get("code"))
            if code == "30001" and (not arg or arg.get("instId", arg.get("symbol")) == self.cfg.symbol):
                self.fate(F_REJECTED)
                raise Failed(f"unknown_symbol: {msg.get('msg', '')}"[:95])
            self.reject("server_errors", f"error event {code}: {msg.get('msg')}")
            return None
        if event is not None:
            self.fate(F_IGNORED)
            return msg     # subscribe/unsubscribe acks
        arg = msg.get("arg")
        if not isinstance(arg, dict) or not isinstance(msg.get("data"), list) or not msg["data"]:
            self.reject("parse_errors", f"frame without arg/data: {str(text)[:80]!r}")
            return None
        channel = arg.get("channel", arg.get("topic"))
        inst = arg.get("instId", arg.get("symbol"))
        if channel != self.cfg.channel or inst != self.cfg.symbol:
            self.reject("rejected", f"frame for {channel}/{inst}")
            return None
        return msg

    async def session(self, ws: Any) -> None:
        self.subscribe_times.clear()       # the budgets are per connection
        self.send_times.clear()
        self.state(FeedState.SUBSCRIBING, f"subscribing to {self.cfg.channel} {self.cfg.symbol}")
        await self.subscribe(ws)
        pinger = asyncio.get_running_loop().create_task(self._pinger())
        try:
            async with contextlib.aclosing(self.frames(ws)) as frames:
                async for text, recv_ns in frames:
                    await self.dispatch(text, recv_ns)
        finally:
            pinger.cancel()

    async def dispatch(self, text: str | bytes, recv_ns: int) -> None:
        """One frame: counted, handled, settled in exactly one fate (pongs are counted apart)."""
        if text == "pong":
            self.stats.inc("pongs")
            self.pong.set()       # proves the socket, not the channel: no watchdog reset
            return
        self.on_frame(text, recv_ns)
        try:
            msg = self.decode(text)
            if msg is None:
                return
            if "event" in msg:
                self.on_event(msg)
                return
            await self.on_data(self.ws, msg, recv_ns)
        except (Restart, Failed, websockets.ConnectionClosed):
            raise
        except Exception as exc:   # never let one frame end the feed
            self.frame_error(exc)
        finally:
            self.frame_done()

    async def subscribe_successor(self, ws: Any) -> None:
        self.stats.inc("subscribes")
        await ws.send(orjson.dumps({"op": "subscribe", "args": [self.arg()]}).decode())

    def on_adopted(self) -> None:
        # new connection, new budgets (its subscribe counts); a ping in flight on the old
        # socket will not be answered
        self.subscribe_times.clear()
        self.subscribe_times.append(time.monotonic())
        self.send_times.clear()
        self.pong.set()

    def on_event(self, msg: dict[str, Any]) -> None:
        if msg["event"] == "subscribe":
            self.on_subscribed()

    def on_subscribed(self) -> None:
        pass

    async def on_data(self, ws: Any, msg: dict[str, Any], recv_ns: int) -> None:
        raise NotImplementedError


class BitgetBooksFeed(BitgetFeed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.book = OrderBook(self.cfg.digits)
        self.prev_seq: int | None = None
        self.awaiting_snapshot = True
        self.awaiting_since = 0.0

    def on_subscribed(self) -> None:
        if self.awaiting_snapshot:
            self.awaiting_since = time.monotonic()
            if self.stats.state == FeedState.SUBSCRIBING:
                self.state(FeedState.SYNCING, "subscribed, waiting for the snapshot")

    async def timers(self, now: float) -> None:
        """A snapshot that never comes (lost, or a broken frame in its place) would leave the
        book invalid while updates keep the socket looking alive: subscribe again."""
        if (self.awaiting_snapshot and self.awaiting_since and self.ws is not None
                and now - self.awaiting_since > SNAPSHOT_TIMEOUT):
            self.stats.inc("snapshot_timeouts")
            self.awaiting_since = now
            await self.resync(self.ws, "snapshot_timeout", f"no snapshot {SNAPSHOT_TIMEOUT:g} s after subscribing")

    async def resync(self, ws: Any, reason: str, detail: str) -> None:
        """Book invalid: tell the engine, then unsubscribe + subscribe for a new snapshot."""
        self.stats.inc("resyncs")
        self.book.valid = False
        self.awaiting_snapshot = True
        self.awaiting_since = time.monotonic()
        self.push_invalid(reason)
        self.state(FeedState.RESYNCING, f"{reason}: {detail}"[:95])
        await self.subscribe(ws, "unsubscribe")
        await self.subscribe(ws, "subscribe")

    async def on_data(self, ws: Any, msg: dict[str, Any], recv_ns: int) -> None:
        action = msg.get("action")
        for d in msg["data"]:
            if not isinstance(d, dict):
                self.reject("parse_errors", "books data entry is not an object")
                continue
            bids = d.get("bids", d.get("b"))
            asks = d.get("asks", d.get("a"))
            seq = d.get("seq")
            pseq = d.get("pseq")
            checksum = d.get("checksum")
            ts = d.get("ts")
            try:
                ts_ms = ms_to_ns(ts) // 1_000_000 if ts is not None else 0
            except ValueError:
                ts_ms = -1
            if (not isinstance(bids, list) or not isinstance(asks, list) or ts_ms < 0
                    or (seq is not None and not _id_ok(seq)) or (pseq is not None and not _id_ok(pseq))
                    or (checksum is not None and (not isinstance(checksum, int) or isinstance(checksum, bool)
                                                  or not -(2**31) <= checksum < 2**32))):
                self.reject("parse_errors", f"malformed books frame: {str(d)[:120]}")
                if action == "update" and not self.awaiting_snapshot:
                    await self.resync(ws, "malformed", "an update could not be read")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            if action == "snapshot":
                try:
                    self.book.apply_snapshot(bids, asks)
                except (ValueError, TypeError) as exc:
                    self.reject("parse_errors", f"bad snapshot level: {exc}")
                    await self.resync(ws, "bad_level", str(exc))
                    continue
                self.stats.inc("snapshots")
                if not self._checksum_ok(checksum):
                    self.fate(F_REJECTED)
                    await self.resync(ws, "checksum", f"snapshot checksum {checksum} mismatch")
                    continue
                self.prev_seq = seq
                self.book.update_id = seq or 0
                self.book.valid = True
                self.awaiting_snapshot = False
                self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), 0, seq or 0, ts_ms * 1_000_000, recv_ns)
                self.lossy = False
                self.state(FeedState.CONNECTED_SYNCED, f"synced at seq {seq}" if seq is not None
                           else "synced (no seq in this feed: checksums only)")
            elif action == "update":
                if self.awaiting_snapshot:
                    self.stats.inc("stale_events")   # in flight before the new snapshot
                    self.fate(F_IGNORED)
                    continue
                gap = self._continuity(seq, pseq)
                if gap:
                    self.stats.inc("gaps")
                    self.fate(F_REJECTED)
                    await self.resync(ws, "gap", gap)
                    continue
                try:
                    packed = self.book.apply(bids, asks, True)
                except (ValueError, TypeError) as exc:
                    self.reject("parse_errors", f"bad update level: {exc}")
                    await self.resync(ws, "bad_level", str(exc))
                    continue
                if not self._checksum_ok(checksum):
                    self.fate(F_REJECTED)
                    await self.resync(ws, "checksum", f"seq {seq}: checksum {checksum} mismatch")
                    continue
                if seq is not None:
                    self.prev_seq = seq
                    self.book.update_id = seq
                self.push_book(Kind.BOOK_DELTA, packed, pseq or 0, seq or 0, ts_ms * 1_000_000, recv_ns)
            else:
                self.reject("rejected", f"unknown action {action!r}")

    def _continuity(self, seq: int | None, pseq: int | None) -> str:
        """'' when the update follows the previous frame; else what is wrong."""
        if seq is None:
            return ""                       # v1 frames: the checksum is the only check
        if pseq is not None:
            if pseq == 0:
                return f"update with pseq 0 (seq {seq})"
            if pseq != self.prev_seq:
                return f"pseq {pseq} != previous seq {self.prev_seq}"
            return ""
        if self.prev_seq is not None and seq <= self.prev_seq:
            return f"seq {seq} did not grow past {self.prev_seq}"
        return ""

    def _checksum_ok(self, checksum: int | None) -> bool:
        if not checksum:
            return True
        mine = bitget_checksum(self.book)
        if mine != checksum:
            self.stats.inc("checksum_failures")
            return False
        return True

    def can_adopt(self, buffer: collections.deque) -> bool:
        """The new socket's snapshot replaces the book whole: hand over once it is there."""
        if self.awaiting_snapshot:
            return bool(buffer)
        return any(isinstance(t, (str, bytes)) and ('"snapshot"' in t if isinstance(t, str) else b'"snapshot"' in t)
                   for t, _ in buffer)

    def ring_has_room(self) -> None:
        super().ring_has_room()
        if self.book.valid:
            self.stats.inc("resyncs")
            self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), 0, self.book.update_id, 0, time.time_ns())

    def on_disconnect(self) -> None:
        if self.book.valid:
            self.push_invalid("disconnected")
        self.book.valid = False
        self.awaiting_snapshot = True
        self.awaiting_since = 0.0
        self.prev_seq = None

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd == Command.RESYNC:
            if self.ws is None:
                return AckResult.FAILED, "not connected"
            await self.resync(self.ws, "operator_resync", "resync requested")
            return AckResult.OK, "resubscribed for a new snapshot"
        return await super().on_command(cmd)


class BitgetTickerFeed(BitgetFeed):
    def can_adopt(self, buffer: collections.deque) -> bool:
        return any('"data"' in t if isinstance(t, str) else b'"data"' in t for t, _ in buffer)

    async def on_data(self, ws: Any, msg: dict[str, Any], recv_ns: int) -> None:
        digits = self.cfg.digits
        for d in msg["data"]:
            try:
                if not isinstance(d, dict):
                    raise TypeError("ticker data entry is not an object")
                exch_ns = ms_to_ns(d["ts"])
                ts_ms = exch_ns // 1_000_000
                rec = encode_ticker(self.index, exch_ns, recv_ns,
                                    parse_fixed(d["lastPr"], digits), parse_fixed(d["bidPr"], digits),
                                    parse_fixed(d["bidSz"], digits), parse_fixed(d["askPr"], digits),
                                    parse_fixed(d["askSz"], digits))
            except (KeyError, TypeError, ValueError) as exc:
                self.reject("parse_errors", f"bad ticker: {exc!r}")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            self.push(Kind.TICKER, rec, recv_ns)
            if self.stats.state != FeedState.LIVE:
                self.state(FeedState.LIVE, "receiving tickers")


def _id_ok(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def make_feed(cfg: Any, *args: Any, **kw: Any) -> Feed:
    from obitui.feeds.binance_feed import BinanceDepthFeed, BinanceTradeFeed
    kinds = {("binance", "depth"): BinanceDepthFeed, ("binance", "trade"): BinanceTradeFeed,
             ("bitget", "books"): BitgetBooksFeed, ("bitget", "ticker"): BitgetTickerFeed}
    return kinds[(cfg.venue, cfg.channel)](cfg, *args, **kw)

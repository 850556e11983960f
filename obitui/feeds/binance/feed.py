"""Binance feeds, spot and USD-M futures (the venue description says which): depth (a local
book kept in sync, docs/PROTOCOLS.md) and trades."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

from obitui.core.book import OrderBook
from obitui.core.fixed import parse_fixed
from obitui.core.records import SIDE_BUY, SIDE_SELL, Kind, encode_trade, ms_to_ns
from obitui.core.stats import AckResult, Command, FeedState
from obitui.feeds.base import Fate, Feed, backoff_delay
from obitui.feeds.binance._scan import DepthScanner
from obitui.feeds.binance.sync import DepthFormatError, DepthSync, SyncResult, parse_depth_event, parse_snapshot
from obitui.feeds.binance.venue import BinanceVenue
from obitui.feeds.budget import WeightBudget

log = logging.getLogger("obitui.feed")


class BinanceFeed(Feed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        v = self.cfg.venue_info
        assert isinstance(v, BinanceVenue)
        self.venue: BinanceVenue = v
        self.stream = self.cfg.stream_name

    def url(self) -> str:
        route = self.cfg.channel_info.ws_route        # USD-M: /public (depth), /market (trades)
        return f"{self.cfg.ws_url.rstrip('/')}{route}/stream?streams={self.stream}"

    def classify(self, msg: dict[str, Any], text: str | bytes) -> dict[str, Any] | None:
        """The event of a combined-stream frame (``{"stream":..., "data":...}``) or a raw one;
        None (settled) for a shutdown notice, a subscribe reply, an error, another stream."""
        data = msg.get("data", msg)
        if not isinstance(data, dict):
            self.reject("parse_errors", f"'data' is not an object: {str(text)[:80]!r}")
            return None
        if data.get("e") == "serverShutdown":
            self.fate(Fate.IGNORED)
            self.on_server_shutdown()
            return None
        if "result" in msg and "id" in msg:
            self.fate(Fate.IGNORED)
            return None   # a reply to a live subscribe
        if "error" in msg:
            self.reject("server_errors", f"server error: {msg['error']!r}")
            return None
        stream = msg.get("stream")
        if stream is not None and stream != self.stream:
            self.reject("rejected", f"frame of stream {str(stream)[:60]!r}, not {self.stream}")
            return None
        return data

    def on_server_shutdown(self) -> None:
        """The venue will close this connection soon (maintenance): the make-before-break
        rotation of the 24 h cut, started now. A new connection is opened and takes over
        once its stream continues this one; the book stays valid throughout."""
        self.stats.inc("server_shutdowns")
        if self.rotation.pending:
            log.warning("%s: serverShutdown announced; a new connection is already on its way",
                        self.cfg.label)
            return
        log.warning("%s: serverShutdown announced: opening a new connection to hand over to",
                    self.cfg.label)
        self.rotation.start()


class BinanceDepthFeed(BinanceFeed):
    """Buffer -> snapshot -> continuity on every event -> resync on a gap, socket kept."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.book = OrderBook(self.cfg.digits, self.cfg.qdigits)
        self.scanner = DepthScanner(self.book)
        self.sync = DepthSync(self.book, futures=self.venue.futures, pack=True)
        self.snapshot_task: asyncio.Task[None] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.snap_attempt = 0
        self.budget = WeightBudget(self.venue.weight_limit)
        self.rest_not_before = 0.0     # monotonic: a 429/418's Retry-After ends then

    async def session(self, ws: Any) -> None:
        self.discard_buffer()
        self.sync.reset()
        self.state(FeedState.SYNCING, "waiting for the first event and a snapshot")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            self.http = http
            try:
                await self.receive_all(ws)
            finally:
                self.http = None
                if self.snapshot_task is not None:
                    self.snapshot_task.cancel()
                    self.snapshot_task = None

    def apply(self, data: dict[str, Any], recv_ns: int) -> None:
        if data.get("e") != "depthUpdate":
            self.reject("rejected", f"unexpected event {data.get('e')!r}")
            return
        try:
            ev = parse_depth_event(data)
        except DepthFormatError as exc:
            self.reject("parse_errors", str(exc))
            return
        self.note_exchange_time(ev.event_time_ms, recv_ns)
        self.handle_event(ev, recv_ns)

    def fast_frame(self, text: str | bytes, recv_ns: int) -> bool:
        """The synced hot path: the scanner reads the frame's text straight into fixed-point
        levels (no Python object per level), the sync rule (its one copy, sync.py) says
        whether it is the next event, and the levels are applied. False when not synced or
        when the scanner declines the frame's shape: the orjson path then handles it, errors
        included."""
        sync = self.sync
        if not sync.synced:
            return False
        ids = self.scanner.scan(text)
        if ids is None:
            return False
        first, last, event_ms, pu, _, _ = ids
        self.note_exchange_time(event_ms, recv_ns)
        verdict = sync.continuity(first, last, pu if pu >= 0 else None)
        if verdict is not None:
            self.not_applied(verdict)
            return True
        packed = self.scanner.apply(True)
        sync.applied(last, packed)
        self.push_book(Kind.BOOK_DELTA, packed, first, last, event_ms * 1_000_000, recv_ns)
        return True

    def not_applied(self, res: SyncResult) -> None:
        """An event the sync did not apply: a duplicate (ignored) or a gap (resync)."""
        if res is SyncResult.ALREADY_APPLIED:
            self.stats.inc("stale_events")
            self.fate(Fate.IGNORED)
        elif res is SyncResult.GAP:
            self.stats.inc("gaps")
            self.fate(Fate.REJECTED)
            self.start_resync("gap", self.sync.gap_detail)

    def can_adopt(self, buffer: Any) -> bool:
        """Hand over when the new socket's first depth event continues the book (events it
        has that the book already holds are skipped as already applied)."""
        if not self.sync.synced or self.sync.awaiting_first:
            return bool(buffer)          # nothing continuous to keep
        for text, _ in buffer:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            data = msg.get("data", msg) if isinstance(msg, dict) else None
            if not isinstance(data, dict) or data.get("e") != "depthUpdate":
                continue
            if self.venue.futures:
                pu = data.get("pu")
                return isinstance(pu, int) and pu <= self.sync.last_u
            first = data.get("U")
            return isinstance(first, int) and first <= self.book.update_id + 1
        return False

    def discard_buffer(self) -> None:
        """Events buffered for a sync that will not happen (resync, new connection)."""
        self.release_buffered(len(self.sync.buffer), "frames_discarded")
        self.sync.buffer.clear()

    def handle_event(self, ev: Any, recv_ns: int) -> None:
        try:
            res = self.sync.on_event(ev)
        except (ValueError, TypeError) as exc:  # a level that is not a decimal string
            self.reject_value(exc, f"bad level in U={ev.first_id}: {exc}")
            self.start_resync("bad_level", f"could not apply event U={ev.first_id}")
            return
        if res is SyncResult.APPLIED:
            self.push_book(Kind.BOOK_DELTA, self.sync.last_packed, ev.first_id, ev.last_id,
                           ev.event_time_ms * 1_000_000, recv_ns)
        elif res is SyncResult.BUFFERED:
            self.fate(Fate.BUFFERED)
            if self.snapshot_task is None:
                self.snapshot_task = asyncio.get_running_loop().create_task(self.fetch_snapshot())
        elif res is SyncResult.ALREADY_APPLIED or res is SyncResult.GAP:
            self.not_applied(res)
        elif res is SyncResult.BUFFER_OVERFLOW:
            # this frame joined the buffer and the oldest one left it: one frame rejected
            self.reject("rejected", "event buffer overflow while waiting for a snapshot")

    def start_resync(self, reason: str, detail: str) -> None:
        """The book is invalid: tell the engine, fetch a new snapshot, keep the socket."""
        self.stats.inc("resyncs")
        self.sync.reset()
        self.discard_buffer()
        self.push_invalid(reason)
        self.state(FeedState.RESYNCING, f"{reason}: {detail}"[:95])
        # the next event starts the buffer and the snapshot fetch

    async def fetch_snapshot(self) -> None:
        try:
            while self.http is not None:
                url = f"{self.cfg.rest_url.rstrip('/')}{self.venue.depth_path}"
                params = {"symbol": self.cfg.symbol, "limit": str(self.cfg.snapshot_limit)}
                weight = self.venue.depth_weight(self.cfg.snapshot_limit)
                # never a request the venue would refuse: not before a Retry-After ended, and
                # not over the minute's weight budget
                retry_left = self.rest_not_before - time.monotonic()
                budget_wait = self.budget.wait(weight, time.time())
                if retry_left > 0 or budget_wait > 0:
                    if budget_wait > retry_left:
                        self.stats.inc("rest_weight_waits")
                        self._waiting("rest_weight", f"REST weight {self.budget.used}/{self.budget.limit} "
                                      f"used this minute, next request in {budget_wait:.1f} s", budget_wait)
                    await asyncio.sleep(max(retry_left, budget_wait))
                    continue
                self.budget.spend(weight, time.time())
                self.stats.inc("rest_requests")
                wait: float | None = None
                try:
                    async with self.http.get(url, params=params) as r:
                        body_text = await r.text()
                        recv_ns = time.time_ns()
                        self.budget.note(r.headers.get("x-mbx-used-weight-1m"), time.time())
                        if self.recorder is not None:
                            self.recorder.add(recv_ns, "rest", str(r.url), body_text)
                        if r.status in (429, 418):
                            self.stats.inc("http_429" if r.status == 429 else "http_418")
                            retry = _retry_after(r.headers.get("Retry-After"))
                            self.rest_not_before = time.monotonic() + retry
                            wait = max(retry, backoff_delay(self.snap_attempt, self.rng))
                            self.snap_attempt += 1
                            self._waiting(f"http_{r.status}", f"REST {r.status}, retry after {wait:.1f} s", wait)
                        elif r.status != 200:
                            self.stats.inc("rest_errors")
                            if r.status >= 500:
                                self.stats.inc("rest_outages")
                            wait = backoff_delay(self.snap_attempt, self.rng)
                            self.snap_attempt += 1
                            self._waiting("rest_error", f"REST status {r.status}", wait)
                        else:
                            wait = self.apply_snapshot(body_text, recv_ns)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.stats.inc("rest_errors")
                    wait = backoff_delay(self.snap_attempt, self.rng)
                    self.snap_attempt += 1
                    self._waiting("rest_error", f"REST failed: {exc!r}"[:90], wait)
                if wait is None:
                    return
                await asyncio.sleep(wait)
        finally:
            self.snapshot_task = None

    def _waiting(self, reason: str, detail: str, wait: float) -> None:
        self.stats.next_retry_ns = time.time_ns() + int(wait * 1e9)
        st = FeedState.RESYNCING if self.stats.state == FeedState.RESYNCING else FeedState.SYNCING
        self.state(st, f"{reason}: {detail}"[:95])

    def apply_snapshot(self, body_text: str, recv_ns: int) -> float | None:
        """None when synced (or the socket's next event will restart the sync); otherwise
        seconds to wait before fetching again."""
        try:
            body = orjson.loads(body_text)
            last_id, bids, asks = parse_snapshot(body)
            res = self.sync.on_snapshot(last_id, bids, asks)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            self.reject_value(exc, f"bad REST snapshot: {exc}")
            self.sync.reset()
            wait = backoff_delay(self.snap_attempt, self.rng)
            self.snap_attempt += 1
            return wait
        if res is SyncResult.STALE_SNAPSHOT:
            self.stats.inc("snapshots")
            self.stats.inc("stale_snapshots")
            wait = max(0.2, backoff_delay(self.snap_attempt, self.rng, base=0.25, cap=5.0))
            self.snap_attempt += 1
            self._waiting("stale_snapshot", f"lastUpdateId {last_id} older than the stream", wait)
            return wait
        applied, skipped, left = self.sync.replayed
        if res is SyncResult.GAP:
            self.stats.inc("gaps")
            # the buffered events applied to a book that is now invalid, and those after the
            # gap, are thrown away; the one that broke continuity is rejected
            self.release_buffered(applied + left, "frames_discarded")
            self.release_buffered(skipped, "frames_ignored")
            self.release_buffered(1, "frames_rejected")
            self.start_resync("gap", self.sync.gap_detail)
            return None
        self.stats.inc("snapshots")
        self.snap_attempt = 0
        self.stats.next_retry_ns = 0
        ok = self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), last_id, self.book.update_id, 0, recv_ns)
        self.release_buffered(applied, "frames_pushed" if ok else "frames_dropped")
        self.release_buffered(skipped, "frames_ignored")
        if ok:      # a snapshot that made it replaces whatever was lost; one that did not is resent
            self.lossy = False
        self.state(FeedState.CONNECTED_SYNCED, f"synced at update {self.book.update_id}")
        return None

    def ring_has_room(self) -> None:
        """Records were dropped: the engine's copy of the book is wrong. Our book is right:
        send it whole again."""
        super().ring_has_room()
        if self.book.valid:
            self.stats.inc("resyncs")
            self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), self.book.update_id,
                           self.book.update_id, 0, time.time_ns())

    def on_disconnect(self) -> None:
        if self.book.valid:
            self.push_invalid("disconnected")
        self.sync.reset()
        self.discard_buffer()

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd == Command.RESYNC:
            if self.ws is None:
                return AckResult.FAILED, "not connected"
            self.start_resync("operator_resync", "resync requested")
            return AckResult.OK, "resync started, socket kept"
        return await super().on_command(cmd)


class BinanceTradeFeed(BinanceFeed):
    receiving = False
    last_trade_id = -1

    async def session(self, ws: Any) -> None:
        self.state(FeedState.SUBSCRIBING, f"subscribed to {self.stream}, waiting for trades")
        self.receiving = False
        await self.receive_all(ws)

    def apply(self, data: dict[str, Any], recv_ns: int) -> None:
        if data.get("e") not in ("trade", "aggTrade"):
            self.reject("rejected", f"unexpected event {data.get('e')!r}")
            return
        try:
            tid = data["t"] if data["e"] == "trade" else data["a"]
            price = parse_fixed(data["p"], self.cfg.digits)
            qty = parse_fixed(data["q"], self.cfg.qdigits)
            ts = data["T"]
            maker = data["m"]
            if not isinstance(tid, int) or not isinstance(ts, int) or not isinstance(maker, bool):
                raise TypeError("t/T must be ints and m a boolean")
            if not 0 <= tid < 2**63:
                raise ValueError(f"trade id {tid} out of range")
            if tid <= self.last_trade_id:          # a duplicate (e.g. both sockets of a rotation)
                self.stats.inc("stale_events")
                self.fate(Fate.IGNORED)
                return
            if price <= 0 or qty <= 0:
                raise ValueError(f"price {data['p']} and quantity {data['q']} must be > 0")
            side = SIDE_SELL if maker else SIDE_BUY     # m: the buyer was the maker, the taker sold
            rec = encode_trade(self.index, ms_to_ns(ts), recv_ns, tid, price, qty, side)
        except (KeyError, TypeError, ValueError) as exc:
            self.reject_value(exc, f"bad trade: {exc!r}")
            return
        self.note_exchange_time(ts, recv_ns)
        self.last_trade_id = tid
        self.push(Kind.TRADE, rec, recv_ns)
        if not self.receiving:
            self.receiving = True
            self.state(FeedState.CONNECTED, "receiving trades")


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0

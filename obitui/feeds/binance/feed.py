"""Binance feeds, spot and USD-M futures (the venue description says which): depth (a local
book kept in sync, docs/PROTOCOLS.md) and trades."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
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
import obitui.feeds.budget as budget_mod
from obitui.feeds.budget import SharedWeightBudget
from obitui.feeds.venue import venue_pool

log = logging.getLogger("obitui.feed")

STORM_SHARE = 0.25       # of the minute's weight left, for the snapshots of several books at once
SHALLOW_AFTER_S = 10.0   # a book that would wait longer for the next minute's weight resyncs shallower
REST_IN_FLIGHT = 1       # snapshot requests in flight at once: each is sent knowing the venue's
                         # count and any ban from the answer before it


class BinanceFeed(Feed):
    """A combined-stream connection carrying one stream per market of the feed
    (``/stream?streams=a/b/...``, the venue allows 1024)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        v = self.cfg.venue_info
        assert isinstance(v, BinanceVenue)
        self.venue: BinanceVenue = v
        self.streams = [replace(self.cfg, symbol=sym, symbols=(sym,)).stream_name for sym in self.cfg.symbols]
        self.stream = self.streams[0]
        # frames name their stream: the market (index in cfg.symbols) it belongs to
        self.market_of = {name: k for k, name in enumerate(self.streams)}

    def url(self) -> str:
        route = self.cfg.channel_info.ws_route        # USD-M: /public (depth), /market (trades)
        return f"{self.cfg.ws_url.rstrip('/')}{route}/stream?streams={'/'.join(self.streams)}"

    def route(self, text: str | bytes) -> int:
        """The market of a combined-stream frame from its first bytes (``{"stream":"<name>",``)
        without decoding it; -1 when the frame does not start so."""
        if len(self.streams) == 1:
            return 0
        head = text[:80] if isinstance(text, str) else text[:80].decode("ascii", "replace")
        if not head.startswith('{"stream":"'):
            return -1
        end = head.find('"', 11)
        return self.market_of.get(head[11:end], -1) if end > 0 else -1

    def classify(self, msg: dict[str, Any], text: str | bytes) -> tuple[int, dict[str, Any]] | None:
        """(market, event) of a combined-stream frame (``{"stream":..., "data":...}``) or a raw
        one; None (settled) for a shutdown notice, a subscribe reply, an error, another stream."""
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
        if stream is None:
            if len(self.streams) > 1:
                self.reject("rejected", f"frame without a stream name on a combined stream: {str(text)[:60]!r}")
                return None
            return 0, data
        k = self.market_of.get(stream, -1) if isinstance(stream, str) else -1
        if k < 0:
            self.reject("rejected", f"frame of stream {str(stream)[:60]!r}, not one of this feed's")
            return None
        return k, data

    def on_server_shutdown(self) -> None:
        """The venue will close this connection soon (maintenance): the make-before-break
        rotation of the 24 h cut, started now. A new connection is opened and takes over
        once its streams continue this one; the books stay valid throughout."""
        self.stats.inc("server_shutdowns")
        if self.rotation.pending:
            log.warning("%s: serverShutdown announced; a new connection is already on its way",
                        self.cfg.label)
            return
        log.warning("%s: serverShutdown announced: opening a new connection to hand over to",
                    self.cfg.label)
        self.rotation.start()


class DepthMarket:
    """One market of a depth feed: its book, the sync rule over it, the frame scanner and the
    snapshot fetch in flight."""

    def __init__(self, feed: BinanceDepthFeed, k: int) -> None:
        cfg = feed.cfg
        self.k = k
        self.symbol = cfg.symbols[k]
        self.stream = feed.streams[k]
        self.book_id = feed.book_ids[k]
        self.digits, self.qdigits = cfg.scales_of(self.symbol)
        self.book = OrderBook(self.digits, self.qdigits)
        self.scanner = DepthScanner(self.book)
        self.sync = DepthSync(self.book, futures=feed.venue.futures, pack=True)
        self.snapshot_task: asyncio.Task[None] | None = None
        self.snap_attempt = 0
        self.resyncing = False       # invalid after having been synced (not a first sync)
        self.reason = ""

    def cancel_snapshot(self) -> None:
        if self.snapshot_task is not None:
            self.snapshot_task.cancel()
            self.snapshot_task = None


class BinanceDepthFeed(BinanceFeed):
    """Per market: buffer -> snapshot -> continuity on every event -> resync on a gap, socket
    kept; a gap in one market resyncs that market alone."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.markets = [DepthMarket(self, k) for k in range(len(self.cfg.symbols))]
        self.single = self.markets[0] if len(self.markets) == 1 else None   # no routing needed
        self.http: aiohttp.ClientSession | None = None
        # the REST weight is the IP's: one budget for every feed process and connection of the
        # venue, in the stats block (each request taken from it with one compare-and-swap),
        # raised to the venue's own count (x-mbx-used-weight-1m) with every answer; a 429/418's
        # Retry-After is the IP's too
        self.budget = SharedWeightBudget(self.stats.block, venue_pool(self.venue.name), self.venue.weight_limit)
        self.rest_slots = self.process_shared("rest_slots", lambda: asyncio.Semaphore(REST_IN_FLIGHT))
        self.storm = self.process_shared("storm", lambda: [0])   # the depth of the storm going on (0: none)
        # a cold start needs a snapshot of every book of the venue (all its book processes):
        # within a minute's budget when they fit
        # (every market of the process: the group's config holds them all, while the
        # connections are still being made)
        books = len(self.group.cfg.symbols if self.group is not None else self.cfg.symbols) * self.cfg.rest_share
        self.snapshot_limit = self.venue.fit_limit(self.cfg.snapshot_limit, books, self.budget.limit)
        if self.snapshot_limit != self.cfg.snapshot_limit:
            log.info("%s: %d books: REST snapshots of %d levels (weight %d each) instead of %d, so a "
                     "cold start fits %d weight/min", self.cfg.label, len(self.markets), self.snapshot_limit,
                     self.venue.depth_weight(self.snapshot_limit), self.cfg.snapshot_limit, self.budget.limit)

    # the first market, for single-market callers (tests, tools)
    @property
    def book(self) -> OrderBook:
        return self.markets[0].book

    @property
    def sync(self) -> DepthSync:
        return self.markets[0].sync

    @property
    def scanner(self) -> DepthScanner:
        return self.markets[0].scanner

    async def session(self, ws: Any) -> None:
        for m in self.markets:
            self.discard_buffer(m)
            m.sync.reset()
            m.resyncing = False
        self.market_state(None, FeedState.SYNCING, "waiting for the first event and a snapshot")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            self.http = http
            try:
                await self.receive_all(ws)
            finally:
                self.http = None
                for m in self.markets:
                    m.cancel_snapshot()

    # ------------------------------------------------------------ frames
    def apply(self, payload: tuple[int, dict[str, Any]], recv_ns: int) -> None:
        k, data = payload
        if data.get("e") != "depthUpdate":
            self.reject("rejected", f"unexpected event {data.get('e')!r}")
            return
        try:
            ev = parse_depth_event(data)
        except DepthFormatError as exc:
            self.reject("parse_errors", str(exc))
            return
        self.note_exchange_time(ev.event_time_ms, recv_ns)
        self.handle_event(self.markets[k], ev, recv_ns)

    def fast_frame(self, text: str | bytes, recv_ns: int) -> bool:
        """The synced hot path: the frame's market from its first bytes, then the scanner reads
        the text straight into fixed-point levels (no Python object per level), the sync rule
        (its one copy, sync.py) says whether it is the next event, and the levels are applied.
        False when the market is not synced or the scanner declines the frame's shape: the
        orjson path then handles it, errors included."""
        if self.single is not None:
            m = self.single
        else:
            k = self.route(text)
            if k < 0:
                return False
            m = self.markets[k]
        sync = m.sync
        if not sync.synced:
            return False
        ids = m.scanner.scan(text)
        if ids is None:
            return False
        first, last, event_ms, pu, _, _ = ids
        self.note_exchange_time(event_ms, recv_ns)
        verdict = sync.accept(first, last, pu if pu >= 0 else None)
        if verdict is not None:
            self.not_applied(m, verdict)
            return True
        packed = m.scanner.apply(True)
        sync.last_packed = packed
        self.push_book(Kind.BOOK_DELTA, packed, first, last, event_ms * 1_000_000, recv_ns, m.book_id)
        return True

    def not_applied(self, m: DepthMarket, res: SyncResult) -> None:
        """An event the sync did not apply: a duplicate (ignored) or a gap (resync)."""
        if res is SyncResult.ALREADY_APPLIED:
            self.stats.inc("stale_events")
            self.fate(Fate.IGNORED)
        elif res is SyncResult.GAP:
            self.stats.inc("gaps")
            self.fate(Fate.REJECTED)
            self.start_resync(m, "gap", m.sync.gap_detail)

    def can_adopt(self, buffer: Any) -> bool:
        """Hand over when the new socket's first depth event of every synced market continues
        its book (events the book already holds are skipped as already applied)."""
        pending = {m.stream: m for m in self.markets if m.sync.synced and not m.sync.awaiting_first}
        if not pending:
            return bool(buffer)          # nothing continuous to keep
        for text, _ in buffer:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(msg, dict):
                continue
            data = msg.get("data", msg)
            stream = msg.get("stream", self.stream)
            m = pending.get(stream) if isinstance(stream, str) else None
            if m is None or not isinstance(data, dict) or data.get("e") != "depthUpdate":
                continue
            if self.venue.futures:
                pu = data.get("pu")
                ok = isinstance(pu, int) and pu <= m.sync.last_u
            else:
                first = data.get("U")
                ok = isinstance(first, int) and first <= m.book.update_id + 1
            if not ok:
                return False
            del pending[stream]
            if not pending:
                return True
        return False

    def discard_buffer(self, m: DepthMarket) -> None:
        """Events buffered for a sync that will not happen (resync, new connection)."""
        self.release_buffered(len(m.sync.buffer), "frames_discarded")
        m.sync.buffer.clear()

    def handle_event(self, m: DepthMarket, ev: Any, recv_ns: int) -> None:
        try:
            res = m.sync.on_event(ev)
        except (ValueError, TypeError) as exc:  # a level that is not a decimal string
            self.reject_value(exc, f"bad level in U={ev.first_id}: {exc}")
            self.start_resync(m, "bad_level", f"could not apply event U={ev.first_id}")
            return
        if res is SyncResult.APPLIED:
            self.push_book(Kind.BOOK_DELTA, m.sync.last_packed, ev.first_id, ev.last_id,
                           ev.event_time_ms * 1_000_000, recv_ns, m.book_id)
        elif res is SyncResult.BUFFERED:
            self.fate(Fate.BUFFERED)
            if m.snapshot_task is None:
                m.snapshot_task = asyncio.get_running_loop().create_task(self.fetch_snapshot(m))
        elif res is SyncResult.ALREADY_APPLIED or res is SyncResult.GAP:
            self.not_applied(m, res)
        elif res is SyncResult.BUFFER_OVERFLOW:
            # this frame joined the buffer and the oldest one left it: one frame rejected
            self.reject("rejected", "event buffer overflow while waiting for a snapshot")

    def start_resync(self, m: DepthMarket, reason: str, detail: str) -> None:
        """The market's book is invalid: tell the engine, fetch a new snapshot, keep the
        socket; the other markets keep flowing."""
        self.stats.inc("resyncs")
        m.sync.reset()
        m.resyncing = True
        self.discard_buffer(m)
        self.push_invalid(reason, m.book_id)
        self.market_state(m, FeedState.RESYNCING, f"{reason}: {detail}"[:95])
        # the next event starts the buffer and the snapshot fetch

    # ------------------------------------------------------------ REST snapshots
    def request_limit(self) -> int:
        """The depth of the next snapshot request. One book: the configured (fitted) depth when
        the minute's weight holds it. Several books at once (a resync storm, a cold start): one
        depth for the whole storm, chosen when it starts so that a snapshot of every book that
        needs one takes at most a quarter of what is left of the minute; faults come in bursts
        (a disconnect, then a restart), and the next storm still finds room. (Sizing each
        request by the books still waiting would let a storm spend all that is left: the last
        ones to go see few books waiting.)"""
        markets = self.all_markets
        waiting = sum(1 for x in markets if x.snapshot_task is not None)
        left = max(0, self.budget.limit - self.budget.used)
        storm = self.storm
        if waiting < 2 and not storm[0]:
            # one book: at full depth when it fits, or when the next minute is near; a book
            # that would wait long for it comes back now, shallower (never below 100 levels)
            now = time.time()
            next_minute = (now // budget_mod.WEIGHT_WINDOW_S + 1) * budget_mod.WEIGHT_WINDOW_S - now
            if self.venue.depth_weight(self.snapshot_limit) <= left or next_minute <= SHALLOW_AFTER_S:
                return self.snapshot_limit
            return self.venue.fit_limit(self.snapshot_limit, 1, left, share=STORM_SHARE)
        if not storm[0]:
            books = max(waiting, sum(1 for x in markets if not x.book.valid))
            storm[0] = self.venue.fit_limit(self.snapshot_limit, books, left, share=STORM_SHARE)
        return storm[0]

    async def fetch_snapshot(self, m: DepthMarket) -> None:
        try:
            while self.http is not None:
                # one request at a time: a 429/418 stops the others before they are sent
                # (requests in flight during a ban extend it), and the weight count is current
                async with self.rest_slots:
                    if self.http is None:
                        return
                    limit = self.request_limit()
                    url = f"{self.cfg.rest_url.rstrip('/')}{self.venue.depth_path}"
                    params = {"symbol": m.symbol, "limit": str(limit)}
                    weight = self.venue.depth_weight(limit)
                    # never a request the venue would refuse: not before a Retry-After ended,
                    # and not over the minute's weight budget
                    retry_left = self.budget.banned_for()
                    budget_wait = self.budget.take(weight, time.time()) if retry_left <= 0 else 0.0
                    if retry_left > 0 or budget_wait > 0:
                        if budget_wait > 0:
                            self.stats.inc("rest_weight_waits")
                            self._waiting(m, "rest_weight", f"REST weight {self.budget.used}/{self.budget.limit} "
                                          f"used this minute, next request in {budget_wait:.1f} s", budget_wait)
                        delay = max(retry_left, budget_wait)
                    else:
                        delay = -1.0
                        self.stats.inc("rest_requests")
                        wait, body_text, recv_ns = await self.rest_get(m, url, params)
                if delay >= 0:
                    await asyncio.sleep(delay)
                    continue
                if body_text is not None:
                    wait = self.apply_snapshot(m, body_text, recv_ns)
                if wait is None:
                    return
                await asyncio.sleep(wait)
        finally:
            m.snapshot_task = None
            if not any(x.snapshot_task is not None for x in self.all_markets):
                self.storm[0] = 0           # the storm is over

    async def rest_get(self, m: DepthMarket, url: str, params: dict[str, str]) -> tuple[float | None, str | None, int]:
        """One snapshot request: (seconds to wait before the next try, or None; the body when
        it is a 200; its receive time)."""
        assert self.http is not None
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
                    self.budget.ban(retry)
                    wait = max(retry, backoff_delay(m.snap_attempt, self.rng))
                    m.snap_attempt += 1
                    self._waiting(m, f"http_{r.status}", f"REST {r.status}, retry after {wait:.1f} s", wait)
                elif r.status != 200:
                    self.stats.inc("rest_errors")
                    if r.status >= 500:
                        self.stats.inc("rest_outages")
                    wait = backoff_delay(m.snap_attempt, self.rng)
                    m.snap_attempt += 1
                    self._waiting(m, "rest_error", f"REST status {r.status}", wait)
                else:
                    return None, body_text, recv_ns
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.stats.inc("rest_errors")
            wait = backoff_delay(m.snap_attempt, self.rng)
            m.snap_attempt += 1
            self._waiting(m, "rest_error", f"REST failed: {exc!r}"[:90], wait)
        return wait, None, 0

    def _waiting(self, m: DepthMarket, reason: str, detail: str, wait: float) -> None:
        self.stats.next_retry_ns = time.time_ns() + int(wait * 1e9)
        st = FeedState.RESYNCING if m.resyncing else FeedState.SYNCING
        self.market_state(m, st, f"{reason}: {detail}"[:95])

    def apply_snapshot(self, m: DepthMarket, body_text: str, recv_ns: int) -> float | None:
        """None when synced (or the socket's next event will restart the sync); otherwise
        seconds to wait before fetching again."""
        sync = m.sync
        try:
            body = orjson.loads(body_text)
            last_id, bids, asks = parse_snapshot(body)
            res = sync.on_snapshot(last_id, bids, asks)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            self.reject_value(exc, f"bad REST snapshot: {exc}")
            sync.reset()
            wait = backoff_delay(m.snap_attempt, self.rng)
            m.snap_attempt += 1
            return wait
        if res is SyncResult.STALE_SNAPSHOT:
            self.stats.inc("snapshots")
            self.stats.inc("stale_snapshots")
            wait = max(0.2, backoff_delay(m.snap_attempt, self.rng, base=0.25, cap=5.0))
            m.snap_attempt += 1
            self._waiting(m, "stale_snapshot", f"lastUpdateId {last_id} older than the stream", wait)
            return wait
        applied, skipped, left = sync.replayed
        if res is SyncResult.GAP:
            self.stats.inc("gaps")
            # the buffered events applied to a book that is now invalid, and those after the
            # gap, are thrown away; the one that broke continuity is rejected
            self.release_buffered(applied + left, "frames_discarded")
            self.release_buffered(skipped, "frames_ignored")
            self.release_buffered(1, "frames_rejected")
            self.start_resync(m, "gap", sync.gap_detail)
            return None
        self.stats.inc("snapshots")
        m.snap_attempt = 0
        m.resyncing = False
        self.stats.next_retry_ns = 0
        ok = self.push_book(Kind.BOOK_SNAPSHOT, m.book.packed(), last_id, m.book.update_id, 0, recv_ns, m.book_id)
        self.release_buffered(applied, "frames_pushed" if ok else "frames_dropped")
        self.release_buffered(skipped, "frames_ignored")
        if ok and all(x.book.valid or x is m for x in self.markets):
            # a snapshot that made it replaces whatever was lost of its book; the feed is
            # whole again once no book waits to be resent (one that did not make it is resent)
            self.lossy = False
        self.market_state(m, FeedState.CONNECTED_SYNCED, f"synced at update {m.book.update_id}")
        return None

    def ring_has_room(self) -> None:
        """Records were dropped: the engine's copies of the books are wrong. Ours are right:
        send them whole again."""
        super().ring_has_room()
        for m in self.markets:
            if m.book.valid:
                self.stats.inc("resyncs")
                self.push_book(Kind.BOOK_SNAPSHOT, m.book.packed(), m.book.update_id,
                               m.book.update_id, 0, time.time_ns(), m.book_id)

    def on_disconnect(self) -> None:
        reason = "stopped" if self.stop.is_set() else "disconnected"   # stopped: routine, not a warning
        for m in self.markets:
            if m.book.valid:
                self.push_invalid(reason, m.book_id)
            m.sync.reset()
            self.discard_buffer(m)
        if not any(x.snapshot_task is not None for x in self.all_markets):
            self.storm[0] = 0           # no storm goes on
        self.books_gauge(len(self.all_markets), sum(1 for x in self.all_markets if x.book.valid))

    RESYNC_ONE = "resync started, socket kept"
    RESYNC_MANY = "resync of {n} book(s) started, socket kept"

    def resync_market(self, m: Any, reason: str, detail: str) -> None:
        self.start_resync(m, reason, detail)

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd in (Command.RESYNC, Command.RESYNC_INVALID):
            return await self.resync_command(cmd)
        return await super().on_command(cmd)


class BinanceTradeFeed(BinanceFeed):
    receiving = False

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.last_trade_ids = [-1] * len(self.streams)
        self.scales = [self.cfg.scales_of(sym) for sym in self.cfg.symbols]

    @property
    def last_trade_id(self) -> int:
        return self.last_trade_ids[0]

    async def session(self, ws: Any) -> None:
        what = self.stream if len(self.streams) == 1 else f"{len(self.streams)} trade streams"
        self.state(FeedState.SUBSCRIBING, f"subscribed to {what}, waiting for trades")
        self.receiving = False
        await self.receive_all(ws)

    def apply(self, payload: tuple[int, dict[str, Any]], recv_ns: int) -> None:
        k, data = payload
        if data.get("e") not in ("trade", "aggTrade"):
            self.reject("rejected", f"unexpected event {data.get('e')!r}")
            return
        try:
            tid = data["t"] if data["e"] == "trade" else data["a"]
            digits, qdigits = self.scales[k]
            price = parse_fixed(data["p"], digits)
            qty = parse_fixed(data["q"], qdigits)
            ts = data["T"]
            maker = data["m"]
            if not isinstance(tid, int) or not isinstance(ts, int) or not isinstance(maker, bool):
                raise TypeError("t/T must be ints and m a boolean")
            if not 0 <= tid < 2**63:
                raise ValueError(f"trade id {tid} out of range")
            if tid <= self.last_trade_ids[k]:      # a duplicate (e.g. both sockets of a rotation)
                self.stats.inc("stale_events")
                self.fate(Fate.IGNORED)
                return
            if price <= 0 or qty <= 0:
                raise ValueError(f"price {data['p']} and quantity {data['q']} must be > 0")
            side = SIDE_SELL if maker else SIDE_BUY     # m: the buyer was the maker, the taker sold
            rec = encode_trade(self.book_ids[k], ms_to_ns(ts), recv_ns, tid, price, qty, side)
        except (KeyError, TypeError, ValueError) as exc:
            self.reject_value(exc, f"bad trade: {exc!r}")
            return
        self.note_exchange_time(ts, recv_ns)
        self.last_trade_ids[k] = tid
        self.push(Kind.TRADE, rec, recv_ns)
        if not self.receiving:
            self.receiving = True
            self.state(FeedState.CONNECTED, "receiving trades")


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0

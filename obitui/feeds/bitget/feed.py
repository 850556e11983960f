"""Bitget public feeds, v2 (classic) and v3 (UTA) (the venue description says which): `books`
(snapshot + updates, seq/pseq continuity on every update, checksum when present and non-zero,
resync by resubscribing; the rules live in sync.py) and `ticker`.

The parser also reads v1 frames (no seq/pseq: checksum only; seq without pseq: seq must grow)."""
from __future__ import annotations

import collections
import logging
import re
import time
from typing import Any

import orjson

from obitui.core.book import OrderBook
from obitui.core.fixed import FixedRangeError, parse_fixed
from obitui.core.records import Kind, encode_day, encode_ticker, ms_to_ns
from obitui.core.stats import AckResult, Command, FeedState
from obitui.feeds.base import Fate, Failed, Feed, Restart, backoff_delay
from obitui.feeds.bitget.sync import BooksSync, Verdict
from obitui.feeds.bitget.venue import BitgetVenue
from obitui.feeds.budget import MessagePacer

log = logging.getLogger("obitui.feed")

SNAPSHOT_TIMEOUT = 5.0             # subscribed this long without the books snapshot: ask again
# the venue cuts a connection that sends more than 10 messages (subscribe, unsubscribe, ping)
# in a second; we send at most 9 in any 1.2 s: one message and 0.2 s of network jitter spare
CLIENT_WINDOW_S = 1.2
RATE_LIMIT_CODES = ("30006", "30007")   # "request too many", "request over limit": back off
RESUBSCRIBE_FIRST = 0.5            # an error event for our subscription: subscribe again after
RESUBSCRIBE_CAP = 30.0             # this, doubling while the errors repeat, up to the cap
SUBSCRIBE_SPARE = 2                # a new connection this many subscribes before the hourly cap

# the ticker's fields, by API version: last, best bid, its size, best ask, its size
TICKER_FIELDS = {2: ("lastPr", "bidPr", "bidSz", "askPr", "askSz"),
                 3: ("lastPrice", "bid1Price", "bid1Size", "ask1Price", "ask1Size")}
# its rolling 24 h figures: open, high, low, base volume (a TICKER_DAY record when they change)
DAY_FIELDS = {2: ("open24h", "high24h", "low24h", "baseVolume"),
              3: ("openPrice24h", "highPrice24h", "lowPrice24h", "volume24h")}


SUBSCRIBE_ARGS_PER_MESSAGE = 50   # args in one subscribe request (its text stays a few KiB)


class BitgetFeed(Feed):
    """One connection carrying one channel per market of the feed (the venue allows 1000)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        v = self.cfg.venue_info
        assert isinstance(v, BitgetVenue)
        self.venue: BitgetVenue = v
        self.ch_key, self.sym_key = v.channel_key, v.symbol_key
        n = len(self.cfg.symbols)
        self.market_of = {sym: k for k, sym in enumerate(self.cfg.symbols)}
        self.subscribe_times: collections.deque[float] = collections.deque()
        self.pacer = MessagePacer(v.max_client_msgs - 1, CLIENT_WINDOW_S)
        self.venue_error_codes: collections.Counter[str] = collections.Counter()
        self.resub_at = [0.0] * n          # an error event dropped a subscription: when to retry
        self.error_streaks = [0] * n       # such errors since data last flowed, per market
        self.failed: set[int] = set()      # markets the venue does not know (30001)

    # the first market's, for single-market callers
    @property
    def resubscribe_at(self) -> float:
        return self.resub_at[0]

    @resubscribe_at.setter
    def resubscribe_at(self, value: float) -> None:
        self.resub_at[0] = value

    @property
    def error_streak(self) -> int:
        return self.error_streaks[0]

    def url(self) -> str:
        return self.cfg.ws_url

    def arg(self, k: int = 0) -> dict[str, str]:
        return self.venue.arg(self.cfg.inst_type, self.cfg.channel, self.cfg.symbols[k])

    async def subscribe(self, ws: Any, op: str = "subscribe", markets: list[int] | None = None) -> None:
        """Subscribe (or unsubscribe) these markets (all that the venue knows by default), in
        requests of at most SUBSCRIBE_ARGS_PER_MESSAGE args."""
        ks = [k for k in range(len(self.cfg.symbols)) if k not in self.failed] if markets is None else markets
        for i in range(0, len(ks), SUBSCRIBE_ARGS_PER_MESSAGE):
            chunk = ks[i:i + SUBSCRIBE_ARGS_PER_MESSAGE]
            now = time.monotonic()
            while self.subscribe_times and now - self.subscribe_times[0] > 3600:
                self.subscribe_times.popleft()
            if len(self.subscribe_times) >= self.venue.subscribes_per_hour - SUBSCRIBE_SPARE:
                # the per-connection budget is nearly spent: a new connection starts a new one
                raise Restart("subscribe_budget", f"{self.venue.subscribes_per_hour} subscribes/hour reached",
                              delay=1.0)
            self.subscribe_times.append(now)
            self.stats.inc("subscribes")
            await self.send(ws, orjson.dumps({"op": op, "args": [self.arg(k) for k in chunk]}).decode())

    async def send(self, ws: Any, text: str) -> None:
        """Every client message goes through the pacer: the venue allows 10 per second per
        connection (docs/PROTOCOLS.md), so a resync storm waits instead of getting the socket
        cut. One sender at a time (the pinger and a resync may both want to send)."""
        await self.pacer.send(lambda: ws.send(text))

    async def send_ping(self, ws: Any) -> None:
        """Bitget's keep-alive is the text "ping" (answered by "pong"), paced like any message."""
        await self.send(ws, "ping")

    def is_keepalive(self, text: str | bytes) -> bool:
        if text == "pong":
            self.on_pong()        # proves the socket, not the channel: no watchdog reset
            return True
        return False

    def market(self, arg: Any) -> int:
        """The market an ``arg`` names (-1: not one of ours)."""
        if not isinstance(arg, dict) or arg.get(self.ch_key) != self.cfg.channel:
            return -1
        sym = arg.get(self.sym_key)
        return self.market_of.get(sym, -1) if isinstance(sym, str) else -1

    def classify(self, msg: dict[str, Any], text: str | bytes) -> tuple[int, dict[str, Any]] | None:
        """(market, frame) of a data frame of one of our channels, or None once an event (ack,
        error) or a foreign frame was settled."""
        event = msg.get("event")
        if event == "error":
            self.on_error_event(msg)
            return None
        if event is not None:
            self.fate(Fate.IGNORED)      # subscribe/unsubscribe acks
            if event == "subscribe":
                k = self.market(msg.get("arg"))
                if k >= 0:
                    self.on_subscribed(k)
            return None
        arg = msg.get("arg")
        if not isinstance(arg, dict) or not isinstance(msg.get("data"), list) or not msg["data"]:
            self.reject("parse_errors", f"frame without arg/data: {str(text)[:80]!r}")
            return None
        k = self.market(arg)
        if k < 0:
            self.reject("rejected", f"frame for {arg.get(self.ch_key)}/{arg.get(self.sym_key)}")
            return None
        return k, msg

    def on_error_event(self, msg: dict[str, Any]) -> None:
        """``{"event":"error","code":...,"msg":...}``, with or without ``arg`` and ``op``: logged
        with its code and message, counted (``venue_errors``; per code in ``venue_error_codes``)
        and shown in the state reason. 30001 for one of our subscriptions (an unknown symbol):
        that market is failed (no resubscribe) and, once every market is, the feed ends in
        ``failed`` until the operator asks. A rate limit (30006, 30007) closes the connection
        and backs off. Any other error for one of our subscriptions (30016 Param error, ...)
        means it is gone: subscribe again after a delay that doubles while the errors repeat.
        An error about something else is only counted."""
        raw = msg.get("code")
        code = str(raw)[:12] if isinstance(raw, (int, str)) and not isinstance(raw, bool) else "?"
        text = msg.get("msg") if isinstance(msg.get("msg"), str) else ""
        op = msg.get("op")
        self.venue_error_codes[code] += 1
        self.reject("venue_errors", f"venue error {code} (#{self.venue_error_codes[code]} of this code): "
                                    f"{text!r} op={op!r} arg={msg.get('arg')!r}")
        whose, k, inst = self._error_target(msg.get("arg"), text)
        if code == "30001" and whose != "other":
            # an unattributed 30001 is about the only subscription, or the newest ones
            gone = [k] if k is not None else ([0] if len(self.cfg.symbols) == 1 else [])
            if len(self.cfg.symbols) == 1 or (gone and len(self.failed | set(gone)) == len(self.cfg.symbols)):
                raise Failed(f"30001 {self.sym_key}:{inst or self.cfg.symbol} doesn't exist"[:95])
            for g in gone:
                self.failed.add(g)
                self.on_market_failed(g, f"30001 {self.sym_key}:{self.cfg.symbols[g]} doesn't exist")
            if not gone:
                self.state(self.stats.state, f"venue_error {code} {text}"[:95])
            return
        if code in RATE_LIMIT_CODES:
            delay = max(1.0, backoff_delay(self.attempt, self.rng))
            self.attempt += 1
            raise Restart(f"venue_error {code} {text}"[:95], "rate limited by the venue", delay=delay)
        # v3 error events carry neither `arg` nor `op`: one that names nothing may be about our
        # subscription (the only one on this connection), and subscribing again is harmless
        unattributed_ours = whose == "unknown" and (op == "subscribe" or (op is None and self.venue.api == 3))
        if op != "unsubscribe" and (whose == "ours" or unattributed_ours):
            for j in ([k] if k is not None else [j for j in range(len(self.cfg.symbols)) if j not in self.failed]):
                delay = min(RESUBSCRIBE_CAP, RESUBSCRIBE_FIRST * 2 ** min(self.error_streaks[j], 16))
                self.error_streaks[j] += 1
                self.resub_at[j] = time.monotonic() + delay
                self.on_subscription_lost(j, f"venue_error {code} {text}"[:70] + f"; resubscribe in {delay:g} s")
            return
        self.state(self.stats.state, f"venue_error {code} {text}"[:95])

    def _error_target(self, arg: Any, text: str) -> tuple[str, int | None, str | None]:
        """Whose subscription an error event is about: 'ours' (and which market), 'other' or
        'unknown', and the instrument it names (from ``arg``, else from the message text,
        classic or v3 style)."""
        inst_type = None
        if isinstance(arg, dict):
            inst, channel, inst_type = (arg.get("instId", arg.get("symbol")),
                                        arg.get("channel", arg.get("topic")), arg.get("instType"))
        else:
            m = _MSG_INST.search(text)
            inst = (m.group(1) or m.group(2)) if m else None
            m = _MSG_CHANNEL.search(text)
            channel = (m.group(1) or m.group(2)) if m else None
            m = _MSG_INST_TYPE.search(text)
            inst_type = (m.group(1) or m.group(2)) if m else None
        inst = inst if isinstance(inst, str) else None
        if inst is None and channel is None:
            return "unknown", None, None
        k = self.market_of.get(inst) if inst is not None else None
        if ((inst is None or k is not None) and (channel is None or channel == self.cfg.channel)
                and (not isinstance(inst_type, str) or inst_type.upper() == self.cfg.inst_type.upper())):
            if k is None and len(self.cfg.symbols) == 1:
                k = 0
            return "ours", k, inst
        return "other", None, inst

    def on_subscription_lost(self, k: int, reason: str) -> None:
        """The venue dropped a subscription (an error event): ``timers`` subscribes again."""
        self.state(FeedState.SUBSCRIBING, reason)

    def on_market_failed(self, k: int, reason: str) -> None:
        """The venue does not know this market: it stays out until the next connection."""
        self.state(self.stats.state, reason[:95])

    async def timers(self, now: float) -> None:
        due = [k for k, at in enumerate(self.resub_at) if at and now >= at]
        if due and self.ws is not None:
            for k in due:
                self.resub_at[k] = 0.0
            await self.resubscribe(self.ws, due)

    async def resubscribe(self, ws: Any, markets: list[int]) -> None:
        await self.subscribe(ws, markets=markets)

    async def session(self, ws: Any) -> None:
        self.failed.clear()                # a new connection asks for every market again
        self.subscribe_times.clear()       # the budgets are per connection
        self.pacer.reset()
        self.resub_at = [0.0] * len(self.resub_at)    # a new connection subscribes anyway
        what = (f"{self.cfg.channel} {self.cfg.symbol}" if len(self.cfg.symbols) == 1
                else f"{len(self.cfg.symbols)} {self.cfg.channel} channels")
        self.state(FeedState.SUBSCRIBING, f"subscribing to {what}")
        await self.subscribe(ws)
        await self.receive_all(ws)

    async def subscribe_successor(self, ws: Any) -> None:
        ks = [k for k in range(len(self.cfg.symbols)) if k not in self.failed]
        for i in range(0, len(ks), SUBSCRIBE_ARGS_PER_MESSAGE):
            self.stats.inc("subscribes")
            await ws.send(orjson.dumps({"op": "subscribe", "args": [self.arg(k) for k in
                                                                    ks[i:i + SUBSCRIBE_ARGS_PER_MESSAGE]]}).decode())

    def on_adopted(self) -> None:
        # new connection, new budgets (its subscribes count); a ping in flight on the old
        # socket will not be answered
        self.subscribe_times.clear()
        n = -(-max(1, len(self.cfg.symbols) - len(self.failed)) // SUBSCRIBE_ARGS_PER_MESSAGE)
        self.subscribe_times.extend([time.monotonic()] * n)
        self.pacer.reset()
        self.pong.set()

    def on_subscribed(self, k: int) -> None:
        pass


class BooksMarket:
    """One market of a books feed: its book, the continuity rule over it, and when its
    snapshot has been awaited since."""

    def __init__(self, feed: BitgetBooksFeed, k: int) -> None:
        self.k = k
        self.symbol = feed.cfg.symbols[k]
        self.book_id = feed.book_ids[k]
        self.book = OrderBook(*feed.cfg.scales_of(self.symbol))
        self.sync = BooksSync(self.book, v3=feed.venue.api == 3)
        self.awaiting_since = 0.0
        self.resyncing = False
        self.reason = ""


class BitgetBooksFeed(BitgetFeed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.markets = [BooksMarket(self, k) for k in range(len(self.cfg.symbols))]
        self._resync_pending: set[int] = set()     # markets to resubscribe after the frame
        self.bids_key, self.asks_key = ("b", "a") if self.venue.api == 3 else ("bids", "asks")

    # the first market's, for single-market callers
    @property
    def book(self) -> OrderBook:
        return self.markets[0].book

    @property
    def sync(self) -> BooksSync:
        return self.markets[0].sync

    def on_subscribed(self, k: int) -> None:
        m = self.markets[k]
        if m.sync.awaiting_snapshot:
            m.awaiting_since = time.monotonic()
            if self.stats.state == FeedState.SUBSCRIBING:
                self.market_state(m, FeedState.SYNCING, "subscribed, waiting for the snapshot")

    def on_subscription_lost(self, k: int, reason: str) -> None:
        """No more updates will come: the book is invalid until the new subscription's snapshot
        (the snapshot timeout waits for the resubscribe)."""
        m = self.markets[k]
        if m.book.valid:
            self.push_invalid("venue_error", m.book_id)
        m.sync.reset()
        m.awaiting_since = 0.0
        m.resyncing = True
        self.market_state(m, FeedState.RESYNCING, reason)

    def on_market_failed(self, k: int, reason: str) -> None:
        m = self.markets[k]
        if m.book.valid:
            self.push_invalid("unknown_symbol", m.book_id)
        m.sync.reset()
        m.awaiting_since = 0.0
        self.market_state(m, self.stats.state, reason)

    def resyncable(self, m: Any) -> bool:
        return m.k not in self.failed

    async def resubscribe(self, ws: Any, markets: list[int]) -> None:
        for k in markets:
            self.markets[k].sync.reset()
            self.markets[k].awaiting_since = time.monotonic()
        await self.subscribe(ws, markets=markets)

    async def timers(self, now: float) -> None:
        """A snapshot that never comes (lost, or a broken frame in its place) would leave the
        book invalid while updates keep the socket looking alive: subscribe again."""
        await super().timers(now)
        if self.ws is None:
            return
        for m in self.markets:
            if (m.sync.awaiting_snapshot and m.awaiting_since and m.k not in self.failed
                    and now - m.awaiting_since > SNAPSHOT_TIMEOUT):
                self.stats.inc("snapshot_timeouts")
                m.awaiting_since = now
                self.resync(m, "snapshot_timeout", f"no snapshot {SNAPSHOT_TIMEOUT:g} s after subscribing")
        while self.actions:
            await self.actions.pop(0)()

    def resync(self, m: BooksMarket, reason: str, detail: str) -> None:
        """The market's book is invalid: tell the engine now, then (after the frame)
        unsubscribe + subscribe its channel for a new snapshot; the others keep flowing."""
        self.stats.inc("resyncs")
        m.sync.reset()
        m.resyncing = True
        m.awaiting_since = time.monotonic()
        self.push_invalid(reason, m.book_id)
        self.market_state(m, FeedState.RESYNCING, f"{reason}: {detail}"[:95])
        pending = self._resync_pending
        if not pending:
            self.actions.append(self._resubscribe_now)
        pending.add(m.k)

    async def _resubscribe_now(self) -> None:
        ks = sorted(self._resync_pending)
        self._resync_pending.clear()
        ws = self.ws
        if ws is None or not ks:
            return                   # the connection went: a new one subscribes anyway
        await self.subscribe(ws, "unsubscribe", ks)
        await self.subscribe(ws, "subscribe", ks)

    def apply(self, payload: tuple[int, dict[str, Any]], recv_ns: int) -> None:
        k, msg = payload
        m = self.markets[k]
        action = msg.get("action")
        sync = m.sync
        for d in msg["data"]:
            if not isinstance(d, dict):
                self.reject("parse_errors", "books data entry is not an object")
                continue
            bids = d.get(self.bids_key, d.get("bids", d.get("b")))
            asks = d.get(self.asks_key, d.get("asks", d.get("a")))
            # integers, or decimal strings (UTA sends seq as a string; the classic docs type
            # pseq as one): anything else is rejected, counted, and the book resynced
            seq, s1, bad = _read_int("seq", d.get("seq"), 0, 2**63)
            pseq, s2, bad2 = _read_int("pseq", d.get("pseq"), 0, 2**63)
            # the venue sends a signed 32-bit CRC32; an unsigned one is the same value mod 2**32
            checksum, s3, bad3 = _read_int("checksum", d.get("checksum"), -(2**31), 2**32)
            if s1 or s2 or s3:
                self.stats.inc("string_numbers")
            bad = bad or bad2 or bad3
            if bad:
                self.reject("bad_numbers", f"books {action} with {bad}: {str(d)[:120]}")
                if action == "snapshot" or (action == "update" and not sync.awaiting_snapshot):
                    self.resync(m, "bad_number", bad)
                continue
            ts = d.get("ts")
            try:
                ts_ms = ms_to_ns(ts) // 1_000_000 if ts is not None else 0
            except ValueError:
                ts_ms = -1
            if not isinstance(bids, list) or not isinstance(asks, list) or ts_ms < 0:
                self.reject("parse_errors", f"malformed books frame: {str(d)[:120]}")
                if action == "update" and not sync.awaiting_snapshot:
                    self.resync(m, "malformed", "an update could not be read")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            if action == "snapshot":
                try:
                    sync.on_snapshot(bids, asks)
                except (ValueError, TypeError) as exc:
                    self.reject_value(exc, f"bad snapshot level: {exc}")
                    self.resync(m, "bad_level", str(exc))
                    continue
                self.stats.inc("snapshots")
                if not sync.checksum_ok(checksum):
                    self.stats.inc("checksum_failures")
                    self.fate(Fate.REJECTED)
                    self.resync(m, "checksum", f"snapshot checksum {checksum} mismatch")
                    continue
                sync.synced(seq)
                m.resyncing = False
                self.error_streaks[k] = 0
                if self.push_book(Kind.BOOK_SNAPSHOT, m.book.packed(), 0, seq or 0, ts_ms * 1_000_000, recv_ns,
                                  m.book_id) and all(x.book.valid for x in self.markets):
                    self.lossy = False    # it replaces whatever was lost; one that did not make it is resent
                self.market_state(m, FeedState.CONNECTED_SYNCED, f"synced at seq {seq}" if seq is not None
                                  else "synced (no seq in this feed: checksums only)")
            elif action == "update":
                verdict = sync.check(seq, pseq)
                if verdict is Verdict.IN_FLIGHT or verdict is Verdict.ALREADY:
                    self.stats.inc("stale_events")   # in flight before the new snapshot, or in it
                    self.fate(Fate.IGNORED)
                    continue
                if verdict is Verdict.GAP:
                    self.stats.inc("gaps")
                    self.fate(Fate.REJECTED)
                    self.resync(m, "gap", sync.gap_detail)
                    continue
                try:
                    packed = m.book.apply(bids, asks, True)
                except (ValueError, TypeError) as exc:
                    self.reject_value(exc, f"bad update level: {exc}")
                    self.resync(m, "bad_level", str(exc))
                    continue
                if not sync.checksum_ok(checksum):
                    self.stats.inc("checksum_failures")
                    self.fate(Fate.REJECTED)
                    self.resync(m, "checksum", f"seq {seq}: checksum {checksum} mismatch")
                    continue
                sync.applied(seq)
                self.push_book(Kind.BOOK_DELTA, packed, pseq or 0, seq or 0, ts_ms * 1_000_000, recv_ns, m.book_id)
            else:
                self.reject("rejected", f"unknown action {action!r}")

    def can_adopt(self, buffer: collections.deque) -> bool:
        """The new socket's snapshots replace the books whole: hand over once every market
        waiting for nothing has its snapshot there."""
        want = {m.symbol for m in self.markets if not m.sync.awaiting_snapshot}
        if not want:
            return bool(buffer)
        for t, _ in buffer:
            msg = _load(t)
            if msg is not None and msg.get("action") == "snapshot":
                arg = msg.get("arg")
                sym = arg.get(self.sym_key) if isinstance(arg, dict) else None
                if isinstance(sym, str):
                    want.discard(sym)
                    if not want:
                        return True
        return False

    def ring_has_room(self) -> None:
        super().ring_has_room()
        for m in self.markets:
            if m.book.valid:
                self.stats.inc("resyncs")
                self.push_book(Kind.BOOK_SNAPSHOT, m.book.packed(), 0, m.book.update_id, 0, time.time_ns(),
                               m.book_id)

    def on_disconnect(self) -> None:
        reason = "stopped" if self.stop.is_set() else "disconnected"   # stopped: routine, not a warning
        for m in self.markets:
            if m.book.valid:
                self.push_invalid(reason, m.book_id)
            m.sync.forget()
            m.awaiting_since = 0.0
        self._resync_pending.clear()
        self.actions.clear()
        self.books_gauge(len(self.all_markets), sum(1 for x in self.all_markets if x.book.valid))

    RESYNC_ONE = "resubscribed for a new snapshot"
    RESYNC_MANY = "resubscribed {n} book(s) for new snapshots"

    def resync_market(self, m: Any, reason: str, detail: str) -> None:
        self.resync(m, reason, detail)

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd in (Command.RESYNC, Command.RESYNC_INVALID):
            return await self.resync_command(cmd)
        return await super().on_command(cmd)


class BitgetTickerFeed(BitgetFeed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.fields = TICKER_FIELDS[self.venue.api]
        self.day_fields = DAY_FIELDS[self.venue.api]
        self.scales = [self.cfg.scales_of(sym) for sym in self.cfg.symbols]
        self.days: list[tuple[int, ...] | None] = [None] * len(self.cfg.symbols)   # last sent, per market

    def can_adopt(self, buffer: collections.deque) -> bool:
        return any('"data"' in t if isinstance(t, str) else b'"data"' in t for t, _ in buffer)

    def apply(self, payload: tuple[int, dict[str, Any]], recv_ns: int) -> None:
        k, msg = payload
        digits, qdigits = self.scales[k]
        last, bid, bid_sz, ask, ask_sz = self.fields
        for d in msg["data"]:
            try:
                if not isinstance(d, dict):
                    raise TypeError("ticker data entry is not an object")
                exch_ns = ms_to_ns(d["ts"])
                ts_ms = exch_ns // 1_000_000
                rec = encode_ticker(self.book_ids[k], exch_ns, recv_ns,
                                    parse_fixed(d[last], digits), parse_fixed(d[bid], digits),
                                    parse_fixed(d[bid_sz], qdigits), parse_fixed(d[ask], digits),
                                    parse_fixed(d[ask_sz], qdigits))
            except (KeyError, TypeError, ValueError) as exc:
                self.reject_value(exc, f"bad ticker: {exc!r}")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            self.push(Kind.TICKER, rec, recv_ns)
            self.push_day(k, d, exch_ns, recv_ns)
            self.error_streaks[k] = 0
            if self.stats.state != FeedState.LIVE:
                self.state(FeedState.LIVE, "receiving tickers")


    def push_day(self, k: int, d: dict[str, Any], exch_ns: int, recv_ns: int) -> None:
        """The ticker's 24 h open/high/low/volume as a TICKER_DAY record, when they changed. A
        ticker without them sends none; one with a value that is not a decimal of the market's
        scale is counted (``parse_errors``, logged) and its ticker record stands."""
        o, h, lo, vol = self.day_fields
        if o not in d and h not in d:
            return
        digits, qdigits = self.scales[k]
        try:
            day = (parse_fixed(d[o], digits) if o in d else 0, parse_fixed(d[h], digits),
                   parse_fixed(d[lo], digits), parse_fixed(d[vol], qdigits))
            if day == self.days[k]:
                return
            rec = encode_day(self.book_ids[k], exch_ns, *day)
        except (KeyError, TypeError, ValueError) as exc:
            fate, self._fate = self._fate, None          # the frame's own fate stands
            try:
                self.stats.inc("out_of_range" if isinstance(exc, FixedRangeError) else "parse_errors")
            finally:
                self._fate = fate
            self.log_bad(f"bad 24 h figures in a ticker: {exc!r}")
            return
        self.days[k] = day
        fate, self._fate = self._fate, None
        try:
            self.push(Kind.TICKER_DAY, rec, recv_ns)
        finally:
            self._fate = fate


def _load(text: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


_DECIMAL = re.compile(r"-?[0-9]{1,20}")      # ASCII digits only; no sign '+', no spaces
# an error event's instrument and channel when it has no `arg`: classic
# "instType:SPOT,channel:books,instId:NOPE doesn't exist", v3 '{"symbol":"NOPE","topic":"books"} ...'
_MSG_INST = re.compile(r'instId:([A-Za-z0-9_.-]+)|"(?:instId|symbol)"\s*:\s*"([^"]*)"')
_MSG_CHANNEL = re.compile(r'channel:([A-Za-z0-9_]+)|"(?:channel|topic)"\s*:\s*"([^"]*)"')
_MSG_INST_TYPE = re.compile(r'instType:([A-Za-z0-9_-]+)|"instType"\s*:\s*"([^"]*)"')


def _read_int(name: str, v: object, lo: int, hi: int) -> tuple[int | None, bool, str]:
    """(value, whether it came as a string, '' or what is wrong with it) of an integer field
    that may come as a JSON integer or a decimal string; absent (None) stays None."""
    if v is None:
        return None, False, ""
    if isinstance(v, str):
        if _DECIMAL.fullmatch(v) and lo <= (n := int(v)) < hi:
            return n, True, ""
        return None, True, f"{name} {v[:40]!r}: not a decimal integer in [{_p2(lo)}, {_p2(hi)})"
    if isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi:
        return v, False, ""
    return None, False, f"{name} {str(v)[:40]} ({type(v).__name__}): not an integer in [{_p2(lo)}, {_p2(hi)})"


def _p2(n: int) -> str:
    """-2**31, 0, 2**63: bounds as people write them."""
    m = abs(n)
    return f"{'-' if n < 0 else ''}2**{m.bit_length() - 1}" if m > 1 and not m & (m - 1) else str(n)

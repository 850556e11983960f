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
from obitui.core.fixed import parse_fixed
from obitui.core.records import Kind, encode_ticker, ms_to_ns
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


class BitgetFeed(Feed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        v = self.cfg.venue_info
        assert isinstance(v, BitgetVenue)
        self.venue: BitgetVenue = v
        self.ch_key, self.sym_key = v.channel_key, v.symbol_key
        self.subscribe_times: collections.deque[float] = collections.deque()
        self.pacer = MessagePacer(v.max_client_msgs - 1, CLIENT_WINDOW_S)
        self.venue_error_codes: collections.Counter[str] = collections.Counter()
        self.resubscribe_at = 0.0          # an error event dropped our subscription: when to retry
        self.error_streak = 0              # such errors since data last flowed

    def url(self) -> str:
        return self.cfg.ws_url

    def arg(self) -> dict[str, str]:
        return self.venue.arg(self.cfg.inst_type, self.cfg.channel, self.cfg.symbol)

    async def subscribe(self, ws: Any, op: str = "subscribe") -> None:
        now = time.monotonic()
        while self.subscribe_times and now - self.subscribe_times[0] > 3600:
            self.subscribe_times.popleft()
        if len(self.subscribe_times) >= self.venue.subscribes_per_hour - SUBSCRIBE_SPARE:
            # the per-connection budget is nearly spent: a new connection starts a new one
            raise Restart("subscribe_budget", f"{self.venue.subscribes_per_hour} subscribes/hour reached",
                          delay=1.0)
        self.subscribe_times.append(now)
        self.stats.inc("subscribes")
        await self.send(ws, orjson.dumps({"op": op, "args": [self.arg()]}).decode())

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

    def classify(self, msg: dict[str, Any], text: str | bytes) -> dict[str, Any] | None:
        """A data frame of our channel, or None once an event (ack, error) or a foreign frame
        was settled."""
        event = msg.get("event")
        if event == "error":
            self.on_error_event(msg)
            return None
        if event is not None:
            self.fate(Fate.IGNORED)      # subscribe/unsubscribe acks
            if event == "subscribe":
                self.on_subscribed()
            return None
        arg = msg.get("arg")
        if not isinstance(arg, dict) or not isinstance(msg.get("data"), list) or not msg["data"]:
            self.reject("parse_errors", f"frame without arg/data: {str(text)[:80]!r}")
            return None
        channel = arg.get(self.ch_key)
        inst = arg.get(self.sym_key)
        if channel != self.cfg.channel or inst != self.cfg.symbol:
            self.reject("rejected", f"frame for {channel}/{inst}")
            return None
        return msg

    def on_error_event(self, msg: dict[str, Any]) -> None:
        """``{"event":"error","code":...,"msg":...}``, with or without ``arg`` and ``op``: logged
        with its code and message, counted (``venue_errors``; per code in ``venue_error_codes``)
        and shown in the state reason. 30001 for our subscription (an unknown symbol) ends the
        feed in ``failed``: no reconnect, no resubscribe, until the operator asks. A rate limit
        (30006, 30007) closes the connection and backs off. Any other error for our subscription
        (30016 Param error, ...) means it is gone: subscribe again after a delay that doubles
        while the errors repeat. An error about something else is only counted."""
        raw = msg.get("code")
        code = str(raw)[:12] if isinstance(raw, (int, str)) and not isinstance(raw, bool) else "?"
        text = msg.get("msg") if isinstance(msg.get("msg"), str) else ""
        op = msg.get("op")
        self.venue_error_codes[code] += 1
        self.reject("venue_errors", f"venue error {code} (#{self.venue_error_codes[code]} of this code): "
                                    f"{text!r} op={op!r} arg={msg.get('arg')!r}")
        whose, inst = self._error_target(msg.get("arg"), text)
        if code == "30001" and whose != "other":
            # one subscription per connection: an unattributed 30001 is about it too
            raise Failed(f"30001 {self.sym_key}:{inst or self.cfg.symbol} doesn't exist"[:95])
        if code in RATE_LIMIT_CODES:
            delay = max(1.0, backoff_delay(self.attempt, self.rng))
            self.attempt += 1
            raise Restart(f"venue_error {code} {text}"[:95], "rate limited by the venue", delay=delay)
        # v3 error events carry neither `arg` nor `op`: one that names nothing may be about our
        # subscription (the only one on this connection), and subscribing again is harmless
        unattributed_ours = whose == "unknown" and (op == "subscribe" or (op is None and self.venue.api == 3))
        if op != "unsubscribe" and (whose == "ours" or unattributed_ours):
            delay = min(RESUBSCRIBE_CAP, RESUBSCRIBE_FIRST * 2 ** min(self.error_streak, 16))
            self.error_streak += 1
            self.resubscribe_at = time.monotonic() + delay
            self.on_subscription_lost(f"venue_error {code} {text}"[:70] + f"; resubscribe in {delay:g} s")
            return
        self.state(self.stats.state, f"venue_error {code} {text}"[:95])

    def _error_target(self, arg: Any, text: str) -> tuple[str, str | None]:
        """Whose subscription an error event is about: 'ours', 'other' or 'unknown', and the
        instrument it names (from ``arg``, else from the message text, classic or v3 style)."""
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
            return "unknown", None
        if ((inst is None or inst == self.cfg.symbol) and (channel is None or channel == self.cfg.channel)
                and (not isinstance(inst_type, str) or inst_type.upper() == self.cfg.inst_type.upper())):
            return "ours", inst
        return "other", inst

    def on_subscription_lost(self, reason: str) -> None:
        """The venue dropped our subscription (an error event): ``timers`` subscribes again."""
        self.state(FeedState.SUBSCRIBING, reason)

    async def timers(self, now: float) -> None:
        if self.resubscribe_at and now >= self.resubscribe_at and self.ws is not None:
            self.resubscribe_at = 0.0
            await self.resubscribe(self.ws)

    async def resubscribe(self, ws: Any) -> None:
        await self.subscribe(ws)

    async def session(self, ws: Any) -> None:
        self.subscribe_times.clear()       # the budgets are per connection
        self.pacer.reset()
        self.resubscribe_at = 0.0          # a new connection subscribes anyway
        self.state(FeedState.SUBSCRIBING, f"subscribing to {self.cfg.channel} {self.cfg.symbol}")
        await self.subscribe(ws)
        await self.receive_all(ws)

    async def subscribe_successor(self, ws: Any) -> None:
        self.stats.inc("subscribes")
        await ws.send(orjson.dumps({"op": "subscribe", "args": [self.arg()]}).decode())

    def on_adopted(self) -> None:
        # new connection, new budgets (its subscribe counts); a ping in flight on the old
        # socket will not be answered
        self.subscribe_times.clear()
        self.subscribe_times.append(time.monotonic())
        self.pacer.reset()
        self.pong.set()

    def on_subscribed(self) -> None:
        pass


class BitgetBooksFeed(BitgetFeed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.book = OrderBook(self.cfg.digits, self.cfg.qdigits)
        self.sync = BooksSync(self.book, v3=self.venue.api == 3)
        self.awaiting_since = 0.0
        self.bids_key, self.asks_key = ("b", "a") if self.venue.api == 3 else ("bids", "asks")

    def on_subscribed(self) -> None:
        if self.sync.awaiting_snapshot:
            self.awaiting_since = time.monotonic()
            if self.stats.state == FeedState.SUBSCRIBING:
                self.state(FeedState.SYNCING, "subscribed, waiting for the snapshot")

    def on_subscription_lost(self, reason: str) -> None:
        """No more updates will come: the book is invalid until the new subscription's snapshot
        (the snapshot timeout waits for the resubscribe)."""
        if self.book.valid:
            self.push_invalid("venue_error")
        self.sync.reset()
        self.awaiting_since = 0.0
        self.state(FeedState.RESYNCING, reason)

    async def resubscribe(self, ws: Any) -> None:
        self.sync.reset()
        self.awaiting_since = time.monotonic()
        await self.subscribe(ws)

    async def timers(self, now: float) -> None:
        """A snapshot that never comes (lost, or a broken frame in its place) would leave the
        book invalid while updates keep the socket looking alive: subscribe again."""
        await super().timers(now)
        if (self.sync.awaiting_snapshot and self.awaiting_since and self.ws is not None
                and now - self.awaiting_since > SNAPSHOT_TIMEOUT):
            self.stats.inc("snapshot_timeouts")
            self.awaiting_since = now
            self.resync("snapshot_timeout", f"no snapshot {SNAPSHOT_TIMEOUT:g} s after subscribing")
            while self.actions:
                await self.actions.pop(0)()

    def resync(self, reason: str, detail: str) -> None:
        """Book invalid: tell the engine now, then (after the frame) unsubscribe + subscribe for
        a new snapshot."""
        self.stats.inc("resyncs")
        self.sync.reset()
        self.awaiting_since = time.monotonic()
        self.push_invalid(reason)
        self.state(FeedState.RESYNCING, f"{reason}: {detail}"[:95])
        self.actions.append(self._resubscribe_now)

    async def _resubscribe_now(self) -> None:
        ws = self.ws
        if ws is None:
            return                   # the connection went: a new one subscribes anyway
        await self.subscribe(ws, "unsubscribe")
        await self.subscribe(ws, "subscribe")

    def apply(self, msg: dict[str, Any], recv_ns: int) -> None:
        action = msg.get("action")
        sync = self.sync
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
                    self.resync("bad_number", bad)
                continue
            ts = d.get("ts")
            try:
                ts_ms = ms_to_ns(ts) // 1_000_000 if ts is not None else 0
            except ValueError:
                ts_ms = -1
            if not isinstance(bids, list) or not isinstance(asks, list) or ts_ms < 0:
                self.reject("parse_errors", f"malformed books frame: {str(d)[:120]}")
                if action == "update" and not sync.awaiting_snapshot:
                    self.resync("malformed", "an update could not be read")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            if action == "snapshot":
                try:
                    sync.on_snapshot(bids, asks)
                except (ValueError, TypeError) as exc:
                    self.reject_value(exc, f"bad snapshot level: {exc}")
                    self.resync("bad_level", str(exc))
                    continue
                self.stats.inc("snapshots")
                if not sync.checksum_ok(checksum):
                    self.stats.inc("checksum_failures")
                    self.fate(Fate.REJECTED)
                    self.resync("checksum", f"snapshot checksum {checksum} mismatch")
                    continue
                sync.synced(seq)
                self.error_streak = 0
                if self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), 0, seq or 0, ts_ms * 1_000_000, recv_ns):
                    self.lossy = False    # it replaces whatever was lost; one that did not make it is resent
                self.state(FeedState.CONNECTED_SYNCED, f"synced at seq {seq}" if seq is not None
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
                    self.resync("gap", sync.gap_detail)
                    continue
                try:
                    packed = self.book.apply(bids, asks, True)
                except (ValueError, TypeError) as exc:
                    self.reject_value(exc, f"bad update level: {exc}")
                    self.resync("bad_level", str(exc))
                    continue
                if not sync.checksum_ok(checksum):
                    self.stats.inc("checksum_failures")
                    self.fate(Fate.REJECTED)
                    self.resync("checksum", f"seq {seq}: checksum {checksum} mismatch")
                    continue
                sync.applied(seq)
                self.push_book(Kind.BOOK_DELTA, packed, pseq or 0, seq or 0, ts_ms * 1_000_000, recv_ns)
            else:
                self.reject("rejected", f"unknown action {action!r}")

    def can_adopt(self, buffer: collections.deque) -> bool:
        """The new socket's snapshot replaces the book whole: hand over once it is there."""
        if self.sync.awaiting_snapshot:
            return bool(buffer)
        return any(_action(t) == "snapshot" for t, _ in buffer)

    def ring_has_room(self) -> None:
        super().ring_has_room()
        if self.book.valid:
            self.stats.inc("resyncs")
            self.push_book(Kind.BOOK_SNAPSHOT, self.book.packed(), 0, self.book.update_id, 0, time.time_ns())

    def on_disconnect(self) -> None:
        if self.book.valid:
            self.push_invalid("disconnected")
        self.sync.forget()
        self.awaiting_since = 0.0
        self.actions.clear()

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd == Command.RESYNC:
            if self.ws is None:
                return AckResult.FAILED, "not connected"
            self.resync("operator_resync", "resync requested")
            while self.actions:
                await self.actions.pop(0)()
            return AckResult.OK, "resubscribed for a new snapshot"
        return await super().on_command(cmd)


class BitgetTickerFeed(BitgetFeed):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.fields = TICKER_FIELDS[self.venue.api]

    def can_adopt(self, buffer: collections.deque) -> bool:
        return any('"data"' in t if isinstance(t, str) else b'"data"' in t for t, _ in buffer)

    def apply(self, msg: dict[str, Any], recv_ns: int) -> None:
        digits, qdigits = self.cfg.digits, self.cfg.qdigits
        last, bid, bid_sz, ask, ask_sz = self.fields
        for d in msg["data"]:
            try:
                if not isinstance(d, dict):
                    raise TypeError("ticker data entry is not an object")
                exch_ns = ms_to_ns(d["ts"])
                ts_ms = exch_ns // 1_000_000
                rec = encode_ticker(self.index, exch_ns, recv_ns,
                                    parse_fixed(d[last], digits), parse_fixed(d[bid], digits),
                                    parse_fixed(d[bid_sz], qdigits), parse_fixed(d[ask], digits),
                                    parse_fixed(d[ask_sz], qdigits))
            except (KeyError, TypeError, ValueError) as exc:
                self.reject_value(exc, f"bad ticker: {exc!r}")
                continue
            self.note_exchange_time(ts_ms, recv_ns)
            self.push(Kind.TICKER, rec, recv_ns)
            self.error_streak = 0
            if self.stats.state != FeedState.LIVE:
                self.state(FeedState.LIVE, "receiving tickers")


def _action(text: str | bytes) -> str | None:
    """The ``action`` of a data frame (snapshot/update), without trusting a substring."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return msg.get("action") if isinstance(msg, dict) else None


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

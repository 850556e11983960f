"""What every feed process shares: the connection loop with capped exponential backoff and
full jitter (honouring Retry-After), the per-frame template and its accounting, the
per-channel stale watchdog, keep-alive pings, control words from the supervisor, stats
publishing, ring pushes that never block, and recording.

A venue feed implements ``session(ws)`` (subscribe, then ``await self.receive_all(ws)``) and
the steps of a frame: ``classify`` (what the decoded frame is: data to apply, or something
it handled itself) and ``apply``; a hot path may take a frame before it is decoded
(``fast_frame``). Every frame ends in exactly one ``Fate``."""
from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets

from obitui.config import FeedConfig
from obitui.core.fixed import FixedRangeError
from obitui.core.records import BOOK_HEADER, Kind, encode_book, encode_invalid
from obitui.core.ring import Ring
from obitui.core.stats import ALL_BOOKS, FEED_COUNTERS, AckResult, Command, FeedSlotWriter, FeedState, hist_bucket
from obitui.feeds.recorder import Recorder
from obitui.feeds.rotation import Rotation

log = logging.getLogger("obitui.feed")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
HEALTHY_RESET = 5.0      # healthy (synced / receiving) this long: the next failure is a new
                         # incident and starts the backoff afresh; shorter lives keep doubling it
HEALTHY_STATES = (FeedState.CONNECTED_SYNCED, FeedState.CONNECTED, FeedState.LIVE)
HOUSEKEEPING = 0.05
CONNECT_TIMEOUT = 10.0   # s for TCP, TLS and the WebSocket handshake together



class Fate(enum.IntEnum):
    """What became of a received frame; the worst outcome wins when a frame has several parts
    (the order below). BUFFERED frames stay pending until the sync releases them."""
    NONE = 0          # nothing said yet (a frame that ends so is a bug, counted as unhandled)
    IGNORED = 1       # nothing to do: an ack, a duplicate
    BUFFERED = 2      # waiting for a snapshot
    PUSHED = 3        # its records are in the ring
    DROPPED = 4       # the ring was full
    REJECTED = 5      # unusable: counted with its reason


_FATE_COUNTER = {Fate.IGNORED: "frames_ignored", Fate.PUSHED: "frames_pushed",
                 Fate.DROPPED: "frames_dropped", Fate.REJECTED: "frames_rejected"}
# the members bound once: reading ``Fate.PUSHED`` goes through the enum class each time
# (~80 ns on 3.11), a module global does not; the hot path settles every frame with these
_NONE, _BUFFERED, _PUSHED, _DROPPED = Fate.NONE, Fate.BUFFERED, Fate.PUSHED, Fate.DROPPED


class Restart(Exception):
    """End this connection and connect again; ``reason`` is the state reason word."""

    def __init__(self, reason: str, detail: str = "", delay: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.delay = delay      # None: the backoff decides; 0: at once


class Failed(Exception):
    """A permanent error (unknown symbol, bad config): the feed stops retrying."""


def describe_connect_error(exc: BaseException, url: str, timeout: float) -> str:
    """The reason an operator reads when a connection could not be opened: the cause and the
    host (``DNS: stream.binance.com not resolved``, ``refused: 127.0.0.1:9443``, ``TLS: ...``,
    ``HTTP 451 from ...``, ``timeout after 10 s: ...``). At most 95 characters (the reason field)."""
    u = urlsplit(url)
    host = u.hostname or "?"
    try:
        port = u.port or (443 if u.scheme in ("wss", "https") else 80)
    except ValueError:
        port = 0
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        text = f"DNS: {host} not resolved ({exc.strerror or exc})"
    elif isinstance(exc, ConnectionRefusedError):
        text = f"refused: {where}"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS: certificate of {host} not trusted ({exc.verify_message or exc.reason})"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS: {exc.reason or exc} ({where})"
    elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = f"timeout after {timeout:g} s: {where}"
    elif isinstance(exc, websockets.InvalidStatus):
        text = f"HTTP {exc.response.status_code} from {where}"
    elif isinstance(exc, websockets.InvalidURI):
        text = f"bad URL: {url}"
    elif isinstance(exc, websockets.InvalidHandshake):
        text = f"handshake with {where} failed: {exc}"
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or type(exc).__name__}: {where}"
    else:
        text = f"{type(exc).__name__}: {where}"
    return text[:95]


def backoff_delay(attempt: int, rng: random.Random, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


class Feed:
    def __init__(self, cfg: FeedConfig, index: int, ring: Ring, stats: FeedSlotWriter,
                 recorder: Recorder | None = None, seed: int | None = None,
                 book_ids: list[int] | None = None, group: Any = None) -> None:
        self.cfg = cfg
        # a connection of a feed process with several (feeds/group.py): the group reads the
        # commands, publishes the slot and folds the connections' states; None: the only one
        self.group = group
        self.conn_no = 0
        self.resynced = 0                         # books the last resync command started
        self.index = index
        # the book index (stats slot, record id) of each market, in cfg.symbols order
        self.book_ids = list(book_ids) if book_ids is not None else [index + k for k in range(len(cfg.symbols))]
        if len(self.book_ids) != len(cfg.symbols):
            raise ValueError(f"{cfg.label}: {len(cfg.symbols)} symbols but {len(self.book_ids)} book ids")
        self.book_id_of = dict(zip(cfg.symbols, self.book_ids))
        self.ring = ring
        self.stats = stats
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.ws: Any = None
        self.attempt = 0
        self.last_data = time.monotonic()
        self.restart: Restart | None = None       # set by housekeeping, raised by the loop
        self.skip_backoff = asyncio.Event()
        self.control_seq = stats.block.read_command(index)[0]
        self.command_book: int | None = None      # the book a command names (None: all)
        stats.set("connections", 1)               # one connection per feed process (per_connection)
        self.lossy = False
        self.healthy_since = 0.0              # when the current connection became healthy
        self._log_budget = 0.0
        self._fate: Fate | None = None       # the outcome of the frame in hand; None: no frame
        self.rotation = Rotation(self)
        # socket work a frame asked for (a resubscribe): run after the frame, before the next
        self.actions: list[Callable[[], Awaitable[None]]] = []
        self.wake_engine = stats.block.wake_engine_if_sleeping
        self.pong = asyncio.Event()
        self.last_alive = time.monotonic()    # the last frame or pong: the connection lives

    # ------------------------------------------------------------ states and counters
    def state(self, st: FeedState, reason: str = "") -> None:
        if st in HEALTHY_STATES and not self.healthy_since and self.ws is not None:
            self.healthy_since = time.monotonic()
        if st != self.stats.state or reason != self.stats.reason:
            log.info("%s: %s (%s)", self.cfg.label, st.word, reason)
        self.stats.set_state(st, reason)

    def reject(self, counter: str, detail: str) -> None:
        """A frame that could not be used: counted, logged (at most ~5 lines/s)."""
        self.stats.inc(counter)
        self.fate(Fate.REJECTED)
        now = time.monotonic()
        if now >= self._log_budget:
            self._log_budget = now + 0.2
            log.warning("%s: %s: %s", self.cfg.label, counter, detail[:300])

    def log_bad(self, detail: str) -> None:
        """A warning about bad input, at most ~5 lines/s (the count is the caller's)."""
        now = time.monotonic()
        if now >= self._log_budget:
            self._log_budget = now + 0.2
            log.warning("%s: %s", self.cfg.label, detail[:300])

    def reject_value(self, exc: BaseException, detail: str) -> None:
        """A frame with a value that could not be used: ``out_of_range`` when it is a decimal
        that does not fit the symbol's fixed-point scale (never wrapped, never rounded),
        ``parse_errors`` for anything else."""
        self.reject("out_of_range" if isinstance(exc, FixedRangeError) else "parse_errors", detail)

    def market_state(self, m: Any, st: FeedState, reason: str) -> None:
        """A market's sync state changed (``m`` None: all of them). With one market the feed's
        state is its state, word for word; with several, the worst of them, with the counts.
        Book feeds keep ``self.markets``: objects with ``book``, ``symbol``, ``resyncing`` and
        ``reason``."""
        markets = self.all_markets
        if m is not None:
            m.reason = reason
        n = len(markets)
        synced = sum(1 for x in markets if x.book.valid)
        self.books_gauge(n, synced)
        if (self.group is not None and self.ws is not None and not self.healthy_since
                and all(x.book.valid for x in self.markets)):     # type: ignore[attr-defined]
            # this connection's own books are whole (the feed's state may still wait for
            # another connection's): a later failure of it is a new incident
            self.healthy_since = time.monotonic()
        if n == 1:
            self.state(st, reason)
            return
        if synced == n:
            self.state(FeedState.CONNECTED_SYNCED, f"{n}/{n} books synced")
        elif any(x.resyncing for x in markets):
            self.state(FeedState.RESYNCING, (f"{m.symbol}: {reason}" if m is not None else reason)[:95])
        else:
            self.state(FeedState.SYNCING, (f"{synced}/{n} books synced" + (f"; {m.symbol}: {reason}" if m else ""))[:95])

    @property
    def all_markets(self) -> list[Any]:
        """The markets of the whole feed process (every connection's)."""
        return self.group.markets if self.group is not None else self.markets  # type: ignore[attr-defined]

    def process_shared(self, key: str, make: Callable[[], Any]) -> Any:
        """An object every connection of the process shares (made by the first that asks)."""
        if self.group is None:
            return make()
        if key not in self.group.shared:
            self.group.shared[key] = make()
        return self.group.shared[key]

    def books_for_command(self, cmd: Command) -> tuple[list[Any], str]:
        """The markets a RESYNC (all, or the one it names) or RESYNC_INVALID (the invalid ones)
        applies to, and '' or why the command names none of this feed's."""
        book = self.command_book
        chosen = [m for m in self.markets      # type: ignore[attr-defined]
                  if (book is None or m.book_id == book) and self.resyncable(m)
                  and (cmd == Command.RESYNC or not m.book.valid)]
        if book is not None and not chosen and cmd == Command.RESYNC:
            return [], f"book {book} is not one of this feed's"
        return chosen, ""

    # what a book feed answers a resync with (one market / several)
    RESYNC_ONE = "resync started"
    RESYNC_MANY = "resync of {n} book(s) started"

    def resync_market(self, m: Any, reason: str, detail: str) -> None:
        """Start a new sync of one market (book feeds)."""
        raise NotImplementedError

    async def resync_command(self, cmd: Command) -> tuple[AckResult, str]:
        """RESYNC (all books, or the one the command names) / RESYNC_INVALID (the invalid ones):
        each chosen market resyncs, the others keep flowing."""
        if self.ws is None:
            return AckResult.FAILED, "not connected"
        chosen, why = self.books_for_command(cmd)
        if why:
            return AckResult.FAILED, why
        self.resynced = len(chosen)
        for m in chosen:
            self.resync_market(m, "operator_resync", "resync requested")
        while self.actions:
            await self.actions.pop(0)()
        if len(self.markets) == 1:          # type: ignore[attr-defined]
            return AckResult.OK, self.RESYNC_ONE
        return AckResult.OK, self.RESYNC_MANY.format(n=len(chosen))

    def resyncable(self, m: Any) -> bool:
        """A market an operator's resync may touch (Bitget: not one the venue does not know)."""
        return True

    def books_gauge(self, total: int, synced: int) -> None:
        """How many markets the feed serves and how many of its books are valid (the status
        line's ``(149/150 books)``)."""
        if "books" in FEED_COUNTERS:
            self.stats.set("books", total)
            self.stats.set("books_synced", synced)

    # ------------------------------------------------------------ frame accounting
    # Invariant, true at every publish: frames == frames_pushed + frames_dropped +
    # frames_rejected + frames_ignored + frames_discarded + frames_pending.
    def fate(self, f: Fate) -> None:
        """Record an outcome of the frame in hand (the worst one counts)."""
        if self._fate is not None and f > self._fate:
            self._fate = f

    def frame_done(self) -> None:
        """Settle the frame in hand: every frame ends in exactly one fate counter."""
        f, self._fate = self._fate, None
        if f is None or f is _BUFFERED:
            return
        self.stats.inc("frames_pending", -1)
        if f is _NONE:      # a handler forgot to say what it did: a bug, but still counted
            self.stats.inc("unhandled")
            self.stats.inc("frames_rejected")
            log.warning("%s: a frame had no outcome (counted as unhandled)", self.cfg.label)
            return
        self.stats.inc(_FATE_COUNTER[f])

    def frame_error(self, exc: BaseException) -> None:
        """A handler raised on a frame (a bug, or input no check foresaw): the frame is
        rejected and counted, the traceback logged, and the feed carries on."""
        self.stats.inc("frame_errors")
        self.fate(Fate.REJECTED)
        now = time.monotonic()
        if now >= self._log_budget:
            self._log_budget = now + 0.2
            log.error("%s: error while handling a frame (rejected, counted): %r", self.cfg.label, exc,
                      exc_info=exc)

    def release_buffered(self, n: int, counter: str) -> None:
        """``n`` buffered frames left the sync buffer into ``counter``."""
        if n:
            self.stats.inc("frames_pending", -n)
            self.stats.inc(counter, n)

    # ------------------------------------------------------------ ring
    def push(self, kind: Kind, payload: bytes, recv_ns: int) -> bool:
        try:
            ok = self.ring.push(payload, int(kind))
        except ValueError as exc:      # larger than the ring can ever hold
            self.reject("rejected", f"record not pushed: {exc}")
            return False
        self.fate(_PUSHED if ok else _DROPPED)
        if ok:
            # pushed = visible in the ring; waking a sleeping engine (a syscall, and on a busy
            # host a context switch) comes after and is not part of it
            self.stats.hist_receive_push[hist_bucket(time.time_ns() - recv_ns)] += 1
            self.stats.inc("records")
            self.wake_engine()
        else:
            self.stats.inc("ring_drops")
            if not self.lossy:
                self.stats.inc("lossy")
                log.warning("%s: ring full, record dropped (engine behind?)", self.cfg.label)
                # the engine cannot tell whose record was lost: it drops every book of the
                # ring, so every connection of the process sends its books again
                for f in (self.group.conns if self.group is not None else (self,)):
                    f.lossy = True
        return ok

    def push_book(self, kind: Kind, packed: tuple, first_id: int, last_id: int, exch_ns: int,
                  recv_ns: int, book_id: int | None = None) -> bool:
        """Push a book record; one larger than the ring takes is split: the first part keeps
        ``kind``, the rest follow as deltas of absolute levels (same ids), which rebuild the
        same book. A lost part shows as a seq gap to the engine like any lost record."""
        data, nb, na, pdec, qdec = packed
        if book_id is None:
            book_id = self.book_ids[0]
        per = max(1, (self.ring.max_payload - BOOK_HEADER.size) // 16)
        if nb + na <= per:
            return self.push(kind, encode_book(kind, book_id, exch_ns, recv_ns, first_id, last_id,
                                               data, nb, na, pdec, qdec), recv_ns)
        ok = True
        start = 0
        part_kind = kind
        while start < nb + na:
            end = min(nb + na, start + per)
            cb = max(0, min(end, nb) - start)        # bids in this part
            ca = (end - start) - cb
            ok &= self.push(part_kind, encode_book(part_kind, book_id, exch_ns, recv_ns, first_id,
                                                   last_id, data[16 * start:16 * end], cb, ca, pdec,
                                                   qdec), recv_ns)
            part_kind = Kind.BOOK_DELTA
            start = end
        return ok

    def push_invalid(self, reason: str, book_id: int | None = None) -> None:
        """Not an outcome of the frame in hand (if any): that one is rejected by the caller."""
        fate, self._fate = self._fate, None
        try:
            self.push(Kind.BOOK_INVALID, encode_invalid(self.book_ids[0] if book_id is None else book_id,
                                                        time.time_ns(), reason), time.time_ns())
        finally:
            self._fate = fate

    def load_object(self, text: str | bytes) -> dict[str, Any] | None:
        """The frame as a JSON object, or None after counting and logging why it is not one."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self.reject("parse_errors", f"invalid JSON ({exc}): {str(text)[:80]!r}")
            return None
        if not isinstance(msg, dict):
            self.reject("parse_errors", f"frame is not an object: {str(text)[:80]!r}")
            return None
        return msg

    def note_exchange_time(self, exch_ms: int, recv_ns: int) -> None:
        if exch_ms > 0:
            exch_ns = exch_ms * 1_000_000
            self.stats.last_exchange_ns = exch_ns
            lat = recv_ns - exch_ns
            if lat > 0:
                self.stats.hist_exchange_receive[hist_bucket(lat)] += 1

    def on_frame(self, text: str | bytes, recv_ns: int) -> None:
        self.last_data = self.last_alive = time.monotonic()
        self.stats.inc("frames")
        self.stats.inc("frames_pending")
        self._fate = _NONE
        self.stats.inc("bytes", len(text))
        self.stats.last_receive_ns = recv_ns
        if self.recorder is not None:
            self.recorder.add(recv_ns, "ws", self.url(), text if isinstance(text, str) else text.decode("utf-8", "replace"))

    # ------------------------------------------------------------ the frame template
    def dispatch(self, text: str | bytes, recv_ns: int) -> None:
        """One frame: counted, handled (fast path, or load -> classify -> apply), settled in
        exactly one fate. A handler that raises rejects the frame (counted, logged); only
        Restart and Failed end the connection."""
        if self.is_keepalive(text):
            return
        self.on_frame(text, recv_ns)
        try:
            if self.fast_frame(text, recv_ns):
                return
            msg = self.load_object(text)
            if msg is None:
                return
            payload = self.classify(msg, text)
            if payload is not None:
                self.apply(payload, recv_ns)
        except (Restart, Failed):
            raise
        except Exception as exc:   # never let one frame end the feed
            self.frame_error(exc)
        finally:
            self.frame_done()

    async def receive(self, text: str | bytes, recv_ns: int) -> None:
        """A frame, then the socket work it asked for."""
        self.dispatch(text, recv_ns)
        while self.actions:
            await self.actions.pop(0)()

    async def receive_all(self, ws: Any) -> None:
        """Every frame of the connection (rotations included) until it ends."""
        async with contextlib.aclosing(self.frames(ws)) as frames:
            async for text, recv_ns in frames:
                self.dispatch(text, recv_ns)
                while self.actions:
                    await self.actions.pop(0)()

    def is_keepalive(self, text: str | bytes) -> bool:
        """A keep-alive answer in the data stream (Bitget's text pong): not a frame."""
        return False

    def fast_frame(self, text: str | bytes, recv_ns: int) -> bool:
        """A hot path that handles the frame from its text (True), or declines (False)."""
        return False

    def classify(self, msg: dict[str, Any], text: str | bytes) -> Any:
        """What the decoded frame is: the payload to ``apply``, or None when this step settled
        it (an ack, a venue error, a frame for another stream: fate set, counted)."""
        raise NotImplementedError

    def apply(self, payload: Any, recv_ns: int) -> None:
        """Use a classified payload: book sync, a record pushed, a resync asked for."""
        raise NotImplementedError

    # ------------------------------------------------------------ keep-alive and liveness
    def on_pong(self) -> None:
        """A pong proves the connection (not the channel): life for the liveness check, not
        data for the stale watchdog."""
        self.stats.inc("pongs")
        self.last_alive = time.monotonic()
        self.pong.set()

    async def send_ping(self, ws: Any) -> None:
        """A WebSocket ping frame (the default); venues with text pings override this and call
        ``on_pong`` when their pong arrives."""
        waiter = await ws.ping()
        waiter.add_done_callback(self._ws_pong)

    def _ws_pong(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.on_pong()

    async def _pinger(self) -> None:
        """Keep-alive and liveness on the current connection: a ping every ``ping_interval``,
        and one as soon as nothing (no frame, no pong) arrived for ``idle_ping`` s. No pong
        within ``pong_timeout``: the connection is dead, reconnect. So a dead connection is
        found within idle_ping + pong_timeout, while a quiet book that answers pings is not
        stale (the data watchdog waits for the channel's own, longer limit)."""
        cfg = self.cfg
        last_ping = time.monotonic()
        while True:
            now = time.monotonic()
            due = last_ping + cfg.ping_interval
            if cfg.idle_ping:
                due = min(due, max(self.last_alive, last_ping) + cfg.idle_ping)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            ws = self.ws
            if ws is None:
                return
            last_ping = now
            self.stats.inc("pings")
            self.pong.clear()
            try:
                await self.send_ping(ws)
            except websockets.ConnectionClosed:
                continue          # rotated away, or closing: the session notices
            try:
                await asyncio.wait_for(self.pong.wait(), cfg.pong_timeout)
            except asyncio.TimeoutError:
                self.stats.inc("pong_timeouts")
                self.request_restart(Restart("pong_timeout", f"no pong {cfg.pong_timeout:g} s after a ping"))
                return

    # ------------------------------------------------------------ to override
    def url(self) -> str:
        raise NotImplementedError

    async def session(self, ws: Any) -> None:
        raise NotImplementedError

    def on_disconnect(self) -> None:
        """The socket is gone: book feeds invalidate their book."""

    async def timers(self, now: float) -> None:
        """Venue timers, run by housekeeping every 50 ms."""

    def ring_has_room(self) -> None:
        """Called by housekeeping after a drop once the ring has room again."""
        self.lossy = False

    async def on_command(self, cmd: Command) -> tuple[AckResult, str]:
        if cmd == Command.RECONNECT:
            self.request_restart(Restart("operator_reconnect", "reconnect requested", delay=0))
            self.skip_backoff.set()
            return AckResult.OK, "reconnecting"
        if cmd == Command.STOP:
            self.stop.set()
            self.skip_backoff.set()
            self.request_restart_if_connected()
            return AckResult.OK, "stopping"
        return AckResult.UNSUPPORTED, f"{cmd.name.lower()} does not apply to a {self.cfg.channel} feed"

    # ------------------------------------------------------------ the loop
    def request_restart_if_connected(self) -> None:
        if self.ws is not None:
            self.request_restart(Restart("stopping", "shutting down", delay=0))

    def request_restart(self, r: Restart) -> None:
        if self.restart is None:
            self.restart = r
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.close(1000, r.reason))

    async def _housekeeping(self) -> None:
        last_publish = 0.0
        while not self.stop.is_set():
            await asyncio.sleep(HOUSEKEEPING)
            now = time.monotonic()
            seq, cmd, book = self.stats.block.read_command_book(self.index) if self.group is None else (self.control_seq, 0, 0)
            if seq != self.control_seq:
                self.control_seq = seq
                self.command_book = None if book == ALL_BOOKS else book
                self.stats.inc("control_commands")
                try:
                    result, text = await self.on_command(cmd)
                except Restart as r:          # the command needs a new connection: that is its answer
                    self.request_restart(r)
                    result, text = AckResult.OK, f"restarting: {r}"[:56]
                except Exception as exc:      # e.g. the socket closed under a resync
                    self.stats.inc("housekeeping_errors")
                    result, text = AckResult.FAILED, f"{type(exc).__name__}: {exc}"[:56]
                self.stats.block.ack_command(self.index, seq, result, text)
                log.info("%s: command %s: %s (%s)", self.cfg.label, cmd.name.lower(), result.name.lower(), text)
            try:
                await self.timers(now)
            except Restart as r:              # a restart asked for from a timer is carried out
                self.request_restart(r)
            except Exception as exc:          # housekeeping must outlive any single failure
                self.stats.inc("housekeeping_errors")
                log.warning("%s: housekeeping: %r", self.cfg.label, exc)
            if (self.ws is not None and self.restart is None
                    and now - self.last_data > self.cfg.stale_limit()):
                self.stats.inc("watchdog")
                self.request_restart(Restart("stale", f"no data for {self.cfg.stale_limit():.0f} s"))
            if self.lossy and self.ring.used_bytes() < self.ring.capacity // 2:
                self.ring_has_room()
            if now - last_publish >= 0.1 and self.group is None:
                last_publish = now
                self.stats.publish()

    async def run(self) -> None:
        """Connect, run sessions, back off, until ``stop`` is set."""
        hk = asyncio.get_running_loop().create_task(self._housekeeping())
        rec = None
        if self.recorder is not None and self.conn_no == 0:   # one writer for the process
            rec = asyncio.get_running_loop().create_task(self.recorder.run(self.stop))
        try:
            await self._loop()
        finally:
            self.stop.set()
            hk.cancel()
            if rec is not None:
                await rec
            self.state(FeedState.STOPPED, "stopped")   # publishes the final counters too

    async def _loop(self) -> None:
        while not self.stop.is_set():
            self.restart = None
            self.healthy_since = 0.0
            self.state(FeedState.CONNECTING, f"connecting to {self.url()}")
            delay: float | None = None
            reason = "disconnected"
            try:
                async with self.connect() as ws:
                    if self.stop.is_set():          # stopped while the handshake ran
                        break
                    self.ws = ws
                    self.stats.set("connections_up", 1)
                    self.last_data = self.last_alive = time.monotonic()
                    pinger = asyncio.get_running_loop().create_task(self._pinger())
                    try:
                        await self.session(ws)
                    finally:
                        pinger.cancel()
                if self.restart is not None:
                    raise self.restart
            except Restart as r:
                reason, delay = r.reason, r.delay
            except Failed as exc:
                self.state(FeedState.FAILED, str(exc))
                self.ws = None
                self.on_disconnect()
                await self._wait_for_operator()
                continue
            except websockets.ConnectionClosed as exc:
                if self.restart is not None:
                    reason, delay = self.restart.reason, self.restart.delay
                else:
                    code = exc.rcvd.code if exc.rcvd else (exc.sent.code if exc.sent else 1006)
                    reason = "oversize" if code == 1009 else f"closed_{code}"
                    if code == 1009:
                        self.stats.inc("oversize")
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
                reason = describe_connect_error(exc, self.url(), CONNECT_TIMEOUT)
                self.stats.inc("connect_failures")
                log.warning("%s: connection failed: %s (%r)", self.cfg.label, reason, exc)
            finally:
                self.ws = None
                self.stats.set("connections_up", 0)
            self.on_disconnect()
            if self.stop.is_set():
                break
            self.stats.inc("reconnects")
            if self.healthy_since and time.monotonic() - self.healthy_since >= HEALTHY_RESET:
                self.attempt = 0
            self.healthy_since = 0.0
            if delay is None:
                delay = backoff_delay(self.attempt, self.rng)
                self.attempt += 1
            await self._backoff(delay, reason)

    def connect(self) -> Any:
        """A websockets connect (use with ``async with`` or await it) with our settings."""
        return websockets.connect(self.url(), max_size=self.cfg.max_frame, open_timeout=CONNECT_TIMEOUT,
                                  close_timeout=2, compression=None, ping_interval=None,
                                  max_queue=None)

    # ------------------------------------------------------------ frames and rotation
    def frames(self, ws: Any) -> Any:
        """(text, receive ns) of the connection, rotated before the venue's cut (rotation.py)."""
        return self.rotation.frames(ws)

    async def subscribe_successor(self, ws: Any) -> None:
        """Subscribe the new socket of a rotation (Binance: the URL already names the streams)."""

    def can_adopt(self, buffer: Any) -> bool:
        """True when the successor's buffered frames continue what the feed has."""
        return bool(buffer)

    def on_adopted(self) -> None:
        """The successor became the connection."""

    async def _backoff(self, delay: float, reason: str) -> None:
        self.skip_backoff.clear()
        self.stats.next_retry_ns = time.time_ns() + int(delay * 1e9)
        self.state(FeedState.BACKOFF, reason)
        try:
            await asyncio.wait_for(self.skip_backoff.wait(), delay)
        except asyncio.TimeoutError:
            pass
        self.stats.next_retry_ns = 0

    async def _wait_for_operator(self) -> None:
        self.skip_backoff.clear()
        await self.skip_backoff.wait()

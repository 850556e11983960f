"""The publisher process (`obitui ... --publish nats://host:4222`): reads the stats block (never
a ring's records, never the hot path) and publishes what changed to NATS at the publish rate
(docs/NATS.md). Its own state is a feed slot of the stats block, labelled ``NATS``, like any
feed's: connecting, connected, backoff, with its counters.

Failure isolation: nothing here can slow the feeds or the engine (they never wait for this
process). The NATS client's outgoing buffer is bounded (``PENDING_BYTES``): a message it cannot
take while the server is slow is dropped and counted (``frames_dropped``); one that comes while
there is no connection (a first connect, or reconnecting) is not queued but dropped and counted
too (``frames_discarded``), and once the connection is back every book is sent whole again.
The client reconnects by itself (every ``RECONNECT_WAIT_S``, forever); a first connection is
retried with capped exponential backoff.

A round is paced: the books are read, written and handed to the client ``CHUNK_BOOKS`` at a
time, the chunks spread over ``SPREAD`` of the publish period, so an attached console takes
a few messages at a time instead of the whole round at once (its decoding is what the
latency of a burst is made of). A book's messages are written from its slot's bytes in one C
call (``obitui.bus._encode.BookMessages``: the bytes ``headless.book_json`` would give, with no
BookView, no dict and no Python call per level).

JetStream (``PublishSpec.jetstream_max_age``, off by default): at every (re)connect the
publisher creates or updates the stream ``schema.books_stream(host)`` over its book subjects
(the last message of each book, kept ``max_age`` seconds). Publishing stays plain core NATS
(the stream captures the subjects): the hot path is the same with and without it. A server
without JetStream is a logged, counted error (``server_errors``), never the end of publishing."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import ssl
import time
from dataclasses import dataclass
from typing import Any

import orjson

from obitui.bus import schema
from obitui.bus._encode import SLOT_BYTES, BookMessages
from obitui.config import Config
from obitui.core.ring import Ring
from obitui.core.stats import FEED_COUNTERS, Command, FeedSlotWriter, FeedState, StatsBlock
from obitui.headless import book_markets, snapshot

log = logging.getLogger("obitui.publisher")

LABEL = "NATS"                 # the publisher's row in the feeds table
PENDING_BYTES = 4 << 20        # the client's outgoing buffer while the server is slow or away
RECONNECT_WAIT_S = 1.0
CONNECT_TIMEOUT_S = 2.0
FLUSH_TIMEOUT_S = 1.0          # a forced flush of the client's buffer waits at most this
BACKOFF_CAP_S = 10.0
JS_TIMEOUT_S = 2.0             # a JetStream API request (the stream's creation) waits at most this
JS_ERR_STREAM_EXISTS = 10058   # "stream name already in use with a different configuration"
LEVELS = 20                    # levels per side in a book message
CHUNK_BOOKS = 16               # books made and handed to the client between two yields
# The publisher runs below the feed path (lower_priority: this nice value, then SCHED_IDLE): a feed
# or the engine woken while it makes a round takes the core at once (a bridge can be late by a
# millisecond; a book cannot; issue #21, "0 impact on the feed path")
PUBLISHER_NICE = 10
SPREAD = 0.75                  # the chunks of a round are spread over this share of the period
# the counters every message moves, by index (send() runs ~2,500 times a second at 300 books)
_FRAMES, _PUSHED, _BYTES = (FEED_COUNTERS.index(n) for n in ("frames", "frames_pushed", "bytes"))


@dataclass
class PublishSpec:
    """What `--publish` and its options ask for. Secrets never come from the command line:
    ``creds`` is a file path; a token or user/password are read from the environment
    (``OBITUI_NATS_TOKEN``, ``OBITUI_NATS_USER``/``OBITUI_NATS_PASSWORD``) by the process."""
    url: str
    host: str
    rate: float = 8.0
    allow_control: bool = False
    creds: str | None = None
    ca_file: str | None = None
    levels: int = LEVELS
    jetstream_max_age: float | None = None     # s: keep the books in a JetStream stream (None: off)
    jetstream_storage: str = "memory"          # or "file"


def client_options(url: str, creds: str | None = None, ca_file: str | None = None) -> dict[str, Any]:
    """nats.connect() keyword arguments for ``url`` (several URLs: comma-separated) with the
    credentials the environment and ``creds`` give: used by the publisher and by attach."""
    opts: dict[str, Any] = {"servers": [u.strip() for u in url.split(",") if u.strip()]}
    if creds:
        opts["user_credentials"] = creds
    if os.environ.get("OBITUI_NATS_TOKEN"):
        opts["token"] = os.environ["OBITUI_NATS_TOKEN"]
    if os.environ.get("OBITUI_NATS_USER"):
        opts["user"] = os.environ["OBITUI_NATS_USER"]
        opts["password"] = os.environ.get("OBITUI_NATS_PASSWORD", "")
    if any(s.startswith("tls://") for s in opts["servers"]) or ca_file:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        opts["tls"] = ctx
    return opts


def redact(url: str) -> str:
    """A server URL as it may be logged: without user:password@."""
    out = []
    for u in url.split(","):
        scheme, sep, rest = u.strip().partition("://")
        if sep and "@" in rest:
            rest = rest.rsplit("@", 1)[1]         # a password may hold '@' itself
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)


class Publisher:
    def __init__(self, cfg: Config, stats: StatsBlock, slot: int, ring_names: list[str],
                 spec: PublishSpec) -> None:
        self.cfg = cfg
        self.stats = stats
        self.spec = spec
        self.host = spec.host
        self.me = FeedSlotWriter(stats, slot, LABEL, "nats", redact(spec.url)[:48], "", "")
        self.rings = [Ring.attach(n, role="monitor") for n in ring_names]
        self.markets = book_markets(cfg)          # key -> (slot, book feed)
        self.subjects = {key: (schema.book_subject(self.host, *key.split(":", 1)),
                               schema.trade_subject(self.host, *key.split(":", 1)))
                         for key in self.markets}
        # what a round needs of each market, worked out once: its slot, its subjects, and the
        # writer of its messages (docs/NATS.md), which knows what it last sent
        self.plan = [(j, *self.subjects[key],
                      BookMessages(self.host, key, *f.scales_of(key.split(":", 1)[1]), spec.levels, schema.SCHEMA))
                     for key, (j, f) in self.markets.items()]
        self.book_seq: dict[int, int] = {}        # slot -> its seqlock word when last read
        self.last_beat = 0.0
        self.feeds_text = b""
        self.nc: Any = None
        self.stop = asyncio.Event()
        self.seq = 0
        self.rng = random.Random()
        self.js_stream = schema.books_stream(self.host) if spec.jetstream_max_age else None
        self.js_ok: bool | None = None            # None: not tried on this connection yet
        self.js_error = ""
        self.js_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ state
    def state(self, st: FeedState, reason: str) -> None:
        if st != self.me.state or reason != self.me.reason:
            log.info("%s: %s (%s)", LABEL, st.word, reason)
        self.me.set_state(st, reason[:95])

    def beat(self) -> None:
        """Our own state and heartbeat in the stats block (for the supervisor and the UI), at
        most every 0.1 s."""
        now = time.monotonic()
        if now - self.last_beat >= 0.1:
            self.last_beat = now
            self.me.publish()

    # ------------------------------------------------------------ sending
    async def send(self, subject: str, payload: bytes) -> None:
        counters = self.me.counters
        counters[_FRAMES] += 1
        nc = self.nc
        if nc is None or not nc.is_connected:
            # no connection (a first connect, or reconnecting): not queued for later, since
            # what the books are now is sent whole once the connection is back
            self.me.inc("frames_discarded")
            return
        if nc.pending_data_size + len(payload) > PENDING_BYTES:
            # the server (or the link) is slower than we publish: dropped here, never waited for
            self.me.inc("frames_dropped")
            self._log_drop(subject, "buffer full")
            return
        try:
            await nc.publish(subject, payload)
        except Exception as exc:          # OutboundBufferLimitError, a flush timeout
            self.me.inc("frames_dropped")
            self._log_drop(subject, type(exc).__name__)
            return
        counters[_PUSHED] += 1
        counters[_BYTES] += len(payload)

    def bad_slot(self, key: str, exc: Exception, what: str = "it") -> None:
        """A book whose slot holds figures no message can carry (an int64 edge, a scale past
        what a decimal string takes): counted (``frame_errors``) and logged. ``what`` "it": the
        book is read again when the engine writes it again; "its trades": the book was sent,
        those trades are left out."""
        self.me.inc("frame_errors")
        n = self.me.get("frame_errors")
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log.warning("%s: book %s: %s not published: %s: %s; %d such so far", LABEL, key, what,
                        type(exc).__name__, exc, n)

    def _log_drop(self, subject: str, why: str) -> None:
        n = self.me.get("frames_dropped")
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log.warning("%s: message to %s dropped (%s); %d dropped so far", LABEL, subject, why, n)

    def feeds_message(self) -> dict[str, Any]:
        fills = [(r.fill(), r.drops) for r in self.rings]
        snap = snapshot(self.cfg, self.stats, fills, books=(), levels=0)
        return {"v": schema.SCHEMA, "host": self.host, "ts": snap["ts"], "feeds": snap["feeds"],
                "engine": snap["engine"], "order": [f.label for f in self.cfg.feeds]}

    async def tick(self) -> None:
        """One round: every book that changed, its new trades, the feeds when they changed. The
        books go ``CHUNK_BOOKS`` at a time, the chunks spread over ``SPREAD`` of the period (a
        chunk that is late goes at once: a round never takes longer for the pacing)."""
        read, load_u64, offset = self.stats.seg.read_consistent, self.stats.seg.load_u64, self.stats.book_offset
        book_seq, send = self.book_seq, self.send
        t0 = time.monotonic()
        gap = SPREAD / self.spec.rate / max(1, -(-len(self.plan) // CHUNK_BOOKS))
        for n, (j, book_subj, trade_subj, writer) in enumerate(self.plan):
            if n and n % CHUNK_BOOKS == 0:
                # the chunk made so far goes out (the client's flusher runs) while we wait
                await asyncio.sleep(max(0.0, t0 + n // CHUNK_BOOKS * gap - time.monotonic()))
                self.beat()               # a round slowed down by a busy machine is not a hang
            # the slot's seqlock word moves with every write of the engine: a slot it has not
            # written since the book was last read is not read again
            off = offset(j)
            seq = load_u64(off)
            if book_seq.get(j) == seq:
                continue
            raw = read(off, SLOT_BYTES)
            if raw is None:               # the engine was writing it every time we looked
                continue
            book_seq[j] = seq
            try:
                got = writer.messages(raw)
            except Exception as exc:      # figures no message can hold: this book waits, the others go
                self.bad_slot(writer.key, exc)
                continue
            if got is None:               # no market in it yet
                continue
            book, trade = got
            if writer.trade_error is not None:
                self.bad_slot(writer.key, writer.trade_error, "its trades")
            if book is not None:
                await send(book_subj, book)
            if trade is not None:
                await send(trade_subj, trade)
        feeds = self.feeds_message()
        # resent when anything but the ages changed (the heartbeat carries liveness)
        text = orjson.dumps({label: {k: v for k, v in fv.items() if k != "age_s"}
                             for label, fv in feeds["feeds"].items()})
        if text != self.feeds_text:
            self.feeds_text = text
            await send(schema.feeds_subject(self.host), orjson.dumps(feeds))

    async def heartbeat(self, stopping: bool = False) -> None:
        """``stopping``: the last one, sent as the fleet stops (consoles show it stopped, not hung)."""
        self.seq += 1
        await self.send(schema.heartbeat_subject(self.host), orjson.dumps({
            "v": schema.SCHEMA, "host": self.host, "ts": round(time.time(), 3), "seq": self.seq,
            "pid": os.getpid(), "books": len(self.markets), "control": self.spec.allow_control,
            "feeds": [f.label for f in self.cfg.feeds], "jetstream": self.jetstream_status(),
            "stopping": stopping}))

    def jetstream_status(self) -> dict[str, Any] | None:
        """The heartbeat's ``jetstream``: None when off; else the stream, what it keeps and
        whether it is set up (``ok`` None while being set up, False with ``error``)."""
        if self.js_stream is None:
            return None
        out = {"stream": self.js_stream, "subjects": schema.books_stream_subjects(self.host),
               "max_age_s": self.spec.jetstream_max_age, "per_book": schema.JS_MSGS_PER_BOOK,
               "storage": self.spec.jetstream_storage, "ok": self.js_ok}
        if self.js_error:
            out["error"] = self.js_error
        return out

    def resend_all(self) -> None:
        """The next round sends every book and the feeds again, changed or not."""
        self.book_seq.clear()
        for *_, writer in self.plan:
            writer.forget()
        self.feeds_text = b""

    async def on_resend(self, msg: Any) -> None:
        """A console attached: the next round sends every book and the feeds again."""
        self.resend_all()

    # ------------------------------------------------------------ JetStream
    def stream_config(self) -> Any:
        """The books stream's configuration (``--publish-jetstream``; docs/NATS.md)."""
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig
        max_age = float(self.spec.jetstream_max_age or 0.0)
        return StreamConfig(
            name=self.js_stream, subjects=[schema.books_stream_subjects(self.host)],
            description=f"obitui {self.host}: the last message of each book",
            storage=StorageType.FILE if self.spec.jetstream_storage == "file" else StorageType.MEMORY,
            max_age=max_age, max_msgs_per_subject=schema.JS_MSGS_PER_BOOK, discard=DiscardPolicy.OLD,
            # no message ids are sent: the smallest window the server keeps for nothing
            duplicate_window=min(max_age, 1.0), allow_direct=True)

    async def ensure_stream(self) -> None:
        """Create the books stream, or update it when it exists with another configuration
        (idempotent: at every connection). Any failure (a server without JetStream, no
        permission, a storage change the server refuses) is logged and counted
        (``server_errors``); publishing goes on, the stream just does not fill."""
        from nats.errors import NoRespondersError
        from nats.js.errors import BadRequestError, ServiceUnavailableError
        cfg = self.stream_config()
        js = self.nc.jetstream(timeout=JS_TIMEOUT_S)
        try:
            try:
                await js.add_stream(cfg)
                what = "ready"
            except BadRequestError as exc:
                if exc.err_code != JS_ERR_STREAM_EXISTS:
                    raise
                await js.update_stream(cfg)
                what = "updated"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, (ServiceUnavailableError, NoRespondersError)):
                why = "the server has no JetStream (nats-server -js)"
            elif isinstance(exc, asyncio.TimeoutError):
                why = f"no answer from JetStream within {JS_TIMEOUT_S:g} s"
            else:
                why = f"{type(exc).__name__}: {getattr(exc, 'description', None) or exc}"
            self.js_ok, self.js_error = False, why[:200]
            self.me.inc("server_errors")
            log.error("%s: JetStream stream %s not set up: %s; publishing goes on without it (errors so "
                      "far: %d)", LABEL, self.js_stream, why, self.me.get("server_errors"))
            if self.nc is not None and self.nc.is_connected:
                self.state(FeedState.CONNECTED, f"publishing; no JetStream stream: {why}")
            return
        self.js_ok, self.js_error = True, ""
        log.info("%s: JetStream stream %s %s (%s, %s storage, the last %d message(s) of each book, "
                 "max age %g s)", LABEL, self.js_stream, what, schema.books_stream_subjects(self.host),
                 self.spec.jetstream_storage, schema.JS_MSGS_PER_BOOK, cfg.max_age)

    def start_stream_setup(self) -> None:
        """``ensure_stream`` in the background (a connection's first round does not wait)."""
        if self.js_stream is None:
            return
        if self.js_task is not None and not self.js_task.done():
            self.js_task.cancel()
        self.js_ok = None
        self.js_task = asyncio.get_running_loop().create_task(self.ensure_stream())

    # ------------------------------------------------------------ control
    async def on_control(self, msg: Any) -> None:
        """A remote ``r``/``s``: carried out only when this fleet allows remote control."""
        reply: dict[str, Any] = {"v": schema.SCHEMA, "host": self.host}
        try:
            req = orjson.loads(msg.data)
            label, word = str(req["label"]), str(req["cmd"])
            symbol = req.get("symbol")
            if symbol is not None and not isinstance(symbol, str):
                raise TypeError("symbol must be a string")
            cmd = {"reconnect": Command.RECONNECT, "resync": Command.RESYNC,
                   "resync_invalid": Command.RESYNC_INVALID}[word]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.me.inc("control_commands")
            reply.update(ok=False, error=f"bad request: {exc!r}"[:200])
        else:
            self.me.inc("control_commands")
            if not self.spec.allow_control:
                log.warning("%s: remote %s of %s refused: remote control is off", LABEL, word, label)
                reply.update(ok=False, error=f"remote control is off on {self.host}: its supervisor "
                                             f"was not started with --allow-remote-control")
            else:
                from obitui.controller import command_and_wait
                try:
                    ack = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: command_and_wait(self.cfg, self.stats, label, cmd, symbol=symbol))
                    reply.update(ok=ack.ok, text=ack.message())
                    if not ack.ok:
                        reply["error"] = ack.message()
                    log.info("%s: remote %s: %s", LABEL, word, ack.message())
                except Exception as exc:        # an unknown label or symbol, a closed block
                    reply.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, orjson.dumps(reply))
            except Exception as exc:
                log.warning("%s: control reply lost: %r", LABEL, exc)

    # ------------------------------------------------------------ the loop
    async def connect(self) -> None:
        import nats
        attempt = 0
        while not self.stop.is_set():
            self.state(FeedState.CONNECTING, f"connecting to {redact(self.spec.url)}")

            async def disconnected() -> None:
                self.me.set("connections_up", 0)
                self.state(FeedState.BACKOFF, "disconnected from the server; reconnecting")

            async def reconnected() -> None:
                self.me.inc("reconnects")
                self.resend_all()              # everything again: what was missed is stale
                self.me.set("connections_up", 1)
                self.state(FeedState.CONNECTED, f"publishing to {redact(self.nc.connected_url.geturl() if self.nc and self.nc.connected_url else self.spec.url)}")
                self.start_stream_setup()      # a server that came back may have lost it

            async def error(exc: Exception) -> None:
                log.debug("%s: client error: %r", LABEL, exc)

            try:
                # nats.connect() with endless reconnects retries a first connection endlessly
                # too: bounded here, so a server that is not there is a counted failure and a
                # backoff of ours, with the reason shown
                self.nc = await asyncio.wait_for(nats.connect(
                    **client_options(self.spec.url, self.spec.creds, self.spec.ca_file),
                    name=f"obitui publisher {self.host}", connect_timeout=CONNECT_TIMEOUT_S,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT_S,
                    pending_size=PENDING_BYTES, flush_timeout=FLUSH_TIMEOUT_S, disconnected_cb=disconnected,
                    reconnected_cb=reconnected, error_cb=error), CONNECT_TIMEOUT_S + 1.0)
            except Exception as exc:
                self.me.inc("connect_failures")
                delay = self.rng.uniform(0, min(BACKOFF_CAP_S, 0.5 * 2 ** min(attempt, 10)))
                attempt += 1
                self.state(FeedState.BACKOFF, f"cannot connect to {redact(self.spec.url)}: "
                                              f"{type(exc).__name__}: {exc}"[:95])
                self.me.next_retry_ns = time.time_ns() + int(delay * 1e9)
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            self.me.set("connections", 1)
            self.me.set("connections_up", 1)
            self.me.next_retry_ns = 0
            await self.nc.subscribe(schema.control_subject(self.host), cb=self.on_control)
            await self.nc.subscribe(schema.resend_subject(self.host), cb=self.on_resend)
            self.state(FeedState.CONNECTED, f"publishing to {redact(self.spec.url)}")
            self.start_stream_setup()
            return

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop.set)
        connector = loop.create_task(self.connect())
        period = 1.0 / self.spec.rate
        next_tick = next_beat = time.monotonic()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if self.nc is not None:
                    if now >= next_tick:
                        next_tick = max(next_tick + period, now)
                        try:
                            await self.tick()
                        except Exception as exc:      # a bad slot never ends the publisher
                            self.me.inc("frame_errors")
                            log.warning("%s: tick failed: %r", LABEL, exc, exc_info=exc)
                    if now >= next_beat:
                        next_beat = max(next_beat + schema.HEARTBEAT_S, now)
                        await self.heartbeat()
                self.beat()
                await asyncio.sleep(max(0.0, min(next_tick, next_beat, now + 0.1) - time.monotonic()))
        finally:
            connector.cancel()
            if self.js_task is not None:
                self.js_task.cancel()
            if self.nc is not None:
                try:
                    if self.nc.is_connected:
                        await self.heartbeat(stopping=True)
                    await asyncio.wait_for(self.nc.drain(), 2.0)
                except Exception:
                    pass
            self.state(FeedState.STOPPED, "stopped")


def lower_priority() -> str:
    """Put this process below the feed path: ``nice PUBLISHER_NICE``, then the SCHED_IDLE
    policy (an unprivileged process may take it for itself). A niced process that the kernel
    has just picked keeps its core for up to a time slice (~1.5 ms on 2 cores) before a woken
    feed gets it; a SCHED_IDLE one gives it up at once, and runs on what the feed path leaves
    (BENCHMARKS.md "The publisher below the feed path"). Returns what it got, for the log."""
    got = []
    try:
        os.nice(PUBLISHER_NICE)
        got.append(f"nice {PUBLISHER_NICE}")
    except OSError as exc:
        log.warning("%s: cannot lower its priority (nice %d): %s", LABEL, PUBLISHER_NICE, exc)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        got.append("SCHED_IDLE")
    except (OSError, AttributeError) as exc:
        log.warning("%s: cannot take the SCHED_IDLE policy (%s); it runs at its nice value", LABEL, exc)
    return ", ".join(got) or "unchanged"


def publisher_main(cfg: Config, stats_name: str, slot: int, ring_names: list[str],
                   spec: PublishSpec, publisher: type[Publisher] | None = None) -> None:
    """Process entry, started by the supervisor through ``lifeline.run_child``; ``publisher``:
    a subclass to run instead (the bench's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log.info("%s: runs at %s", LABEL, lower_priority())
    stats = StatsBlock.attach(stats_name)
    try:
        asyncio.run((publisher or Publisher)(cfg, stats, slot, ring_names, dataclasses.replace(spec)).run())
    finally:
        stats.close()

"""The stats block: one shared-memory segment the UI and headless mode read, and the only thing
they read (docs/ARCHITECTURE.md, Shared memory).

Layout: a header, then ``n_feeds`` FeedSlots, ``n_books`` BookSlots, one EngineSlot and the book
index (one ``KEY_SIZE`` entry per book slot: the market key whose figures the slot holds, written
once at create, read by ``find_book``). Every
slot has exactly one writer and starts with a seqlock word: the writer makes it odd, copies the
slot in, makes it even and larger; a reader copies the slot between two reads of it and retries
on a change, so it never blocks a writer and never sees a torn slot. Writers keep their figures
in process memory and publish whole slots (a memcpy) at their own pace. Control words (operator
commands to a feed) and their acknowledgements are separate words outside the seqlock'd part,
each with its own writer.
"""
from __future__ import annotations

import enum
import os
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from obitui.core.shm import Segment, ShmError

MAGIC = int.from_bytes(b"OBISTAT1", "little")
VERSION = 4             # 4: book index, BookSlot reason, feed gauges books/connections, control word with a book
HEADER_SIZE = 4096
FEED_SLOT = 4096
BOOK_SLOT = 4096
ENGINE_SLOT = 1024
TOP_N = 20
OBI_HISTORY = 256
HIST_BUCKETS = 64
MAX_RINGS = 16
MAX_FEED_SLOTS = 256
MAX_BOOK_SLOTS = 2048   # markets of one fleet (config.MAX_BOOKS)
KEY_SIZE = 64           # one book index entry: the market key, utf-8, NUL padded (63 bytes at most)
REASON_SIZE = 24        # the last invalidation reason in a BookSlot
ALL_BOOKS = 0xFFFF      # the book field of a control word: every book of the feed
BUDGET_OFF = 2048       # in the header: shared budgets, two u64 words per REST weight pool
MAX_BUDGETS = 32


class StatsError(ShmError):
    """The stats block cannot be created, attached or read."""


class FeedState(enum.IntEnum):
    """Feed states (contract: their names appear in headless output)."""
    STOPPED = 0
    CONNECTING = 1
    SUBSCRIBING = 2
    SYNCING = 3
    CONNECTED_SYNCED = 4
    CONNECTED = 5
    LIVE = 6
    RESYNCING = 7
    BACKOFF = 8
    FAILED = 9

    @property
    def word(self) -> str:
        return self.name.lower()


class Command(enum.IntEnum):
    """An operator command in a feed's control word, with the book it names (``ALL_BOOKS``:
    every book of the feed; else a book index, the id its records carry)."""
    NONE = 0
    RECONNECT = 1
    RESYNC = 2              # resync the named book, or every book of the feed
    STOP = 3
    RESYNC_INVALID = 4      # resync the feed's invalid books only (the valid ones are left alone)


class AckResult(enum.IntEnum):
    PENDING = 0
    OK = 1
    FAILED = 2
    UNSUPPORTED = 3


FEED_COUNTERS = (
    "frames", "bytes", "records", "parse_errors", "gaps", "resyncs", "checksum_failures",
    "reconnects", "ring_drops", "rejected", "snapshots", "stale_events", "rest_requests",
    "rest_errors", "http_429", "http_418", "oversize", "subscribes", "watchdog", "pings",
    "pongs", "lossy", "server_errors", "control_commands",
    # what became of every received frame (feeds/base.py): frames == the five fates + pending
    "frames_pushed", "frames_dropped", "frames_rejected", "frames_ignored", "frames_discarded",
    "frames_pending", "unhandled", "stale_snapshots", "rest_outages",
    "pong_timeouts", "frame_errors", "rotations",
    "snapshot_timeouts", "housekeeping_errors", "connect_failures", "out_of_range",
    # venue error events; sequence numbers and checksums that came as strings; such numbers
    # that could not be read (rejected, the book resynced)
    "venue_errors", "string_numbers", "bad_numbers",
    # server shutdown notices (answered by a make-before-break rotation); snapshot requests
    # held back because the venue's REST weight budget of the minute was spent
    "server_shutdowns", "rest_weight_waits",
    # gauges of a feed with many markets: the markets it serves and its valid books; its
    # connections and those up (set by the feed with FeedSlotWriter.set)
    "books", "books_synced", "connections", "connections_up",
)
# Gauges among them: figures that go down as well as up (the feed decrements them), where
# the others only grow. Every counter word is a signed int64, so a gauge is stored signed.
FEED_GAUGES = ("frames_pending", "books", "books_synced", "connections", "connections_up")
FRAME_FATES = ("frames_pushed", "frames_dropped", "frames_rejected", "frames_ignored",
               "frames_discarded", "frames_pending")
_FC = {name: i for i, name in enumerate(FEED_COUNTERS)}
_GAUGES = frozenset(FEED_GAUGES)
N_COUNTERS = 96      # room to add counters without a new layout (int64 words)

# ---- FeedSlot: [seq][fixed fields][counters][2 histograms][ring name] ... [control][ack]
_FEED_FIXED = struct.Struct("<Q16s16s48s16sIIqqQqqq96s")
_FEED_COUNTERS_OFF = _FEED_FIXED.size
_FEED_HIST1_OFF = _FEED_COUNTERS_OFF + 8 * N_COUNTERS
_FEED_HIST2_OFF = _FEED_HIST1_OFF + 8 * HIST_BUCKETS
_FEED_RING_OFF = _FEED_HIST2_OFF + 8 * HIST_BUCKETS
_FEED_PUBLISHED = _FEED_RING_OFF + 64                        # what a publish copies
FEED_CONTROL_OFF = 3968      # u64 (seq << 24 | book << 8 | command), written by the supervisor
FEED_ACK_OFF = 4032          # u64 (seq << 8 | result), then 56 bytes of text, written by the feed
assert _FEED_PUBLISHED <= FEED_CONTROL_OFF and len(FEED_COUNTERS) <= N_COUNTERS
assert set(FEED_GAUGES) <= set(FEED_COUNTERS)

# ---- BookSlot: [seq][fixed fields, the last invalidation reason last] ... [levels at 512][OBI history][histogram]
_BOOK_FIXED = struct.Struct(f"<Q16s16s16sIIQqIIIIqqqqdqqQQqqQQQQQQ{REASON_SIZE}s")
_BOOK_REASON_OFF = _BOOK_FIXED.size - REASON_SIZE             # 232
_BOOK_LEVELS_OFF = 512
_BOOK_OBI_OFF = _BOOK_LEVELS_OFF + 16 * 2 * TOP_N             # 1152
_BOOK_HIST_OFF = _BOOK_OBI_OFF + 8 * OBI_HISTORY              # 3200
_BOOK_PUBLISHED = _BOOK_HIST_OFF + 8 * HIST_BUCKETS           # 3712
_BOOK_ASKS_OFF = _BOOK_LEVELS_OFF + 16 * TOP_N
_PAIR = struct.Struct("<qq")
# the market's ticker and 24 h figures, and how many trades it had, after the fixed fields:
# ticker exch ns, last, bid, bid qty, ask, ask qty; 24 h exch ns, open, high, low, volume; trades
_BOOK_MARKET_OFF = 256
_BOOK_MARKET = struct.Struct("<qqqqqqqqqqqQ")
# the trade tape after the histogram: the last TAPE_N trades, newest first (ts ns, price, qty, side)
TAPE_N = 8
_TAPE = struct.Struct("<qqqq")
_BOOK_TAPE_OFF = _BOOK_PUBLISHED
_BOOK_END = _BOOK_TAPE_OFF + TAPE_N * _TAPE.size                # 3968 (TAPE_SIZE below)
assert _BOOK_FIXED.size <= _BOOK_MARKET_OFF and _BOOK_MARKET_OFF + _BOOK_MARKET.size <= _BOOK_LEVELS_OFF
assert _BOOK_END <= BOOK_SLOT


def pack_market(ticker: tuple[int, ...] | None, day: tuple[int, ...] | None, trades: int) -> bytes:
    """A BookSlot's market section: ``ticker`` (exch ns, last, bid, bid qty, ask, ask qty),
    ``day`` (exch ns, open, high, low, volume), each None when the venue sent none, and the
    number of trades seen."""
    return _BOOK_MARKET.pack(*(ticker or (0,) * 6), *(day or (0,) * 5), trades)


TAPE_SIZE = TAPE_N * _TAPE.size
tape_entry = _TAPE.pack      # (ts ns, price, qty, side) -> one entry of the tape, as pack_tape writes it


def pack_tape(trades: Any) -> bytes:
    """A BookSlot's trade tape: (ts ns, price, qty, side) tuples, newest first, at most TAPE_N."""
    out = b"".join(tape_entry(*t) for t in list(trades)[:TAPE_N])
    return out.ljust(TAPE_SIZE, b"\0")

# ---- EngineSlot
_ENGINE_FIXED = struct.Struct("<QqQQQdd16sQQ")
_ENGINE_HW_OFF = 128
_ENGINE_PUBLISHED = _ENGINE_HW_OFF + 8 * MAX_RINGS

# magic, version, header size, size, n_feeds, n_books, feed slot, book slot, supervisor pid,
# start ns, run id, uid, book index offset, index entry size, index entries written
_HEADER = struct.Struct("<QIIQIIIIqQ32sIQII")
ENGINE_SLEEPING_OFF = 512     # u32, written by the engine: 1 while it sleeps on the wake word
ENGINE_WAKE_OFF = 576         # u32 futex word, bumped by a producer that wakes the engine


def _s(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _b(text: str, n: int) -> bytes:
    return text.encode("utf-8")[:n]


def hist_bucket(ns: int) -> int:
    """Log2 bucket of a latency in ns: bucket i holds [2**i, 2**(i+1)) (``hist_bounds``)."""
    return min(HIST_BUCKETS - 1, max(0, int(ns).bit_length() - 1)) if ns > 0 else 0


def hist_bounds(i: int) -> tuple[int, float]:
    """[low, high) in ns of log2 bucket i, as ``hist_bucket`` fills it: [2**i, 2**(i+1)); the
    first bucket also takes what is below 1 ns, the last one everything above."""
    return (0 if i == 0 else 2 ** i), (float("inf") if i == HIST_BUCKETS - 1 else float(2 ** (i + 1)))


def hist_middle(i: int) -> float:
    """The value (ns) that stands for log2 bucket i: its geometric middle, 2**i * sqrt(2)."""
    return float(2 ** i) * 1.4142135623730951


def hist_quantile(counts: list[int] | array, q: float) -> float | None:
    """Approximate quantile (ns) of a log2 histogram: the middle (``hist_middle``) of the bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    acc = 0
    for i, c in enumerate(counts):
        acc += c
        if acc >= rank:
            return hist_middle(i)
    return float(2 ** (HIST_BUCKETS - 1))


def now_ns() -> int:
    return time.time_ns()


STALE_VIEW_S = 3.0   # a view whose writer has not beaten for this long is not shown as live


def heartbeat_age(heartbeat_ns: int) -> float | None:
    """Seconds since a writer's heartbeat (CLOCK_MONOTONIC, shared by every process of the
    host), or None when it never beat."""
    return (time.monotonic_ns() - heartbeat_ns) / 1e9 if heartbeat_ns else None


def is_stale(age: float | None) -> bool:
    """A writer that beat, but not for STALE_VIEW_S (one that never beat is starting: the
    supervisor judges that from its start)."""
    return age is not None and age > STALE_VIEW_S


@dataclass
class FeedView:
    label: str
    exchange: str
    stream: str
    symbol: str
    state: FeedState
    reason: str
    since_ns: int
    pid: int
    heartbeat_ns: int
    next_retry_ns: int
    last_exchange_ns: int
    last_receive_ns: int
    counters: dict[str, int]
    hist_exchange_receive: list[int]
    hist_receive_push: list[int]
    ring: str
    ack_seq: int = 0
    ack_result: AckResult = AckResult.PENDING
    ack_text: str = ""


@dataclass
class BookView:
    label: str
    exchange: str
    symbol: str
    valid: bool
    crossed: bool
    update_id: int
    last_update_ns: int
    price_decimals: int
    qty_decimals: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    obi: float
    obi_history: list[float]
    buy_qty_1s: int
    sell_qty_1s: int
    buy_count_1s: int
    sell_count_1s: int
    last_trade_price: int
    last_trade_qty: int
    last_trade_side: int
    last_trade_ns: int
    invalidations: int
    records_applied: int
    hist_ring_engine: list[int]
    obi_pos: int
    reason: str = ""        # why the book was last invalidated ("" when it never was)
    # the venue's ticker (0: none came): its exchange time, last price, best bid/ask and sizes
    ticker_ns: int = 0
    ticker_last: int = 0
    ticker_bid: int = 0
    ticker_bid_qty: int = 0
    ticker_ask: int = 0
    ticker_ask_qty: int = 0
    # the venue's rolling 24 h figures (0: not given): open, high, low (price), volume (base)
    day_ns: int = 0
    day_open: int = 0
    day_high: int = 0
    day_low: int = 0
    day_volume: int = 0
    trades: int = 0         # trades seen since the engine started
    tape: list[tuple[int, int, int, int]] = field(default_factory=list)   # (ts ns, price, qty, side), newest first

    @property
    def mid(self) -> int | None:
        """(best bid + best ask) / 2 in price units (rounded down), None without both sides."""
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) // 2

    @property
    def spread_bps(self) -> float | None:
        """The spread in basis points of the mid, None without both sides."""
        if not self.bids or not self.asks:
            return None
        mid2 = self.bids[0][0] + self.asks[0][0]
        return 20000.0 * (self.asks[0][0] - self.bids[0][0]) / mid2 if mid2 > 0 else None

    @property
    def flow_1s(self) -> int:
        """Buy minus sell volume of the last second (quantity units)."""
        return self.buy_qty_1s - self.sell_qty_1s


@dataclass
class EngineView:
    pid: int
    heartbeat_ns: int
    records: int
    batches: int
    records_per_s: float
    obi_levels: float
    wait: str
    gaps: int
    ring_high_water: list[int]
    bad_records: int = 0    # records the engine refused (a book id not of their ring's feed, a bad length)


class StatsBlock:
    """Create (supervisor) or attach (everyone else) the stats block segment."""

    def __init__(self, seg: Segment, n_feeds: int, n_books: int) -> None:
        self.seg = seg
        self.view = seg.view()
        self.n_feeds = n_feeds
        self.n_books = n_books
        self._index: dict[str, int] | None = None

    @staticmethod
    def size_for(n_feeds: int, n_books: int) -> int:
        return StatsBlock.index_offset_for(n_feeds, n_books) + n_books * KEY_SIZE

    @staticmethod
    def index_offset_for(n_feeds: int, n_books: int) -> int:
        """Where the book index starts: after the EngineSlot."""
        return HEADER_SIZE + n_feeds * FEED_SLOT + n_books * BOOK_SLOT + ENGINE_SLOT

    @classmethod
    def create(cls, name: str, n_feeds: int, n_books: int, run_id: str = "",
               book_keys: list[str] | tuple[str, ...] = ()) -> StatsBlock:
        """``book_keys``: the market key of each book slot, in slot order (``config.book_plan``),
        written into the book index; fewer keys than slots leave the rest unnamed."""
        if not (0 < n_feeds <= MAX_FEED_SLOTS and 0 <= n_books <= MAX_BOOK_SLOTS):
            raise StatsError(f"stats block needs 1-{MAX_FEED_SLOTS} feeds and 0-{MAX_BOOK_SLOTS} books, "
                             f"got {n_feeds}/{n_books}")
        keys = [k.encode("utf-8") for k in book_keys]
        if len(keys) > n_books:
            raise StatsError(f"{len(keys)} book keys for {n_books} book slots")
        if len(set(keys)) != len(keys):
            raise StatsError("book keys must be distinct")
        for k in keys:
            if not k or len(k) >= KEY_SIZE or b"\0" in k:
                raise StatsError(f"book key {k!r}: 1-{KEY_SIZE - 1} bytes, no NUL")
        size = cls.size_for(n_feeds, n_books)
        try:
            seg = Segment.create(name, size)
        except ShmError as exc:
            raise StatsError(str(exc)) from None
        blk = cls(seg, n_feeds, n_books)
        index_off = cls.index_offset_for(n_feeds, n_books)
        for j, k in enumerate(keys):
            blk.view[index_off + j * KEY_SIZE:index_off + j * KEY_SIZE + len(k)] = k
        blk.view[8:_HEADER.size] = _HEADER.pack(0, VERSION, HEADER_SIZE, size, n_feeds, n_books, FEED_SLOT,
                                               BOOK_SLOT, os.getpid(), now_ns(), _b(run_id, 32),
                                               os.geteuid(), index_off, KEY_SIZE, len(keys))[8:]
        seg.store_u64(0, MAGIC)   # last, with release order: a reader sees a complete header
        return blk

    @classmethod
    def attach(cls, name: str) -> StatsBlock:
        try:
            seg = Segment.attach(name, HEADER_SIZE)
        except ShmError as exc:
            raise StatsError(str(exc)) from None
        try:
            if seg.load_u64(0) != MAGIC:
                raise StatsError(f"{seg.path}: not an obitui stats block")
            version = _HEADER.unpack_from(seg.view(), 0)[1]
            if version != VERSION:
                raise StatsError(f"{seg.path}: stats layout version {version}, this build reads {VERSION}")
            (_, _, header_size, size, n_feeds, n_books, fslot, bslot, _, _, _,
             uid, index_off, key_size, n_keys) = _HEADER.unpack_from(seg.view(), 0)
            if header_size != HEADER_SIZE or fslot != FEED_SLOT or bslot != BOOK_SLOT or key_size != KEY_SIZE:
                raise StatsError(f"{seg.path}: stats layout version {version}, this build reads {VERSION}")
            if not (0 < n_feeds <= MAX_FEED_SLOTS and 0 <= n_books <= MAX_BOOK_SLOTS and n_keys <= n_books):
                raise StatsError(f"{seg.path}: {n_feeds} feeds, {n_books} books, {n_keys} keys: refused")
            if (size != seg.size or size != cls.size_for(n_feeds, n_books)
                    or index_off != cls.index_offset_for(n_feeds, n_books)):
                raise StatsError(f"{seg.path}: segment is {seg.size} bytes, header says {size}: refused")
            if uid != os.geteuid():
                raise StatsError(f"{seg.path}: created by uid {uid}, not this user: refused")
        except BaseException:
            seg.close()
            raise
        return cls(seg, n_feeds, n_books)

    # ------------------------------------------------------------ book index
    def book_keys(self) -> list[str]:
        """The market key of each named book slot, in slot order (as ``create`` wrote them)."""
        n_keys = _HEADER.unpack_from(self.view, 0)[-1]
        off = self.index_offset_for(self.n_feeds, self.n_books)
        return [_s(bytes(self.view[off + j * KEY_SIZE:off + (j + 1) * KEY_SIZE])) for j in range(n_keys)]

    def find_book(self, key: str) -> int | None:
        """The book slot holding market ``key`` (``venue:SYMBOL``), or None (the index is read
        once, on the first call)."""
        if self._index is None:
            self._index = {k: j for j, k in enumerate(self.book_keys())}
        return self._index.get(key)

    def header(self) -> dict[str, Any]:
        (_, version, _, size, n_feeds, n_books, _, _, pid, start_ns, run_id, uid, _, _, _) = \
            _HEADER.unpack_from(self.view, 0)
        return {"version": version, "size": size, "n_feeds": n_feeds, "n_books": n_books,
                "supervisor_pid": pid, "start_ns": start_ns, "run_id": _s(run_id)}

    def close(self) -> None:
        self.view.release()
        self.seg.close()

    # ------------------------------------------------------------ shared budgets
    def budget_offset(self, pool: int) -> int:
        """The word of REST weight pool ``pool`` (a venue's index in the registry): every feed
        process of the run updates it with compare-and-swap (``feeds/budget.py``); zero at
        create. Outside any seqlock'd slot: its own, many writers, each change one CAS."""
        if not 0 <= pool < MAX_BUDGETS:
            raise IndexError(f"budget pool {pool} outside 0-{MAX_BUDGETS - 1}")
        return BUDGET_OFF + 16 * pool

    # ------------------------------------------------------------ offsets
    def feed_offset(self, i: int) -> int:
        if not 0 <= i < self.n_feeds:
            raise StatsError(f"feed slot {i} out of range (0..{self.n_feeds - 1})")
        return HEADER_SIZE + i * FEED_SLOT

    def book_offset(self, i: int) -> int:
        if not 0 <= i < self.n_books:
            raise StatsError(f"book slot {i} out of range (0..{self.n_books - 1})")
        return HEADER_SIZE + self.n_feeds * FEED_SLOT + i * BOOK_SLOT

    @property
    def engine_offset(self) -> int:
        return HEADER_SIZE + self.n_feeds * FEED_SLOT + self.n_books * BOOK_SLOT

    # ------------------------------------------------------------ engine wake-up (block strategy)
    def wake_engine_if_sleeping(self) -> bool:
        off = self.engine_offset
        return self.seg.wake_if_sleeping(off + ENGINE_SLEEPING_OFF, off + ENGINE_WAKE_OFF)

    def engine_wait_offsets(self) -> tuple[int, int]:
        """(sleeping flag, wake word) offsets in ``self.seg``, for ``ring.sleep_until_records``."""
        off = self.engine_offset
        return off + ENGINE_SLEEPING_OFF, off + ENGINE_WAKE_OFF

    def engine_sleep_begin(self) -> int:
        """Flag that the engine is about to sleep; returns the wake word to wait on."""
        off = self.engine_offset
        self.seg.store_u32(off + ENGINE_SLEEPING_OFF, 1)
        return self.seg.load_u32(off + ENGINE_WAKE_OFF)

    def engine_sleep(self, wake_word: int, timeout_s: float) -> None:
        self.seg.futex_wait(self.engine_offset + ENGINE_WAKE_OFF, wake_word, timeout_s)

    def engine_sleep_end(self) -> None:
        self.seg.store_u32(self.engine_offset + ENGINE_SLEEPING_OFF, 0)

    def _publish(self, off: int, data: bytes) -> None:
        self.seg.write_begin(off)
        self.view[off + 8:off + len(data)] = data[8:]
        self.seg.write_end(off)

    # ------------------------------------------------------------ control words
    # u64 seq << 24 | book << 8 | command: seq counts the commands posted to the feed, book is
    # a book index (the id its records carry) or ALL_BOOKS
    def send_command(self, feed: int, command: Command, book: int = ALL_BOOKS) -> int:
        """Supervisor: post a command (for ``book``, or every book of the feed) to a feed;
        returns its sequence number."""
        if not 0 <= book <= ALL_BOOKS:
            raise StatsError(f"book {book} out of range (0..{ALL_BOOKS - 1}, or ALL_BOOKS)")
        off = self.feed_offset(feed) + FEED_CONTROL_OFF
        while True:         # several writers (the supervisor, the UI, the NATS publisher): one CAS
            old = self.seg.load_u64(off)
            seq = (old >> 24) + 1
            if self.seg.cas_u64(off, old, (seq << 24) | (book << 8) | int(command)):
                return seq

    def read_command(self, feed: int) -> tuple[int, Command]:
        """(seq, command) of the feed's control word."""
        seq, cmd, _ = self.read_command_book(feed)
        return seq, cmd

    def read_command_book(self, feed: int) -> tuple[int, Command, int]:
        """(seq, command, book) of the feed's control word; book is ALL_BOOKS or a book index."""
        word = self.seg.load_u64(self.feed_offset(feed) + FEED_CONTROL_OFF)
        try:
            cmd = Command(word & 0xFF)
        except ValueError:
            cmd = Command.NONE
        return word >> 24, cmd, (word >> 8) & 0xFFFF

    def ack_command(self, feed: int, seq: int, result: AckResult, text: str = "") -> None:
        off = self.feed_offset(feed) + FEED_ACK_OFF
        raw = _b(text, 55).ljust(56, b"\0")
        self.view[off + 8:off + 64] = raw
        self.seg.store_u64(off, (seq << 8) | int(result))

    def read_ack(self, feed: int) -> tuple[int, AckResult, str]:
        off = self.feed_offset(feed) + FEED_ACK_OFF
        word = self.seg.load_u64(off)
        text = _s(bytes(self.view[off + 8:off + 64]))
        return word >> 8, AckResult(word & 0xFF), text

    # ------------------------------------------------------------ readers
    def read_feed(self, i: int) -> FeedView | None:
        off = self.feed_offset(i)
        raw = self.seg.read_consistent(off, _FEED_PUBLISHED)
        if raw is None:
            return None
        (_, label, exch, stream, sym, state, _, since, pid, hb, retry, lex, lrx,
         reason) = _FEED_FIXED.unpack_from(raw, 0)
        counters = array("q", raw[_FEED_COUNTERS_OFF:_FEED_HIST1_OFF])
        ack_seq, ack_res, ack_text = self.read_ack(i)
        try:
            st = FeedState(state)
        except ValueError:
            st = FeedState.FAILED
        return FeedView(_s(label), _s(exch), _s(stream), _s(sym), st, _s(reason), since, pid, hb,
                        retry, lex, lrx, {n: counters[k] for n, k in _FC.items()},
                        list(array("Q", raw[_FEED_HIST1_OFF:_FEED_HIST2_OFF])),
                        list(array("Q", raw[_FEED_HIST2_OFF:_FEED_RING_OFF])),
                        _s(raw[_FEED_RING_OFF:_FEED_PUBLISHED]), ack_seq, ack_res, ack_text)

    def read_book(self, i: int, history: bool = True) -> BookView | None:
        """The book slot ``i``; ``history`` False leaves out the OBI history and the latency
        histogram (empty lists): a reader that only wants the book and its figures."""
        off = self.book_offset(i)
        raw = self.seg.read_consistent(off, _BOOK_END)
        if raw is None:
            return None
        f = _BOOK_FIXED.unpack_from(raw, 0)
        mk = _BOOK_MARKET.unpack_from(raw, _BOOK_MARKET_OFF)
        tape = []
        for k in range(min(mk[11], TAPE_N)):
            t = _TAPE.unpack_from(raw, _BOOK_TAPE_OFF + k * _TAPE.size)
            if not t[3]:              # no side: the tape is shorter
                break
            tape.append(t)
        (_, exch, sym, label, valid, crossed, update_id, last_ns, pdec, qdec, nb, na, _bb, _ba,
         _bq, _aq, obi, buy_q, sell_q, buy_n, sell_n, lt_p, lt_q, lt_side, lt_ns, resets, applied,
         obi_pos, _r1, reason) = f
        lv = array("q", raw[_BOOK_LEVELS_OFF:_BOOK_OBI_OFF]).tolist()
        nb, na = min(nb, TOP_N), min(na, TOP_N)
        bids = list(zip(lv[0:2 * nb:2], lv[1:2 * nb:2]))
        asks = list(zip(lv[2 * TOP_N:2 * (TOP_N + na):2], lv[2 * TOP_N + 1:2 * (TOP_N + na):2]))
        hist = array("d", raw[_BOOK_OBI_OFF:_BOOK_HIST_OFF]).tolist() if history else []
        if not history:
            ordered = []
        elif obi_pos <= OBI_HISTORY:        # oldest first
            ordered = hist[:obi_pos]
        else:
            start = obi_pos % OBI_HISTORY
            ordered = hist[start:] + hist[:start]
        return BookView(_s(label), _s(exch), _s(sym), bool(valid), bool(crossed), update_id, last_ns,
                        pdec, qdec, bids, asks, obi, ordered, buy_q, sell_q, buy_n, sell_n, lt_p, lt_q,
                        lt_side, lt_ns, resets, applied,
                        array("Q", raw[_BOOK_HIST_OFF:_BOOK_PUBLISHED]).tolist() if history else [],
                        obi_pos, _s(reason),
                        *mk[:11], mk[11], tape)

    def read_engine(self) -> EngineView | None:
        off = self.engine_offset
        raw = self.seg.read_consistent(off, _ENGINE_PUBLISHED)
        if raw is None:
            return None
        (_, pid, hb, records, batches, rps, obi_levels, wait, gaps, bad) = _ENGINE_FIXED.unpack_from(raw, 0)
        return EngineView(pid, hb, records, batches, rps, obi_levels, _s(wait), gaps,
                          list(array("Q", raw[_ENGINE_HW_OFF:_ENGINE_PUBLISHED])), bad)


@dataclass
class FeedSlotWriter:
    """A feed's figures in its own memory, published into its FeedSlot by ``publish()``."""
    block: StatsBlock
    index: int
    label: str
    exchange: str
    stream: str
    symbol: str
    ring: str = ""
    state: FeedState = FeedState.STOPPED
    reason: str = ""
    since_ns: int = 0
    next_retry_ns: int = 0
    last_exchange_ns: int = 0
    last_receive_ns: int = 0
    counters: array = field(default_factory=lambda: array("q", bytes(8 * N_COUNTERS)))
    hist_exchange_receive: array = field(default_factory=lambda: array("Q", bytes(8 * HIST_BUCKETS)))
    hist_receive_push: array = field(default_factory=lambda: array("Q", bytes(8 * HIST_BUCKETS)))

    def __post_init__(self) -> None:
        self.offset = self.block.feed_offset(self.index)
        self.pid = os.getpid()

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[_FC[name]] += n

    def get(self, name: str) -> int:
        return self.counters[_FC[name]]

    def set(self, name: str, value: int) -> None:
        """Set a gauge (FEED_GAUGES); the other counters only grow (``inc``)."""
        if name not in _GAUGES:
            raise KeyError(f"{name!r} is not a feed gauge (gauges: {', '.join(FEED_GAUGES)})")
        self.counters[_FC[name]] = value

    def set_state(self, state: FeedState, reason: str = "") -> None:
        if state != self.state or reason != self.reason:
            self.state = state
            self.reason = reason
            self.since_ns = now_ns()
        self.publish()

    def publish(self, heartbeat_ns: int | None = None) -> None:
        """Publish the slot; its heartbeat is now, or ``heartbeat_ns`` (CLOCK_MONOTONIC) for a
        writer that mirrors another's (the attached console: a remote feed beat when its host's
        last message came)."""
        fixed = _FEED_FIXED.pack(0, _b(self.label, 16), _b(self.exchange, 16), _b(self.stream, 48),
                                 _b(self.symbol, 16), int(self.state), 0, self.since_ns, self.pid,
                                 time.monotonic_ns() if heartbeat_ns is None else heartbeat_ns,
                                 self.next_retry_ns, self.last_exchange_ns,
                                 self.last_receive_ns, _b(self.reason, 96))
        data = (fixed + self.counters.tobytes() + self.hist_exchange_receive.tobytes()
                + self.hist_receive_push.tobytes() + _b(self.ring, 64).ljust(64, b"\0"))
        self.block._publish(self.offset, data)


@dataclass
class BookSlotWriter:
    """A book's figures, published into its BookSlot by the engine (its one writer)."""
    block: StatsBlock
    index: int
    label: str
    exchange: str
    symbol: str

    def __post_init__(self) -> None:
        self.offset = self.block.book_offset(self.index)
        self.obi_history = array("d", bytes(8 * OBI_HISTORY))
        self.obi_pos = 0
        self.hist = array("Q", bytes(8 * HIST_BUCKETS))
        self._names = (_b(self.exchange, 16), _b(self.symbol, 16), _b(self.label, 16))
        self._obi_raw = memoryview(self.obi_history).cast("B")
        self._hist_raw = memoryview(self.hist).cast("B")
        self._obi_published = 0       # obi_pos at the last publish
        self._whole = True            # the next publish writes the whole slot (the first one)

    def push_obi(self, value: float) -> None:
        self.obi_history[self.obi_pos % OBI_HISTORY] = value
        self.obi_pos += 1

    def publish(self, *, valid: bool, crossed: bool, update_id: int, pdec: int, qdec: int,
                bids: list[tuple[int, int]], asks: list[tuple[int, int]], obi: float,
                flow: tuple[int, int, int, int] = (0, 0, 0, 0),
                last_trade: tuple[int, int, int, int] = (0, 0, 0, 0), invalidations: int = 0,
                records_applied: int = 0, reason: str = "") -> None:
        """Publish the whole slot, levels given as (price, qty) lists, best first."""
        bb = bids[0] if bids else (0, 0)
        ba = asks[0] if asks else (0, 0)
        fixed = _BOOK_FIXED.pack(0, *self._names, int(valid), int(crossed), update_id, now_ns(), pdec, qdec,
                                 len(bids), len(asks), bb[0], ba[0], bb[1], ba[1], obi, *flow,
                                 *last_trade, invalidations, records_applied, self.obi_pos, 0,
                                 _b(reason, REASON_SIZE))
        lv = array("q", bytes(16 * 2 * TOP_N))
        for k, (p, q) in enumerate(bids[:TOP_N]):
            lv[2 * k], lv[2 * k + 1] = p, q
        for k, (p, q) in enumerate(asks[:TOP_N]):
            lv[2 * (TOP_N + k)], lv[2 * (TOP_N + k) + 1] = p, q
        data = (fixed.ljust(_BOOK_MARKET_OFF, b"\0") + pack_market(None, None, 0).ljust(
            _BOOK_LEVELS_OFF - _BOOK_MARKET_OFF, b"\0") + lv.tobytes() + self.obi_history.tobytes()
                + self.hist.tobytes() + pack_tape(()))
        self.block._publish(self.offset, data)
        self._obi_published = self.obi_pos
        self._whole = False

    def publish_packed(self, valid: bool, crossed: bool, update_id: int, pdec: int, qdec: int,
                       packed: bytes, n_bids: int, n_asks: int, obi: float,
                       flow: tuple[int, int, int, int], last_trade: tuple[int, int, int, int],
                       invalidations: int, records_applied: int, reason: str,
                       market: bytes | None = None, tape: bytes | None = None) -> None:
        """The engine's publish: the levels as ``OrderBook.packed(TOP_N)`` gives them (int64
        pairs, bids best first, then asks). Only what can have changed since this writer's last
        publish is copied: the fixed fields, the levels shown, the OBI samples pushed since (the
        older ones are in the slot already) and the latency histogram. A reader reads the levels
        up to the counts and the history up to ``obi_pos`` only, so what is left from before is
        never read. ``market``/``tape`` (``pack_market``, ``pack_tape``): the market section and
        the trade tape, when they changed. The first publish of a writer (a new engine) writes
        the whole slot."""
        nb = n_bids if n_bids < TOP_N else TOP_N
        na = n_asks if n_asks < TOP_N else TOP_N
        bb = _PAIR.unpack_from(packed, 0) if nb else (0, 0)
        ba = _PAIR.unpack_from(packed, 16 * n_bids) if na else (0, 0)
        pos = self.obi_pos
        fixed = _BOOK_FIXED.pack(0, *self._names, valid, crossed, update_id, now_ns(), pdec, qdec,
                                 nb, na, bb[0], ba[0], bb[1], ba[1], obi, *flow, *last_trade,
                                 invalidations, records_applied, pos, 0, _b(reason, REASON_SIZE))
        if self._whole:
            lv = bytearray(32 * TOP_N)
            lv[:16 * nb] = packed[:16 * nb]
            lv[16 * TOP_N:16 * (TOP_N + na)] = packed[16 * n_bids:16 * (n_bids + na)]
            self.block._publish(self.offset, fixed.ljust(_BOOK_MARKET_OFF, b"\0")
                                + (market or pack_market(None, None, 0)).ljust(_BOOK_LEVELS_OFF - _BOOK_MARKET_OFF, b"\0")
                                + lv + self.obi_history.tobytes() + self.hist.tobytes()
                                + (tape or pack_tape(())))
            self._obi_published = pos
            self._whole = False
            return
        seg = self.block.seg
        v = self.block.view
        off = self.offset
        src = memoryview(packed)
        seg.write_begin(off)
        v[off + 8:off + _BOOK_FIXED.size] = memoryview(fixed)[8:]
        if nb:
            v[off + _BOOK_LEVELS_OFF:off + _BOOK_LEVELS_OFF + 16 * nb] = src[:16 * nb]
        if na:
            v[off + _BOOK_ASKS_OFF:off + _BOOK_ASKS_OFF + 16 * na] = src[16 * n_bids:16 * (n_bids + na)]
        last = self._obi_published
        if pos - last >= OBI_HISTORY:
            v[off + _BOOK_OBI_OFF:off + _BOOK_HIST_OFF] = self._obi_raw
        else:
            for p in range(last, pos):
                k = 8 * (p % OBI_HISTORY)
                v[off + _BOOK_OBI_OFF + k:off + _BOOK_OBI_OFF + k + 8] = self._obi_raw[k:k + 8]
        v[off + _BOOK_HIST_OFF:off + _BOOK_PUBLISHED] = self._hist_raw
        if market is not None:
            v[off + _BOOK_MARKET_OFF:off + _BOOK_MARKET_OFF + _BOOK_MARKET.size] = market
        if tape is not None:
            v[off + _BOOK_TAPE_OFF:off + _BOOK_END] = tape
        seg.write_end(off)
        self._obi_published = pos


def publish_engine(block: StatsBlock, *, records: int, batches: int, records_per_s: float,
                   obi_levels: int, wait: str, gaps: int, ring_high_water: list[int],
                   bad_records: int = 0) -> None:
    fixed = _ENGINE_FIXED.pack(0, os.getpid(), time.monotonic_ns(), records, batches, records_per_s,
                               float(obi_levels), _b(wait, 16), gaps, bad_records)
    hw = array("Q", (ring_high_water + [0] * MAX_RINGS)[:MAX_RINGS])
    block._publish(block.engine_offset, fixed.ljust(_ENGINE_HW_OFF, b"\0") + hw.tobytes())

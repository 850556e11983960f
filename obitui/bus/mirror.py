"""The attached console's stats block: `obitui --attach nats://a:4222[,nats://b:4222]` with the
Textual UI, with no local fleet or beside one (`--sim --attach ...`).

The screens read only a stats block (obitui/core/stats.py). An attached console has no engine
and no feeds of its own for the remote fleets, so ``Mirror`` writes what the NATS servers say
(``attach.Fleets``) into a block of this process's own in /dev/shm, and ``AttachController``
is the Controller the app drives. The block is named like a supervisor's segments
(``obitui-<uid>-r<pid>x<hex>-attach<n>``): the console removes it on every way out, and a later
run removes it should this process be killed.

- Feed slots: this machine's fleet's feeds first (copied slot by slot from its supervisor's
  block as they change), then every remote fleet's feeds, labelled ``host/label``, in the order
  they came. A remote feed slot's heartbeat is its host's last message (a feed its host reports
  stale: that feed's last beat), so a host that stops publishing is stale on screen once it has
  been silent for STALE_VIEW_S (= schema.STALE_HOST_S, 3 s).
- Book slots: the local books (copied), then each remote book: its levels, figures, ticker and
  trade tape from the book and trade messages, the decimal strings in fixed point at the book's
  own scale (the most decimals its strings were written with: exact, never rounded). A host
  whose engine is stale has its books written invalid (reason ``engine stale``).
- The engine slot: the local engine's, or the console's own heartbeat.
- Control words: the app posts `r`/`s` into this block as it does for a local fleet. A command
  to a local feed is passed on to the supervisor's block and its acknowledgement copied back;
  one to a remote feed goes to its host as a NATS request (``Attachment.control_async``) and
  the answer becomes the acknowledgement: acknowledged, ``refused: remote control is off``,
  ``timed out``.

A host is shown once its feeds message and all its books (its heartbeat's count) are in, or
HOST_SETTLE_S after its first message; a feed or book seen later is added then. Each change of
what there is to show is a new ``Layout`` generation (obitui.ui.model), which the app takes at
its next tick; a block too small for it is replaced by a larger one, filled again whole.

Everything is written from ``sync()``, which the app calls at the start of each display tick
(the UI thread: the block is never replaced under a reader). Content that cannot be shown (a
price that is no decimal, a venue this build does not know, a label that is no label, a value
beyond its slot field's range) is counted with the unreadable messages (``Fleets.bad``) and
logged, never raised, one book or feed at a time: the others of the tick are written as ever,
and a book whose message cannot be written is written invalid (``unreadable message``) until
its next one that can.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import re
import secrets
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from obitui.bus import schema
from obitui.bus.attach import Attachment, count_ok, time_ok
from obitui.config import Config, FeedConfig, book_plan
from obitui.controller import command_by_label
from obitui.core.fixed import FixedRangeError, parse_fixed, parse_fixed_decimals
from obitui.core.shm import Segment
from obitui.core.stats import (
    ALL_BOOKS, BOOK_SLOT, ENGINE_SLEEPING_OFF, FEED_CONTROL_OFF, FEED_SLOT, MAX_BOOK_SLOTS,
    MAX_FEED_SLOTS, TAPE_N, TOP_N, AckResult, BookSlotWriter, Command, FeedSlotWriter, FeedState,
    StatsBlock, StatsError, now_ns, pack_market, pack_tape, publish_engine,
)
from obitui.feeds.venue import Venue, venues
from obitui.ui.model import Book, Layout, config_books
from obitui.widgets.format import fit_words

log = logging.getLogger("obitui.attach")

REMOTE_TIMEOUT_S = 6.5      # a remote command's answer (its fleet waits up to 5 s for its feed's ack)
HOST_SETTLE_S = 1.5         # a new host is shown once all its books came, or this long after it was seen
FEED_HEADROOM = 16          # remote feed slots beyond those needed when a block is (re)made
BOOK_HEADROOM = 64          # remote book slots beyond those needed
SKIPS_TOLD = 3              # things left out told on screen per reason (all of them in the log)
SKIPS_KEPT = 4096           # things left out remembered (logged once each); beyond: counted only
UNREADABLE = "unreadable message"   # the reason of a book whose last message could not be written
I64 = 2 ** 63 - 1
U64 = 2 ** 64 - 1
# what a message that cannot be written raises (a value beyond a slot field's range: struct.error)
WRITE_ERRORS = (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError, struct.error)
ACK_TEXT = 55               # bytes of an acknowledgement's text in a feed slot
REFUSED = "refused: remote control is off (--allow-remote-control)"
_ACK_PREFIX = re.compile(r"^[^\s:]+: (?:reconnect|resync|resync_invalid|stop) (?:acknowledged|failed|unsupported): ")
_WORDS = {Command.RECONNECT: "reconnect", Command.RESYNC: "resync", Command.RESYNC_INVALID: "resync_invalid"}
_COUNTERS = ("frames", "gaps", "resyncs", "reconnects", "records", "parse_errors", "checksum_failures",
             "ring_drops")
assert len(REFUSED.encode()) <= ACK_TEXT


def ack_text(text: str) -> str:
    """``text`` in an acknowledgement's room, cut at a word (never mid-word)."""
    n = ACK_TEXT
    while len(out := fit_words(text, n).encode()) > ACK_TEXT:
        n -= 1
    return out.decode()


def ack_of(reply: dict[str, Any]) -> tuple[AckResult, str]:
    """The acknowledgement an answer of a remote fleet (or of ``control_async``) becomes."""
    if reply.get("ok") is True:
        return AckResult.OK, ack_text(_ACK_PREFIX.sub("", str(reply.get("text") or "done")))
    err = str(reply.get("error") or reply.get("text") or "no reason given")
    if reply.get("code") == "remote_control_off" or "--allow-remote-control" in err:
        return AckResult.FAILED, REFUSED
    if reply.get("code") == "timeout":
        return AckResult.FAILED, ack_text(f"timed out: {err}")
    return AckResult.FAILED, ack_text(_ACK_PREFIX.sub("", err))


def _decimals(text: str) -> tuple[int, int]:
    """(decimals as written, decimals needed: without the trailing zeros) of a decimal string
    (``obitui.core.fixed.decimals_of`` parses it too, and refuses one beyond int64 at its own
    decimals: here only the text counts, the fit is checked at the scale chosen)."""
    dot = text.find(".")
    if dot < 0:
        return 0, 0
    frac = text[dot + 1:]
    return len(frac), len(frac.rstrip("0"))


def _fits(text: str, digits: int) -> bool:
    """``text`` in int64 fixed point at ``digits`` (ValueError: it is no decimal)."""
    try:
        parse_fixed(text, digits, signed=True)
    except FixedRangeError:
        return False
    return True


def _ns(ts: Any) -> int:
    """A message's time (seconds since the epoch) in nanoseconds, int64; ValueError for one
    that is no such time."""
    if not time_ok(ts):
        raise ValueError(f"time {str(ts)[:30]!r} is not seconds since the epoch")
    return min(int(ts * 1e9), I64)


def _label_ok(label: Any) -> bool:
    """A remote feed label the console can show and name: 1-15 printable characters, no
    '/' (it splits host and label) and no markup brackets."""
    return (isinstance(label, str) and 0 < len(label) <= 15 and label.isprintable()
            and not any(c in label for c in "/[]"))


def _counts(fv: dict[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    """The counts ``names`` of a feed message that has them; ValueError for one that is no count."""
    out = {}
    for name in names:
        v = fv.get(name)
        if v is None:
            continue
        if not count_ok(v):
            raise ValueError(f"{name} {str(v)[:30]!r} is no count")
        out[name] = v
    return out


@dataclass
class RemoteFeed:
    host: str
    label: str              # the host's own label
    slot: int
    fc: FeedConfig
    served: int = 0         # the control word's seq last taken
    fill: tuple[float, int] = (0.0, 0)
    writer: FeedSlotWriter | None = None
    remote: dict[str, int] = field(default_factory=dict)    # counter -> its host's last value


@dataclass
class RemoteBook:
    host: str
    key: str                # venue:SYMBOL
    slot: int
    feed: int               # the slot of the feed that serves it
    digits: int
    qdigits: int
    obi_at: float = 0.0
    writer: BookSlotWriter | None = None
    update_id: int = 0      # the last one written


@dataclass
class HostState:
    first: float                        # when it was first seen (monotonic)
    shown: bool = False
    stale: bool = False
    engine_stale: bool = False
    stopped: bool = False           # its publisher's last heartbeat said the fleet stops
    published: float = 0.0              # its last message when its feed slots were last written
    feeds: list[str] = field(default_factory=list)    # its labels in the layout


class Mirror:
    """What the NATS servers say about remote fleets (``fleets``), and this machine's fleet
    (``local``: its supervisor, or None), in one stats block of this process's own."""

    def __init__(self, attachment: Attachment, local: Any = None) -> None:
        self.att = attachment
        self.fleets = attachment.fleets
        self.local = local
        self.local_cfg: Config | None = local.cfg if local is not None else None
        self.n_local_feeds = len(self.local_cfg.feeds) if self.local_cfg is not None else 0
        self.n_local_books = local.stats.n_books if local is not None else 0
        self.local_books = config_books(self.local_cfg) if self.local_cfg is not None else []
        self.venues: dict[str, Venue] = dict(venues())
        self.run = f"obitui-{os.getuid()}-r{os.getpid()}x{secrets.token_hex(3)}-attach"
        self.blocks_made = 0
        self.block: StatsBlock | None = None
        self.name = ""
        self.feeds: list[RemoteFeed] = []
        self.feed_at: dict[tuple[str, str], RemoteFeed] = {}
        self.books: list[RemoteBook] = []
        self.book_at: dict[str, RemoteBook] = {}          # host/key
        self.hosts: dict[str, HostState] = {}
        self.unplaced: set[str] = set()                    # host/key of books not in the layout yet
        self.skipped: set[str] = set()                     # host/label, host/key left out (logged once)
        self.no_room: set[str] = set()                     # host/label, host/key left out for good
        self.skip_told: dict[str, int] = {}                # reason -> those told on screen
        self.generation = 0
        self.layout = self._make_layout()
        self.events: list[str] = []
        self.pending: list[tuple[int, int, concurrent.futures.Future[dict[str, Any]]]] = []
        self.copied: dict[int, int] = {}                   # local slot offset -> seq word copied
        self.forwarded: dict[int, tuple[int, int]] = {}    # local feed -> (our seq, the supervisor's)
        self.local_seen = [0] * self.n_local_feeds         # our control word's seq last passed on
        self.bad_told = 0
        self.bad_told_at = 0.0
        self.unexpected_at = -1e9                          # an error no check foresaw last logged
        self._make_block(FEED_HEADROOM, BOOK_HEADROOM)

    # ------------------------------------------------------------ the block
    def _make_block(self, feeds: int, books: int) -> None:
        """A block for the local slots plus ``feeds``/``books`` remote ones (a larger one when
        the layout outgrew the block: every slot is written again, the control words kept)."""
        n_feeds = min(MAX_FEED_SLOTS, max(1, self.n_local_feeds + feeds))
        n_books = min(MAX_BOOK_SLOTS, self.n_local_books + books)
        name = f"{self.run}{self.blocks_made}"
        blk = StatsBlock.create(name, n_feeds, n_books, "attach")
        self.blocks_made += 1
        old, old_name = self.block, self.name
        try:
            if old is not None:
                for i in range(min(old.n_feeds, n_feeds)):       # commands and acks in flight go on
                    src = old.feed_offset(i) + FEED_CONTROL_OFF
                    dst = blk.feed_offset(i) + FEED_CONTROL_OFF
                    blk.view[dst:dst + FEED_SLOT - FEED_CONTROL_OFF] = old.view[src:src + FEED_SLOT - FEED_CONTROL_OFF]
        except BaseException:
            try:
                blk.close()
            finally:
                Segment.unlink(name)
            raise
        self.block, self.name = blk, name
        self.copied.clear()
        for rf in self.feeds:
            rf.writer = None
        for rb in self.books:
            rb.writer = None
        for h in self.hosts.values():
            h.published = 0.0
        with self.fleets.lock:
            self.fleets.dirty_books.update(self.book_at)       # every remote book again
        if old is not None:
            try:
                old.close()
            finally:
                Segment.unlink(old_name)
        log.info("attach: stats block %s (%d feed slots, %d book slots)", name, n_feeds, n_books)

    def close(self) -> None:
        blk, self.block = self.block, None
        if blk is not None:
            try:
                blk.close()
            finally:
                Segment.unlink(self.name)

    # ------------------------------------------------------------ layout
    def _make_layout(self) -> Layout:
        local = list(self.local_cfg.feeds) if self.local_cfg is not None else []
        base = self.local_cfg if self.local_cfg is not None else Config(feeds=[])
        cfg = dataclasses.replace(base, feeds=local + [rf.fc for rf in self.feeds])
        books = list(self.local_books)
        for rb in self.books:
            rf = self.feeds[rb.feed - self.n_local_feeds]
            books.append(Book(rb.slot, f"{rb.host}/{rb.key}", rb.feed, rf.fc, rb.digits, rb.qdigits, rb.host))
        hosts: list[str | None] = [None] * len(local) + [rf.host for rf in self.feeds]
        return Layout(cfg, books, hosts, self.generation, attached=True)

    def _feed_config(self, host: str, label: str, fv: dict[str, Any],
                     book_msgs: dict[str, dict[str, Any]]) -> FeedConfig | None:
        """The feed ``label`` of ``host`` as a FeedConfig (label ``host/label``): its venue and
        channel from the feeds message when it says them, else from its books' keys, else from
        the label (``<venue prefix>-<channel>``); its symbols from its books (a trade or ticker
        feed: its venue's books on that host). None: a venue this build does not know."""
        mine = [k.split("/", 1)[1] for k, m in book_msgs.items()
                if k.startswith(host + "/") and m.get("label") == label]
        venue, channel = fv.get("venue"), fv.get("channel")
        v = self.venues.get(venue) if isinstance(venue, str) else None
        if v is None or channel not in v.channel_names:
            v, channel = None, None
            for key in mine:
                v = self.venues.get(key.split(":", 1)[0])
                if v is not None:
                    channel = next(c.name for c in v.channels if c.is_book)
                    break
        if v is None:
            base = label.split("#", 1)[0]
            for cand in self.venues.values():
                for c in cand.channels:
                    if cand.label(c.name) == base:
                        v, channel = cand, c.name
        if v is None or channel is None:
            return None
        symbols = fv.get("symbols")
        if not (isinstance(symbols, list) and symbols and all(isinstance(s, str) and s.isalnum() for s in symbols)):
            if not v.channel(channel).is_book:
                mine = [k.split("/", 1)[1] for k in book_msgs if k.startswith(host + "/")
                        and self.venues.get(k.split("/", 1)[1].split(":", 1)[0]) is not None
                        and self.venues[k.split("/", 1)[1].split(":", 1)[0]].exchange == v.exchange]
            symbols = sorted({k.split(":", 1)[1] for k in mine})
        return FeedConfig(f"{host}/{label}", v.name, channel, symbols=tuple(symbols), scales="config")

    def _skip(self, what: str, why: str) -> None:
        """Leave ``what`` out of the layout: each message of it counted (and logged as the
        unreadable ones are), the first logged and told on screen (the first few of each
        reason)."""
        self.fleets.count_bad(what, ValueError(why))
        if what not in self.skipped and len(self.skipped) < SKIPS_KEPT:
            self.skipped.add(what)
            log.warning("attach: %s left out: %s", what, why)
            n = self.skip_told[why] = self.skip_told.get(why, 0) + 1
            if n <= SKIPS_TOLD:
                self.events.append(f"{what}: left out ({why})" + (", and further ones (see the log)"
                                                                  if n == SKIPS_TOLD else ""))

    def _grow_layout(self, now: float, hosts: dict[str, dict[str, Any]], feeds_msgs: dict[str, Any],
                     book_msgs: dict[str, dict[str, Any]], dirty_feeds: set[str], placed: set[str]) -> bool:
        """Hosts, feeds and books that came since the last layout (the books added to
        ``placed``); True when there are any."""
        changed = False
        for host, h in hosts.items():
            hs = self.hosts.get(host)
            if hs is None:
                hs = self.hosts[host] = HostState(now)
            if hs.shown or host not in feeds_msgs:
                continue
            want = h.get("books")
            have = sum(1 for k in book_msgs if k.startswith(host + "/"))
            if (isinstance(want, int) and have >= want) or now - hs.first >= HOST_SETTLE_S:
                hs.shown = True
                dirty_feeds.add(host)
                self.unplaced.update(k for k in book_msgs if k.startswith(host + "/"))
                control = "remote control allowed" if h.get("control") else "remote control off"
                self.events.append(f"{host}: attached over {self._url(h)} ({control})")
                log.info("attach: %s", self.events[-1])
        for host in sorted(dirty_feeds):
            hs = self.hosts.get(host)
            fm = feeds_msgs.get(host)
            if hs is None or not hs.shown or fm is None:
                continue
            order = fm.get("order")
            order = [lb for lb in order if isinstance(lb, str)] if isinstance(order, list) else []
            fvs = fm["feeds"]
            for label in order + [lb for lb in fvs if lb not in order]:
                fv = fvs.get(label)
                if ((host, label) in self.feed_at or not isinstance(fv, dict) or fv.get("kind") == "publisher"
                        or f"{host}/{label}" in self.no_room):
                    continue
                if not _label_ok(label):
                    self._skip(f"{host}/{str(label)[:40]!r}", "not a feed label")
                    continue
                fc = self._feed_config(host, label, fv, book_msgs)
                if fc is None:
                    self._skip(f"{host}/{label}", "its venue is unknown to this build")
                    continue
                if self.n_local_feeds + len(self.feeds) >= MAX_FEED_SLOTS:
                    self._skip(f"{host}/{label}", f"more than {MAX_FEED_SLOTS} feeds in all")
                    continue
                rf = RemoteFeed(host, label, self.n_local_feeds + len(self.feeds), fc)
                self.feeds.append(rf)
                self.feed_at[(host, label)] = rf
                hs.feeds.append(label)
                changed = True
        touched: set[str] = set()
        for hk in sorted(self.unplaced):
            host, key = hk.split("/", 1)
            hs = self.hosts.get(host)
            msg = book_msgs.get(hk)
            if hs is None or not hs.shown or msg is None or hk in self.no_room:
                continue
            if not hs.feeds:
                continue                        # placed once its feeds are known
            self.unplaced.discard(hk)
            venue, _, symbol = key.partition(":")
            if venue not in self.venues or not (symbol.isalnum() and symbol.isascii()):
                self._skip(hk, "not a market of a venue this build knows")
                continue
            if self.n_local_books + len(self.books) >= MAX_BOOK_SLOTS:
                self._skip(hk, f"more than {MAX_BOOK_SLOTS} books in all")
                continue
            rf = self._feed_of(host, venue, msg.get("label"))
            try:
                digits, qdigits = self._scales(msg)
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                self.fleets.count_bad(hk, exc)      # tried again with its next message
                continue
            rb = RemoteBook(host, key, self.n_local_books + len(self.books), rf.slot, digits, qdigits)
            self.books.append(rb)
            self.book_at[hk] = rb
            placed.add(hk)
            touched.add(host)
            changed = True
        for host in touched:                    # the symbols of its feeds follow its books
            for label in self.hosts[host].feeds:
                rf = self.feed_at[(host, label)]
                fc = self._feed_config(host, label, (feeds_msgs.get(host) or {}).get("feeds", {}).get(label) or {},
                                       book_msgs)
                if fc is not None and fc != rf.fc:
                    rf.fc = fc
        return changed

    def _feed_of(self, host: str, venue: str, label: Any) -> RemoteFeed:
        """The feed of ``host`` that serves a book: the one its message names, else a book feed
        of the same venue, else the host's first."""
        rf = self.feed_at.get((host, label)) if isinstance(label, str) else None
        if rf is not None:
            return rf
        mine = [self.feed_at[(host, lb)] for lb in self.hosts[host].feeds]
        for cand in mine:
            if cand.fc.venue == venue and cand.fc.is_book:
                return cand
        return mine[0]

    @staticmethod
    def _scales(msg: dict[str, Any], trades: Any = (), at_least: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        """(price digits, quantity digits) of a book, at least ``at_least``: the most decimals
        its strings (and its recent ``trades``', and its ticker's 24 h volume) are written with,
        when every value of the message fits int64 there; else the most the book's own values
        (levels, last trade, ticker, flow) are written with, when they fit; else the fewest
        they need (no trailing zeros). The values left out of a scale (a trade, the volume) are
        not shown (a trade is dropped, the volume 0). FixedRangeError: no scale fits them all
        (a value beyond int64, more than 18 decimals); ValueError, TypeError: one is no
        decimal string, a level no [price, qty]."""
        levels = msg["bids"][:TOP_N] + msg["asks"][:TOP_N]
        for lv in levels:
            if not (isinstance(lv, (list, tuple)) and len(lv) == 2):
                raise ValueError(f"a level that is not [price, qty]: {str(lv)[:40]}")
        prices = [lv[0] for lv in levels]
        qtys = [lv[1] for lv in levels]
        lt = msg.get("last_trade")
        if isinstance(lt, dict):
            prices.append(lt["price"])
            qtys.append(lt["qty"])
        t = msg.get("ticker")
        if isinstance(t, dict):
            prices += [t[k] for k in ("last", "bid", "ask", "open_24h", "high_24h", "low_24h") if t.get(k)]
        if msg.get("flow_1s"):
            qtys.append(msg["flow_1s"])
        extra_p = [tr["price"] for tr in trades if isinstance(tr, dict) and "price" in tr]
        extra_q = [tr["qty"] for tr in trades if isinstance(tr, dict) and "qty" in tr]
        if isinstance(t, dict) and t.get("volume_24h"):
            extra_q.append(t["volume_24h"])
        if not all(isinstance(x, str) for x in prices + qtys + extra_p + extra_q):
            raise TypeError("a price or quantity that is not a decimal string")

        def scale(core: list[str], extra: list[str], floor: int, what: str) -> int:
            written = [_decimals(x) for x in core]
            w_all = min(18, max([w for w, _ in written] + [_decimals(x)[0] for x in extra], default=2))
            w_core = min(18, max((w for w, _ in written), default=2))
            needed = max((n for _, n in written), default=0)
            for digits, values in ((w_all, core + extra), (w_core, core), (needed, core)):
                digits = max(floor, digits)
                if digits <= 18 and all(_fits(x, digits) for x in values):
                    return digits
            worst = next((x for x in core if not _fits(x, min(18, max(floor, needed)))), "?")
            raise FixedRangeError(f"no {what} scale fits every value of the message (one is {worst[:40]!r})")

        return scale(prices, extra_p, at_least[0], "price"), scale(qtys, extra_q, at_least[1], "quantity")

    @staticmethod
    def _url(h: dict[str, Any]) -> str:
        from obitui.bus.publisher import redact
        return redact(str(h.get("url", "?")))

    # ------------------------------------------------------------ writing
    def sync(self) -> None:
        """Write what changed since the last call into the block (the UI thread, each tick)."""
        now = time.monotonic()
        with self.fleets.lock:
            dirty_books, dirty_feeds = self.fleets.take_changes()
            hosts = {h: dict(v) for h, v in self.fleets.hosts.items()}
            feeds_msgs = dict(self.fleets.feeds)
            feeds_at = dict(self.fleets.feeds_at)
            book_msgs = dict(self.fleets.books)
            tapes = {k: (self.fleets.trades.get(k, [])[-TAPE_N:], self.fleets.trade_count.get(k, 0))
                     for k in dirty_books}
        # commands first: a book in a control word is an index into the layout the app used
        # when it posted it, the one still current here
        assert self.block is not None
        self._serve_commands(self.block)
        self.unplaced.update(k for k in dirty_books if k not in self.book_at)
        placed: set[str] = set()
        grown = self._grow_layout(now, hosts, feeds_msgs, book_msgs, dirty_feeds, placed)
        if placed:                      # a book shown for the first time: written now
            dirty_books |= placed
            with self.fleets.lock:
                for hk in placed:
                    tapes[hk] = (self.fleets.trades.get(hk, [])[-TAPE_N:], self.fleets.trade_count.get(hk, 0))
        if grown:
            self._relayout(dirty_books, tapes)
        blk = self.block
        assert blk is not None
        self._write_feeds(blk, now, hosts, feeds_msgs, feeds_at, dirty_feeds, book_msgs, dirty_books)
        self._write_books(blk, now, book_msgs, dirty_books, tapes)
        if self.local is not None:
            self._copy_local(blk)
        else:
            publish_engine(blk, records=0, batches=0, records_per_s=0.0, obi_levels=0, wait="attach",
                           gaps=0, ring_high_water=[])
        self._tell_bad(now)

    def _finer(self, rb: RemoteBook, msg: dict[str, Any], trades: list[dict[str, Any]]) -> bool:
        """A book whose new strings have more decimals than its scale: a finer scale (True;
        the layout changes, the screens draw it at the new scale), taken only when every value
        of the message fits int64 there (``_scales``). False: no finer scale fits (a value
        beyond int64 at this scale, or so many decimals that the others would not fit): the
        message is not written at all (when a trade is the cause: without that trade)."""
        try:
            d, q = self._scales(msg, trades, (rb.digits, rb.qdigits))
        except (TypeError, ValueError, KeyError, IndexError):
            return False
        if (d, q) == (rb.digits, rb.qdigits):
            return False
        log.info("attach: %s/%s: scale %d/%d -> %d/%d decimals", rb.host, rb.key, rb.digits, rb.qdigits, d, q)
        rb.digits, rb.qdigits = d, q
        return True

    def _relayout(self, dirty: set[str], tapes: dict[str, Any]) -> None:
        blk = self.block
        assert blk is not None
        need_f = self.n_local_feeds + len(self.feeds)
        need_b = self.n_local_books + len(self.books)
        if need_f > blk.n_feeds or need_b > blk.n_books:
            try:
                self._make_block(len(self.feeds) * 2 + FEED_HEADROOM, len(self.books) * 2 + BOOK_HEADROOM)
            except StatsError as exc:       # /dev/shm full: what fits is shown
                self._trim(blk, str(exc))
        if self.block is not blk:
            # a new block: every remote book written now, before the screens read it
            with self.fleets.lock:
                for hk in self.book_at:
                    tapes[hk] = (self.fleets.trades.get(hk, [])[-TAPE_N:], self.fleets.trade_count.get(hk, 0))
            dirty.update(self.book_at)
        self.generation += 1
        self.layout = self._make_layout()

    def _trim(self, blk: StatsBlock, why: str) -> None:
        """Leave out the feeds and books that do not fit ``blk`` (a larger one could not be made)."""
        keep_f = [rf for rf in self.feeds if rf.slot < blk.n_feeds]
        keep_b = [rb for rb in self.books if rb.slot < blk.n_books and rb.feed < blk.n_feeds]
        for rf in self.feeds[len(keep_f):]:
            self.no_room.add(f"{rf.host}/{rf.label}")
            self._skip(f"{rf.host}/{rf.label}", f"no room: {why}")
            del self.feed_at[(rf.host, rf.label)]
            self.hosts[rf.host].feeds.remove(rf.label)
        for rb in self.books:
            if rb not in keep_b:
                self.no_room.add(f"{rb.host}/{rb.key}")
                self._skip(f"{rb.host}/{rb.key}", f"no room: {why}")
                del self.book_at[f"{rb.host}/{rb.key}"]
        self.feeds, self.books = keep_f, keep_b

    def _write_feeds(self, blk: StatsBlock, now: float, hosts: dict[str, Any], feeds_msgs: dict[str, Any],
                     feeds_at: dict[str, float], dirty_feeds: set[str], book_msgs: dict[str, Any],
                     dirty_books: set[str]) -> None:
        for host, hs in self.hosts.items():
            h = hosts.get(host, {})
            seen = max(h.get("beat", 0.0), h.get("seen", 0.0))
            stopped = bool(h.get("stopping"))
            if stopped != hs.stopped:
                hs.stopped = stopped
                dirty_books.update(hk for hk in self.book_at if hk.startswith(host + "/"))
                dirty_feeds.add(host)
                if hs.shown:
                    self.events.append(f"{host}: its fleet stopped (its publisher said so)" if stopped
                                       else f"{host}: publishing again")
                    log.info("attach: %s", self.events[-1])
            if stopped:
                seen = now          # a stopped fleet is not a hung one: never stale on screen
            stale = now - seen > schema.STALE_HOST_S
            if stale != hs.stale:
                hs.stale = stale
                if hs.shown:
                    self.events.append(f"{host}: stale: no heartbeat for {int(now - seen)} s" if stale
                                       else f"{host}: live again")
            fm = feeds_msgs.get(host) or {}
            engine = fm.get("engine") if isinstance(fm.get("engine"), dict) else {}
            engine_stale = bool(engine.get("stale"))
            if engine_stale != hs.engine_stale:
                hs.engine_stale = engine_stale
                dirty_books.update(hk for hk in self.book_at if hk.startswith(host + "/"))
                if hs.shown:
                    self.events.append(f"{host}: its engine is stale: its books are frozen" if engine_stale
                                       else f"{host}: its engine is live again")
            if not hs.feeds or (seen <= hs.published and host not in dirty_feeds):
                continue
            hs.published = seen
            beat_ns = int(seen * 1e9)
            wall_ns = time.time_ns() - int((now - seen) * 1e9)
            fvs = fm.get("feeds", {})
            for label in hs.feeds:
                rf = self.feed_at[(host, label)]
                fv = fvs.get(label)
                if not isinstance(fv, dict):
                    continue
                if hs.stopped:
                    fv = dict(fv, state="stopped", reason="its fleet stopped", stale=False)
                try:
                    self._write_feed(blk, rf, fv, beat_ns, wall_ns, feeds_at.get(host, seen))
                except Exception as exc:        # this feed only: the others are written as ever
                    self.fleets.count_bad(f"{host}/{label}", exc)
                    if not isinstance(exc, WRITE_ERRORS):
                        if now - self.unexpected_at >= 10.0:
                            self.unexpected_at = now
                            log.exception("attach: %s/%s: the feed could not be written: %r", host, label, exc)

    def _write_feed(self, blk: StatsBlock, rf: RemoteFeed, fv: dict[str, Any], beat_ns: int, wall_ns: int,
                    got: float) -> None:
        """One remote feed's figures into its slot. Every value is checked before anything is
        written (ValueError: one out of its field's range; the slot is left as it was). A
        counter its host reports lower than before is a restart of that feed's process: what it
        counted since is added (the slot's counters only grow)."""
        word = str(fv.get("state", ""))
        reason = str(fv.get("reason") or "")
        try:
            state = FeedState[word.upper()]
        except KeyError:
            state, reason = FeedState.FAILED, f"unknown state {word[:20]!r}: {reason}"
        reason = reason[:95]                # a feed slot's room
        counters = _counts(fv, _COUNTERS)
        gauges = _counts(fv, ("books", "books_synced"))
        fill, drops = fv.get("ring_fill", 0.0), fv.get("ring_drops", 0)
        fill = float(fill) if type(fill) in (int, float) and math.isfinite(fill) and 0 <= fill <= 1e6 else 0.0
        drops = drops if count_ok(drops) else 0
        age = fv.get("age_s")
        if fv.get("stale") and age is not None:
            if type(age) not in (int, float) or not math.isfinite(age) or age < 0:
                raise ValueError(f"age_s {str(age)[:30]!r} is no age")
            # the host is live, this feed's process is not: its beat is its own (never before 0)
            beat_ns = max(0, int((got - min(age, got)) * 1e9))
        w = rf.writer
        if w is None:
            w = rf.writer = FeedSlotWriter(blk, rf.slot, rf.label, rf.fc.venue, rf.host, rf.fc.symbol)
            rf.remote = {}
        if (state, reason) != (w.state, w.reason):
            w.state, w.reason, w.since_ns = state, reason, now_ns()
        for name, v in counters.items():
            last = rf.remote.get(name, 0)
            step = v - last if v >= last else v         # lower: its process restarted, counting from 0
            rf.remote[name] = v
            w.inc(name, min(step, I64 - w.get(name)))
        for name, v in gauges.items():
            w.set(name, v)
        rf.fill = (fill, drops)
        w.last_receive_ns = wall_ns
        w.publish(heartbeat_ns=beat_ns)

    def _write_books(self, blk: StatsBlock, now: float, book_msgs: dict[str, Any], dirty: set[str],
                     tapes: dict[str, Any]) -> None:
        """Each changed book, on its own: one whose message cannot be written is counted and
        written invalid (``UNREADABLE``) until its next message that can; the others are
        written as ever."""
        finer = []
        for hk in dirty:
            rb = self.book_at.get(hk)
            msg = book_msgs.get(hk)
            if rb is None or msg is None:
                continue
            trades, n_trades = tapes.get(hk, ([], 0))
            try:
                self._write_book(blk, rb, msg, now, trades, n_trades, strict=True)
            except FixedRangeError:
                if self._finer(rb, msg, trades):
                    finer.append(hk)        # written below, once the layout has the new scale
                else:
                    self._write_or_invalid(blk, hk, rb, msg, now, trades, n_trades)
            except Exception as exc:
                self._unwritable(blk, hk, rb, msg, exc)
        if finer:
            self._relayout(set(), tapes)     # a new generation: the books' new scales
            blk = self.block
            assert blk is not None
            for hk in finer:
                trades, n_trades = tapes.get(hk, ([], 0))
                self._write_or_invalid(blk, hk, self.book_at[hk], book_msgs[hk], now, trades, n_trades)

    def _write_or_invalid(self, blk: StatsBlock, hk: str, rb: RemoteBook, msg: dict[str, Any], now: float,
                          trades: list[dict[str, Any]], n_trades: int) -> None:
        try:
            self._write_book(blk, rb, msg, now, trades, n_trades, strict=False)
        except Exception as exc:
            self._unwritable(blk, hk, rb, msg, exc)

    def _unwritable(self, blk: StatsBlock, hk: str, rb: RemoteBook, msg: dict[str, Any], exc: Exception) -> None:
        """A book message that cannot be written: counted and logged, and the book written
        invalid (no levels, reason ``UNREADABLE``): never its figures of before shown as live."""
        self.fleets.count_bad(hk, exc)
        if not isinstance(exc, WRITE_ERRORS):        # not a bad value: a case of its own, with its traceback
            now = time.monotonic()
            if now - self.unexpected_at >= 10.0:
                self.unexpected_at = now
                log.exception("attach: %s: the book could not be written: %r", hk, exc)
        try:
            w = self._book_writer(blk, rb, msg)
            w.publish_packed(False, False, rb.update_id, rb.digits, rb.qdigits, b"", 0, 0, 0.0, (0, 0, 0, 0),
                             (0, 0, 0, 0), 0, 0, UNREADABLE, market=pack_market(None, None, 0), tape=pack_tape(()))
        except Exception as exc2:           # never: the slot's own figures only
            log.error("attach: %s: cannot be written invalid either: %r", hk, exc2)

    def _book_writer(self, blk: StatsBlock, rb: RemoteBook, msg: dict[str, Any]) -> BookSlotWriter:
        w = rb.writer
        if w is None:
            venue, _, symbol = rb.key.partition(":")
            label = msg.get("label") if _label_ok(msg.get("label")) else ""
            w = rb.writer = BookSlotWriter(blk, rb.slot, label, venue, symbol)
        return w

    def _write_book(self, blk: StatsBlock, rb: RemoteBook, msg: dict[str, Any], now: float,
                    trades: list[dict[str, Any]], n_trades: int, strict: bool = True) -> None:
        """Write one book message (and its market's recent ``trades``) into its slot. Every
        value is checked against its field's range before anything is written: a message that
        cannot be written raises and leaves the slot as it was. A trade of the tape that does
        not fit the book's scale raises FixedRangeError when ``strict`` (a finer scale may take
        it); otherwise it is left out of the tape, counted and logged (``Fleets.drop_trade``)."""
        d, qd = rb.digits, rb.qdigits

        def px(text: Any) -> int:
            return parse_fixed(text, d, signed=True)

        def qx(text: Any) -> int:
            return parse_fixed(text, qd, signed=True)

        levels: list[int] = []              # price, qty, ... bids then asks
        pdec = qdec = 0                     # the most decimals written (the wire's)
        for side in (msg["bids"][:TOP_N], msg["asks"][:TOP_N]):
            for p, q in side:
                pv, pw = parse_fixed_decimals(p, d, signed=True)
                qv, qw = parse_fixed_decimals(q, qd, signed=True)
                levels += (pv, qv)
                if pw > pdec:
                    pdec = pw
                if qw > qdec:
                    qdec = qw
        n_bids = min(len(msg["bids"]), TOP_N)
        n_asks = len(levels) // 2 - n_bids
        obi = msg.get("obi")
        if obi is None:
            obi = 0.0
        elif type(obi) not in (int, float) or not math.isfinite(obi):
            raise ValueError(f"obi {str(obi)[:30]!r} is no number")
        obi = float(obi)
        flow = qx(msg["flow_1s"]) if msg.get("flow_1s") else 0
        n = msg.get("trades_1s")
        if n is None:
            n = 0
        elif not count_ok(n):
            raise ValueError(f"trades_1s {str(n)[:30]!r} is no count")
        uid = msg.get("update_id")
        if uid is None:
            uid = 0
        elif not (type(uid) is int and 0 <= uid <= U64):
            raise ValueError(f"update_id {str(uid)[:30]!r} is no u64")
        lt = msg.get("last_trade")
        last = (0, 0, 0, 0)
        if isinstance(lt, dict):
            if lt.get("side") not in ("buy", "sell"):
                raise ValueError(f"last_trade side {str(lt.get('side'))[:20]!r}")
            last = (px(lt["price"]), qx(lt["qty"]), 1 if lt["side"] == "buy" else 2, _ns(lt["ts"]))
        ticker = day = None
        t = msg.get("ticker")
        if isinstance(t, dict):
            ts = _ns(t["ts"])
            ticker = (ts, px(t["last"]), px(t["bid"]), 0, px(t["ask"]), 0)
            if t.get("high_24h"):
                try:
                    volume = qx(t["volume_24h"])
                except ValueError:           # beyond int64 at this scale: not shown
                    volume = 0
                day = (ts, px(t["open_24h"]) if t.get("open_24h") else 0, px(t["high_24h"]), px(t["low_24h"]),
                       volume)
        tape = []
        left_out: list[tuple[dict[str, Any], Exception]] = []
        for tr in reversed(trades):          # newest first, each on its own
            try:
                tape.append((_ns(tr["ts"]), px(tr["price"]), qx(tr["qty"]), 1 if tr["side"] == "buy" else 2))
            except FixedRangeError as exc:
                if strict:
                    raise
                left_out.append((tr, exc))
            except WRITE_ERRORS as exc:
                left_out.append((tr, exc))
        host = self.hosts.get(rb.host)
        engine_stale = host is not None and host.engine_stale
        stopped = host is not None and host.stopped
        valid = bool(msg.get("valid")) and not engine_stale and not stopped
        reason = ("fleet stopped" if stopped else "engine stale" if engine_stale
                  else str(msg.get("reason") or ""))
        market = pack_market(ticker, day, n_trades)
        packed_tape = pack_tape(tape)
        fixed_flow = (max(flow, 0), max(-flow, 0), n, 0)
        w = self._book_writer(blk, rb, msg)
        if now - rb.obi_at >= 0.25:          # the engine's pace of OBI samples
            rb.obi_at = now
            w.push_obi(obi)
        w.publish_packed(valid, bool(msg.get("crossed")), uid, pdec, qdec, array("q", levels).tobytes(), n_bids,
                         n_asks, obi, fixed_flow, last, 0, 0, reason, market=market, tape=packed_tape)
        rb.update_id = uid
        for tr, exc in left_out:
            self.fleets.drop_trade(f"{rb.host}/{rb.key}", tr, exc)

    def _copy_local(self, blk: StatsBlock) -> None:
        """This machine's fleet's slots, copied as they change (seqlock'd reads and writes)."""
        src = self.local.stats
        if src is None:
            return
        spans = [(src.feed_offset(i), blk.feed_offset(i), FEED_CONTROL_OFF) for i in range(self.n_local_feeds)]
        spans += [(src.book_offset(j), blk.book_offset(j), BOOK_SLOT) for j in range(self.n_local_books)]
        spans.append((src.engine_offset, blk.engine_offset, ENGINE_SLEEPING_OFF))
        for s_off, d_off, size in spans:
            seq = src.seg.load_u64(s_off)
            if seq & 1 or self.copied.get(d_off) == seq:
                continue
            raw = src.seg.read_consistent(s_off, size)
            if raw is None:
                continue
            blk.seg.write_begin(d_off)
            blk.view[d_off + 8:d_off + size] = raw[8:]
            blk.seg.write_end(d_off)
            self.copied[d_off] = seq
        # commands to a local feed: passed on to the supervisor's block, the ack copied back
        for i in range(self.n_local_feeds):
            seq, cmd, book = blk.read_command_book(i)
            if seq != self.local_seen[i]:
                self.local_seen[i] = seq
                if cmd != Command.NONE:
                    self.forwarded[i] = (seq, src.send_command(i, cmd, book))
            got = self.forwarded.get(i)
            if got is not None:
                ack_seq, result, text = src.read_ack(i)
                if ack_seq == got[1]:
                    blk.ack_command(i, got[0], result, text)
                    del self.forwarded[i]

    def _serve_commands(self, blk: StatsBlock) -> None:
        """Commands to a remote feed: a NATS request to its host; its answer, the ack."""
        plan: list[str] | None = None
        for rf in self.feeds:
            seq, cmd, book = blk.read_command_book(rf.slot)
            if seq == rf.served:
                continue
            rf.served = seq
            if cmd == Command.NONE:
                continue
            word = _WORDS.get(cmd)
            if word is None:
                blk.ack_command(rf.slot, seq, AckResult.UNSUPPORTED, f"{cmd.name.lower()} is not sent to a remote fleet")
                continue
            symbol = None
            if book != ALL_BOOKS:
                plan = plan if plan is not None else book_plan(self.layout.cfg.feeds)
                if book >= len(plan):
                    blk.ack_command(rf.slot, seq, AckResult.FAILED, f"no book {book}")
                    continue
                symbol = plan[book].split(":", 1)[1]
            fut = self.att.control_async(rf.host, rf.label, word, symbol, REMOTE_TIMEOUT_S)
            self.pending.append((rf.slot, seq, fut))
            log.info("attach: %s/%s: remote %s%s sent", rf.host, rf.label, word, f" {symbol}" if symbol else "")
        for item in list(self.pending):
            slot, seq, fut = item
            if not fut.done():
                continue
            self.pending.remove(item)
            try:
                reply = fut.result()
            except Exception as exc:         # the attachment closed under it
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            result, text = ack_of(reply)
            rf = next((f for f in self.feeds if f.slot == slot), None)
            who = f"{rf.host}/{rf.label}" if rf is not None else f"feed slot {slot}"
            log.log(logging.INFO if result == AckResult.OK else logging.WARNING, "attach: %s: %s",
                    who, f"acknowledged: {text}" if result == AckResult.OK else text)
            blk.ack_command(slot, seq, result, text)

    def _tell_bad(self, now: float) -> None:
        bad = self.fleets.bad
        if bad != self.bad_told and now - self.bad_told_at >= 10.0:
            self.events.append(f"{bad} NATS message(s) could not be read or shown so far (see the log)")
            self.bad_told, self.bad_told_at = bad, now


class AttachController:
    """The Controller of a console attached to remote fleets over NATS (``attachment``), with
    this machine's fleet beside them when ``local`` (its supervisor) is given. The app calls
    ``sync()`` at each display tick and takes ``layout()`` when its generation changed."""

    def __init__(self, attachment: Attachment, local: Any = None) -> None:
        self.attachment = attachment
        self.local = local
        from obitui.supervisor import clean_stale_segments
        try:
            clean_stale_segments()          # an attached console killed before (its block)
        except Exception as exc:            # never a reason not to start
            log.debug("attach: stale segments not cleaned: %r", exc)
        self.failed_at = -1e9
        self.mirror = Mirror(attachment, local)
        try:
            attachment.start()
        except BaseException:
            self.mirror.close()
            raise

    @property
    def stats(self) -> StatsBlock | None:
        return self.mirror.block

    @property
    def sim_proc(self) -> Any:
        return getattr(self.local, "sim_proc", None)

    def layout(self) -> Layout:
        return self.mirror.layout

    def sync(self) -> None:
        """The mirror's writes of this tick. An error it did not expect is logged (with its
        traceback, at most every 10 s) and told on screen, never the end of the console."""
        try:
            self.mirror.sync()
        except Exception as exc:
            now = time.monotonic()
            if now - self.failed_at >= 10.0:
                self.failed_at = now
                log.exception("attach: the mirror failed: %r", exc)
                self.mirror.events.append(f"the NATS mirror failed: {type(exc).__name__}: {exc} (see the log)")

    def command(self, label: str, cmd: Command, symbol: str | None = None) -> int:
        assert self.mirror.block is not None
        return command_by_label(self.mirror.layout.cfg, self.mirror.block, label, cmd, symbol)

    def pids(self) -> dict[str, int]:
        return self.local.pids() if self.local is not None else {}

    def ring_fill(self) -> list[tuple[float, int]]:
        local = self.local.ring_fill() if self.local is not None else []
        return list(local) + [rf.fill for rf in self.mirror.feeds]

    def ring_high_water(self) -> list[float]:
        local = self.local.ring_high_water() if self.local is not None else []
        return list(local) + [0.0] * len(self.mirror.feeds)

    def poll(self) -> list[str]:
        events = list(self.local.poll()) if self.local is not None else []
        events += self.mirror.events
        self.mirror.events = []
        return events

    def stop(self) -> None:
        """Close the NATS connections and remove the block (not the local fleet: its
        supervisor's own stop does)."""
        try:
            self.attachment.close()
        finally:
            self.mirror.close()

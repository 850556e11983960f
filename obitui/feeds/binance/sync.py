"""Binance spot (and USD-M futures) depth: event parsing and the local-book sync procedure
of docs/PROTOCOLS.md, as a pure state machine (no I/O) that the feed process drives.

Spot: buffer events, fetch a snapshot, refetch while ``lastUpdateId < first U``, drop events
with ``u <= lastUpdateId``, the first applied event must satisfy ``U <= lastUpdateId + 1 <= u``,
and every later one ``U <= book_id + 1`` (``u <= book_id``: already applied, ignored);
``U > book_id + 1`` is a gap: the book is invalid and a new snapshot is needed (the socket stays).
USD-M futures: chain on ``pu == previous u``; drop ``u < lastUpdateId``; the first event must
satisfy ``U <= lastUpdateId <= u``.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from obitui.core.book import OrderBook
from obitui.core.records import MAX_MS


class DepthFormatError(ValueError):
    """A depth event or snapshot that does not have the protocol's shape."""


@dataclass(slots=True)
class DepthEvent:
    first_id: int          # U
    last_id: int           # u
    prev_id: int | None    # pu (futures only)
    bids: list[Any]
    asks: list[Any]
    event_time_ms: int


def _int_field(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
        raise DepthFormatError(f"depth event field {key!r} must be an int in [0, 2**63), got {v!r:.40}")
    return v


def _levels(obj: dict[str, Any], key: str) -> list[Any]:
    v = obj.get(key)
    if not isinstance(v, list):
        raise DepthFormatError(f"field {key!r} must be a list of [price, qty], got {type(v).__name__}")
    return v


def parse_depth_event(data: dict[str, Any]) -> DepthEvent:
    """Build a DepthEvent from a decoded ``depthUpdate`` payload (the ``data`` of a combined
    stream message). Extra keys are ignored; ``pu`` is kept when present (futures)."""
    if data.get("e") != "depthUpdate":
        raise DepthFormatError(f"not a depthUpdate event: e={data.get('e')!r}")
    first, last = _int_field(data, "U"), _int_field(data, "u")
    if first > last:
        raise DepthFormatError(f"depth event with U={first} > u={last}")
    pu = _int_field(data, "pu") if "pu" in data else None
    e = data.get("E")
    event_ms = e if isinstance(e, int) and not isinstance(e, bool) and 0 <= e <= MAX_MS else 0
    return DepthEvent(first, last, pu, _levels(data, "b"), _levels(data, "a"), event_ms)


def parse_snapshot(body: dict[str, Any]) -> tuple[int, list[Any], list[Any]]:
    """(lastUpdateId, bids, asks) of a decoded REST depth body. Any other shape (a body that is
    not an object, an id that is not an int in [0, 2**63), sides that are not lists of
    [price, quantity] string pairs) raises DepthFormatError and nothing else; whether the
    strings are decimals the book's digits can hold is the book's to say (ValueError)."""
    if not isinstance(body, dict):
        raise DepthFormatError(f"REST depth snapshot must be a JSON object, got {type(body).__name__}")
    last = _int_field(body, "lastUpdateId")
    return last, _snapshot_levels(body, "bids"), _snapshot_levels(body, "asks")


def _snapshot_levels(body: dict[str, Any], key: str) -> list[Any]:
    levels = _levels(body, key)
    for i, lvl in enumerate(levels):
        if (not isinstance(lvl, list) or len(lvl) < 2 or not isinstance(lvl[0], str)
                or not isinstance(lvl[1], str)):
            raise DepthFormatError(f"snapshot {key}[{i}] must be a [price, quantity] pair of "
                                   f"strings, got {lvl!r:.60}")
    return levels


class SyncResult(enum.Enum):
    BUFFERED = "buffered"        # waiting for a snapshot
    APPLIED = "applied"          # event applied; book continuous
    ALREADY_APPLIED = "already_applied"   # u <= book id (duplicate or late): ignored
    GAP = "gap"                  # continuity broken: book invalid, resync needed
    SYNCED = "synced"            # snapshot accepted, buffered events applied
    STALE_SNAPSHOT = "stale_snapshot"     # lastUpdateId < first buffered U: fetch again
    BUFFER_OVERFLOW = "buffer_overflow"   # too many events while waiting: resync


class DepthSync:
    """The sync procedure over one OrderBook. Feed ``on_event`` every depth event (also before
    the snapshot), ``on_snapshot`` every REST snapshot; act on the returned SyncResult."""

    def __init__(self, book: OrderBook, futures: bool = False, max_buffer: int = 50_000,
                 pack: bool = False) -> None:
        self.book = book
        self.pack = pack
        self.last_packed: tuple | None = None   # ring payload of the last applied event
        self.futures = futures
        self.max_buffer = max_buffer
        self.buffer: deque[DepthEvent] = deque()
        self.synced = False
        self.awaiting_first = False   # snapshot loaded, first event not applied yet
        self.last_u = 0               # futures: u of the last applied event
        self.gap_detail = ""
        self.replayed = (0, 0, 0)     # the last snapshot's buffered events: applied, skipped, left

    def reset(self) -> None:
        """Start over (after a gap or a reconnect): the book is invalid until the next sync.
        Events keep being buffered, so a resync needs no new socket."""
        self.synced = False
        self.awaiting_first = False
        self.book.valid = False

    @property
    def first_buffered_id(self) -> int | None:
        return self.buffer[0].first_id if self.buffer else None

    def on_event(self, ev: DepthEvent) -> SyncResult:
        if not self.synced:
            self.buffer.append(ev)
            if len(self.buffer) > self.max_buffer:
                self.buffer.popleft()
                return SyncResult.BUFFER_OVERFLOW
            return SyncResult.BUFFERED
        return self._apply(ev)

    def on_snapshot(self, last_update_id: int, bids: list[Any], asks: list[Any]) -> SyncResult:
        first = self.first_buffered_id
        # Spot: a snapshot that ends right before the first buffered event (lastUpdateId + 1 ==
        # U) joins it with no gap, so only an older one is stale (the docs' "lastUpdateId < U"
        # would refetch that contiguous case for nothing). USD-M needs U <= lastUpdateId.
        stale_before = first if self.futures else (first - 1 if first is not None else None)
        if stale_before is not None and last_update_id < stale_before:
            return SyncResult.STALE_SNAPSHOT
        self.book.apply_snapshot(bids, asks)
        self.book.update_id = last_update_id
        self.last_u = last_update_id
        self.synced = True
        self.awaiting_first = True
        self.book.valid = True
        buffered, self.buffer = self.buffer, deque()
        applied = skipped = 0
        for i, ev in enumerate(buffered):
            res = self._apply(ev)
            if res is SyncResult.GAP:
                self.replayed = (applied, skipped, len(buffered) - i - 1)
                return SyncResult.GAP
            if res is SyncResult.APPLIED:
                applied += 1
            else:
                skipped += 1
        self.replayed = (applied, skipped, 0)
        return SyncResult.SYNCED

    def _apply(self, ev: DepthEvent) -> SyncResult:
        res = self.continuity(ev.first_id, ev.last_id, ev.prev_id)
        if res is not None:
            return res
        self.applied(ev.last_id, self.book.apply(ev.bids, ev.asks, self.pack))
        return SyncResult.APPLIED

    def continuity(self, first: int, last: int, prev: int | None) -> SyncResult | None:
        """The rules for an event U=first, u=last (pu=prev) against the synced book: None when
        it is the next one (apply it, then call ``applied``), else ALREADY_APPLIED or GAP (the
        book is reset)."""
        bid = self.book.update_id
        if self.futures:
            if self.awaiting_first:
                if last < bid:
                    return SyncResult.ALREADY_APPLIED
                if not first <= bid <= last:
                    return self._gap(f"first event U={first} u={last} does not cover "
                                     f"lastUpdateId={bid}")
            elif prev != self.last_u:
                if last <= self.last_u:
                    return SyncResult.ALREADY_APPLIED
                return self._gap(f"pu={prev} but the previous event ended at u={self.last_u}")
        else:
            if last <= bid:
                return SyncResult.ALREADY_APPLIED
            if self.awaiting_first:
                if not first <= bid + 1 <= last:
                    return self._gap(f"first event U={first} u={last} does not cover "
                                     f"lastUpdateId+1={bid + 1}")
            elif first > bid + 1:
                return self._gap(f"U={first} after u={bid}: {first - bid - 1} update ids missing")
        return None

    def accept(self, first: int, last: int, prev: int | None) -> SyncResult | None:
        """``continuity`` and, when the event is the next one (None), ``applied`` at once (the
        hot path applies the event's levels right after; it cannot fail once scanned)."""
        res = self.continuity(first, last, prev)
        if res is None:
            self.book.update_id = last
            self.last_u = last
            self.awaiting_first = False
        return res

    def applied(self, last: int, packed: tuple | None) -> None:
        """The event ending at u=last was applied to the book (``packed``: its ring payload)."""
        self.last_packed = packed
        self.book.update_id = last
        self.last_u = last
        self.awaiting_first = False

    def _gap(self, detail: str) -> SyncResult:
        self.gap_detail = detail
        self.reset()
        return SyncResult.GAP

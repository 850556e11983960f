"""Bitget ``books``: the continuity and checksum rules of docs/PROTOCOLS.md as a pure state
machine over one OrderBook (no I/O); the feed process drives it and acts on its answers.

- A ``snapshot`` (any time) replaces the book; updates before the first snapshot, or after a
  resync started, are in flight and ignored.
- Each ``update``'s ``pseq`` must equal the previous frame's ``seq`` (``seq`` grows, not by 1).
  v3 (UTA): the first update after a snapshot may begin before it: the snapshot's ``seq`` lies
  within ``[pseq, seq]`` of that update. ``pseq == 0`` on an update is a gap.
- Older frames: ``seq`` without ``pseq`` (then ``seq`` must grow) or neither (v1 recordings:
  the checksum is the only check).
- The checksum, when present and non-zero, is the CRC32 of the best 25 levels of each side
  interleaved, compared as unsigned 32-bit values (the venue sends it signed)."""
from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum


class Verdict(enum.Enum):
    APPLY = "apply"            # the next update: apply it
    IN_FLIGHT = "in_flight"    # sent before the snapshot we wait for: ignore it
    ALREADY = "already"        # v3: an update the snapshot already holds
    GAP = "gap"                # continuity broken: resync


class BooksSync:
    def __init__(self, book: OrderBook, v3: bool = False) -> None:
        self.book = book
        self.v3 = v3
        self.awaiting_snapshot = True
        self.prev_seq: int | None = None
        self.first_after_snapshot = False
        self.gap_detail = ""

    def reset(self) -> None:
        """The book is invalid until the next snapshot."""
        self.book.valid = False
        self.awaiting_snapshot = True
        self.first_after_snapshot = False

    def forget(self) -> None:
        """A new connection: nothing of the old stream carries over."""
        self.reset()
        self.prev_seq = None

    def on_snapshot(self, bids: Sequence[Any], asks: Sequence[Any]) -> None:
        """Load a snapshot's levels (ValueError/TypeError for a level that is not a decimal
        pair the book's scales hold). ``synced`` makes it count once its checksum passed."""
        self.book.apply_snapshot(bids, asks)

    def synced(self, seq: int | None) -> None:
        self.prev_seq = seq
        self.book.update_id = seq or 0
        self.book.valid = True
        self.awaiting_snapshot = False
        self.first_after_snapshot = True

    def check(self, seq: int | None, pseq: int | None) -> Verdict:
        """What to do with an update of ``seq``/``pseq``."""
        if self.awaiting_snapshot:
            return Verdict.IN_FLIGHT
        if seq is None:
            return Verdict.APPLY                # v1 frames: the checksum is the only check
        prev = self.prev_seq
        if pseq is not None:
            if pseq == 0:
                return self._gap(f"update with pseq 0 (seq {seq})")
            if pseq == prev:
                return Verdict.APPLY
            if self.v3 and self.first_after_snapshot and prev is not None:
                if seq <= prev:
                    return Verdict.ALREADY      # the snapshot holds it
                if pseq <= prev:
                    return Verdict.APPLY        # snapshot seq within [pseq, seq]
                return self._gap(f"first update pseq {pseq} after snapshot seq {prev}: updates missing")
            return self._gap(f"pseq {pseq} != previous seq {prev}")
        if prev is not None and seq <= prev:
            return self._gap(f"seq {seq} did not grow past {prev}")
        return Verdict.APPLY

    def applied(self, seq: int | None) -> None:
        self.first_after_snapshot = False
        if seq is not None:
            self.prev_seq = seq
            self.book.update_id = seq

    def checksum_ok(self, checksum: int | None) -> bool:
        """True when there is no checksum to check (absent or 0) or it matches the book."""
        if not checksum:
            return True
        return not (bitget_checksum(self.book) - checksum) % (1 << 32)

    def _gap(self, detail: str) -> Verdict:
        self.gap_detail = detail
        self.reset()
        return Verdict.GAP

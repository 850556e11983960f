"""Budgets a feed spends so a venue never has to refuse it: REST weight per minute (Binance's
``REQUEST_WEIGHT``) and client messages per time window on one connection (Bitget: 10 per
second)."""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

WEIGHT_WINDOW_S = 60.0    # the REST weight limit's interval: fixed minutes of the wall clock
WEIGHT_MARGIN_S = 0.5     # wait this much past a window's end (clock skew with the venue)


class WeightBudget:
    """The REST weight this IP used in the current minute, as the venue last reported it
    (``x-mbx-used-weight-1m``) plus what we sent since: a request that would go over
    ``limit`` waits for the next minute instead of drawing a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window = -1
        self.used = 0

    def wait(self, weight: int, now: float) -> float:
        """Seconds to wait before a request of ``weight`` (0: send it now)."""
        window = int(now // WEIGHT_WINDOW_S)
        if window != self.window or self.used + weight <= self.limit:
            return 0.0
        return (window + 1) * WEIGHT_WINDOW_S - now + WEIGHT_MARGIN_S

    def spend(self, weight: int, now: float) -> None:
        window = int(now // WEIGHT_WINDOW_S)
        if window != self.window:
            self.window, self.used = window, 0
        self.used += weight

    def note(self, header: str | None, now: float) -> None:
        """The venue's count, from an answer's ``x-mbx-used-weight-1m``."""
        try:
            used = int(header) if header is not None else None
        except ValueError:
            used = None
        if used is not None and used >= 0:
            self.window, self.used = int(now // WEIGHT_WINDOW_S), used


class SharedWeightBudget:
    """A ``WeightBudget`` every feed process of the run shares (the venue counts weight per IP):
    the minute's count lives in one word of the stats block, ``window << 32 | used``, and each
    change is one compare-and-swap, so two processes never both spend the last of a minute.
    ``take`` checks and spends at once; the venue's own count (``note``) only ever raises ours."""

    def __init__(self, block: Any, pool: int, limit: int) -> None:
        self.seg = block.seg
        self.off = block.budget_offset(pool)
        self.ban_off = self.off + 8          # the monotonic ns a Retry-After ends (the IP's ban)
        self.limit = limit

    def ban(self, seconds: float) -> None:
        """The venue said to wait (429/418 Retry-After): no request before then, from any
        process (a later end wins)."""
        until = time.monotonic_ns() + int(seconds * 1e9)
        while True:
            old = self.seg.load_u64(self.ban_off)
            if old >= until or self.seg.cas_u64(self.ban_off, old, until):
                return

    def banned_for(self) -> float:
        """Seconds left of a Retry-After (0: none)."""
        return max(0.0, (self.seg.load_u64(self.ban_off) - time.monotonic_ns()) / 1e9)

    def _read(self) -> tuple[int, int]:
        w = self.seg.load_u64(self.off)
        return w >> 32, w & 0xFFFFFFFF

    @property
    def window(self) -> int:
        return self._read()[0]

    @property
    def used(self) -> int:
        """The weight spent in the current minute (0 once it is over)."""
        window, used = self._read()
        return used if window == int(time.time() // WEIGHT_WINDOW_S) else 0

    def _update(self, now: float, change: Callable[[int], int | None]) -> bool:
        """Apply ``change`` (used -> new used, or None: leave it) to the current minute's count;
        False when ``change`` declined."""
        mine = int(now // WEIGHT_WINDOW_S)
        while True:
            old = self.seg.load_u64(self.off)
            # a newer minute written by another process meanwhile is the current one: never
            # rolled back to ours
            window = max(mine, old >> 32)
            used = old & 0xFFFFFFFF if old >> 32 == window else 0
            new = change(used)
            if new is None:
                return False
            if self.seg.cas_u64(self.off, old, (window << 32) | min(new, 0xFFFFFFFF)):
                return True

    def wait(self, weight: int, now: float) -> float:
        """Seconds to wait before a request of ``weight`` (0: it fits now)."""
        window, used = self._read()
        if window != int(now // WEIGHT_WINDOW_S) or used + weight <= self.limit:
            return 0.0
        return (int(now // WEIGHT_WINDOW_S) + 1) * WEIGHT_WINDOW_S - now + WEIGHT_MARGIN_S

    def take(self, weight: int, now: float) -> float:
        """Spend ``weight`` if the minute has room for it (0.0), else the seconds until it has."""
        if self._update(now, lambda used: used + weight if used + weight <= self.limit else None):
            return 0.0
        return max(0.001, (int(now // WEIGHT_WINDOW_S) + 1) * WEIGHT_WINDOW_S - now + WEIGHT_MARGIN_S)

    def spend(self, weight: int, now: float) -> None:
        self._update(now, lambda used: used + weight)

    def note(self, header: str | None, now: float) -> None:
        """The venue's count, from an answer's ``x-mbx-used-weight-1m``: ours becomes at least
        that (requests of other processes still in flight keep theirs counted)."""
        try:
            venue = int(header) if header is not None else -1
        except ValueError:
            venue = -1
        if venue >= 0:
            self._update(now, lambda used: venue if venue > used else None)


class MessagePacer:
    """At most ``per_window`` messages in any ``window`` seconds on one connection: a sender
    over the rate waits instead of getting the socket cut. One sender at a time."""

    def __init__(self, per_window: int, window: float) -> None:
        self.per_window = per_window
        self.window = window
        self.sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """A new connection: a new budget."""
        self.sent.clear()

    async def send(self, send: Callable[[], Awaitable[None]]) -> None:
        async with self._lock:
            sent = self.sent
            while True:
                now = time.monotonic()
                while sent and now - sent[0] >= self.window:
                    sent.popleft()
                if len(sent) < self.per_window:
                    break
                await asyncio.sleep(self.window - (now - sent[0]))
            sent.append(time.monotonic())
            await send()

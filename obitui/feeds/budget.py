"""Budgets a feed spends so a venue never has to refuse it: REST weight per minute (Binance's
``REQUEST_WEIGHT``) and client messages per time window on one connection (Bitget: 10 per
second)."""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

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

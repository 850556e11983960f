"""One simulator WebSocket connection: an outgoing queue drained by a writer task, with the
fault knobs applied as data leaves the market (gap, reorder, duplicate, malformed, oversize,
silence) and the connection-level ones (disconnect) on a timer."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Hashable
from typing import Any

from aiohttp import WSCloseCode, web

from obitui.sim.faults import Faults

log = logging.getLogger("obitui.sim")

OVERSIZE_BYTES = 2 * 1024 * 1024
QUEUE_LIMIT = 100_000


class Conn:
    """Wraps an aiohttp WebSocketResponse. ``send_data`` never blocks the market loop."""

    def __init__(self, ws: web.WebSocketResponse, faults: Faults, counters: dict[str, int],
                 seed: int, peer: str) -> None:
        self.ws = ws
        self.faults = faults
        self.counters = counters
        self.rng = random.Random(seed)
        self.peer = peer
        self.opened = time.monotonic()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        # `reorder`: per stream (a market's depth stream, a Bitget books channel) at most one
        # diff held back, sent right after that stream's next diff
        self.held: dict[Hashable, str] = {}
        self.closed = False
        self.subs: dict[str, Any] = {}        # venue-specific subscription keys
        self.writer = asyncio.get_running_loop().create_task(self._write())
        self.last_rx = time.monotonic()

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    @property
    def silenced(self) -> bool:
        s = self.faults.silence
        return bool(s) and time.monotonic() - self.opened >= s

    def disconnect_due(self) -> bool:
        """The `disconnect=S` fault: close this connection S seconds after it opened."""
        d = self.faults.disconnect
        if d and time.monotonic() - self.opened >= d:
            self.count("injected_disconnect")
            self.close_soon(1001, "simulated disconnect")
            return True
        return False

    def send_control(self, text: str) -> None:
        """Acks, errors, pongs: never subject to data faults."""
        self._enqueue(text)

    def send_data(self, text: str, diff: bool = False, stream: Hashable | None = None) -> None:
        """A market-data frame. ``diff``: a book delta (gap/reorder/duplicate apply).
        ``stream``: the diff's stream on this connection (a Binance stream name, a Bitget
        subscription key); `reorder` swaps two consecutive diffs of the same stream, so that
        the swap is visible in that stream's own sequence however many markets the connection
        carries."""
        if self.closed:
            return
        f = self.faults
        if self.silenced:
            self.count("silenced_frames")
            return
        rng = self.rng
        if f.malformed and rng.random() < f.malformed:
            self.count("injected_malformed")
            text = rng.choice(['{"e":"depthUpdate","U":', '{"stream": 42, "data": [1, 2',
                               '{"e":"depthUpdate","E":"x","s":"BTCUSDT","U":"a","u":null,"b":7,"a":{}}',
                               '{"action":"update","data":[{"bids":[["x","y"]],"asks":5,"seq":"s"}]}',
                               'not json at all'])
            self._enqueue(text)
            return
        if f.oversize and rng.random() < f.oversize:
            self.count("injected_oversize")
            self._enqueue('"' + "x" * OVERSIZE_BYTES + '"')
            return
        if diff:
            if f.gap and rng.random() < f.gap:
                self.count("injected_gap")
                return
            held = self.held.pop(stream, None) if self.held else None
            if f.reorder and held is None and rng.random() < f.reorder:
                self.count("injected_reorder")
                self.held[stream] = text
                return
            self._enqueue(text)
            if held is not None:
                self._enqueue(held)
            if f.duplicate and rng.random() < f.duplicate:
                self.count("injected_duplicate")
                self._enqueue(text)
            return
        self._enqueue(text)

    def drop_held(self, stream: Hashable | None) -> None:
        """The subscription ``stream`` ended: a diff of it still held back by `reorder` is
        never sent, as on a real exchange. Counted ``reorder_held_dropped``."""
        if self.held and self.held.pop(stream, None) is not None:
            self.count("reorder_held_dropped")

    def _drop_all_held(self) -> None:
        """The connection ends: the diffs it still held back are dropped (counted)."""
        if self.held:
            self.count("reorder_held_dropped", len(self.held))
            self.held.clear()

    def _enqueue(self, text: str) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            # a real exchange drops a client that cannot keep up
            self.count("slow_consumer_closed")
            log.warning("sim: closing %s: %d frames queued (slow consumer)", self.peer, QUEUE_LIMIT)
            self.close_soon(WSCloseCode.POLICY_VIOLATION, "slow consumer")
            return
        self.queue.put_nowait(text)

    async def _write(self) -> None:
        ws = self.ws
        q = self.queue
        try:
            while True:
                text = await q.get()
                if text is None:
                    return
                await ws.send_str(text)
                self.count("frames_sent")
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            return
        except Exception as exc:  # a broken transport ends this connection, logged and counted
            self.count("write_errors")
            log.info("sim: write to %s failed: %s", self.peer, exc)

    def close_soon(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_all_held()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        # what is still queued is dropped, as a closing exchange socket does
        self.writer.cancel()
        try:
            await self.ws.close(code=code, message=reason.encode())
        except Exception as exc:  # already gone
            log.debug("sim: close of %s: %s", self.peer, exc)

    async def finish(self) -> None:
        """Called when the handler returns: stop the writer."""
        self.closed = True
        self._drop_all_held()
        self.writer.cancel()
        try:
            await self.writer
        except asyncio.CancelledError:
            pass

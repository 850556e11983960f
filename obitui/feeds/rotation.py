"""Make-before-break connection handover, for every venue.

Venues cut connections (Binance and Bitget after 24 h; Binance announces maintenance with a
``serverShutdown`` event). Before that happens a feed opens a successor socket, subscribes it,
and buffers what it receives while the current socket keeps serving; once the venue's own rule
(``Feed.can_adopt``) says the buffered frames continue the feed's state, the old socket is
closed and the buffered frames follow in order. No gap, no resync."""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import websockets

if TYPE_CHECKING:
    from obitui.feeds.base import Feed

log = logging.getLogger("obitui.feed")

SUCCESSOR_BUFFER = 100_000     # frames a successor may hold before the handover is given up


@dataclass
class Successor:
    """The next socket: connected and subscribed while the current one keeps serving; its
    frames wait here until the feed adopts it."""
    ws: Any
    buffer: collections.deque = field(default_factory=collections.deque)
    reader: asyncio.Task[None] | None = None
    closed: bool = False


def nodelay(ws: Any) -> None:
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Rotation:
    """The handover of one feed's connection. The feed provides ``connect()``,
    ``subscribe_successor(ws)``, ``can_adopt(buffer)``, ``on_adopted()``, ``cfg.rotate_after``
    and its ``stats``; it reads frames through ``frames(ws)``."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.successor: Successor | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """A successor is being opened or waits for the handover."""
        return self.successor is not None or self.task is not None

    def start(self) -> None:
        """Open a successor now (the venue announced a cut)."""
        if not self.pending:
            self.task = asyncio.get_running_loop().create_task(self._open())

    async def frames(self, ws: Any) -> Any:
        """Yield (text, receive ns) from the connection, rotating it after ``rotate_after`` s
        or when ``start`` was called."""
        feed = self.feed
        nodelay(ws)
        started = time.monotonic()
        current = ws
        try:
            while True:
                try:
                    text = await current.recv()
                except websockets.ConnectionClosedOK:
                    return
                yield text, time.time_ns()
                succ = self.successor
                if succ is None:
                    if (feed.cfg.rotate_after and self.task is None
                            and time.monotonic() - started >= feed.cfg.rotate_after):
                        self.start()
                    continue
                if succ.closed:
                    self.drop("the new socket closed before the handover")
                    started = time.monotonic()      # try again after another period
                    continue
                if not feed.can_adopt(succ.buffer):
                    continue
                # hand over: the old socket goes, the new one's frames follow in order
                if succ.reader is not None:
                    succ.reader.cancel()
                    try:
                        await succ.reader
                    except (asyncio.CancelledError, websockets.ConnectionClosed):
                        pass
                old, current = current, succ.ws
                feed.ws = current
                self.successor = self.task = None
                feed.stats.inc("rotations")
                feed.on_adopted()
                log.info("%s: rotated to a new connection (make-before-break)", feed.cfg.label)
                asyncio.get_running_loop().create_task(old.close(1000, "rotated"))
                started = time.monotonic()
                while succ.buffer:
                    yield succ.buffer.popleft()
        finally:
            self.drop("the session ended")
            if current is not ws:
                await current.close()

    async def _open(self) -> None:
        feed = self.feed
        try:
            ws = await feed.connect()
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            log.warning("%s: rotation: the new connection failed (%s); the current one stays", feed.cfg.label, exc)
            self.task = None
            return
        try:
            nodelay(ws)
            await feed.subscribe_successor(ws)
        except websockets.ConnectionClosed:
            await ws.close()
            self.task = None
            return
        except BaseException:      # cancelled with the session
            await asyncio.shield(ws.close())
            raise
        succ = Successor(ws)
        succ.reader = asyncio.get_running_loop().create_task(self._read(succ))
        self.successor = succ

    @staticmethod
    async def _read(succ: Successor) -> None:
        try:
            async for text in succ.ws:
                succ.buffer.append((text, time.time_ns()))
                if len(succ.buffer) > SUCCESSOR_BUFFER:
                    break
        except websockets.ConnectionClosed:
            pass
        succ.closed = True

    def drop(self, why: str) -> None:
        """Give up a successor socket; frames it received are counted (discarded)."""
        succ, self.successor = self.successor, None
        if self.task is not None and succ is None:
            self.task.cancel()
        self.task = None
        if succ is None:
            return
        if succ.reader is not None:
            succ.reader.cancel()
        n = len(succ.buffer)
        stats = self.feed.stats
        if n:
            stats.inc("frames", n)
            stats.inc("frames_discarded", n)
        log.warning("%s: rotation abandoned (%s); %d frame(s) of the new socket discarded",
                    self.feed.cfg.label, why, n)
        asyncio.get_running_loop().create_task(succ.ws.close())

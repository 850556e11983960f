"""`--record DIR`: every raw frame and REST body appended to a capture file, off the receive
path (buffered in memory, written by a worker thread twice a second)."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from obitui.capture import CaptureRecord, write_capture

log = logging.getLogger("obitui.feed")


class Recorder:
    def __init__(self, directory: str | Path, label: str, venue: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{label}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        self.venue = venue
        self.pending: list[CaptureRecord] = []
        self.written = 0
        self.errors = 0

    def add(self, t_ns: int, kind: str, url: str, data: str) -> None:
        self.pending.append(CaptureRecord(t_ns, self.venue, kind, url, data))

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            self.written += await asyncio.to_thread(write_capture, self.path, batch)
        except OSError as exc:
            self.errors += len(batch)
            log.error("recording to %s failed, %d frames lost: %s", self.path, len(batch), exc)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            await self.flush()
        await self.flush()

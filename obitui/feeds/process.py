"""Feed process entry point (spawned by the supervisor): one feed, one asyncio loop."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import Any

from obitui.config import FeedConfig
from obitui.core.ring import Ring
from obitui.core.stats import FeedSlotWriter, StatsBlock
from obitui.feeds.base import Feed
from obitui.feeds.group import FeedGroup, connection_shares
from obitui.feeds.recorder import Recorder
from obitui.feeds.venue import load_feed_class

log = logging.getLogger("obitui.feed")


def make_feed(cfg: FeedConfig, *args: Any, **kw: Any) -> Feed | FeedGroup:
    """The feed of ``cfg``'s venue and channel (the class its venue description names): one
    connection, or a group of them when its markets do not fit one (``connection_size``)."""
    if len(connection_shares(cfg)) > 1:
        return FeedGroup(cfg, *args, **kw)
    feed = load_feed_class(cfg.venue, cfg.channel)(cfg, *args, **kw)
    assert isinstance(feed, Feed)
    return feed


async def _run(cfg: FeedConfig, index: int, ring_name: str, stats_name: str,
               record_dir: str | None, book_ids: list[int] | None) -> None:
    ring = Ring.attach(ring_name, role="producer")
    block = StatsBlock.attach(stats_name)
    stream = cfg.stream_name if len(cfg.symbols) == 1 else f"{cfg.stream_name} +{len(cfg.symbols) - 1} more"
    slot = FeedSlotWriter(block, index, cfg.label, cfg.venue, stream, cfg.symbol, ring_name)
    recorder = Recorder(record_dir, cfg.label, cfg.venue_info.exchange) if record_dir else None
    feed = make_feed(cfg, index, ring, slot, recorder, book_ids=book_ids)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: (feed.stop.set(), feed.skip_backoff.set(),
                                              feed.request_restart_if_connected()))
    # a restarted feed tells the engine first that whatever it holds of this book is stale
    if cfg.is_book:
        for book_id in feed.book_ids:
            feed.push_invalid("feed_started", book_id)
    # everything built so far lives as long as the process: keep the cyclic GC off it, so a
    # full collection scans only what frames allocate (a ms-scale pause otherwise)
    gc.collect()
    gc.freeze()
    try:
        await feed.run()
    finally:
        ring.close()
        block.close()


def feed_main(cfg: FeedConfig, index: int, ring_name: str, stats_name: str,
              record_dir: str | None = None, book_ids: list[int] | None = None) -> None:
    """Process entry, started by the supervisor through ``lifeline.run_child`` (which has armed
    the parent-death signal and set up logging)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl+C goes to the supervisor, which stops us
    if cfg.cpu is not None:
        try:
            os.sched_setaffinity(0, {cfg.cpu})
        except OSError as exc:
            log.warning("cannot pin to CPU %d: %s", cfg.cpu, exc)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(cfg, index, ring_name, stats_name, record_dir, book_ids))

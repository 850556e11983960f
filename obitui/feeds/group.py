"""A feed process with several connections.

A feed's markets are split into connections of at most ``connection_size`` streams (Binance) or
channels (Bitget), the venue's per-connection limit. Each connection is a ``Feed`` of its own:
its socket, rotation, pings, backoff and the sync of its markets. They share the process's ring,
its stats slot (counters add up), its recorder and its REST budget, and losing one connection
touches only its own markets. The group reads the operator's commands and hands each to the
connections it concerns, and folds the connections' states into the feed's one state: the
worst connection state (``backoff``, ``connecting``...) if any connection is not up, else the
state of the feed's books (``connected_synced`` with ``150/150 books synced``...)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from obitui.config import FeedConfig
from obitui.core.stats import ALL_BOOKS, AckResult, Command, FeedSlotWriter, FeedState
from obitui.feeds.base import HOUSEKEEPING, Feed, Restart

log = logging.getLogger("obitui.feed")

# how bad a connection's state is for the feed (higher: worse)
RANK = {FeedState.CONNECTED_SYNCED: 0, FeedState.LIVE: 0, FeedState.CONNECTED: 1, FeedState.SYNCING: 2,
        FeedState.RESYNCING: 3, FeedState.SUBSCRIBING: 4, FeedState.CONNECTING: 5, FeedState.BACKOFF: 6,
        FeedState.FAILED: 7, FeedState.STOPPED: 8}
# states that describe a feed's books rather than a connection (Feed.market_state sets them)
BOOK_STATES = (FeedState.SYNCING, FeedState.RESYNCING, FeedState.CONNECTED_SYNCED)


def connection_shares(cfg: FeedConfig) -> list[tuple[str, ...]]:
    """The markets of each connection: consecutive runs of at most ``connection_size``."""
    n = cfg.connection_size
    syms = cfg.symbols
    return [syms[i:i + n] for i in range(0, len(syms), n)] or [syms]


class ConnectionSlot:
    """One connection's view of its feed's stats slot: the counters, histograms and times are
    the feed's (every connection adds to them); the state and the ``connections_up`` gauge are
    the connection's own, folded into the feed's by the group. Publishing is the group's."""

    def __init__(self, group: FeedGroup, k: int) -> None:
        shared = group.stats
        self.group = group
        self.k = k
        self.shared = shared
        self.block = shared.block
        self.index = shared.index
        self.label = shared.label
        self.counters = shared.counters
        self.hist_exchange_receive = shared.hist_exchange_receive
        self.hist_receive_push = shared.hist_receive_push
        self.inc = shared.inc
        self.get = shared.get
        self.state = FeedState.STOPPED
        self.reason = ""
        self.up = 0

    # times: the feed's (the latest of any connection)
    @property
    def last_receive_ns(self) -> int:
        return self.shared.last_receive_ns

    @last_receive_ns.setter
    def last_receive_ns(self, v: int) -> None:
        self.shared.last_receive_ns = v

    @property
    def last_exchange_ns(self) -> int:
        return self.shared.last_exchange_ns

    @last_exchange_ns.setter
    def last_exchange_ns(self, v: int) -> None:
        self.shared.last_exchange_ns = v

    @property
    def next_retry_ns(self) -> int:
        return self.shared.next_retry_ns

    @next_retry_ns.setter
    def next_retry_ns(self, v: int) -> None:
        self.shared.next_retry_ns = v

    def set(self, name: str, value: int) -> None:
        if name == "connections":
            return                        # the group's: how many connections it has
        if name == "connections_up":
            self.up = value
            self.shared.set(name, sum(c.stats.up for c in self.group.conns if isinstance(c.stats, ConnectionSlot)))
            return
        self.shared.set(name, value)

    def set_state(self, state: FeedState, reason: str = "") -> None:
        self.state, self.reason = state, reason
        if state in BOOK_STATES:
            self.group.book_state = (state, reason)
        self.group.fold_state()

    def publish(self) -> None:
        """The group publishes the feed's slot."""


class _Events:
    """``set`` on every connection's event at once."""

    def __init__(self, conns: list[Feed], name: str) -> None:
        self.conns, self.name = conns, name

    def set(self) -> None:
        for c in self.conns:
            getattr(c, self.name).set()

    def is_set(self) -> bool:
        return all(getattr(c, self.name).is_set() for c in self.conns)


class FeedGroup:
    """The connections of one feed process, and what they share."""

    def __init__(self, cfg: FeedConfig, index: int, ring: Any, stats: FeedSlotWriter,
                 recorder: Any = None, seed: int | None = None, book_ids: list[int] | None = None,
                 feed_class: type[Feed] | None = None) -> None:
        from obitui.feeds.venue import load_feed_class
        self.cfg = cfg
        self.index = index
        self.ring = ring
        self.stats = stats
        self.book_ids = list(book_ids) if book_ids is not None else [index + k for k in range(len(cfg.symbols))]
        self.shared: dict[str, Any] = {}       # what the connections share (Feed.process_shared)
        self.book_state: tuple[FeedState, str] | None = None
        self.conns: list[Feed] = []
        cls = feed_class or load_feed_class(cfg.venue, cfg.channel)
        start = 0
        shares = connection_shares(cfg)
        for k, share in enumerate(shares):
            ids = self.book_ids[start:start + len(share)]
            start += len(share)
            ccfg = replace(cfg, symbol=share[0], symbols=share, label=cfg.label)
            slot = ConnectionSlot(self, k)
            conn = cls(ccfg, index, ring, slot, recorder, None if seed is None else seed + k,  # type: ignore[arg-type]
                       book_ids=ids, group=self)
            conn.conn_no = k
            self.conns.append(conn)
        self.stop = asyncio.Event()
        for c in self.conns:
            c.stop = self.stop                 # one stop for the process
        self.skip_backoff = _Events(self.conns, "skip_backoff")
        self.control_seq = stats.block.read_command(index)[0]
        stats.set("connections", len(self.conns))
        stats.set("connections_up", 0)

    # ------------------------------------------------------------ what callers see of a feed
    @property
    def markets(self) -> list[Any]:
        """Every market of the feed (book feeds), in config order."""
        return [m for c in self.conns for m in getattr(c, "markets", ())]

    def push_invalid(self, reason: str, book_id: int | None = None) -> None:
        self.conns[0].push_invalid(reason, book_id)

    def request_restart_if_connected(self) -> None:
        for c in self.conns:
            c.request_restart_if_connected()

    def conn_of_book(self, book: int) -> Feed | None:
        for c in self.conns:
            if book in c.book_ids:
                return c
        return None

    # ------------------------------------------------------------ state
    def fold_state(self) -> None:
        """The feed's state: the worst connection's when one is not up (its reason says which
        connection), else the books' state the connections last reported."""
        worst: tuple[int, FeedState, str, int] | None = None
        for c in self.conns:
            st, reason = c.stats.state, c.stats.reason
            if st in BOOK_STATES and self.book_state is not None:
                st, reason = self.book_state
            r = RANK.get(st, 0)
            if worst is None or r > worst[0]:
                worst = (r, st, reason, c.conn_no)
        assert worst is not None
        _, st, reason, k = worst
        if st not in BOOK_STATES and st not in (FeedState.CONNECTED, FeedState.LIVE):
            reason = f"connection {k + 1}/{len(self.conns)}: {reason}"
        self.stats.set_state(st, reason[:95])

    # ------------------------------------------------------------ commands
    async def on_command(self, cmd: Command, book: int | None) -> tuple[AckResult, str]:
        """Each connection the command concerns carries it out (a named book: its
        connection only); one answer for the feed."""
        results: list[tuple[AckResult, str]] = []
        counted = 0
        for c in self.conns:
            if book is not None and book not in c.book_ids:
                continue
            c.command_book = book
            c.resynced = 0
            try:
                res = await c.on_command(cmd)
            except Restart as r:
                c.request_restart(r)
                res = AckResult.OK, f"restarting: {r}"[:56]
            except Exception as exc:          # e.g. the socket closed under a resync
                self.stats.inc("housekeeping_errors")
                res = AckResult.FAILED, f"{type(exc).__name__}: {exc}"[:56]
            counted += getattr(c, "resynced", 0)
            results.append(res)
        if not results:
            return AckResult.FAILED, f"book {book} is not one of this feed's"
        if len(results) == 1:
            return results[0]
        oks = [text for r, text in results if r == AckResult.OK]
        if not oks:
            return results[0]
        if cmd in (Command.RESYNC, Command.RESYNC_INVALID):
            return AckResult.OK, self.conns[0].RESYNC_MANY.format(n=counted)
        return AckResult.OK, f"{oks[0]} ({len(oks)}/{len(self.conns)} connections)"[:56]

    async def _control(self) -> None:
        """The operator's commands to this feed, and publishing its slot."""
        last_publish = 0.0
        while not self.stop.is_set():
            await asyncio.sleep(HOUSEKEEPING)
            seq, cmd, book = self.stats.block.read_command_book(self.index)
            if seq != self.control_seq:
                self.control_seq = seq
                self.stats.inc("control_commands")
                result, text = await self.on_command(cmd, None if book == ALL_BOOKS else book)
                self.stats.block.ack_command(self.index, seq, result, text)
                log.info("%s: command %s: %s (%s)", self.cfg.label, cmd.name.lower(), result.name.lower(), text)
            now = time.monotonic()
            if now - last_publish >= 0.1:
                last_publish = now
                self.stats.publish()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        control = loop.create_task(self._control())
        tasks = [loop.create_task(c.run()) for c in self.conns]
        try:
            await asyncio.gather(*tasks)
        finally:
            # one connection's unexpected end ends the process (the supervisor restarts it):
            # the others are stopped and awaited before the shared memory is let go
            self.stop.set()
            for c in self.conns:
                c.skip_backoff.set()
                c.request_restart_if_connected()
            done, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            control.cancel()
            self.stats.set_state(FeedState.STOPPED, "stopped")

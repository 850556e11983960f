"""Operator commands to a live fleet (the `r`/`s` keys' path, obitui/controller.py): a feed
answers with its acknowledgement's result, and a feed that cannot answer (its process stopped
with SIGSTOP) is reported "not acknowledged" once the timeout has passed. The fleet runs on the
simulator, on loopback, supervised by this process (its segments: the leak fixture's)."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from obitui.config import load_config
from obitui.controller import Ack, command_and_wait, feed_index, wait_ack
from obitui.core.stats import AckResult, Command, FeedState, StatsBlock
from obitui.supervisor import Supervisor

pytestmark = pytest.mark.timeout(120)


def wait_for(what: str, cond: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def state(stats: StatsBlock, i: int) -> FeedState | None:
    fv = stats.read_feed(i)
    return fv.state if fv is not None else None


def counter(stats: StatsBlock, i: int, name: str) -> int:
    fv = stats.read_feed(i)
    assert fv is not None
    return fv.counters[name]


def test_commands_are_acknowledged_and_a_stopped_feed_is_not() -> None:
    sup = Supervisor(load_config(None))
    stopped: int | None = None
    try:
        cfg = sup.launch(sim=True)
        stats = sup.stats
        assert stats is not None
        healthy = {"Bi-OB": FeedState.CONNECTED_SYNCED, "Bi-TR": FeedState.CONNECTED,
                   "Bg-OB": FeedState.CONNECTED_SYNCED, "Bg-PR": FeedState.LIVE}
        idx = {label: feed_index(cfg, label) for label in healthy}
        for label, st in healthy.items():
            wait_for(f"{label} {st.word}", lambda i=idx[label], st=st: state(stats, i) == st, 45)

        # a resync: acknowledged OK, the book resynced without dropping the socket
        before = (counter(stats, idx["Bi-OB"], "resyncs"), counter(stats, idx["Bi-OB"], "reconnects"))
        ack = command_and_wait(cfg, stats, "Bi-OB", Command.RESYNC, timeout=5)
        assert isinstance(ack, Ack) and ack.acknowledged and ack.ok, ack
        assert ack.result == AckResult.OK and ack.text == "resync started, socket kept", ack
        assert ack.message() == "Bi-OB: resync acknowledged: resync started, socket kept"
        wait_for("Bi-OB resynced", lambda: counter(stats, idx["Bi-OB"], "resyncs") > before[0]
                 and state(stats, idx["Bi-OB"]) == FeedState.CONNECTED_SYNCED, 20)
        assert counter(stats, idx["Bi-OB"], "reconnects") == before[1]

        # a reconnect: acknowledged OK ("reconnecting"), then a new connection, synced again
        before_rc = counter(stats, idx["Bg-OB"], "reconnects")
        ack = command_and_wait(cfg, stats, "Bg-OB", Command.RECONNECT, timeout=5)
        assert (ack.result, ack.text) == (AckResult.OK, "reconnecting"), ack
        assert ack.message() == "Bg-OB: reconnect acknowledged: reconnecting"
        wait_for("Bg-OB reconnected and synced", lambda: counter(stats, idx["Bg-OB"], "reconnects") > before_rc
                 and state(stats, idx["Bg-OB"]) == FeedState.CONNECTED_SYNCED, 30)

        # a command the feed does not support: acknowledged, with that result
        ack = command_and_wait(cfg, stats, "Bi-TR", Command.RESYNC, timeout=5)
        assert ack.result == AckResult.UNSUPPORTED and ack.acknowledged and not ack.ok, ack
        assert ack.message() == "Bi-TR: resync unsupported: resync does not apply to a trade feed"

        # a feed that cannot answer: not acknowledged, after the timeout and not before
        stopped = sup.pids()["Bg-PR"]
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        ack = command_and_wait(cfg, stats, "Bg-PR", Command.RECONNECT, timeout=1.5)
        waited = time.monotonic() - t0
        assert not ack.acknowledged and ack.result is None, ack
        assert 1.5 <= waited < 5, waited
        assert ack.message() == "Bg-PR: reconnect not acknowledged in 1.5 s (feed process down?)"
        # once it runs again it reads the same control word and answers that command
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        late = wait_ack(cfg, stats, "Bg-PR", Command.RECONNECT, ack.seq, timeout=10)
        assert (late.result, late.text) == (AckResult.OK, "reconnecting"), late
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        sup.stop()

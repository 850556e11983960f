"""What the UI drives: the supervisor in production, or a stats block some other writer fills
(tests, or attaching to a running headless fleet). Both speak the same small protocol."""
from __future__ import annotations

import time
from dataclasses import dataclass

from obitui.config import Config
from obitui.core.ring import Ring
from obitui.core.stats import AckResult, Command, StatsBlock

ACK_TIMEOUT = 5.0   # a feed checks its control word every 50 ms; silence this long: not acknowledged


def feed_index(cfg: Config, label: str) -> int:
    for i, f in enumerate(cfg.feeds):
        if f.label == label:
            return i
    raise KeyError(f"no feed labelled {label!r}")


def command_by_label(cfg: Config, stats: StatsBlock, label: str, cmd: Command) -> int:
    """Post ``cmd`` to the feed labelled ``label``; returns the command's sequence number."""
    return stats.send_command(feed_index(cfg, label), cmd)


@dataclass(frozen=True)
class Ack:
    """What became of one command: the feed's acknowledgement (``result`` and its ``text``), or
    ``result`` None when the feed did not acknowledge it within ``timeout`` seconds."""
    label: str
    command: Command
    seq: int
    result: AckResult | None
    text: str
    timeout: float

    @property
    def acknowledged(self) -> bool:
        return self.result is not None

    @property
    def ok(self) -> bool:
        return self.result == AckResult.OK

    def message(self) -> str:
        """One line for the operator (the UI's log words)."""
        what = self.command.name.lower()
        if self.result is None:
            return f"{self.label}: {what} not acknowledged in {self.timeout:g} s (feed process down?)"
        word = "acknowledged" if self.ok else self.result.name.lower()
        return f"{self.label}: {what} {word}: {self.text}"


def poll_ack(stats: StatsBlock, index: int, seq: int) -> tuple[AckResult, str] | None:
    """The acknowledgement of command ``seq`` to feed ``index``, or None while there is none.
    A command overwritten by a later one before the feed read it is never acknowledged (it was
    not carried out)."""
    ack_seq, result, text = stats.read_ack(index)
    return (result, text) if ack_seq == seq else None


def wait_ack(cfg: Config, stats: StatsBlock, label: str, cmd: Command, seq: int,
             timeout: float = ACK_TIMEOUT, poll_s: float = 0.02) -> Ack:
    """Wait up to ``timeout`` s for the feed's acknowledgement of command ``seq``."""
    index = feed_index(cfg, label)
    deadline = time.monotonic() + timeout
    while True:
        got = poll_ack(stats, index, seq)
        if got is not None:
            return Ack(label, cmd, seq, got[0], got[1], timeout)
        if time.monotonic() >= deadline:
            return Ack(label, cmd, seq, None, "", timeout)
        time.sleep(poll_s)


def command_and_wait(cfg: Config, stats: StatsBlock, label: str, cmd: Command,
                     timeout: float = ACK_TIMEOUT) -> Ack:
    """Post ``cmd`` to the feed labelled ``label`` and wait for its acknowledgement (blocking:
    scripts and tests; the UI reads the same acknowledgement word from its timer)."""
    seq = command_by_label(cfg, stats, label, cmd)
    return wait_ack(cfg, stats, label, cmd, seq, timeout)


class StatsController:
    """Reads a stats block and its rings; sends control words. Starts no process."""

    def __init__(self, cfg: Config, stats: StatsBlock, ring_names: list[str] | None = None) -> None:
        self.cfg = cfg
        self.stats: StatsBlock | None = stats
        self.monitors = [Ring.attach(n, role="monitor") for n in (ring_names or [])]

    def command(self, label: str, cmd: Command) -> int:
        assert self.stats is not None
        return command_by_label(self.cfg, self.stats, label, cmd)

    def command_and_wait(self, label: str, cmd: Command, timeout: float = ACK_TIMEOUT) -> Ack:
        assert self.stats is not None
        return command_and_wait(self.cfg, self.stats, label, cmd, timeout)

    def pids(self) -> dict[str, int]:
        return {}

    def ring_fill(self) -> list[tuple[float, int]]:
        return [(m.fill(), m.drops) for m in self.monitors]

    def ring_high_water(self) -> list[float]:
        return [m.high_water / m.capacity for m in self.monitors]

    def poll(self) -> list[str]:
        return []

    def stop(self) -> None:
        for m in self.monitors:
            m.close()
        self.monitors.clear()

"""What the UI drives: the supervisor in production, or a stats block some other writer fills
(tests, or attaching to a running headless fleet). Both speak the same small protocol."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from obitui.config import Config, feed_book_ids
from obitui.core.ring import Ring
from obitui.core.stats import ALL_BOOKS, AckResult, Command, StatsBlock

ACK_TIMEOUT = 5.0   # a feed checks its control word every 50 ms; silence this long: not acknowledged


def feed_index(cfg: Config, label: str) -> int:
    for i, f in enumerate(cfg.feeds):
        if f.label == label:
            return i
    split = [f.label for f in cfg.feeds if f.label.startswith(label + "#")]
    if split:
        raise KeyError(f"{label!r} runs as {', '.join(split)}: name one, or a symbol")
    raise KeyError(f"no feed labelled {label!r}")


def resolve(cfg: Config, label: str, symbol: str | None = None) -> tuple[int, int]:
    """(feed index, book) a command to ``label`` (and ``symbol``) goes to. ``book`` is ALL_BOOKS
    without a symbol, else the book index of that market on that feed. A feed split into
    processes is labelled ``<label>#1``, ``#2``, ...: the plain label with a symbol names the
    process whose symbols hold it. ``symbol`` is SYMBOL or venue:SYMBOL. KeyError names what is
    not there."""
    if symbol is None:
        return feed_index(cfg, label), ALL_BOOKS
    want = symbol.strip()
    venue, sep, sym = want.rpartition(":")
    key_of = (lambda f: f"{venue}:{sym.upper()}") if sep else (lambda f: f"{f.venue}:{sym.upper()}")
    split = [i for i, f in enumerate(cfg.feeds) if f.label == label or f.label.startswith(label + "#")]
    if not split:
        raise KeyError(f"no feed labelled {label!r}")
    exact = [i for i in split if cfg.feeds[i].label == label]
    ids = feed_book_ids(cfg.feeds)
    for i in exact or split:
        f = cfg.feeds[i]
        keys = f.book_keys
        key = key_of(f)
        if key in keys:
            return i, ids[i][keys.index(key)]
    raise KeyError(f"{label}: no market {want!r} on that feed")


def command_by_label(cfg: Config, stats: StatsBlock, label: str, cmd: Command,
                     symbol: str | None = None) -> int:
    """Post ``cmd`` to the feed labelled ``label`` (for the market ``symbol`` only, when given:
    see ``resolve``); returns the command's sequence number."""
    index, book = resolve(cfg, label, symbol)
    return stats.send_command(index, cmd, book)


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
                     timeout: float = ACK_TIMEOUT, symbol: str | None = None) -> Ack:
    """Post ``cmd`` to the feed labelled ``label`` (for ``symbol``'s market only, when given)
    and wait for its acknowledgement (blocking: scripts and tests; the UI reads the same
    acknowledgement word from its timer). The Ack names the feed process that answered."""
    index, book = resolve(cfg, label, symbol)
    seq = stats.send_command(index, cmd, book)
    return wait_ack(cfg, stats, cfg.feeds[index].label, cmd, seq, timeout)


class Controller(Protocol):
    """What the UI (and the metrics collector, and headless mode) drive: the supervisor, or a
    :class:`StatsController` on a stats block some other writer fills. ``stats`` is None until
    the fleet is up. ``pids``: the fleet's processes by name (the simulator comes from
    ``sim_proc`` when the controller has one: see :func:`fleet_pids`)."""
    stats: StatsBlock | None

    def command(self, label: str, cmd: Command) -> int: ...
    def pids(self) -> dict[str, int]: ...
    def ring_fill(self) -> list[tuple[float, int]]: ...
    def ring_high_water(self) -> list[float]: ...
    def poll(self) -> list[str]: ...
    def stop(self) -> None: ...


def send(controller: Controller, cfg: Config, label: str, cmd: Command, symbol: str | None = None) -> int:
    """Post ``cmd`` to the feed ``label`` through ``controller`` (for one market when
    ``symbol`` is given: the command then goes straight to the stats block's control word, as
    ``command_by_label`` writes it, whatever the controller)."""
    if symbol is None:
        return controller.command(label, cmd)
    assert controller.stats is not None
    return command_by_label(cfg, controller.stats, label, cmd, symbol)


def fleet_pids(controller: Any) -> dict[str, int]:
    """Every process of the fleet by name: the controller's children and, when it runs one,
    the simulator (``sim_proc``, a Popen, while it runs)."""
    pids = dict(controller.pids())
    sim = getattr(controller, "sim_proc", None)
    if sim is not None and sim.poll() is None:
        pids["simulator"] = sim.pid
    return pids


@dataclass(frozen=True)
class ProcSample:
    name: str
    pid: int
    cpu: float | None       # % of one core since the previous sample (None: gone)
    rss: int                # bytes


class ProcessSampler:
    """CPU and RSS of named processes, each as a % of one core since that process's previous
    sample. One instance per reader (the UI, the metrics collector): psutil's cpu_percent is
    the delta since the previous call on the same Process object."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}

    def sample(self, pids: dict[str, int], include_self: str | None = None) -> list[ProcSample]:
        """One sample per named pid (``include_self``: this process too, under that name)."""
        named = dict(pids)
        if include_self:
            named[include_self] = os.getpid()
        out = []
        seen = set()
        for name, pid in named.items():
            seen.add(pid)
            try:
                p = self.procs.get(pid)
                if p is None:
                    p = self.procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)
                out.append(ProcSample(name, pid, p.cpu_percent(None), p.memory_info().rss))
            except psutil.Error:
                self.procs.pop(pid, None)
                out.append(ProcSample(name, pid, None, 0))
        for pid in set(self.procs) - seen:
            del self.procs[pid]
        return out


class StatsController:
    """Reads a stats block and its rings; sends control words. Starts no process."""

    def __init__(self, cfg: Config, stats: StatsBlock, ring_names: list[str] | None = None) -> None:
        self.cfg = cfg
        self.stats: StatsBlock | None = stats
        self.monitors = [Ring.attach(n, role="monitor") for n in (ring_names or [])]

    def command(self, label: str, cmd: Command, symbol: str | None = None) -> int:
        assert self.stats is not None
        return command_by_label(self.cfg, self.stats, label, cmd, symbol)

    def command_and_wait(self, label: str, cmd: Command, timeout: float = ACK_TIMEOUT,
                         symbol: str | None = None) -> Ack:
        assert self.stats is not None
        return command_and_wait(self.cfg, self.stats, label, cmd, timeout, symbol)

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

"""The supervisor: config -> shared-memory segments -> child processes (spawn) -> watch and
restart -> control words -> clean shutdown that unlinks every segment it made.

Segments are named ``obitui-<uid>-<run_id>-<part>`` with the supervisor's pid in the run id, so
a later run can tell a dead run's leftovers (removed at start) from a live run's (left alone)."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obitui.config import Config, book_plan, feed_book_ids, sim_bases, with_symbols
from obitui.core.ring import Ring
from obitui.core.shm import SHM_DIR, Segment, ShmError
from obitui.core.stats import Command, StatsBlock
from obitui.lifeline import run_child
from obitui.logs import LogSpec, rotate

log = logging.getLogger("obitui.supervisor")

RESTART_BACKOFF_CAP = 10.0
ROTATE_CHECK_S = 5.0
STOP_GRACE_S = 3.0


class SupervisorError(RuntimeError):
    """Start-up failed (shared memory, simulator); the message is one line for the operator."""


def segment_prefix() -> str:
    return f"obitui-{os.getuid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_RUN_RE = re.compile(r"^obitui-(\d+)-r(\d+)x[0-9a-f]+-")


def clean_stale_segments() -> tuple[list[str], list[str]]:
    """Remove this user's segments whose creating supervisor is gone; returns (removed,
    left because their run is alive)."""
    removed, live = [], []
    try:
        names = os.listdir(SHM_DIR)
    except OSError as exc:
        raise SupervisorError(f"shared memory directory {SHM_DIR}: {exc.strerror} "
                              f"(the rings need a tmpfs there; `obitui doctor` checks it)") from None
    for name in names:
        m = _RUN_RE.match(name)
        if not m or int(m.group(1)) != os.getuid():
            continue
        try:
            st = os.lstat(os.path.join(SHM_DIR, name))
        except FileNotFoundError:       # gone since the listing: its run ended, or another start removed it
            continue
        if st.st_uid != os.geteuid():
            continue
        if _pid_alive(int(m.group(2))):
            live.append(name)
            continue
        Segment.unlink(name)
        removed.append(name)
    return removed, live


@dataclass
class Child:
    """One process of the fleet: ``entry`` (``module:function``) called with ``args``/``kwargs``
    in a spawned process that starts through ``lifeline.run_child``."""
    name: str
    entry: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    proc: Any = None
    restarts: int = 0
    hangs: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    slot: int | None = None      # its feed slot (heartbeat), None: the engine's slot


class Supervisor:
    def __init__(self, cfg: Config, record_dir: str | None = None, log_level: int = logging.INFO,
                 log_file: str | None = None, log_json: bool = False, publish: Any = None) -> None:
        self.cfg = cfg
        self.publish = publish               # bus.publisher.PublishSpec: run the NATS publisher too
        self.log_file = log_file
        self.record_dir = record_dir
        self.log = LogSpec(log_level, log_json, log_file)
        self.run_id = f"r{os.getpid()}x{secrets.token_hex(3)}"
        self.prefix = f"{segment_prefix()}{self.run_id}"
        self.stats_name = f"{self.prefix}-stats"
        self.ring_names: list[str] = []        # one per feed process, named at start (top:N may change the feeds)
        self.created: list[str] = []
        self.stats: StatsBlock | None = None
        self.monitors: list[Ring] = []
        self.children: list[Child] = []
        self.ctx = mp.get_context("spawn")
        self.sim_proc: subprocess.Popen[str] | None = None
        self.sim_finished = threading.Event()
        self.sim_urls: dict[str, tuple[str, str]] = {}    # exchange -> (ws, rest) of the simulator
        self._sim_watcher: threading.Thread | None = None
        self.metrics: Any = None
        self.started = False
        self._rotate_checked = 0.0

    # ------------------------------------------------------------ start
    def start(self) -> None:
        if any(f.scales == "venue" for f in self.cfg.feeds):
            from obitui.feeds.symbols import UnlistedSymbols, apply_venue_scales
            try:
                apply_venue_scales(self.cfg)      # per-symbol fixed-point scales, before any child
            except UnlistedSymbols as exc:
                raise SupervisorError(str(exc)) from None
        removed, live = clean_stale_segments()
        if removed:
            log.info("removed %d segment(s) left by dead runs", len(removed))
        if live:
            log.info("%d segment(s) of other live runs left alone", len(live))
        self.ring_names = [f"{self.prefix}-ring{i}" for i in range(len(self.cfg.feeds))]
        try:
            plan = book_plan(self.cfg.feeds)
            # the publisher's state is one more feed slot, after the feeds'
            n_slots = len(self.cfg.feeds) + (1 if self.publish is not None else 0)
            self.stats = StatsBlock.create(self.stats_name, n_slots, len(plan), self.run_id,
                                           book_keys=plan)
            self.created.append(self.stats_name)
            for f, name in zip(self.cfg.feeds, self.ring_names):
                Ring.create(name, f.ring_capacity).close()
                self.created.append(name)
                self.monitors.append(Ring.attach(name, role="monitor"))
        except ShmError as exc:
            self.cleanup()
            hint = ""
            if isinstance(exc.__cause__ or exc.__context__, OSError) or "cannot size" in str(exc):
                hint = f" (is {SHM_DIR} full? `obitui doctor` compares its free space with the rings)"
            raise SupervisorError(f"shared memory: {exc}{hint}") from None
        book_ids = feed_book_ids(self.cfg.feeds)
        for i, (f, ring) in enumerate(zip(self.cfg.feeds, self.ring_names)):
            self.children.append(Child(f.label, "obitui.feeds.process:feed_main",
                                       (f, i, ring, self.stats_name, self.record_dir, book_ids[i]),
                                       title=f"obitui feed {f.label}", slot=i))
        engine = Child("engine", "obitui.engine:engine_main", (self.cfg, self.ring_names, self.stats_name),
                       {"resync_books": False}, title="obitui engine")
        self.children.append(engine)
        if self.publish is not None:
            self.children.append(Child("publisher", "obitui.bus.publisher:publisher_main",
                                       (self.cfg, self.stats_name, len(self.cfg.feeds), self.ring_names,
                                        self.publish), title="obitui publisher", slot=len(self.cfg.feeds)))
        # the engine first: it must be consuming before the feeds fill their rings
        for child in [engine, *(c for c in self.children if c is not engine)]:
            self._spawn(child)
        self.started = True

    def launch(self, *, sim: bool = False, faults: list[str] | None = None, replay: str | None = None,
               replay_speed: float = 1.0, rate: float | None = None,
               metrics: tuple[str, int] | None = None, top: int | None = None) -> Config:
        """What both front ends do: the simulator first when asked (the feeds then point at it),
        then the fleet, then the metrics endpoint (host, port) when asked. Returns the config
        the fleet runs with."""
        if sim or replay:
            # the simulator lists the markets it runs: with top:N it runs its N most traded
            # (ranked as the venues' lists rank them), which pick_top then finds over REST
            self.start_simulator(faults or [], replay=replay, replay_speed=replay_speed, rate=rate,
                                 extra=["--symbols", f"top:{top}"] if top and not replay else None)
            self.cfg = self.cfg.with_sim_bases(sim_bases(self.sim_urls))
        if top:
            self.pick_top(top)
        self.start()
        if metrics is not None:
            from obitui.metrics import MetricsServer
            try:
                self.metrics = MetricsServer(self, *metrics)
            except OSError as exc:
                raise SupervisorError(f"metrics endpoint {metrics[0]}:{metrics[1]}: {exc.strerror or exc}") from None
        return self.cfg

    def pick_top(self, n: int) -> list[str]:
        """``--symbols top:N``: the N most traded USDT markets listed on every venue of the
        fleet (their REST market lists, asked once), then watched by every feed."""
        from obitui.config import ConfigError
        from obitui.feeds.symbols import SymbolInfoError
        from obitui.feeds.universe import top_symbols
        seen: dict[str, tuple[Any, str]] = {}
        for f in self.cfg.feeds:
            if f.venue_info.markets_of is not None:
                seen.setdefault(f.venue_info.exchange, (f.venue_info, f.rest_url))
        try:
            symbols = top_symbols(n, list(seen.values()))
            cfg = with_symbols(self.cfg, symbols)
        except (SymbolInfoError, ConfigError) as exc:
            raise SupervisorError(f"--symbols top:{n}: {exc}") from None
        log.info("top %d: %d markets picked (%s%s)", n, len(symbols), ", ".join(symbols[:5]),
                 ", ..." if len(symbols) > 5 else "")
        self.cfg = cfg
        return symbols

    def start_simulator(self, faults: list[str], seed: int = 1, replay: str | None = None,
                        rate: float | None = None, replay_speed: float = 1.0,
                        extra: list[str] | None = None) -> tuple[str, str, str, str]:
        """Run `obitui sim` as a child; returns (binance ws, binance rest, bitget ws, bitget rest)."""
        cmd = [sys.executable, "-m", "obitui", "sim", "--seed", str(seed), "--parent-pid", str(os.getpid())]
        if self.log.json:
            cmd.append("--log-json")
        if self.log_file:
            cmd += ["--log-file", self.log_file]
        for f in faults:
            cmd += ["--sim-fault", f]
        if replay:
            cmd += ["--replay", replay, "--speed", str(replay_speed), "--exit-at-end"]
        if rate:
            cmd += ["--rate", str(rate)]
        cmd += extra or []
        if not replay and "--symbols" not in cmd:
            from obitui.sim.server import KNOWN_SYMBOLS
            symbols = dict.fromkeys(sym for f in self.cfg.feeds for sym in f.symbols)
            cmd += ["--symbols", ",".join(s for s in symbols if s in KNOWN_SYMBOLS) or "BTCUSDT"]
        err = open(self.log_file, "a") if self.log_file else subprocess.PIPE  # noqa: SIM115
        self.sim_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                         text=True, start_new_session=True)
        lines = [self.sim_proc.stdout.readline().strip() for _ in range(3)]  # type: ignore[union-attr]
        banner = parse_banner(lines)
        if banner is None or not {"binance", "bitget"} <= banner.keys():
            err = self.sim_proc.stderr.read() if self.sim_proc.stderr else ""  # type: ignore[union-attr]
            self.stop_simulator()
            raise SupervisorError(f"the simulator did not start: {(err or lines[0]).strip()[:300]}")
        self.sim_finished = threading.Event()
        self._sim_watcher = threading.Thread(target=self._watch_sim_output, args=(self.sim_proc,),
                                             daemon=True)
        self._sim_watcher.start()
        self.sim_urls = banner
        return banner["binance"][0], banner["binance"][1], banner["bitget"][0], banner["bitget"][1]

    def _watch_sim_output(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "replay finished":
                self.sim_finished.set()

    def _spawn(self, child: Child) -> None:
        _release(child.proc)
        child.proc = self.ctx.Process(target=run_child,
                                      args=(os.getpid(), child.title, child.entry, self.log, *child.args),
                                      kwargs=child.kwargs, name=f"obitui-{child.name}", daemon=True)
        child.proc.start()
        child.started_at = time.monotonic()

    # ------------------------------------------------------------ watch
    def poll(self) -> list[str]:
        """Restart dead or hung children (with backoff), rotate the log file; returns what
        happened."""
        events = []
        now = time.monotonic()
        if self.log_file and now - self._rotate_checked >= ROTATE_CHECK_S:
            self._rotate_checked = now
            rotate(self.log_file)
        for child in self.children:
            proc = child.proc
            alive = proc is not None and proc.is_alive()
            if alive and (silent := self._silent_for(child, now)) is not None:
                child.hangs += 1
                events.append(f"{child.name}: no heartbeat for {silent:.1f} s (hung): killed "
                              f"(hang #{child.hangs})")
                log.warning(events[-1])
                proc.kill()
                proc.join(2)
                alive = False
            if alive:
                if now - child.started_at > 30:
                    child.restarts = 0
                continue
            if child.next_start == 0.0:
                code = proc.exitcode if proc is not None else None
                delay = min(RESTART_BACKOFF_CAP, 0.25 * (2 ** child.restarts))
                child.next_start = now + delay
                events.append(f"{child.name} exited with code {code}; restarting in {delay:.2f} s")
                log.warning(events[-1])
            if now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                if child.name == "engine":
                    child.kwargs["resync_books"] = True    # a new engine has empty books
                self._spawn(child)
                events.append(f"{child.name} restarted (pid {child.proc.pid})")
                log.info(events[-1])
        return events

    def _silent_for(self, child: Child, now: float) -> float | None:
        """Seconds since ``child``'s last heartbeat in the stats block when that is past the
        stale limit (a hung, looping or SIGSTOPped process), else None. A child gets the limit
        from its start before it is judged."""
        limit = self.cfg.heartbeat_stale
        if self.stats is None or now - child.started_at <= limit:
            return None
        view: Any = (self.stats.read_engine() if child.slot is None
                     else self.stats.read_feed(child.slot))
        if view is None:
            return None      # the slot was mid-write at every try (its writer descheduled): next poll
        # a beat of a previous process of this child does not count: judged from the start
        beat = view.heartbeat_ns if view.pid == child.proc.pid else 0
        silent = (time.monotonic_ns() - beat) / 1e9 if beat else now - child.started_at
        return silent if silent > limit else None

    def command(self, label: str, cmd: Command, symbol: str | None = None) -> int:
        """Post ``cmd`` to the feed ``label`` (for ``symbol``'s book only, when given)."""
        from obitui.controller import command_by_label
        assert self.stats is not None
        return command_by_label(self.cfg, self.stats, label, cmd, symbol)

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children if c.proc is not None and c.proc.is_alive()}

    def ring_fill(self) -> list[tuple[float, int]]:
        """(fill 0..1, drops) per ring, read from the ring counters only."""
        return [(m.fill(), m.drops) for m in self.monitors]

    def ring_high_water(self) -> list[float]:
        return [m.high_water / m.capacity for m in self.monitors]

    # ------------------------------------------------------------ stop
    def stop(self) -> None:
        if self.metrics is not None:     # no scrape may read a segment while it goes away
            self.metrics.close()
            self.metrics = None
        for child in self.children:
            if child.proc is not None and child.proc.is_alive():
                child.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.proc is not None and child.proc.pid is None:
                child.proc = None        # its start was interrupted (a signal): nothing runs
            if child.proc is not None:
                child.proc.join(max(0.0, deadline - time.monotonic()))
                if child.proc.is_alive():
                    log.warning("%s did not stop in %.0f s: killed", child.name, STOP_GRACE_S)
                    child.proc.kill()
                    child.proc.join(2)
                _release(child.proc)
                child.proc = None
        self.stop_simulator()
        self.cleanup()

    def stop_simulator(self) -> None:
        if self.sim_proc is not None and self.sim_proc.poll() is None:
            self.sim_proc.terminate()
            try:
                self.sim_proc.wait(5)
            except subprocess.TimeoutExpired:
                self.sim_proc.kill()
                self.sim_proc.wait(5)
        if self.sim_proc is not None:
            if self._sim_watcher is not None:
                self._sim_watcher.join(2)      # it reads stdout to the end
                self._sim_watcher = None
            for pipe in (self.sim_proc.stdout, self.sim_proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.sim_proc = None

    def cleanup(self) -> None:
        for m in self.monitors:
            m.close()
        self.monitors.clear()
        if self.stats is not None:
            self.stats.close()
            self.stats = None
        for name in self.created:
            Segment.unlink(name)
        self.created.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_banner(lines: list[str]) -> dict[str, tuple[str, str]] | None:
    """The simulator's first lines, one or two per exchange (``binance ws=... rest=...``,
    ``bitget ws=...``, ``bitget rest=...``), as {exchange: (ws URL, rest URL)}; None if they
    are not such lines."""
    urls: dict[str, dict[str, str]] = {}
    for line in lines:
        exchange, _, rest = line.partition(" ")
        try:
            urls.setdefault(exchange, {}).update(kv.split("=", 1) for kv in rest.split())
        except ValueError:
            return None
    if not urls or any("ws" not in u or "rest" not in u for u in urls.values()):
        return None
    return {ex: (u["ws"], u["rest"]) for ex, u in urls.items()}


def _release(proc: Any) -> None:
    """Close a finished child's handle (its sentinel pipe would stay open until collected)."""
    if proc is not None and proc.exitcode is not None:
        try:
            proc.close()
        except ValueError:
            pass


def our_segments() -> list[str]:
    return sorted(p.name for p in Path(SHM_DIR).glob(f"{segment_prefix()}*"))

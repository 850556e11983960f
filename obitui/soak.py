"""`obitui soak`: the whole fleet against the simulator under a schedule of random faults.

One fault at a time, so every detection and recovery is attributed: inject, hold, clear, then
wait until every feed is back in its healthy state and every engine book is valid and equal to
the simulator's truth at the book's own update id. Books are compared with the truth at every
recovery and every few seconds in between. At the end the feeds are stopped, the engine drains
the rings, and the accounting invariants (obitui/accounting.py) are checked on the final
counters; then the fleet is stopped and processes, /dev/shm segments and file descriptors are
compared with the start.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from obitui.accounting import feed_violations, ring_violations
from obitui.config import Config, load_config, with_symbols
from obitui.feeds.universe import parse_symbols
from obitui.core.stats import Command, FeedState, FeedView
from obitui.config import book_plan
from obitui.headless import book_json
from obitui.supervisor import Supervisor, SupervisorError, our_segments, segment_prefix

log = logging.getLogger("obitui.soak")

HEALTHY = {"depth": FeedState.CONNECTED_SYNCED, "books": FeedState.CONNECTED_SYNCED,
           "trade": FeedState.CONNECTED, "ticker": FeedState.LIVE}
KILLS_UNTIL = 0.5          # kills and engine pauses only in the first half: the second half
                           # measures memory drift on processes that live through it
RSS_JUDGED_FROM_S = 300.0  # the RSS growth target is judged on runs at least this long
RSS_TARGET = 0.05
RECOVERY_TARGET_S = 2.0
TRUTH_EVERY_S = 1.0       # with many markets: the full truth comparison at most this often
ORPHAN_LIMIT_S = 3.0       # every child of a killed supervisor is gone within this


@dataclass
class FaultKind:
    name: str
    hold: float                               # longest the fault stays on: it is cleared as
                                              # soon as it has been detected
    sim: tuple[str, Any] | None = None        # simulator knob set for the hold
    detect: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> counters
    any_feed: bool = False                    # detected when one of the feeds counted it
    resync: tuple[str, ...] = ()              # labels told to resync at the start (REST faults)
    imposed_s: float = 0.0                    # waits the exchange imposes (Retry-After)
    process: str = ""                         # kill_feed, kill_engine, pause_engine
    count: int = 0                            # a counted fault (N bad REST replies): detected
                                              # when the counters moved by N, i.e. all served
    unmoved: tuple[str, ...] = ()             # counters of the detecting feeds that must not
                                              # move (a fault ridden without loss), and
    must_move: tuple[str, ...] = ()           # ones that must (how it was ridden), judged
    settle: float = 0.0                       # this long after the recovery


def fault_kinds(cfg: Config, retry_after_429: float = 1.0, retry_after_418: float = 2.0) -> list[FaultKind]:
    books = [f.label for f in cfg.feeds if f.is_book]
    bi_books = [f.label for f in cfg.feeds if f.is_book and f.venue_info.exchange == "binance"]
    bg_books = [f.label for f in cfg.feeds if f.is_book and f.venue_info.exchange == "bitget"]
    bitget = [f.label for f in cfg.feeds if f.venue_info.exchange == "bitget"]
    binance = [f.label for f in cfg.feeds if f.venue_info.exchange == "binance"]
    every = [f.label for f in cfg.feeds]
    return [
        FaultKind("gap", 5.0, ("gap", 0.2), {lb: ("gaps",) for lb in books}),
        FaultKind("reorder", 5.0, ("reorder", 0.2), {lb: ("gaps", "stale_events") for lb in books}),
        FaultKind("duplicate", 5.0, ("duplicate", 0.2), {lb: ("stale_events", "gaps") for lb in books}),
        FaultKind("bad_checksum", 5.0, ("bad_checksum", 0.3), {lb: ("checksum_failures",) for lb in bg_books}),
        # Bitget seq/pseq/checksum as decimal strings: read as numbers, the books stay in sync
        FaultKind("string_seq", 3.0, ("string_seq", True), {lb: ("string_numbers",) for lb in bg_books}),
        # an error event (30016 Param error) drops a live subscription: counted, subscribed again
        FaultKind("bitget_error", 5.0, ("bitget_error", 30016), {lb: ("venue_errors",) for lb in bitget}),
        FaultKind("stale_snapshot", 15.0, ("stale_snapshot", 2), {lb: ("stale_snapshots",) for lb in bi_books},
                  resync=tuple(bi_books), count=2),
        FaultKind("http_429", 15.0, ("http_429", 3), {lb: ("http_429",) for lb in bi_books},
                  resync=tuple(bi_books), imposed_s=retry_after_429, count=3),
        FaultKind("http_418", 15.0, ("http_418", 1), {lb: ("http_418",) for lb in bi_books},
                  resync=tuple(bi_books), imposed_s=retry_after_418, count=1),
        FaultKind("lost_snapshot", 15.0, ("lost_snapshot", 1), {lb: ("snapshot_timeouts",) for lb in bg_books},
                  resync=tuple(bg_books), count=1),
        FaultKind("rest_outage", 15.0, ("rest_down", 3), {lb: ("rest_outages",) for lb in bi_books},
                  resync=tuple(bi_books), count=3),
        # every connection dropped once (a network blip); repeated drops would raise the feeds'
        # own backoff (full jitter, doubling), which then bounds the recovery
        FaultKind("disconnect", 5.0, ("disconnect", 0.2), {lb: ("reconnects",) for lb in every}),
        FaultKind("silence", 8.0, ("silence", 0.2), {lb: ("watchdog",) for lb in every}),
        FaultKind("no_pong", 6.0, ("no_pong", True), {lb: ("pong_timeouts",) for lb in bitget}),
        FaultKind("malformed", 5.0, ("malformed", 0.1), {lb: ("parse_errors",) for lb in every}, any_feed=True),
        FaultKind("oversize", 5.0, ("oversize", 0.05), {lb: ("oversize",) for lb in every}, any_feed=True),
        # Binance announces maintenance and closes the connections 3 s later: the feeds hand
        # over to a new connection first (a make-before-break rotation): no gap, no resync
        # (a feed that did not rotate would reconnect when its connection is closed)
        FaultKind("server_shutdown", 8.0, ("server_shutdown", 3.0), {lb: ("server_shutdowns",) for lb in binance},
                  unmoved=("gaps", "resyncs"), must_move=("rotations",), settle=4.0),
        FaultKind("kill_feed", 0.0, process="kill_feed"),
        FaultKind("kill_engine", 0.0, process="kill_engine"),
        FaultKind("pause_engine", 15.0, ("burst", 1500.0), process="pause_engine"),
        # SIGSTOP without SIGCONT: the supervisor's heartbeat watchdog must kill and replace it
        FaultKind("engine_hang", 0.0, process="hang_engine", imposed_s=cfg.heartbeat_stale),
        # a second, real supervisor (`obitui --no-ui --json` on the same simulator) is killed
        # with SIGKILL: all of its children must be gone within ORPHAN_LIMIT_S, and the next
        # start must remove what the dead run left and come up with true books (recovery is
        # net of a cold start, measured on the same fault's first start)
        FaultKind("supervisor_kill9", 0.0, process="kill_supervisor"),
    ]


@dataclass
class Outcome:
    kind: str
    target: str
    at_s: float
    detected: bool = False
    detected_by: list[str] = field(default_factory=list)
    recovered: bool = False
    recover_s: float | None = None
    imposed_s: float = 0.0
    note: str = ""


@dataclass
class ProcSample:
    t: float
    rss: int
    cpu: float


class Soak:
    def __init__(self, duration: float, seed: int = 1, rate: float = 20.0,
                 recover_timeout: float = 30.0, kinds: list[str] | None = None,
                 log_file: str | None = None, symbols: list[str] | int | None = None) -> None:
        self.duration = duration
        self.rng = random.Random(seed)
        self.seed = seed
        self.rate = rate
        self.recover_timeout = recover_timeout
        # the markets: the default one, a list, or the simulator's N most traded (top:N)
        self.top = symbols if isinstance(symbols, int) else None
        cfg = load_config(None)
        if isinstance(symbols, list):
            cfg = with_symbols(cfg, symbols)
        cfg.heartbeat_stale = 4.0           # engine_hang is caught in seconds, not the default 10
        self._tune(cfg)
        self.cfg = cfg
        self.kinds = [k for k in fault_kinds(cfg) if kinds is None or k.name in kinds]
        if not self.kinds:
            raise ValueError(f"no fault kinds selected; known: {', '.join(k.name for k in fault_kinds(cfg))}")
        self.log_file = log_file
        self.sup: Supervisor | None = None
        self.rest = ""
        self.t0 = 0.0
        self.outcomes: list[Outcome] = []
        self.mismatches: list[str] = []
        self.truth_checks = 0
        self.samples: dict[str, dict[int, list[ProcSample]]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._last_sample = 0.0
        self._last_check = 0.0
        self._last_truth = 0.0
        self._last_fleet_truth = 0.0
        self.run_pids: list[int] = [os.getpid()]   # supervisors of this soak: their segments are ours

    @staticmethod
    def _tune(cfg: Config) -> None:
        for f in cfg.feeds:
            # small rings: a paused engine fills one in seconds (before the supervisor's hang
            # check replaces it), while half of it still holds a snapshot of every market at
            # once (after a drop the feed resends them all): 32 KiB for each of the first four
            # (the simulator's majors are 2000 levels a side), 8 KiB for each further one
            n = len(f.symbols)
            need = 2 * (min(n, 4) * (32 << 10) + max(0, n - 4) * (8 << 10))
            f.ring_capacity = 1 << max(16, (need - 1).bit_length())
            f.stale_after = 2.0             # the watchdog trips within the silence fault
            f.max_frame = 1 << 20           # the simulator's oversize frames are 2 MiB
            if f.venue_info.exchange == "bitget":
                f.ping_interval, f.pong_timeout = 1.0, 1.5
                f.idle_ping = min(f.idle_ping, f.ping_interval)

    # ------------------------------------------------------------ fleet state
    @property
    def stats(self) -> Any:
        assert self.sup is not None and self.sup.stats is not None
        return self.sup.stats

    def feeds(self) -> dict[str, FeedView]:
        out = {}
        for i, f in enumerate(self.cfg.feeds):
            v = self.stats.read_feed(i)
            if v is not None:
                out[f.label] = v
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        return {label: dict(v.counters) for label, v in self.feeds().items()}

    def truth(self, venue: str, symbol: str, update_id: int) -> dict[str, Any] | None:
        url = f"{self.rest}/sim/truth?venue={venue}&symbol={symbol}&id={update_id}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError:
            return None      # that update left the simulator's history

    def books_true(self) -> tuple[bool, str]:
        """Every engine book valid and equal to the truth at its update id. A valid book that
        differs from the truth is a mismatch (counted). With many markets the whole comparison
        (one truth request per book) runs at most every TRUTH_EVERY_S; in between only that
        every book is valid."""
        plan = book_plan(self.cfg.feeds)
        fed = {key for f in self.cfg.feeds if f.is_book for key in f.book_keys}   # markets with levels
        for j, key in enumerate(plan):
            if key in fed:
                bv = self.stats.read_book(j)
                if bv is None or not bv.valid:
                    return False, f"{key} invalid"
        now = time.monotonic()
        if len(fed) > 4 and now - self._last_truth < TRUTH_EVERY_S:
            return False, "waiting for the next truth comparison"
        self._last_truth = now
        for j, key in enumerate(plan):
            if key not in fed:
                continue
            bv = self.stats.read_book(j)
            if bv is None or not bv.valid:
                return False, f"{key} invalid"
            fc = next(f for f in self.cfg.feeds if f.is_book and key in f.book_keys)
            ok, why = self.book_true(key, book_json(bv, *fc.scales_of(key.split(":", 1)[1])))
            if not ok:
                return False, why
        return True, ""

    def book_true(self, key: str, book: dict[str, Any], whose: str = "") -> tuple[bool, str]:
        """One valid book (its JSON: update id, exact level strings) against the truth at its
        update id; a difference is a mismatch (counted, logged)."""
        venue, symbol = key.split(":", 1)
        t = self.truth(venue, symbol, book["update_id"])
        if t is None:
            return False, f"{key} update {book['update_id']} not in the truth's history"
        self.truth_checks += 1
        if book["bids"] != t["bids"][:20] or book["asks"] != t["asks"][:20]:
            msg = f"t={self.now():.1f}s {whose}{key} at update {book['update_id']} differs from the truth"
            self.mismatches.append(msg)
            log.error("book mismatch: %s", msg)
            return False, f"{key} mismatch"
        return True, ""

    def healthy(self) -> tuple[bool, str]:
        assert self.sup is not None
        pids = self.sup.pids()
        if "engine" not in pids:
            return False, "engine down"
        ev = self.stats.read_engine()
        if ev is None or ev.pid != pids["engine"]:
            return False, "engine starting"
        views = self.feeds()
        for f in self.cfg.feeds:
            v = views.get(f.label)
            if f.label not in pids or v is None or v.pid != pids[f.label]:
                return False, f"{f.label} starting"
            if v.state != HEALTHY[f.channel]:
                return False, f"{f.label} {v.state.word} ({v.reason})"
        return self.books_true()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def tick(self) -> None:
        """Between waits: restart dead children, sample processes, check the books."""
        assert self.sup is not None
        self.sup.poll()
        now = time.monotonic()
        if now - self._last_sample >= 1.0:
            self._last_sample = now
            self.sample_processes()

    def wait_until(self, pred: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.tick()
            if pred():
                return True
            time.sleep(0.1)
        return False

    def sample_processes(self) -> None:
        assert self.sup is not None
        pids = dict(self.sup.pids())
        if self.sup.sim_proc is not None:
            pids["simulator"] = self.sup.sim_proc.pid
        pids["supervisor"] = os.getpid()
        t = self.now()
        for name, pid in pids.items():
            p = self._procs.get(pid)
            try:
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)
                    continue
                self.samples.setdefault(name, {}).setdefault(pid, []).append(
                    ProcSample(t, p.memory_info().rss, p.cpu_percent(None)))
            except psutil.Error:
                self._procs.pop(pid, None)

    def sim_violations(self) -> dict[str, int]:
        """Limits of the real venues that a client broke, as the simulator counted them."""
        with urllib.request.urlopen(f"{self.rest}/sim/stats", timeout=5) as r:
            return dict(json.loads(r.read()).get("violations", {}))

    # ------------------------------------------------------------ faults
    def set_fault(self, name: str, value: Any) -> None:
        self._post(f"{self.rest}/sim/fault?name={name}&value={value}")

    def clear_faults(self) -> None:
        self._post(f"{self.rest}/sim/fault?clear=")

    @staticmethod
    def _post(url: str) -> None:
        req = urllib.request.Request(url, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def inject(self, kind: FaultKind) -> Outcome:
        assert self.sup is not None
        sup = self.sup
        out = Outcome(kind.name, "", round(self.now(), 1), imposed_s=kind.imposed_s)
        before = self.counters()
        rings_before = [m.stats() for m in sup.monitors]
        restarts_before = {c.name: c.restarts for c in sup.children}
        pids = sup.pids()
        targets = list(kind.detect)
        if kind.process == "kill_supervisor":
            return self.kill_supervisor(out)
        hangs_before = {c.name: c.hangs for c in sup.children}
        if kind.process == "kill_feed":
            targets = [self.rng.choice([f.label for f in self.cfg.feeds])]
        elif kind.process:
            targets = ["engine"]

        def detected() -> tuple[bool, list[str]]:
            if kind.process == "hang_engine":
                child = next(c for c in sup.children if c.name == "engine")
                ok = child.hangs > hangs_before["engine"]
                return ok, ["engine:watchdog_killed"] if ok else []
            if kind.process.startswith("kill"):
                child = next(c for c in sup.children if c.name == targets[0])
                ok = child.restarts > restarts_before[targets[0]]
                return ok, [f"{targets[0]}:restarted"] if ok else []
            if kind.process == "pause_engine":
                by = []
                for f, m, r in zip(self.cfg.feeds, sup.monitors, rings_before):
                    st = m.stats()
                    if st["drops"] > r["drops"] and st["lost"] > r["lost"]:
                        by.append(f"{f.label}:ring_drops+{st['drops'] - r['drops']}"
                                  f"/engine_lost+{st['lost'] - r['lost']}")
                return bool(by), by
            after = self.counters()
            hits = []
            for label, names in kind.detect.items():
                b, a = before.get(label, {}), after.get(label, {})
                moved = [n for n in names if a.get(n, 0) >= b.get(n, 0) + max(1, kind.count)]
                if moved:
                    hits.append(f"{label}:{'+'.join(moved)}")
            return (bool(hits) if kind.any_feed else len(hits) == len(kind.detect)), hits

        if kind.process == "kill_feed" or kind.process == "kill_engine":
            os.kill(pids[targets[0]], signal.SIGKILL)
        elif kind.process in ("pause_engine", "hang_engine"):
            os.kill(pids["engine"], signal.SIGSTOP)
        if kind.sim is not None:
            self.set_fault(*kind.sim)
        for i, f in enumerate(self.cfg.feeds):
            if f.label in kind.resync:
                self.stats.send_command(i, Command.RESYNC)
        out.target = ",".join(targets)
        t_inject = time.monotonic()
        if kind.process == "pause_engine":
            # hold until a book ring overflows (or the hold runs out), then let the engine go
            self.wait_until(lambda: any(m.drops > r["drops"] for m, r in
                                        zip(sup.monitors, rings_before)), kind.hold)
            with contextlib.suppress(ProcessLookupError):   # replaced as hung meanwhile
                os.kill(pids["engine"], signal.SIGCONT)
        elif not kind.process:
            self.wait_until(lambda: detected()[0], kind.hold)
        if kind.sim is not None:
            self.clear_faults()
        t_clear = t_inject if kind.process.startswith(("kill", "hang")) else time.monotonic()
        # some faults show after they end (an unanswered ping times out later, a resumed
        # engine reads up to the loss): recovery is judged once the fault has been seen
        out.detected = self.wait_until(lambda: detected()[0], 10 + kind.imposed_s)
        ok = self.wait_until(lambda: self.healthy()[0], self.recover_timeout)
        t_ok = time.monotonic()
        out.recovered = ok
        out.recover_s = round(t_ok - t_clear, 2) if ok else None
        if not ok:
            out.note = self.healthy()[1]
        elif kind.unmoved:
            self.wait_until(lambda: False, kind.settle)
            after = self.counters()
            moved = [f"{lb}:{n}+{after.get(lb, {}).get(n, 0) - before.get(lb, {}).get(n, 0)}"
                     for lb in kind.detect for n in kind.unmoved
                     if after.get(lb, {}).get(n, 0) > before.get(lb, {}).get(n, 0)]
            moved += [f"{lb}:{n} did not move" for lb in kind.detect for n in kind.must_move
                      if after.get(lb, {}).get(n, 0) <= before.get(lb, {}).get(n, 0)]
            if moved:
                out.recovered, out.recover_s = False, None
                out.note = f"not ridden without loss: {', '.join(moved)}"
            elif not self.wait_until(lambda: self.healthy()[0], self.recover_timeout):
                out.recovered, out.recover_s = False, None
                out.note = self.healthy()[1]
        time.sleep(0.2)           # feeds publish their counters every 100 ms
        out.detected, out.detected_by = detected()
        if not out.detected:
            missing = sorted(set(kind.detect) - {h.split(":")[0] for h in out.detected_by})
            out.note = (out.note + "; " if out.note else "") + f"not detected by {missing or targets}"
        log.info("fault %s on %s: detected=%s by %s, recovered=%s in %s s %s", out.kind, out.target,
                 out.detected, out.detected_by, out.recovered, out.recover_s, out.note)
        return out

    # ------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        # multiprocessing's resource tracker is started once per process by the first spawn
        # and lives as long as we do: start it now so that it is part of the baseline
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
        fds_start = _open_fds()
        children_start = {p.pid for p in psutil.Process().children(recursive=True)}
        self.t0 = time.monotonic()
        sup = self.sup = Supervisor(self.cfg, log_file=self.log_file)
        report: dict[str, Any] = {"duration_s": self.duration, "seed": self.seed, "rate": self.rate}
        try:
            urls = sup.start_simulator([], seed=self.seed, rate=self.rate,
                                       extra=["--symbols", f"top:{self.top}"] if self.top else None)
            self.rest = urls[1]
            self.cfg = sup.cfg = self.cfg.with_sim(*urls)
            if self.top:
                sup.pick_top(self.top)
                self._tune(sup.cfg)
                self.cfg = sup.cfg
            sup.start()
            warm = self.wait_until(lambda: self.healthy()[0], 30)
            if not warm:
                raise SupervisorError(f"the fleet did not become healthy in 30 s: {self.healthy()[1]}")
            report["warmup_s"] = round(self.now(), 1)
            end = self.t0 + self.duration
            queue: list[FaultKind] = []
            while True:
                if not queue:
                    queue = list(self.kinds)
                    self.rng.shuffle(queue)
                    if self.now() < KILLS_UNTIL * self.duration:
                        # process faults are allowed in the first half only: they go first
                        # (pop takes from the end; the shuffled order stays within each group)
                        queue.sort(key=lambda k: bool(k.process))
                kind = queue.pop()
                if kind.process and self.now() > KILLS_UNTIL * self.duration:
                    kinds = [k for k in queue if not k.process]
                    if not kinds:
                        queue = []
                        if all(k.process for k in self.kinds):
                            break
                        continue
                    kind = kinds[0]
                    queue.remove(kind)
                if time.monotonic() + 10 > end:      # a fault takes a few seconds
                    break
                self.outcomes.append(self.inject(kind))
                self.wait_until(lambda: False, 1.0)      # quiet time; the books are checked
                self.books_true()
            while time.monotonic() < end:
                self.wait_until(lambda: False, min(2.0, end - time.monotonic()))
                self.books_true()
            report["final_books_true"] = self.wait_until(lambda: self.healthy()[0], 15)
            report["accounting"] = self.final_accounting()
            report["venue_limits_broken"] = self.sim_violations()
        finally:
            self.sample_processes()
            sup.stop()
        time.sleep(0.2)
        leftover_children = [p.pid for p in psutil.Process().children(recursive=True)
                             if p.pid not in children_start and p.is_running()
                             and p.status() != psutil.STATUS_ZOMBIE]
        fds_end = _open_fds()
        report["leaks"] = {
            "fds_start": len(fds_start), "fds_end": len(fds_end),
            "fds_new": sorted(f"{fd} -> {t}" for fd, t in fds_end.items() if fds_start.get(fd) != t),
            "segments_left": self.own_segments(),
            "processes_left": leftover_children,
        }
        report["faults"] = [o.__dict__ for o in self.outcomes]
        report["by_kind"] = self.by_kind()
        report["mismatches"] = self.mismatches
        report["truth_checks"] = self.truth_checks
        report["processes"] = self.drift()
        report["verdict"] = self.verdict(report)
        return report

    def own_segments(self) -> list[str]:
        """Segments of the supervisors this soak ran (never another run's on the host)."""
        return [n for n in our_segments() if any(n.startswith(f"{segment_prefix()}r{pid}x")
                                                 for pid in self.run_pids)]

    # ------------------------------------------------------------ supervisor_kill9
    def _fleet_config(self, path: str) -> None:
        """A TOML config: this soak's feeds, pointed at its simulator (the truth is checkable)."""
        lines = [f"[supervisor]\nheartbeat_stale = {self.cfg.heartbeat_stale}\n"]
        for f in self.cfg.feeds:
            lines.append("[[feeds]]")
            for key in ("label", "venue", "channel", "symbols", "ws_url", "rest_url", "ring_capacity",
                        "stale_after", "max_frame", "per_connection"):
                lines.append(f"{key} = {json.dumps(getattr(f, key))}")
            lines.append("")
        with open(path, "w") as fh:
            fh.write("\n".join(lines))

    def _start_fleet(self, cfg_path: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        """`obitui --config ... --no-ui --json` as a process of its own; its last JSON object is
        kept in the returned dict under "last" by a reader thread."""
        log_fh = open(self.log_file or os.devnull, "a")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "obitui", "--config", cfg_path, "--no-ui", "--json",
                                 "--interval", "0.25"], stdout=subprocess.PIPE, stderr=log_fh, text=True)
        log_fh.close()
        self.run_pids.append(proc.pid)
        seen: dict[str, Any] = {"last": None}

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    seen["last"] = json.loads(line)
                except ValueError:
                    log.warning("second fleet printed a line that is not JSON: %r", line[:200])
        threading.Thread(target=read, daemon=True).start()
        return proc, seen

    def _fleet_true(self, snap: dict[str, Any] | None) -> tuple[bool, str]:
        """Every feed of a JSON status object healthy and every book valid and true."""
        if snap is None:
            return False, "no status yet"
        for f in self.cfg.feeds:
            fv = snap["feeds"].get(f.label)
            if fv is None or fv["state"] != HEALTHY[f.channel].word:
                return False, f"{f.label} {fv['state'] if fv else 'missing'}"
        for key, book in snap["books"].items():
            if not book["valid"]:
                return False, f"{key} invalid"
        now = time.monotonic()
        if len(snap["books"]) > 4 and now - self._last_fleet_truth < TRUTH_EVERY_S:
            return False, "waiting for the next truth comparison"
        self._last_fleet_truth = now
        for key, book in snap["books"].items():
            ok, why = self.book_true(key, book, "second fleet ")
            if not ok:
                return False, why
        return True, ""

    def _end_fleet(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill_supervisor(self, out: Outcome) -> Outcome:
        """SIGKILL a real supervisor: detected when every process it started is gone within
        ORPHAN_LIMIT_S; recovered when the next start removed the dead run's segments and its
        books are valid and equal to the truth. The soak's own fleet runs on meanwhile."""
        cfg_path = os.path.join(tempfile.gettempdir(), f"obitui-soak-{os.getpid()}-fleet.toml")
        self._fleet_config(cfg_path)
        t_start = time.monotonic()
        first, seen = self._start_fleet(cfg_path)
        second = None
        try:
            up = self.wait_until(lambda: self._fleet_true(seen["last"])[0], 30)
            # a fleet's cold start (processes, connections, snapshots) is imposed on any restart
            # of a supervisor: measured here on the first start, it is what the recovery is net of
            out.imposed_s = round(time.monotonic() - t_start, 2)
            children = psutil.Process(first.pid).children(recursive=True)
            out.target = f"supervisor pid {first.pid} ({len(children)} children)"
            if not up:
                out.note = f"the second fleet did not come up: {self._fleet_true(seen['last'])[1]}"
                return out
            dead_prefix = f"{segment_prefix()}r{first.pid}x"
            t_kill = time.monotonic()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(5)

            def orphans() -> list[int]:
                return [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            gone = self.wait_until(lambda: not orphans(), ORPHAN_LIMIT_S)
            t_gone = time.monotonic() - t_kill
            out.detected = gone
            out.detected_by = [f"{len(children)} children gone in {t_gone:.2f} s"] if gone else []
            if not gone:
                out.note = f"orphans after {ORPHAN_LIMIT_S} s: {orphans()}"
                for pid in orphans():
                    os.kill(pid, signal.SIGKILL)
            second, seen2 = self._start_fleet(cfg_path)
            ok = self.wait_until(lambda: self._fleet_true(seen2["last"])[0]
                                 and not any(n.startswith(dead_prefix) for n in our_segments()),
                                 self.recover_timeout)
            out.recovered = ok
            out.recover_s = round(time.monotonic() - t_kill, 2) if ok else None
            if not ok:
                left = [n for n in our_segments() if n.startswith(dead_prefix)]
                out.note = (out.note + "; " if out.note else "") + (
                    f"segments of the dead run left: {left}" if left else self._fleet_true(seen2["last"])[1])
        finally:
            for proc in (first, second):
                if proc is not None:
                    self._end_fleet(proc)
            os.unlink(cfg_path)
        log.info("fault %s on %s: detected=%s by %s, recovered=%s in %s s %s", out.kind, out.target,
                 out.detected, out.detected_by, out.recovered, out.recover_s, out.note)
        return out

    def final_accounting(self) -> dict[str, Any]:
        """Stop the feeds (the engine keeps draining), then check the invariants."""
        assert self.sup is not None
        for i in range(len(self.cfg.feeds)):
            self.stats.send_command(i, Command.STOP)
        feed_children = [c for c in self.sup.children if c.name != "engine"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.proc is not None and c.proc.is_alive()
                                                  for c in feed_children):
            time.sleep(0.05)
        drained = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all(m.used_bytes() == 0 for m in self.sup.monitors):
                drained = True
                break
            time.sleep(0.05)
        time.sleep(0.2)      # the engine commits head after its batch
        violations: list[str] = []
        feeds: dict[str, Any] = {}
        for i, f in enumerate(self.cfg.feeds):
            v = self.stats.read_feed(i)
            st = self.sup.monitors[i].stats()
            c = dict(v.counters) if v is not None else {}
            stopped = v is not None and v.state == FeedState.STOPPED
            if v is None or not stopped:
                violations.append(f"{f.label}: did not stop on the STOP command")
            else:
                violations += feed_violations(f.label, c, settled=True)
            violations += ring_violations(f.label, st, drained=drained)
            feeds[f.label] = {
                "frames": c.get("frames", 0), "pushed": c.get("frames_pushed", 0),
                "dropped": c.get("frames_dropped", 0), "rejected": c.get("frames_rejected", 0),
                "ignored": c.get("frames_ignored", 0), "discarded": c.get("frames_discarded", 0),
                "pending": c.get("frames_pending", 0),
                "ring": {k: st[k] for k in ("seq", "pushed", "drops", "popped", "lost")},
            }
        return {"drained": drained, "violations": violations, "feeds": feeds}

    def by_kind(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for o in self.outcomes:
            d = out.setdefault(o.kind, {"injected": 0, "detected": 0, "recovered": 0, "times": [],
                                        "nets": [], "imposed": []})
            d["injected"] += 1
            d["detected"] += o.detected
            d["recovered"] += o.recovered
            d["imposed"].append(o.imposed_s)
            if o.recover_s is not None:
                d["times"].append(o.recover_s)
                d["nets"].append(max(0.0, o.recover_s - o.imposed_s))
        for d in out.values():
            t, nets, imposed = d.pop("times"), d.pop("nets"), d.pop("imposed")
            d["imposed_s"] = round(statistics.median(imposed), 2)   # per fault: measured or set
            d["recover_p50_s"] = round(statistics.median(t), 2) if t else None
            d["recover_max_s"] = round(max(t), 2) if t else None
            d["recover_p50_s_net"] = round(statistics.median(nets), 2) if nets else None
        return out

    def drift(self) -> dict[str, Any]:
        """RSS and CPU at the start and end of each process that lived through the second half."""
        out: dict[str, Any] = {}
        half = self.duration * KILLS_UNTIL
        for name, by_pid in self.samples.items():
            pid, series = max(by_pid.items(), key=lambda kv: kv[1][-1].t if kv[1] else 0)
            window = [s for s in series if s.t >= half + 15]
            if len(window) < 10:
                window = series[len(series) // 3:]
            if len(window) < 4:
                continue
            k = max(2, len(window) // 5)
            first, last = window[:k], window[-k:]
            rss0 = statistics.median(s.rss for s in first)
            rss1 = statistics.median(s.rss for s in last)
            out[name] = {
                "pid": pid, "from_s": round(window[0].t), "to_s": round(window[-1].t),
                "rss_start_mib": round(rss0 / 2**20, 1), "rss_end_mib": round(rss1 / 2**20, 1),
                "rss_growth": round((rss1 - rss0) / rss0, 4) if rss0 else 0.0,
                "cpu_start_pct": round(statistics.mean(s.cpu for s in first), 1),
                "cpu_end_pct": round(statistics.mean(s.cpu for s in last), 1),
            }
        return out

    def verdict(self, r: dict[str, Any]) -> dict[str, Any]:
        fails = []
        for o in self.outcomes:
            if not o.detected:
                fails.append(f"{o.kind} at {o.at_s}s not detected ({o.note})")
            if not o.recovered:
                fails.append(f"{o.kind} at {o.at_s}s not recovered ({o.note})")
        if self.mismatches:
            fails.append(f"{len(self.mismatches)} book mismatch(es)")
        if not r.get("final_books_true"):
            fails.append("the books were not valid and true at the end")
        acc = r.get("accounting", {})
        fails += acc.get("violations", [])
        broken = r.get("venue_limits_broken")
        if broken:
            fails.append(f"the fleet broke limits of the real venues (the simulator counted): {broken}")
        leaks = r["leaks"]
        if leaks["fds_end"] > leaks["fds_start"]:
            fails.append(f"file descriptors {leaks['fds_start']} -> {leaks['fds_end']}: {leaks['fds_new']}")
        if leaks["segments_left"]:
            fails.append(f"segments left: {leaks['segments_left']}")
        if leaks["processes_left"]:
            fails.append(f"processes left: {leaks['processes_left']}")
        # recovery p50: over all faults always; per kind once a kind has 3 samples (a 60 s run
        # injects each kind about once, and one sample is not a median)
        net = [max(0.0, o.recover_s - o.imposed_s) for o in self.outcomes if o.recover_s is not None]
        r["recover_p50_s_net"] = round(statistics.median(net), 2) if net else None
        if net and statistics.median(net) > RECOVERY_TARGET_S:
            fails.append(f"recovery p50 over all faults {statistics.median(net):.2f} s > {RECOVERY_TARGET_S} s")
        slow = {k: d["recover_p50_s_net"] for k, d in r["by_kind"].items()
                if d["injected"] >= 3 and d["recover_p50_s_net"] is not None
                and d["recover_p50_s_net"] > RECOVERY_TARGET_S}
        if slow:
            fails.append(f"recovery p50 above {RECOVERY_TARGET_S} s: {slow}")
        rss_judged = self.duration >= RSS_JUDGED_FROM_S
        if rss_judged:
            # the simulator is the test harness: its truth history (100k steps per market) grows
            # by design until full (~83 min at 20 steps/s); it is reported, not judged
            grown = {n: p["rss_growth"] for n, p in r["processes"].items()
                     if p["rss_growth"] >= RSS_TARGET and n != "simulator"}
            if grown:
                fails.append(f"RSS growth >= {RSS_TARGET:.0%}: {grown}")
        return {"ok": not fails, "failures": fails, "rss_judged": rss_judged,
                "p50": "-" if not net else f"{statistics.median(net):.2f}"}


def _open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass        # the descriptor listdir itself used
    return out


# ---------------------------------------------------------------- output
def render_text(r: dict[str, Any]) -> str:
    lines = [f"obitui soak: {r['duration_s']:.0f} s, seed {r['seed']}, simulator {r['rate']:g} steps/s "
             f"per symbol, warm-up {r.get('warmup_s', '?')} s", ""]
    lines.append(f"{'fault':<15} {'injected':>8} {'detected':>8} {'recovered':>9} "
                 f"{'p50 s':>6} {'max s':>6} {'imposed s':>9}")
    for k, d in sorted(r["by_kind"].items()):
        p50 = "-" if d["recover_p50_s"] is None else f"{d['recover_p50_s']:.2f}"
        mx = "-" if d["recover_max_s"] is None else f"{d['recover_max_s']:.2f}"
        lines.append(f"{k:<15} {d['injected']:>8} {d['detected']:>8} {d['recovered']:>9} "
                     f"{p50:>6} {mx:>6} {d['imposed_s']:>9g}")
    tot = [sum(d[x] for d in r["by_kind"].values()) for x in ("injected", "detected", "recovered")]
    lines.append(f"{'total':<15} {tot[0]:>8} {tot[1]:>8} {tot[2]:>9} {r['verdict'].get('p50', '-'):>6}")
    lines.append("")
    lines.append(f"book checks against the truth: {r['truth_checks']}, mismatches: {len(r['mismatches'])}; "
                 f"books valid and true at the end: {r.get('final_books_true')}")
    acc = r.get("accounting") or {}
    if acc:
        lines.append(f"accounting (feeds stopped, rings drained={acc['drained']}):")
        for label, a in acc["feeds"].items():
            ring = a["ring"]
            lines.append(f"  {label:<6} frames {a['frames']} = pushed {a['pushed']} + dropped {a['dropped']} "
                         f"+ rejected {a['rejected']} + ignored {a['ignored']} + discarded {a['discarded']} "
                         f"+ pending {a['pending']}; ring seq {ring['seq']} = pushed {ring['pushed']} + "
                         f"drops {ring['drops']}, popped {ring['popped']}, lost {ring['lost']}")
        for v in acc["violations"]:
            lines.append(f"  VIOLATION {v}")
    if "venue_limits_broken" in r:
        lines.append(f"venue limits broken (counted by the simulator): {r['venue_limits_broken'] or 'none'}")
    lines.append("processes (RSS and CPU%, start -> end of the window after the last kill):")
    for name, p in r["processes"].items():
        lines.append(f"  {name:<10} {p['rss_start_mib']:>7.1f} -> {p['rss_end_mib']:>7.1f} MiB "
                     f"({p['rss_growth']:+.1%}), cpu {p['cpu_start_pct']:.1f}% -> {p['cpu_end_pct']:.1f}% "
                     f"[{p['from_s']}-{p['to_s']} s]")
    lk = r["leaks"]
    lines.append(f"leaks: fds {lk['fds_start']} -> {lk['fds_end']}, segments left {len(lk['segments_left'])}, "
                 f"processes left {len(lk['processes_left'])}")
    v = r["verdict"]
    if not v["rss_judged"]:
        lines.append(f"(RSS growth is judged on runs of {RSS_JUDGED_FROM_S:.0f} s or more)")
    lines.append("PASS" if v["ok"] else "FAIL: " + "; ".join(v["failures"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, metavar="S", help="run length (default 60)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault schedule and the market")
    ap.add_argument("--rate", type=float, default=20.0, help="simulator steps/s per symbol (default 20)")
    ap.add_argument("--faults", metavar="K1,K2", help="only these fault kinds "
                    f"({', '.join(k.name for k in fault_kinds(load_config(None)))})")
    ap.add_argument("--recover-timeout", type=float, default=30.0, metavar="S")
    ap.add_argument("--json", metavar="FILE", help="also write the whole report as JSON")
    ap.add_argument("--log", metavar="FILE", help="fleet log file (default: a temporary file)")
    ap.add_argument("--symbols", metavar="SYM,...|top:N",
                    help="the markets every feed watches (default BTCUSDT): a list, or top:N, the "
                         "simulator's N most traded")
    args = ap.parse_args(argv)
    if args.duration < 20:
        print("obitui soak: --duration must be >= 20 s", file=sys.stderr)
        return 2
    log_file = args.log or os.path.join(tempfile.gettempdir(), f"obitui-soak-{os.getpid()}.log")
    from obitui.logs import LogSpec, configure
    configure(LogSpec(logging.INFO, False, log_file), "supervisor")

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        symbols = parse_symbols(args.symbols) if args.symbols else None
        soak = Soak(args.duration, args.seed, args.rate, args.recover_timeout,
                    args.faults.split(",") if args.faults else None, log_file, symbols)
        report = soak.run()          # stops the fleet and removes its segments on any exit
    except (ValueError, SupervisorError) as exc:
        print(f"obitui soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obitui soak: interrupted; the fleet was stopped", file=sys.stderr)
        return 130
    print(render_text(report))
    print(f"fleet log: {log_file}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0 if report["verdict"]["ok"] else 1


__all__ = ["Soak", "fault_kinds", "main", "render_text"]

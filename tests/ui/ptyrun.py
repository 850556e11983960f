"""`obitui` with its UI in a pseudo-terminal, as an operator runs it, and only its own processes
and segments counted.

The command runs as the session leader of a new session whose controlling terminal is the pty
(so closing the master is a real hangup: the kernel sends SIGHUP; with ``controlling_tty=False``
the pty is only its stdin/stdout/stderr, and closing the master sends no signal), under a small wrapper that is a child subreaper
(prctl PR_SET_CHILD_SUBREAPER): whatever obitui starts, even in a session of its own (the
simulator) or orphaned, stays a descendant of the wrapper and of nothing else on the host. After
obitui exits, the wrapper gives its descendants ``grace`` s to go, reports those still alive
(then kills them) and exits with obitui's status. Segments counted are those of the run only:
``obitui-<uid>-r<obitui pid>x...``.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.integration.procs import REAP_AND_REPORT

SHM = Path("/dev/shm")
REPO = Path(__file__).resolve().parents[2]

_WRAPPER = r"""
import ctypes, fcntl, json, os, signal, subprocess, sys, termios, time
import psutil
report, grace, tty, ctty, *cmd = sys.argv[1:]
tty = int(tty)
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:      # PR_SET_CHILD_SUBREAPER
    sys.exit(125)
me = psutil.Process()

def kill_all(*_):
    kids = me.children(recursive=True)
    for c in kids:
        try:
            c.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(kids, timeout=5)
    os._exit(124)

signal.signal(signal.SIGTERM, kill_all)

def take_tty():
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)

p = subprocess.Popen(cmd, stdin=tty, stdout=tty, stderr=tty, start_new_session=True,
                     preexec_fn=take_tty if ctty == "1" else None)
os.close(tty)
print(p.pid, flush=True)
rc = p.wait()
print("exited", rc, flush=True)

""" + REAP_AND_REPORT + "sys.exit(0)\n"

_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[@-Z\\-_])")


def run_segments(pid: int) -> list[str]:
    """The shared-memory segments of the fleet supervised by process ``pid``."""
    prefix = f"obitui-{os.getuid()}-r{pid}x"
    try:
        return sorted(n for n in os.listdir(SHM) if n.startswith(prefix))
    except FileNotFoundError:
        return []


class PtyObitui:
    """``python -m obitui ARGS`` in a ``cols`` x ``rows`` pty (TERM=xterm-256color), its screen
    output collected. ``close()`` (also on failure) kills whatever of the run is left and
    removes the run's segments."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 size: tuple[int, int] = (120, 40), grace: float = 5.0,
                 command: list[str] | None = None, controlling_tty: bool = True) -> None:
        self.workdir = workdir
        self.report_path = workdir / f"wrapper-{time.monotonic_ns()}.json"
        self.wrapper_err = workdir / "wrapper.stderr"
        self.out = bytearray()
        self.lock = threading.Lock()
        self.seen: dict[int, psutil.Process] = {}
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self.exited_at: float | None = None
        self.rc: int | None = None
        self._stop_reading = threading.Event()
        base = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
        full_env = {**base, "TERM": "xterm-256color", "COLUMNS": str(size[0]), "LINES": str(size[1]),
                    **(env or {})}
        full_env.pop("COLORTERM", None)
        self.master, tty = os.openpty()
        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self._err = open(self.wrapper_err, "w")  # noqa: SIM115
        try:
            self.wrapper = subprocess.Popen(
                [sys.executable, "-c", _WRAPPER, str(self.report_path), str(grace), str(tty),
                 "1" if controlling_tty else "0",
                 *(command or [sys.executable, "-m", "obitui"]), *args],
                stdout=subprocess.PIPE, stderr=self._err, text=True, env=full_env, cwd=REPO,
                pass_fds=(tty,), start_new_session=True)
        finally:
            os.close(tty)
        self._stdout = threading.Thread(target=self._read_wrapper, daemon=True)
        self._stdout.start()
        self._screen = threading.Thread(target=self._read_screen, daemon=True)
        self._screen.start()
        line, _ = self._next_event(30, "the wrapper to start obitui")
        self.pid = int(line)
        self.ps = psutil.Process(self.pid)

    # ------------------------------------------------------------ readers
    def _read_wrapper(self) -> None:
        assert self.wrapper.stdout is not None
        for line in self.wrapper.stdout:
            self.events.put((line.strip(), time.monotonic()))

    def _read_screen(self) -> None:
        while not self._stop_reading.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    data = os.read(self.master, 65536)
                    if not data:
                        return
                    with self.lock:
                        self.out.extend(data)
            except OSError:       # EIO: every holder of the terminal side is gone
                return

    def _next_event(self, timeout: float, what: str) -> tuple[str, float]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{what}: nothing in {timeout:g} s\n{self.diagnostics()}") from None

    # ------------------------------------------------------------ looking
    def screen(self) -> str:
        """Everything the UI wrote, escape sequences removed."""
        with self.lock:
            raw = bytes(self.out)
        return _ESCAPES.sub(b" ", raw).decode("utf-8", errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """obitui's processes now (every one ever seen is remembered for the clean-up)."""
        try:
            kids = self.ps.children(recursive=True)
        except psutil.Error:
            return []
        for k in kids:
            self.seen.setdefault(k.pid, k)
        return kids

    def segments(self) -> list[str]:
        return run_segments(self.pid)

    def wait_until(self, predicate: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.descendants()
            if self.wrapper.poll() is not None or not self.running():
                raise AssertionError(f"obitui ended while waiting for {what}\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g} s for {what}\n{self.diagnostics()}")
            time.sleep(0.05)

    def running(self) -> bool:
        try:
            return self.ps.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def diagnostics(self) -> str:
        tail = self.screen()[-3000:]
        log = "".join(f"{p} ({p.stat().st_size} bytes), last 3000 chars:\n{p.read_text(errors='replace')[-3000:]}"
                      for p in self.workdir.rglob("obitui.log"))
        err = self.wrapper_err.read_text(errors="replace")[-2000:] if self.wrapper_err.exists() else ""
        return f"--- screen (last 3000 chars)\n{tail}\n--- log file\n{log}\n--- wrapper stderr\n{err}"

    # ------------------------------------------------------------ acting
    def key(self, data: bytes) -> None:
        os.write(self.master, data)

    def signal(self, sig: int) -> None:
        self.ps.send_signal(sig)      # psutil checks the pid is still that process

    def hang_up(self) -> None:
        """Close the terminal, as a dropped SSH connection does (the kernel sends SIGHUP when
        the pty is obitui's controlling terminal); every later write to it fails (EIO)."""
        self._stop_reading.set()
        self._screen.join(5)
        os.close(self.master)
        self.master = -1

    def wait_exit(self, timeout: float) -> float:
        """Seconds from now until obitui exited; fails at ``timeout``."""
        t0 = time.monotonic()
        while True:
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                raise AssertionError(f"obitui still running {timeout:g} s later\n{self.diagnostics()}")
            try:
                line, at = self.events.get(timeout=min(left, 0.1))
            except queue.Empty:
                self.descendants()
                continue
            if line.startswith("exited "):
                self.exited_at, self.rc = at, int(line.split()[1])
                return at - t0

    def report(self, timeout: float = 20) -> dict[str, Any]:
        """The wrapper's report once obitui's descendants had ``grace`` s to go: ``left`` lists
        those still alive then (the wrapper killed them)."""
        try:
            self.wrapper.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the wrapper did not finish\n{self.diagnostics()}") from None
        if not self.report_path.exists():
            raise AssertionError(f"the wrapper wrote no report (exit {self.wrapper.returncode})\n"
                                 f"{self.diagnostics()}")
        return json.loads(self.report_path.read_text())

    # ------------------------------------------------------------ clean-up
    def close(self) -> None:
        """Kill everything of the run that is left (the wrapper kills its descendants on
        SIGTERM; every process ever seen and obitui's process group are killed too) and remove
        the run's segments."""
        self.descendants()
        procs = list(self.seen.values())
        if self.ps.is_running():          # still obitui (alive or not reaped): its group is ours
            try:
                os.killpg(self.pid, signal.SIGKILL)    # obitui leads its session and group
            except (ProcessLookupError, PermissionError):
                pass
        if self.wrapper.poll() is None:
            self.wrapper.terminate()
            try:
                self.wrapper.wait(10)
            except subprocess.TimeoutExpired:
                self.wrapper.kill()
                self.wrapper.wait(5)
        for p in procs:
            try:
                p.kill()                            # psutil checks the pid is still that process
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
        self._stop_reading.set()
        self._screen.join(5)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self._stdout.join(5)
        if self.wrapper.stdout is not None:
            self.wrapper.stdout.close()
        self._err.close()
        for name in self.segments():
            try:
                (SHM / name).unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> PtyObitui:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

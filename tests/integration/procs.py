"""The obitui processes a test starts, and only those: every descendant found (also one that
was orphaned, through a child subreaper) and stopped, every shared-memory segment of the run
(``obitui-<uid>-r<supervisor pid>x...``) counted. Another run on the host is never looked at."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SHM = Path("/dev/shm")

# Runs the command under a child subreaper (prctl PR_SET_CHILD_SUBREAPER): whatever the command
# leaves behind, even in a session of its own, is re-parented to this wrapper and nowhere else.
# After the command exits, descendants get `grace` s to go; those still alive are reported in
# the JSON report (with the command's pid), then killed. The exit status is the command's.
# The end of both wrappers (this one and tests/ui/ptyrun.py's): after the command (Popen `p`,
# status `rc`) exited, give its descendants `grace` s, report those still alive in `report`
# (JSON: pid, rc, left) and kill them.
REAP_AND_REPORT = r"""
def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def alive():
    out = []
    for c in me.children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                out.append((c, c.cmdline()))
        except psutil.Error:
            pass
    return out

deadline = time.monotonic() + float(grace)
while True:
    reap()
    left = alive()
    if not left or time.monotonic() >= deadline:
        break
    time.sleep(0.02)
for c, _ in left:
    try:
        c.kill()
    except psutil.Error:
        pass
psutil.wait_procs([c for c, _ in left], timeout=5)
reap()
with open(report, "w") as f:
    json.dump({"pid": p.pid, "rc": rc, "left": [{"pid": c.pid, "cmdline": cl} for c, cl in left]}, f)
"""

_REAPER = r"""
import ctypes, json, os, subprocess, sys, time
import psutil
report, grace, *cmd = sys.argv[1:]
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit(125)
p = subprocess.Popen(cmd)
rc = p.wait()
me = psutil.Process()

""" + REAP_AND_REPORT + "sys.exit(rc)\n"


def run_segments(pid: int, shm_dir: str | os.PathLike[str] = SHM) -> list[str]:
    """The segments of the fleet supervised by process ``pid``."""
    prefix = f"obitui-{os.getuid()}-r{pid}x"
    try:
        return sorted(n for n in os.listdir(shm_dir) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_segments(names: list[str], shm_dir: str | os.PathLike[str] = SHM) -> None:
    for n in names:
        try:
            os.unlink(os.path.join(shm_dir, n))
        except FileNotFoundError:
            pass


def is_alive(p: psutil.Process) -> bool:
    """False once the process is gone, a zombie, or its pid belongs to another process."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tree(root: psutil.Process | None, known: list[psutil.Process] = (), pgid: int | None = None) -> None:  # type: ignore[assignment]
    """SIGKILL ``root``, its current descendants, the processes in ``known`` and the process
    group ``pgid``, then wait for them."""
    procs = list(known)
    if root is not None:
        try:
            procs += root.children(recursive=True)
        except psutil.Error:
            pass
        procs.append(root)
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


@dataclass
class Reaped:
    res: subprocess.CompletedProcess[str]
    pid: int                      # the obitui process (the supervisor of the run)
    left: list[dict[str, Any]]    # its descendants still alive after it exited (then killed)


def run_reaped(args: list[str], *, env: dict[str, str] | None = None,
               preexec: Callable[[], None] | None = None, timeout: float = 45, grace: float = 1.0,
               report_dir: Path) -> Reaped:
    """``python -m obitui ARGS`` to the end under a subreaper; see ``_REAPER``."""
    report = report_dir / f"reaper-{time.monotonic_ns()}.json"
    wrapper = subprocess.Popen([sys.executable, "-c", _REAPER, str(report), str(grace),
                                sys.executable, "-m", "obitui", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})}, preexec_fn=preexec,
                               start_new_session=True)
    try:
        out, err = wrapper.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(psutil.Process(wrapper.pid), pgid=wrapper.pid)
        wrapper.communicate()
        raise
    finally:
        if wrapper.poll() is None:
            kill_tree(psutil.Process(wrapper.pid), pgid=wrapper.pid)
    res = subprocess.CompletedProcess(wrapper.args, wrapper.returncode, out, err)
    if not report.exists():
        raise AssertionError(f"the reaper wrote no report (exit {wrapper.returncode}): {err[-2000:]}")
    data = json.loads(report.read_text())
    return Reaped(res, data["pid"], data["left"])


@dataclass
class Line:
    text: str
    t: float          # time.time() when the test read it


@dataclass
class Obitui:
    """A running ``python -m obitui ARGS`` in a process group of its own, its stdout lines
    queued as they come (with the time they were read), its stderr in a file. ``close()`` kills
    whatever of it is left (every descendant ever seen, the group) and removes its segments."""
    args: list[str]
    stderr_path: Path
    proc: subprocess.Popen[str] = field(init=False)
    lines: queue.Queue[Line | None] = field(init=False, default_factory=queue.Queue)
    seen: list[psutil.Process] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._err = open(self.stderr_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "obitui", *self.args], stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(Line(text.rstrip("\n"), time.time()))
        self.lines.put(None)

    def next_line(self, deadline: float) -> Line | None:
        """The next stdout line, None at the end of the output; fails at ``deadline``."""
        left = deadline - time.monotonic()
        assert left > 0, f"no output in time; stderr:\n{self.stderr()[-3000:]}"
        try:
            return self.lines.get(timeout=left)
        except queue.Empty:
            raise AssertionError(f"no output in time; stderr:\n{self.stderr()[-3000:]}") from None

    def descendants(self) -> list[psutil.Process]:
        try:
            kids = self.ps.children(recursive=True)
        except psutil.Error:
            return []
        self.seen += [k for k in kids if k not in self.seen]
        return kids

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def segments(self) -> list[str]:
        return run_segments(self.proc.pid)

    def close(self) -> None:
        self.descendants()
        kill_tree(self.ps if self.proc.poll() is None else None, self.seen, pgid=self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)     # it ends at the end of the output
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        self._err.close()
        remove_segments(self.segments())

    def __enter__(self) -> Obitui:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""No process of obitui outlives its supervisor (issue #16): SIGKILL of the supervisor in headless
and UI mode leaves no child after a few seconds, the next start removes what the dead run left,
a hung engine is replaced, and every process logs JSON lines with --json. (The soak's
engine_hang and supervisor_kill9 faults are checked by test_soak.py.)

Everything counts only this test's own processes (descendants of the supervisor it started) and
segments (named after that supervisor's pid). The SIGKILLed supervisors run with a shared-memory
directory of their test's own (OBITUI_SHM_DIR, on /dev/shm's tmpfs): any fleet started on the host
removes the segments of dead runs it finds, so in /dev/shm another run (or another pytest-xdist
worker) could remove the dead run's segments before the test's own next start does."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from obitui.config import load_config
from obitui.supervisor import Supervisor, our_segments, segment_prefix
from tests.conftest import TEST_PREFIX

ORPHAN_LIMIT_S = 5.0     # the test's bound; the product's target is 3 s (measured and reported)
FLEET = {"obitui sim", "obitui engine", "obitui feed Bi-OB", "obitui feed Bi-TR", "obitui feed Bg-OB",
         "obitui feed Bg-PR"}


def run_segments(pid: int, shm_dir: Path | None = None) -> list[str]:
    """The segments of the run supervised by ``pid``: in /dev/shm (the product's directory in
    this process), or in ``shm_dir`` (a run started with OBITUI_SHM_DIR)."""
    names = our_segments() if shm_dir is None else sorted(os.listdir(shm_dir))
    return [s for s in names if s.startswith(f"{segment_prefix()}r{pid}x")]


def titles(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for p in procs:
        try:
            out.add(" ".join(p.cmdline()).strip())
        except psutil.Error:
            pass
    return out


def wait_for_fleet(pid: int, shm_dir: Path | None = None, timeout: float = 30.0) -> list[psutil.Process]:
    """The supervisor's descendants once the whole fleet (simulator, engine, 4 feeds) runs and the
    run's segments exist (in ``shm_dir`` if the run was given one, else /dev/shm)."""
    end = time.monotonic() + timeout
    sup = psutil.Process(pid)
    kids: list[psutil.Process] = []
    while time.monotonic() < end:
        kids = sup.children(recursive=True)
        if FLEET <= titles(kids) and len(run_segments(pid, shm_dir)) == 5:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"the fleet did not start in {timeout} s: {sorted(titles(kids))}")


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())}")
        except psutil.Error:
            pass
    return out


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def sigkill_and_check(proc: subprocess.Popen, kids: list[psutil.Process]) -> float:
    """SIGKILL the supervisor; every descendant must be gone within ORPHAN_LIMIT_S."""
    t0 = time.monotonic()
    proc.kill()
    proc.wait(5)
    while alive(kids) and time.monotonic() - t0 < ORPHAN_LIMIT_S:
        time.sleep(0.02)
    took = time.monotonic() - t0
    left = alive(kids)
    assert not left, f"still running {took:.1f} s after SIGKILL of the supervisor: {left}"
    print(f"every child gone {took:.2f} s after SIGKILL of the supervisor")
    return took


def next_start_cleans(dead_pid: int, shm_dir: Path) -> None:
    """The dead run's segments are still there; the next start removes them, and its own."""
    assert run_segments(dead_pid, shm_dir), "a SIGKILLed supervisor cannot unlink its segments"
    res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--duration", "1"],
                         capture_output=True, text=True, timeout=60, env=shm_env(shm_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert ("removed 5 segment(s) left by dead runs" in res.stderr
            or not run_segments(dead_pid, shm_dir)), res.stderr
    assert run_segments(dead_pid, shm_dir) == []


def shm_env(shm_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OBITUI_SHM_DIR": str(shm_dir), **extra}


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A shared-memory directory of the test's own on /dev/shm's tmpfs (see the module's doc);
    nothing may be left in it at the end."""
    d = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}-orphans-", dir="/dev/shm"))
    try:
        yield d
        left = sorted(os.listdir(d))
        assert not left, f"segments left in the test's shared-memory directory: {left}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cleanup(shm_dir: Path) -> Iterator[list]:
    """Whatever a test registers (Popen objects, psutil processes, pids of runs) is killed and its
    segments (in ``shm_dir``) removed, whether the test passed or not."""
    items: list = []
    yield items
    for it in items:
        if isinstance(it, subprocess.Popen):
            if it.poll() is None:
                it.kill()
                it.wait(5)
        elif isinstance(it, psutil.Process):
            kill_all([it])
        elif isinstance(it, int):
            for name in run_segments(it, shm_dir):
                (shm_dir / name).unlink(missing_ok=True)


@pytest.mark.timeout(120)
def test_sigkill_of_a_headless_supervisor_leaves_no_process(cleanup: list, shm_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--duration", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=shm_env(shm_dir))
    cleanup += [proc, proc.pid]
    kids = wait_for_fleet(proc.pid, shm_dir)
    cleanup += kids
    # the simulator lives in a session of its own: no terminal signal reaches it
    assert any(p.pid == os.getsid(p.pid) for p in kids if "obitui sim" in titles([p]))
    sigkill_and_check(proc, kids)
    next_start_cleans(proc.pid, shm_dir)


@pytest.mark.timeout(120)
def test_sigkill_of_a_ui_supervisor_leaves_no_process(cleanup: list, shm_dir: Path, tmp_path: Path) -> None:
    master, slave = os.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = shm_env(shm_dir, TERM="xterm-256color", XDG_STATE_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--sim"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    cleanup += [proc, proc.pid]
    screen = bytearray()

    def drain() -> None:           # a full pty would block the app
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data[-4096:])
    threading.Thread(target=drain, daemon=True).start()
    try:
        kids = wait_for_fleet(proc.pid, shm_dir)
        cleanup += kids
        sigkill_and_check(proc, kids)
    finally:
        os.close(master)
    next_start_cleans(proc.pid, shm_dir)
    assert (tmp_path / "obitui" / "obitui.log").is_file()


@pytest.mark.timeout(90)
def test_a_hung_engine_is_killed_and_replaced() -> None:
    """SIGSTOP the engine: within the heartbeat limit it is killed, counted, restarted, and the
    books come back valid through a resync."""
    cfg = load_config(None)
    cfg.heartbeat_stale = 2.0
    sup = Supervisor(cfg)
    try:
        sup.launch(sim=True)
        assert sup.stats is not None
        engine = next(c for c in sup.children if c.name == "engine")

        def books_valid() -> bool:
            views = [sup.stats.read_book(j) for j in range(2)]
            return all(v is not None and v.valid for v in views)

        def poll_until(pred, timeout: float) -> bool:  # noqa: ANN001
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                sup.poll()
                if pred():
                    return True
                time.sleep(0.05)
            return False

        assert poll_until(books_valid, 30), "the fleet did not sync"
        old = engine.proc.pid
        os.kill(old, signal.SIGSTOP)
        t0 = time.monotonic()
        assert poll_until(lambda: engine.hangs == 1 and engine.proc.pid != old and engine.proc.is_alive(),
                          cfg.heartbeat_stale + 10), "the hung engine was not replaced"
        detected = time.monotonic() - t0
        assert detected < cfg.heartbeat_stale + 5
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
        # the new engine starts with empty books and asks every book feed for a snapshot
        assert poll_until(lambda: (ev := sup.stats.read_engine()) is not None and ev.pid == engine.proc.pid
                          and books_valid(), 30), "the books did not come back after the restart"
    finally:
        sup.stop()
    assert run_segments(os.getpid()) == []


@pytest.mark.timeout(30)
def test_die_with_parent_race_check_and_signal() -> None:
    # a parent that is not the expected one (it died before the lifeline was armed): exit at once
    code = ("import os,sys; from obitui.lifeline import die_with_parent; "
            "die_with_parent(os.getppid() + 1000000); print('survived')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert res.returncode == 1 and "survived" not in res.stdout
    # an armed grandchild dies with its parent (the parent is SIGKILLed)
    code = ("import os,sys,time; from obitui.lifeline import die_with_parent\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    die_with_parent(os.getppid()); time.sleep(30); os._exit(0)\n"
            "print(pid, flush=True); time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        time.sleep(0.3)             # the child arms its lifeline
        assert child.is_running()
        parent.kill()
        parent.wait(5)
        child.wait(3)               # raises TimeoutExpired if it outlived its parent
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


@pytest.mark.timeout(60)
def test_every_stderr_line_is_json_with_json(tmp_path: Path) -> None:
    """--json: one logging setup for every process: each stderr line of the supervisor, the
    feeds, the engine and the simulator is a JSON object with the documented keys."""
    res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--json", "--duration", "4",
                          "--sim-fault", "malformed=0.05"], capture_output=True, text=True, timeout=50)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) > 10
    procs = set()
    for ln in lines:
        obj = json.loads(ln)      # fails on the first line that is not JSON
        assert {"ts", "level", "proc", "logger", "msg"} <= obj.keys(), obj
        assert isinstance(obj["ts"], float) and abs(obj["ts"] - time.time()) < 120
        procs.add(obj["proc"])
    assert {"feed Bi-OB", "feed Bi-TR", "feed Bg-OB", "feed Bg-PR"} <= procs, procs
    for ln in res.stdout.splitlines():
        json.loads(ln)

"""The promises of the real console process: `obitui --sim` with its UI in a terminal (a pty,
TERM=xterm-256color, 120x40), a real supervisor, fleet and simulator.

- `q` stops every process the run started and removes every segment of the run;
- so do SIGTERM, SIGHUP and a hang-up of the terminal (a dropped SSH session), promptly;
- so does a signal that comes while the fleet is still starting;
- with the UI, the supervisor, the engine and the feeds all log to
  `$XDG_STATE_HOME/obitui/obitui.log` (`~/.local/state/...` by default; a temporary directory
  here, so the real home is never touched).

Only the run's own processes (descendants of a subreaper wrapper, see ptyrun.py) and segments
(`obitui-<uid>-r<obitui pid>x...`) are counted; other runs on the host are never looked at.
"""
from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.ui.ptyrun import PtyObitui

pytestmark = pytest.mark.timeout(150)

FEEDS = ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR")
UP_WITHIN = 60.0      # the fleet up and a synced book on screen (a loaded 2-core machine is slow)
EXIT_WITHIN = 10.0    # from q or the signal to the process's end: the supervisor gives its
                      # children 3 s, the simulator stops in well under 1 s
SEGMENTS = 1 + len(FEEDS)     # the stats block and one ring per feed


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A home and a state directory of the test's own: the UI log goes to the latter."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}


def wait_up(run: PtyObitui) -> list[psutil.Process]:
    """Wait until every process and segment of the fleet is there and the UI shows a synced
    book; returns the processes then."""
    run.wait_until(lambda: (len(run.segments()) >= SEGMENTS and len(run.descendants()) >= len(FEEDS) + 2
                            and "connected_synced" in run.screen()),
                   "the fleet (feeds, engine, simulator, segments) and a synced book on screen",
                   UP_WITHIN)
    kids = run.descendants()
    assert len(kids) >= len(FEEDS) + 2, kids      # four feeds, the engine, the simulator
    return kids


def assert_nothing_left(run: PtyObitui, started: list[psutil.Process], how: str) -> int:
    """obitui exits within EXIT_WITHIN, no process of the run outlives it, no segment of the
    run is left; returns its exit status."""
    took = run.wait_exit(EXIT_WITHIN)
    report = run.report()
    still = [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert report["left"] == [] and still == [], (
        f"after {how}, processes of the run outlived it: {report['left']} {still}\n{run.diagnostics()}")
    assert run.segments() == [], f"after {how}, segments of the run are left: {run.segments()}"
    assert took < EXIT_WITHIN
    return int(report["rc"])


def test_q_stops_every_process_and_removes_every_segment(tmp_path: Path, env: dict[str, str]) -> None:
    with PtyObitui(["--sim"], tmp_path, env) as run:
        started = wait_up(run)
        run.key(b"q")
        rc = assert_nothing_left(run, started, "q")
        assert rc == 0, run.diagnostics()
        assert "Traceback" not in run.screen(), run.diagnostics()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_every_process_and_removes_every_segment(
        tmp_path: Path, env: dict[str, str], sig: signal.Signals) -> None:
    with PtyObitui(["--sim"], tmp_path, env) as run:
        started = wait_up(run)
        run.signal(sig)
        rc = assert_nothing_left(run, started, sig.name)
        assert rc in (0, 128 + sig), run.diagnostics()
        assert "Traceback" not in run.screen(), run.diagnostics()


def test_a_terminal_hang_up_stops_every_process_and_removes_every_segment(
        tmp_path: Path, env: dict[str, str]) -> None:
    """The SSH session drops: the terminal goes away and the kernel sends SIGHUP."""
    with PtyObitui(["--sim"], tmp_path, env) as run:
        started = wait_up(run)
        run.hang_up()
        rc = assert_nothing_left(run, started, "the hang-up")
        assert rc in (0, 128 + signal.SIGHUP)


def test_the_end_of_the_terminal_without_a_signal_stops_everything(tmp_path: Path, env: dict[str, str]) -> None:
    """The terminal goes away but no SIGHUP comes (it is not obitui's controlling terminal;
    the same when a parent does not pass the hang-up on): every write to it fails. The UI must
    notice and stop everything rather than hang in its shutdown (Textual's output thread used
    to die of the write error, its queue filled, and the app blocked for ever)."""
    with PtyObitui(["--sim"], tmp_path, env, controlling_tty=False) as run:
        started = wait_up(run)
        run.hang_up()
        rc = assert_nothing_left(run, started, "the end of the terminal")
        assert rc == 0, run.diagnostics()
    log = (Path(env["XDG_STATE_HOME"]) / "obitui" / "obitui.log").read_text(errors="replace")
    assert "the terminal is gone: stopping" in log, log[-3000:]


def test_signals_while_the_fleet_starts_leave_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    """SIGTERM, repeated every 20 ms from the moment the run's first segment exists (the
    supervisor is creating segments and starting children then), until the process ends: it
    still stops everything it started and removes every segment (a signal acted on in the
    middle of starting a child used to leave the segments behind)."""
    with PtyObitui(["--sim"], tmp_path, env) as run:
        run.wait_until(lambda: bool(run.segments()), "the run's first segment", UP_WITHIN)
        sent = 0
        t0 = time.monotonic()
        while run.running() and time.monotonic() - t0 < 3.0:
            run.descendants()
            try:
                run.signal(signal.SIGTERM)
                sent += 1
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        assert sent >= 1
        rc = assert_nothing_left(run, list(run.seen.values()), f"{sent} SIGTERM during start-up")
        # 143: the signal came before the UI ran; 0: the UI was up and quit; -15: the last one
        # came as the interpreter finished (after the clean-up)
        assert rc in (0, 128 + signal.SIGTERM, -signal.SIGTERM), run.diagnostics()


def test_every_process_logs_to_the_ui_log_file(tmp_path: Path, env: dict[str, str]) -> None:
    """With the UI the terminal is the UI's: the supervisor, the engine and every feed write to
    `$XDG_STATE_HOME/obitui/obitui.log`. The engine is pinned to a CPU the machine does not
    have (its warning is a line it must log), a feed is killed (the supervisor logs the
    restart)."""
    cfg = tmp_path / "engine-on-a-missing-cpu.toml"
    cfg.write_text("[engine]\ncpu = 4095\n")
    log_file = Path(env["XDG_STATE_HOME"]) / "obitui" / "obitui.log"
    with PtyObitui(["--sim", "--config", str(cfg)], tmp_path, env) as run:
        wait_up(run)
        # the processes panel (feeds & system screen) names each feed's pid: kill Bi-TR (one of
        # this run's processes)
        run.key(b"f")
        run.wait_until(lambda: re.search(r"Bi-TR\s+pid (\d+)", run.screen()), "Bi-TR's pid on screen", 20)
        pid = int(re.findall(r"Bi-TR\s+pid (\d+)", run.screen())[-1])
        victim = next(p for p in run.descendants() if p.pid == pid)
        victim.kill()

        def text() -> str:
            return log_file.read_text(errors="replace") if log_file.exists() else ""

        wanted = {
            "supervisor": re.compile(r"obitui\.supervisor .*Bi-TR.*restart"),
            "engine": re.compile(r"obitui\.engine .*cannot pin the engine to CPU 4095"),
            **{f"feed {label}": re.compile(rf"obitui\.feed .*{label}: ") for label in FEEDS},
        }
        run.wait_until(lambda: all(rx.search(text()) for rx in wanted.values()),
                       f"lines of {', '.join(wanted)} in {log_file}", 30)
        run.key(b"q")
        run.wait_exit(EXIT_WITHIN)
        run.report()
    missing = [who for who, rx in wanted.items() if not rx.search(text())]
    assert not missing, f"no line of {missing} in the log:\n{text()[-3000:]}"
    assert not (Path(env["HOME"]) / ".local" / "state" / "obitui").exists()   # the override held


def test_watchlist_market_view_and_q_with_several_markets(tmp_path: Path, env: dict[str, str]) -> None:
    """`obitui --sim --symbols top:3` in a terminal: the watchlist lists the markets with prices,
    `/` filters, Enter shows the ladders, the tape and the cross-venue line, Esc returns, `q`
    exits 0 and leaves no process and no segment."""
    with PtyObitui(["--sim", "--symbols", "top:3"], tmp_path, env) as run:
        run.wait_until(lambda: "3 markets" in run.screen() and "all synced" in run.screen(),
                       "the watchlist with its 3 markets synced", UP_WITHIN)
        started = run.descendants()
        screen = run.screen()
        for key in ("Bi BTCUSDT", "Bg BTCUSDT", "Bi ETHUSDT", "Bg ETHUSDT"):
            assert key in screen, screen
        run.key(b"/")
        time.sleep(0.5)                     # the filter box takes the focus
        for ch in b"eth":
            run.key(bytes([ch]))
            time.sleep(0.05)
        run.wait_until(lambda: 'filter "eth": 2 shown' in run.screen(), "the filtered watchlist", 20)
        run.key(b"\r")                      # keep the filter, back to the table
        time.sleep(0.5)                     # (the focus moves with the Enter's message)
        n = len(run.screen())
        run.key(b"\r")                      # open the market view
        run.wait_until(lambda: all(w in run.screen()[n:] for w in ("ETHUSDT", "time (UTC)", "Bi−Bg mid", "OBI")),
                       "the market view of ETHUSDT (ladders, tape, cross-venue line)", 20)
        n = len(run.screen())
        run.key(b"\x1b")
        run.wait_until(lambda: "spr bps" in run.screen()[n:], "the watchlist again", 20)
        run.key(b"q")
        rc = assert_nothing_left(run, started, "q")
        assert rc == 0, run.diagnostics()

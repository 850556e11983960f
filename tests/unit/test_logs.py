"""One logging setup for every process; the UI's log file is rotated by size and every writer
follows the rotation (issue #17, section 2)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from obitui.logs import LogSpec, configure, rotate, ui_log_path

WRITER = """
import logging, sys, time
from obitui.logs import LogSpec, configure
configure(LogSpec(logging.INFO, False, sys.argv[1]), "child")
log = logging.getLogger("obitui.test")
log.info("before")
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()          # the parent rotates the file meanwhile
log.info("after")
"""


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_rotate_shifts_and_keeps_a_few(tmp_path: Path) -> None:
    log = tmp_path / "obitui.log"
    log.write_text("x" * 100)
    assert not rotate(log, max_bytes=1000)              # small: left alone
    for gen in range(5):
        log.write_text(f"gen{gen}" + "x" * 2000)
        assert rotate(log, max_bytes=1000, keep=3)
        assert not log.exists()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["obitui.log.1", "obitui.log.2", "obitui.log.3"]
    assert [(tmp_path / n).read_text()[:4] for n in kept] == ["gen4", "gen3", "gen2"]
    assert not rotate(tmp_path / "missing.log", max_bytes=1)


@pytest.mark.timeout(30)
def test_every_process_follows_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "obitui.log"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"   # type: ignore[union-attr]
        configure(LogSpec(logging.INFO, False, str(log)), "supervisor")
        logging.getLogger("obitui.test").info("parent before")
        assert rotate(log, max_bytes=1)
        logging.getLogger("obitui.test").info("parent after")
        child.communicate("go\n", timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0
    old, new = Path(f"{log}.1").read_text(), log.read_text()
    assert "child obitui.test INFO before" in old and "supervisor obitui.test INFO parent before" in old
    # both processes write to the new file after the rotation: nothing goes to the moved one
    assert "child obitui.test INFO after" in new and "supervisor obitui.test INFO parent after" in new
    assert "after" not in old


def test_json_lines_name_the_process_and_carry_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSpec(logging.INFO, True), "feed Bi-OB")
    log = logging.getLogger("obitui.feed")
    log.info("hello %s", "world")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(ln) for ln in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "hello world" and lines[0]["proc"] == "feed Bi-OB" and lines[0]["level"] == "info"
    assert lines[1]["level"] == "error" and "RuntimeError: boom" in lines[1]["exc"]


def test_where_the_log_is_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert ui_log_path() == tmp_path / "obitui" / "obitui.log"
    res = subprocess.run([sys.executable, "-m", "obitui", "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "obitui/obitui.log" in " ".join(res.stdout.split()) and "rotated" in res.stdout
    res = subprocess.run([sys.executable, "-m", "obitui", "doctor", "--json"], capture_output=True, text=True,
                         timeout=60, env={**__import__("os").environ, "XDG_STATE_HOME": str(tmp_path)})
    checks = json.loads(res.stdout)["checks"]
    log = next(c for c in checks if c["name"] == "UI log file")
    assert str(tmp_path / "obitui" / "obitui.log") in log["current"] and log["severity"] == "ok"


def test_the_supervisor_rotates_its_log_file(tmp_path: Path) -> None:
    from obitui.config import load_config
    from obitui.logs import ROTATE_BYTES
    from obitui.supervisor import Supervisor
    log = tmp_path / "obitui.log"
    log.write_bytes(b"x" * (ROTATE_BYTES + 1))
    sup = Supervisor(load_config(None), log_file=str(log))   # no process started: poll only looks
    sup.poll()
    assert Path(f"{log}.1").stat().st_size == ROTATE_BYTES + 1
    assert not log.exists() or log.stat().st_size < 1024

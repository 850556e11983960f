"""What the operator sees when something is wrong (issue #17, section 2): frozen data is never
shown as live, processes carry their names, the version is printed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from obitui import __version__
from obitui.config import load_config
from obitui.headless import status_line
from tests.integration.test_orphans import titles, wait_for_fleet


def test_status_line_marks_a_stale_engine_and_feed() -> None:
    cfg = load_config(None)
    live = {"state": "connected_synced", "stale": False, "age_s": 0.05}
    snap = {"feeds": {"Bi-OB": live, "Bi-TR": {**live, "state": "connected"},
                      "Bg-OB": live, "Bg-PR": {"state": "live", "stale": True, "age_s": 4.26}},
            "books": {"binance:BTCUSDT": {"valid": True, "obi": 0.38111, "stale": True},
                      "bitget:BTCUSDT": {"valid": True, "obi": -0.1, "stale": True}},
            "engine": {"stale": True, "age_s": 5.12}}
    assert status_line(cfg, snap) == ("[Main Status] Bi-OB: connected_synced | Bi-TR: connected | "
                                      "Bg-OB: connected_synced | Bg-PR: live (stale 4.3s) | engine: stale 5.1s")
    for b in snap["books"].values():
        b["stale"] = False
    snap["engine"] = {"stale": False, "age_s": 0.01}
    snap["feeds"]["Bg-PR"] = {"state": "live", "stale": False, "age_s": 0.1}
    assert status_line(cfg, snap) == ("[Main Status] Bi-OB: connected_synced (OBI:0.3811) | Bi-TR: connected | "
                                      "Bg-OB: connected_synced (OBI:-0.1000) | Bg-PR: live")


@pytest.mark.timeout(90)
def test_a_stopped_engine_shows_stale_until_it_is_replaced(tmp_path) -> None:  # noqa: ANN001
    """kill -STOP of the engine: within a few seconds the JSON says the engine and every book are
    stale (the figures are frozen); the supervisor replaces the engine (here after 5 s) and
    fresh data returns."""
    cfg = tmp_path / "obitui.toml"
    cfg.write_text("[supervisor]\nheartbeat_stale = 5\n")
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--sim", "--config", str(cfg), "--no-ui", "--json",
                             "--interval", "0.5", "--duration", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    kids: list[psutil.Process] = []
    try:
        kids = wait_for_fleet(proc.pid)
        assert proc.stdout is not None
        seen: list[dict] = []

        def until(pred, timeout: float) -> dict:  # noqa: ANN001
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                seen.append(json.loads(proc.stdout.readline()))
                if pred(seen[-1]):
                    return seen[-1]
            raise AssertionError(f"not seen in {timeout} s; last: {seen[-1] if seen else None}")

        fresh = until(lambda s: len(s["books"]) == 2 and all(b["valid"] for b in s["books"].values()), 30)
        assert fresh["engine"]["stale"] is False and not any(b["stale"] for b in fresh["books"].values())
        engine = next(p for p in kids if "obitui engine" in titles([p]))
        os.kill(engine.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        stale = until(lambda s: s["engine"]["stale"], 10)
        assert time.monotonic() - t0 < 6
        assert stale["engine"]["age_s"] > 3.0 and all(b["stale"] for b in stale["books"].values())
        assert all(not f["stale"] for f in stale["feeds"].values())      # the feeds still beat
        back = until(lambda s: not s["engine"]["stale"] and s["engine"]["pid"] != engine.pid
                     and all(b["valid"] and not b["stale"] for b in s["books"].values()), 25)
        assert back["engine"]["age_s"] < 3.0
    finally:
        proc.terminate()
        proc.wait(15)
        for p in kids:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_version() -> None:
    res = subprocess.run([sys.executable, "-m", "obitui", "--version"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.strip() == f"obitui {__version__}"

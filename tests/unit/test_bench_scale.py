"""`obitui bench scale` (issue #19): the quick run works end to end, and the figures derived
from the rows (per book, per market, the verdicts) are computed as BENCHMARKS.md says. No speed
is judged here: figures belong in BENCHMARKS.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obitui.bench import scale


@pytest.mark.timeout(120)
@pytest.mark.xdist_group("heavy")    # pytest-xdist: with the soak and the fuzz, on one worker in turn
def test_bench_scale_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    res = subprocess.run([sys.executable, "-m", "obitui", "bench", "scale", "--markets", "1,3",
                          "--window", "2", "--warmup", "1", "--pipeline-rate", "0", "--json", str(out)],
                         capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["markets"] for r in rows] == [1, 3]
    assert rows[0]["symbols"] == ["BTCUSDT"]
    for r in rows:
        assert r["books"] == 2 * r["markets"] and r["books_valid"] == r["books"], r
        assert r["time_to_all_synced_s"] is not None and r["time_to_all_synced_s"] > 0
        assert r["msgs_per_s"] > 0 and r["records_per_s"] > 0
        assert r["rx_applied_us"]["count"] > 0 and r["rx_applied_us"]["p99"] is not None
        assert {"Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR", "engine", "sup", "sim"} <= r["cpu_pct"].keys()
        assert r["ring_drops"] == 0 and r["gaps"] == 0 and r["engine_gaps"] == 0
        assert r["rest_weight_depth"] == 50 * r["markets"]      # one 1000-level snapshot a book
        assert r["sim_violations"] == {}
    assert rows[1]["rss_mib_per_book"] is not None
    # the plain-text tables: one row per market count, then the targets
    assert "markets" in res.stdout and "p99 frame arrival -> book applied" in res.stdout


def _row(n: int, cpu: float, msgs: int, rss: float, engine: float = 1.0, rps: int = 100) -> dict:
    return {"markets": n, "rate": 20.0, "cpu_pct": {"Bi-OB": cpu, "engine": engine, "sim": 5.0},
            "obitui_cpu_pct": cpu, "cpu_per_market_pct": cpu / n, "cpu_per_1k_msgs_pct": cpu / (msgs / 1e3),
            "records_per_s": rps, "msgs_per_s": msgs, "obitui_rss_mib": rss, "obitui_pss_mib": rss,
            "engine_us_per_record": 1.0, "rx_applied_us": {"p50": 92.7, "p99": 370.7, "p999": None},
            "rx_pushed_us": {"p50": 46.3, "p99": 92.7},
            "exch_rx_us": {"p50": 741.5, "p99": 1482.9}, "rss_mib": {"engine": 20.0, "sim": 40.0},
            "ring_drops": 0, "gaps": 0, "engine_gaps": 0, "books": 2 * n, "books_valid": 2 * n,
            "time_to_all_synced_s": 1.0, "rest_weight_depth": 50 * n, "resyncs": 0,
            "sim_violations": {}, "feed_synced_s": {}, "fleet_start_second_of_minute": 0.0,
            "rest_weight_waits": 0, "processes_missing": []}


def test_derived_figures_and_verdicts() -> None:
    rows = [_row(1, 2.0, 40, 160.0, engine=0.5, rps=40), _row(10, 10.0, 2000, 170.0, engine=2.5, rps=2040),
            _row(150, 66.0, 10000, 460.0)]
    scale._add_ratios(rows, 10)
    assert rows[1]["rss_mib_per_book"] == pytest.approx(10.0 / 18, abs=1e-3)    # (170 - 160) / (2*10 - 2)
    assert rows[2]["rss_mib_per_book"] == pytest.approx(300.0 / 298, abs=1e-3)
    assert rows[2]["cpu_per_market_vs_ref"] == pytest.approx(0.44)              # 0.44 / 1.0
    assert rows[1]["engine_us_per_record_marginal"] == pytest.approx(10.0)       # 2 % of a core / 2000 rec/s
    v = {t[0]: t[2] for t in scale.verdicts(rows, 10, 150)}
    assert v["obitui processes <= 60 % of one core at 150 markets"] == "MISSED"
    assert v["CPU per market at 150 <= 1.2 x at 10"] == "met"
    assert v["RSS <= 2 MiB per book beyond the fixed cost"] == "met"
    # the engine's CPU a record is judged at 150 markets, where the issue states it: one
    # market's few records/s make a large figure of fixed cost that is shown, not judged
    rows[0]["engine_us_per_record"], rows[2]["engine_us_per_record"] = 54.0, 3.0
    assert {t[0]: t[2] for t in scale.verdicts(rows, 10, 150)}["engine <= 5 us CPU per record at 150 markets"] == "met"
    rows[2]["engine_us_per_record"] = 5.5
    assert {t[0]: t[2] for t in scale.verdicts(rows, 10, 150)}["engine <= 5 us CPU per record at 150 markets"] == "MISSED"
    for head, body in scale.tables(rows, 10):
        md = scale.render(head, body, markdown=True).splitlines()
        assert len(md) == 2 + len(rows) and all(line.count("|") == len(head) + 1 for line in md)


@pytest.mark.timeout(90)
@pytest.mark.xdist_group("heavy")
def test_sigterm_stops_a_bench_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM to `obitui bench scale` while its fleet runs: it stops (exit 143), and its
    processes and /dev/shm segments are gone."""
    err = tmp_path / "err.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "obitui", "bench", "scale", "--markets", "1",
                                 "--window", "60", "--warmup", "1", "--pipeline-rate", "0"],
                                stdout=subprocess.DEVNULL, stderr=fh, text=True)
    try:
        deadline = time.monotonic() + 60
        while "warm-up, window" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.2)
        run = f"-r{proc.pid}x"
        assert any(run in name for name in os.listdir("/dev/shm"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert [name for name in os.listdir("/dev/shm") if run in name] == []
        deadline = time.monotonic() + 10
        while subprocess.run(["pgrep", "-f", f"obitui.*{proc.pid}"], capture_output=True).stdout.strip():
            assert time.monotonic() < deadline, "a process of the bench outlived it"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

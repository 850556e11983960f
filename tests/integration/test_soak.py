"""The fault-injection soak, short: every fault kind detected and recovered, books equal to the
truth, nothing lost uncounted, nothing left behind (issue #8)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.xdist_group("heavy")    # pytest-xdist: with the fuzz and the benchmarks, on one worker in turn
def test_soak_60s_passes(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, "-m", "obitui", "soak", "--duration", "60", "--seed", "2",
                          "--json", str(report), "--log", str(tmp_path / "fleet.log")],
                         capture_output=True, text=True, timeout=220)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "PASS" in res.stdout and "Traceback" not in res.stderr
    r = json.loads(report.read_text())
    kinds = r["by_kind"]
    assert sum(d["injected"] for d in kinds.values()) >= 10, kinds
    # process faults come first in the schedule: every kind of them runs in a 60 s soak
    assert {"kill_feed", "kill_engine", "pause_engine", "engine_hang", "supervisor_kill9"} <= set(kinds), kinds
    for o in r["faults"]:
        if o["kind"] == "supervisor_kill9":     # every child of the killed supervisor gone in 3 s
            gone_s = float(o["detected_by"][0].split(" gone in ")[1].split()[0])
            assert gone_s <= 3.0, o
    assert all(d["detected"] == d["injected"] == d["recovered"] for d in kinds.values()), kinds
    assert r["mismatches"] == [] and r["truth_checks"] > 20
    acc = r["accounting"]
    assert acc["drained"] and acc["violations"] == []
    for label, a in acc["feeds"].items():
        assert a["frames"] > 0
        assert a["frames"] == sum(a[k] for k in ("pushed", "dropped", "rejected", "ignored", "discarded",
                                                  "pending")), label
        ring = a["ring"]
        assert ring["seq"] == ring["pushed"] + ring["drops"] and ring["popped"] == ring["pushed"]
        assert ring["lost"] == ring["drops"]
    # the paused engine made a ring overflow: the drops were counted on both sides
    assert any(a["ring"]["drops"] > 0 for a in acc["feeds"].values())
    leaks = r["leaks"]
    assert leaks["fds_end"] <= leaks["fds_start"] and not leaks["segments_left"] and not leaks["processes_left"]


def test_soak_refuses_unknown_fault_kinds() -> None:
    res = subprocess.run([sys.executable, "-m", "obitui", "soak", "--duration", "30", "--faults", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no fault kinds selected" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

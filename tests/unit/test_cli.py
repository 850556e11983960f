"""The command line as a user meets it, and the rule that the core never imports the UI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HOT_PATH_MODULES = ["obitui.core.ring", "obitui.core.fixed", "obitui.core.shm", "obitui.bench.ring",
                    "obitui.__main__"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obitui", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(60)
def test_help_lists_subcommands() -> None:
    res = run("--help")
    assert res.returncode == 0
    for word in ("sim", "bench", "doctor", "soak", "--sim", "--no-ui", "--json", "--duration"):
        assert word in res.stdout


@pytest.mark.timeout(60)
def test_console_script_installed() -> None:
    exe = subprocess.run([sys.executable, "-c", "import shutil,sys,os;"
                          "print(shutil.which('obitui', path=os.path.dirname(sys.executable)))"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    assert exe and exe != "None", "the obitui console script is not installed beside python"
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "bench" in res.stdout


def doctor_critical(res: subprocess.CompletedProcess[str]) -> list[str]:
    """The names of the critical checks in a `doctor --json` run, after checking that the
    report is whole (its `critical` count matches its checks) and that the exit code says the
    same: 1 when a check is critical, 0 otherwise (obitui/doctor.py)."""
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    out = json.loads(res.stdout)
    severities = {c["severity"] for c in out["checks"]}
    assert out["checks"] and severities <= {"ok", "info", "warn", "critical"}, severities
    critical = [c["name"] for c in out["checks"] if c["severity"] == "critical"]
    assert out["critical"] == len(critical), out
    assert res.returncode == (1 if critical else 0), (res.returncode, critical, res.stderr[-2000:])
    return critical


@pytest.mark.timeout(60)
def test_doctor_exit_code_follows_critical_checks(tmp_path: Path) -> None:
    """Both exits of the doctor, on trees whose outcome is known: without /dev/shm the shm
    check is critical (exit 1); with one, nothing else in an empty tree is (exit 0)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    res = run("doctor", "--json", "--root", str(bare))
    assert res.returncode == 1 and doctor_critical(res) == ["/dev/shm"]
    res = run("doctor", "--root", str(bare))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "CRITICAL /dev/shm" in res.stdout and "1 critical," in res.stdout

    with_shm = tmp_path / "with_shm"
    (with_shm / "dev/shm").mkdir(parents=True)
    res = run("doctor", "--json", "--root", str(with_shm))
    assert res.returncode == 0 and doctor_critical(res) == []
    res = run("doctor", "--root", str(with_shm))
    assert res.returncode == 0 and "Traceback" not in res.stderr and "0 critical," in res.stdout


@pytest.mark.timeout(60)
def test_every_subcommand_is_built_and_bad_flags_exit_2() -> None:
    # doctor and soak were "not built yet" (exit 2) before issues #8 and #9; the doctor's own
    # promise (exit 1 only for a critical check) is held in test_doctor_exit_code_*
    report = run("doctor", "--json")
    assert "Traceback" not in report.stderr, report.stderr[-2000:]
    critical = doctor_critical(report)
    res = run("doctor")
    assert "Traceback" not in res.stderr and "not built yet" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == (1 if critical else 0), (res.returncode, critical, res.stdout[-2000:])
    assert f"{len(critical)} critical," in res.stdout
    res = run("bench", "soak", "--help")
    assert res.returncode == 0 and "--duration" in res.stdout
    res = run("--bogus-flag")
    assert res.returncode == 2


@pytest.mark.timeout(60)
def test_core_imports_neither_textual_nor_rich() -> None:
    code = ("import sys, json\n"
            f"for m in {HOT_PATH_MODULES!r}: __import__(m)\n"
            "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('textual', 'rich'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


@pytest.mark.timeout(120)
@pytest.mark.xdist_group("heavy")    # pytest-xdist: with the soak and the fuzz, on one worker in turn
def test_bench_book_quick_runs_every_row() -> None:
    """The book benchmark's own checks (every frame applied by the one-call path, the array and
    std::map books agreeing) run, and every row the report names is there. No speed is judged
    here: figures belong in BENCHMARKS.md."""
    res = run("bench", "book", "--quick", "--repeats", "1", "--json", timeout=110)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    rows = {"SortedDict (Decimal)", "OrderBook per level", "OrderBook batch",
            "SortedDict (Decimal), fresh lists", "OrderBook batch, fresh lists",
            "SortedDict (int64 records)", "OrderBook packed records",
            "SortedDict (Decimal), orjson frames", "OrderBook, orjson + batch (frames)",
            "OrderBook, raw-frame scanner (frames)"}
    assert set(out["updates_per_s"]) == rows == set(out["ratios"])
    assert all(v > 0 for v in out["updates_per_s"].values())
    assert out["structure"]["array_updates_per_s"] > 0 and out["orderbook_bytes_per_10k"] > 0
    assert out["py_top20_obi_us"] > 0 and out["py_top20_obi_live_us"] > 0

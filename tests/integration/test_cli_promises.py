"""Promises of the command line, held against the real `obitui` process on the simulator
(loopback only): a signal stops the whole run, `--record` captures replay to the same books,
the JSON output's `ts` and exact decimal levels, `--sim-fault` on the main command line, and one
error line with exit 2 for bad option values.

Every process a test starts is killed at the end whatever happens (its process group, and every
descendant seen, the simulator included: it runs in a session of its own); only that run's
processes and segments are ever counted (tests/integration/procs.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.procs import Obitui, is_alive, run_reaped, run_segments

LABELS = ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR")
BOOKS = {"Bi-OB": "binance:BTCUSDT", "Bg-OB": "bitget:BTCUSDT"}
STATUS_RE = re.compile(r"^\[Main Status\] " + r" \| ".join(
    rf"{label}: [a-z_]+( \(OBI:-?\d\.\d{{4}}\))?" for label in LABELS) + "$")


def read_until(run: Obitui, pred: Any, within: float) -> list[str]:
    """Stdout lines up to and including the first one ``pred`` accepts."""
    deadline = time.monotonic() + within
    seen: list[str] = []
    while True:
        line = run.next_line(deadline)
        assert line is not None, f"output ended early: {seen[-3:]}\nstderr:\n{run.stderr()[-3000:]}"
        seen.append(line.text)
        if pred(line.text):
            return seen


def read_json_to_end(run: Obitui, within: float) -> list[tuple[dict[str, Any], float]]:
    """Every JSON object the run prints until it exits, with the time each was read."""
    deadline = time.monotonic() + within
    out = []
    while (line := run.next_line(deadline)) is not None:
        out.append((json.loads(line.text), line.t))
    rc = run.proc.wait(max(0.1, deadline - time.monotonic()))
    assert rc == 0, run.stderr()[-3000:]
    return out


# ------------------------------------------------------------------ 1. signals
@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig,target", [("SIGTERM", "pid"), ("SIGHUP", "pid"), ("SIGHUP", "group")])
def test_signal_stops_every_process_and_removes_every_segment(tmp_path: Path, sig: str, target: str) -> None:
    """SIGTERM (systemd) or SIGHUP (the SSH session closed; "group": the terminal's hangup, which
    reaches the whole foreground process group) to `obitui --sim --no-ui`: it exits 0 promptly
    (a requested stop, obitui/headless.py), every process it started is gone, and no segment of
    its run is left."""
    with Obitui(["--sim", "--no-ui"], tmp_path / "stderr.txt") as run:
        read_until(run, lambda t: STATUS_RE.match(t) and "Bi-OB: connected_synced" in t
                   and "Bg-OB: connected_synced" in t, 45)
        kids = run.descendants()
        # four feeds and the engine (spawned), the simulator (its own session), maybe the
        # multiprocessing resource tracker
        assert len(kids) >= 6, [k.cmdline() for k in kids]
        segments = run.segments()
        assert any(s.endswith("-stats") for s in segments) and len(segments) >= 2, segments
        t0 = time.monotonic()
        if target == "group":
            os.killpg(run.proc.pid, getattr(signal, sig))
        else:
            os.kill(run.proc.pid, getattr(signal, sig))
        rc = run.proc.wait(20)
        took = time.monotonic() - t0
        assert rc == 0, (rc, run.stderr()[-3000:])
        assert took < 8.0, f"took {took:.1f} s to stop"
        deadline = time.monotonic() + 2.0          # a process may still be leaving the table
        while (left := [k for k in kids if is_alive(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, [(k.pid, k.cmdline()) for k in left]
        assert run.segments() == [], run.segments()
        assert "Traceback" not in run.stderr(), run.stderr()[-3000:]


@pytest.mark.timeout(90)
def test_simulator_death_stops_the_run_with_exit_1(tmp_path: Path) -> None:
    """The simulator killed under a headless `--sim` run: the run stops as cleanly as on a
    signal (last object printed, every process gone, no segment left) but exits 1: not a
    requested stop (obitui/headless.py)."""
    with Obitui(["--sim", "--no-ui", "--json"], tmp_path / "stderr.txt") as run:
        read_until(run, lambda t: json.loads(t)["feeds"].get("Bi-OB", {}).get("state") == "connected_synced", 45)
        kids = run.descendants()
        sims = [k for k in kids if k.status() != "zombie" and "sim" in " ".join(k.cmdline()).split()]
        assert len(sims) == 1, [k.cmdline() for k in kids]
        sims[0].kill()
        rc = run.proc.wait(20)
        assert rc == 1, (rc, run.stderr()[-3000:])
        assert "the simulator ended unexpectedly" in run.stderr()
        assert "Traceback" not in run.stderr(), run.stderr()[-3000:]
        deadline = time.monotonic() + 2.0
        while (left := [k for k in kids if is_alive(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, [(k.pid, k.cmdline()) for k in left]
        assert run.segments() == []


# ------------------------------------------------------------------ 2./3. record, replay, JSON
def _capture_levels(path: Path) -> set[tuple[str, str]]:
    """Every (price, qty) pair of strings in the raw frames and REST bodies of a capture."""
    from obitui.capture import read_capture
    pairs: set[tuple[str, str]] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, v in obj.items():
                if key in ("b", "a", "bids", "asks") and isinstance(v, list):
                    pairs.update((lv[0], lv[1]) for lv in v
                                 if isinstance(lv, list) and len(lv) >= 2 and isinstance(lv[0], str))
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for rec in read_capture(path):
        try:
            walk(orjson.loads(rec.data))
        except orjson.JSONDecodeError:
            pass
    return pairs


def _check_levels(book: dict[str, Any], key: str) -> None:
    """Levels are [price, qty] pairs of exact decimal strings (never numbers), bids best first
    (descending), asks best first (ascending), not crossed."""
    for side in ("bids", "asks"):
        levels = book[side]
        assert isinstance(levels, list) and levels, (key, side)
        for lv in levels:
            assert isinstance(lv, list) and len(lv) == 2, (key, side, lv)
            assert all(type(x) is str and re.fullmatch(r"\d+(\.\d+)?", x) for x in lv), (key, side, lv)
            assert Decimal(lv[0]) > 0 and Decimal(lv[1]) > 0, (key, side, lv)
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids), key
    assert asks == sorted(asks) and len(set(asks)) == len(asks), key
    assert bids[0] < asks[0], (key, bids[0], asks[0])


@pytest.mark.timeout(240)
def test_record_replays_to_the_same_books_and_json_is_exact(tmp_path: Path) -> None:
    """`--record DIR` writes one capture per feed; `obitui --replay FILE --speed 0 --no-ui --json`
    of each rebuilds the book the live run printed last (same update id, same level strings),
    and a trade or ticker capture gives its feed the same frames and records. The live run's
    JSON: `ts` a number close to now, levels exact decimal strings, the ones the exchange sent.

    The simulator goes silent 4 s after each connection opened (socket kept): the live run's
    last object then holds every frame its capture holds."""
    rec = tmp_path / "rec"
    with Obitui(["--sim", "--sim-fault", "silence=4", "--record", str(rec), "--no-ui", "--json",
                 "--duration", "9"], tmp_path / "live.err") as run:
        objs = read_json_to_end(run, 60)
    assert len(objs) >= 5, objs
    # ---- 3. ts: a number (unix seconds), close to when it was printed, increasing
    prev = 0.0
    for obj, read_at in objs:
        ts = obj["ts"]
        assert type(ts) in (int, float), ts
        assert abs(ts - read_at) < 3.0, (ts, read_at)
        assert ts >= prev
        prev = ts
        # the contract's keys; the object may grow (extensions such as "engine" are allowed)
        assert {"ts", "feeds", "books"} <= set(obj), obj.keys()
    live = objs[-1][0]
    assert set(live["feeds"]) == set(LABELS), live["feeds"]
    for label in LABELS:
        f = live["feeds"][label]
        assert f["gaps"] == 0 and f["resyncs"] == 0 and f["reconnects"] == 0, (label, f)
        assert f["frames"] > 0, (label, f)

    # ---- 2. one capture per feed
    captures = sorted(rec.iterdir())
    by_label = {label: [c for c in captures if c.name.startswith(label + "-")] for label in LABELS}
    assert all(len(v) == 1 for v in by_label.values()) and len(captures) == len(LABELS), captures

    for label, key in BOOKS.items():
        book = live["books"][key]
        assert book["valid"] and not book["crossed"], (key, book)
        _check_levels(book, key)
        assert len(book["bids"]) == len(book["asks"]) == 20, key
        # exact: the very strings the exchange sent (trailing zeros and all), never re-rendered
        sent = _capture_levels(by_label[label][0])
        for side in ("bids", "asks"):
            for p, q in book[side]:
                assert (p, q) in sent, (key, side, p, q)

    for label in LABELS:
        cap = by_label[label][0]
        with Obitui(["--replay", str(cap), "--speed", "0", "--no-ui", "--json", "--duration", "60"],
                    tmp_path / f"replay-{label}.err") as rep:
            replayed = read_json_to_end(rep, 90)[-1][0]
        assert set(replayed["feeds"]) == {label}, (label, replayed["feeds"])
        f, lf = replayed["feeds"][label], live["feeds"][label]
        assert f["gaps"] == 0 and f["parse_errors"] == 0 and f["checksum_failures"] == 0, (label, f)
        if label in BOOKS:
            key = BOOKS[label]
            got, want = replayed["books"][key], live["books"][key]
            assert got["valid"], (label, got)
            assert (got["update_id"], got["bids"], got["asks"]) == (want["update_id"], want["bids"], want["asks"]), \
                (label, got["update_id"], want["update_id"])
        else:
            assert (f["frames"], f["records"]) == (lf["frames"], lf["records"]), (label, f, lf)


# ------------------------------------------------------------------ 4. --sim-fault on the main CLI
@pytest.mark.timeout(120)
def test_sim_fault_on_the_main_command_line_injects_faults(tmp_path: Path) -> None:
    """`--sim --sim-fault gap=0.2`: the simulator drops diffs, so the book feeds' `gaps` and
    `resyncs` rise in the JSON while their books keep recovering (a resync keeps the socket:
    no reconnect). The trade and ticker feeds see no gap. (Without the fault, the recording run
    above sees no gap at all.)"""
    with Obitui(["--sim", "--sim-fault", "gap=0.2", "--no-ui", "--json", "--duration", "10",
                 "--interval", "0.5"], tmp_path / "stderr.txt") as run:
        objs = [o for o, _ in read_json_to_end(run, 60)]
    for label, key in BOOKS.items():
        series = [(o["feeds"][label], o["books"].get(key)) for o in objs if label in o["feeds"]]
        gaps = [f["gaps"] for f, _ in series]
        resyncs = [f["resyncs"] for f, _ in series]
        assert gaps == sorted(gaps) and resyncs == sorted(resyncs), (label, gaps, resyncs)
        assert gaps[-1] >= 2 and resyncs[-1] >= 2, (label, gaps, resyncs)
        assert series[-1][0]["reconnects"] == 0, (label, series[-1][0])
        first = next(k for k, (f, _) in enumerate(series) if f["gaps"] > 0)
        uid_at_gap = series[first][1]["update_id"] if series[first][1] else 0
        recovered = [b for f, b in series[first + 1:]
                     if f["state"] == "connected_synced" and b and b["valid"] and b["update_id"] > uid_at_gap]
        assert recovered, (label, [(f["state"], b and b["valid"]) for f, b in series])
        _check_levels(recovered[-1], key)
    for label in ("Bi-TR", "Bg-PR"):
        assert objs[-1]["feeds"][label]["gaps"] == 0, objs[-1]["feeds"][label]


# ------------------------------------------------------------------ 5. bad option values
BAD = [
    (["--interval", "abc"], "--interval"), (["--interval", "0"], "--interval"),
    (["--interval", "-1"], "--interval"), (["--interval", "nan"], "--interval"),
    (["--interval", "inf"], "--interval"),
    (["--duration", "x"], "--duration"), (["--duration", "0"], "--duration"),
    (["--duration", "-5"], "--duration"), (["--duration", "nan"], "--duration"),
    (["--duration", "inf"], "--duration"),
    (["--metrics-port", "abc"], "--metrics-port"), (["--metrics-port", "-1"], "--metrics-port"),
    (["--metrics-port", "65536"], "--metrics-port"), (["--metrics-port", "1.5"], "--metrics-port"),
    (["--metrics-port"], "--metrics-port"),
    (["--replay", "{tmp}/missing.jsonl"], "{tmp}/missing.jsonl"),
    (["--replay", "{tmp}"], "{tmp}"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_values_exit_2_with_one_error_line(tmp_path: Path, args: list[str], names: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    names = names.replace("{tmp}", str(tmp_path))
    r = run_reaped(["--sim", "--no-ui", *args], report_dir=tmp_path, timeout=30)
    assert r.res.returncode == 2, (r.res.returncode, r.res.stderr[-2000:])
    assert r.res.stdout == ""
    lines = r.res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("obitui: ") and "Traceback" not in r.res.stderr, lines
    assert names in lines[0], lines
    assert r.left == [] and run_segments(r.pid) == []


@pytest.mark.timeout(90)
def test_a_reader_that_goes_away_stops_the_run_quietly(tmp_path: Path) -> None:
    """`obitui --sim --json | head -c 300`: once `head` has its bytes and exits, the next object
    meets a broken pipe; the run stops as on a signal: exit 0, long before its --duration, no
    traceback, every process and segment of it gone."""
    import subprocess
    import sys

    import psutil

    from tests.integration.procs import kill_tree, remove_segments

    def cmdline(p: psutil.Process) -> str:
        try:
            return " ".join(p.cmdline())
        except psutil.Error:
            return ""

    cmd = f"set -o pipefail; {sys.executable} -m obitui --sim --json --duration 60 | head -c 300"
    with open(tmp_path / "stderr.txt", "w") as err:
        shell = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=err,
                                 start_new_session=True)
    seen: list[psutil.Process] = []
    ob: list[psutil.Process] = []
    try:
        t0 = time.monotonic()
        while not ob and time.monotonic() - t0 < 20:
            try:
                seen = psutil.Process(shell.pid).children(recursive=True)
            except psutil.Error:
                break
            ob = [p for p in seen if "-m obitui" in cmdline(p)]
            time.sleep(0.05)
        assert ob, "obitui did not start"
        out = shell.stdout.read() if shell.stdout else b""
        rc = shell.wait(40)
        took = time.monotonic() - t0
        stderr = (tmp_path / "stderr.txt").read_text()
        assert len(out) == 300 and out.startswith(b'{"ts": ')
        assert rc == 0, (rc, stderr[-3000:])
        assert took < 30, f"took {took:.1f} s: the run did not stop when its reader left"
        assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]
        assert "broken pipe" in stderr
        deadline = time.monotonic() + 3.0
        while (left := [k for k in ob if is_alive(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, [(k.pid, cmdline(k)) for k in left]
        assert run_segments(ob[0].pid) == []
    finally:
        if shell.poll() is None:
            kill_tree(psutil.Process(shell.pid), seen, pgid=shell.pid)
            shell.wait(10)
        if shell.stdout:
            shell.stdout.close()
        for p in ob:
            remove_segments(run_segments(p.pid))


@pytest.mark.timeout(60)
def test_a_symbol_the_venue_does_not_list_is_refused_at_start(tmp_path: Path) -> None:
    """`--symbols FOO,BTCUSDT`: the venue refuses the symbol query, its market list (asked only
    then) lacks FOO, so the run ends at start with one line naming the venue and the symbol
    (exit 1), instead of a Binance book that waits forever for a first event; nothing is left."""
    r = run_reaped(["--sim", "--symbols", "FOO,BTCUSDT", "--no-ui", "--duration", "20"],
                   report_dir=tmp_path, timeout=45)
    assert r.res.returncode == 1, (r.res.returncode, r.res.stderr[-2000:])
    assert "obitui: binance does not list FOO (check --symbols" in r.res.stderr, r.res.stderr[-2000:]
    assert "Traceback" not in r.res.stderr and r.res.stdout == ""
    assert r.left == [] and run_segments(r.pid) == []

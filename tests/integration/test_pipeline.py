"""The whole product as users run it: real processes, real /dev/shm, the simulator on loopback."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_PREFIX
from obitui.config import load_config
from obitui.core.shm import Segment
from obitui.core.stats import BookSlotWriter, FeedState, StatsBlock
from obitui.supervisor import Supervisor, clean_stale_segments, our_segments

pytestmark = pytest.mark.timeout(120)
UID = os.getuid()


def run_segments(pid: int) -> list[str]:
    return [s for s in our_segments() if s.startswith(f"obitui-{UID}-r{pid}x")]


@pytest.fixture
def sim_proc() -> Iterator[tuple[str, str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "sim", "--seed", "4", "--rate", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        b = dict(kv.split("=", 1) for kv in proc.stdout.readline().split()[1:])  # type: ignore[union-attr]
        g = dict(kv.split("=", 1) for kv in proc.stdout.readline().split()[1:])  # type: ignore[union-attr]
        yield b["ws"], b["rest"], g["ws"]
        broken = venue_limits_broken(b["rest"])
    finally:
        proc.terminate()
        proc.wait(10)
    assert broken == {}, f"the fleet broke limits of the real venues: {broken}"


def venue_limits_broken(rest: str) -> dict[str, int]:
    """What the simulator counted as breaches of the real venues' limits (rates, weights)."""
    with urllib.request.urlopen(f"{rest}/sim/stats", timeout=5) as r:
        return json.loads(r.read())["violations"]


def truth(rest: str, venue: str, update_id: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"{rest}/sim/truth?venue={venue}&symbol=BTCUSDT&id={update_id}", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError:
        return None


def test_sim_no_ui_json_end_to_end() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--json",
                             "--duration", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    reached: dict[str, float] = {}
    want = {"Bi-OB": "connected_synced", "Bi-TR": "connected", "Bg-OB": "connected_synced", "Bg-PR": "live"}
    last = None
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            obj = json.loads(line)
            last = obj
            for label, st in want.items():
                if obj["feeds"].get(label, {}).get("state") == st and label not in reached:
                    reached[label] = time.monotonic() - t0
            for key, book in obj["books"].items():
                assert -1.0 <= book["obi"] <= 1.0
                assert not book["crossed"], key
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert set(reached) == set(want), (reached, last)
    assert max(reached.values()) < 10.0, reached
    assert set(last["books"]) == {"binance:BTCUSDT", "bitget:BTCUSDT"}
    assert all(b["valid"] and len(b["bids"]) == 20 and len(b["asks"]) == 20 for b in last["books"].values())
    for f in last["feeds"].values():
        assert set(f) >= {"state", "reason", "frames", "gaps", "resyncs", "reconnects", "ring_fill", "ring_drops"}
        assert 0.0 <= f["ring_fill"] <= 1.0
    assert run_segments(proc.pid) == []
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "Traceback" not in err


def test_engine_books_equal_the_truth(sim_proc: tuple[str, str, str], tmp_path: Path) -> None:
    bws, brest, gws = sim_proc
    cfg = tmp_path / "obitui.toml"
    cfg.write_text(f"""
obi_levels = 10
[[feeds]]
label = "Bi-OB"
venue = "binance"
channel = "depth"
ws_url = "{bws}"
rest_url = "{brest}"
[[feeds]]
label = "Bg-OB"
venue = "bitget"
channel = "books"
ws_url = "{gws}"
""")
    res = subprocess.run([sys.executable, "-m", "obitui", "--config", str(cfg), "--no-ui", "--json",
                          "--duration", "6", "--interval", "0.5"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    final = json.loads(res.stdout.splitlines()[-1])
    for key, venue in (("binance:BTCUSDT", "binance"), ("bitget:BTCUSDT", "bitget")):
        book = final["books"][key]
        assert book["valid"]
        t = truth(brest, venue, book["update_id"])
        assert t is not None
        assert book["bids"] == t["bids"][:20] and book["asks"] == t["asks"][:20], key


def test_status_line_contract() -> None:
    res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--duration", "5",
                          "--interval", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    lines = res.stdout.strip().splitlines()
    pat = re.compile(r"^\[Main Status\] Bi-OB: [a-z_]+( \(OBI:-?\d\.\d{4}\))? \| Bi-TR: [a-z_]+ \| "
                     r"Bg-OB: [a-z_]+( \(OBI:-?\d\.\d{4}\))? \| Bg-PR: [a-z_]+$")
    assert lines and all(pat.match(line) for line in lines), lines
    assert re.search(r"Bi-OB: connected_synced \(OBI:-?\d\.\d{4}\) \| Bi-TR: connected \| "
                     r"Bg-OB: connected_synced \(OBI:-?\d\.\d{4}\) \| Bg-PR: live", lines[-1])


@pytest.mark.parametrize("content,key", [
    ("obi_levels = 'x'", "obi_levels"),
    ("[[feeds]]\nlabel='A'\nvenue='kraken'\nchannel='depth'", "feeds[0].venue"),
    ("[[feeds]]\nlabel='A'\nvenue='binance'\nchannel='depth'\nbogus=1", "feeds[0].bogus"),
    ("[engine]\nwait='nap'", "engine.wait"),
    ("this is = = not toml", "not valid TOML"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, content: str, key: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(content)
    res = subprocess.run([sys.executable, "-m", "obitui", "--config", str(p), "--no-ui"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and key in res.stderr


def _wait(pred, timeout: float, what: str, sup: Supervisor) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not pred():
        sup.poll()
        if time.monotonic() - t0 > timeout:
            feeds = [(v.label, v.state.word, v.reason, v.counters["gaps"], v.counters["resyncs"],
                      v.counters["ring_drops"]) for v in
                     (sup.stats.read_feed(i) for i in range(len(sup.cfg.feeds))) if v is not None]
            books = [(b.exchange, b.valid, b.update_id) for b in
                     (sup.stats.read_book(j) for j in range(sup.stats.n_books)) if b is not None]
            raise AssertionError(f"timed out waiting for {what}: feeds {feeds}, books {books}, "
                                 f"processes {sup.pids()}")
        time.sleep(0.05)


def _synced(sup: Supervisor) -> bool:
    assert sup.stats is not None
    views = [sup.stats.read_feed(i) for i in range(len(sup.cfg.feeds))]
    books = [sup.stats.read_book(j) for j in range(2)]
    return (all(v is not None and v.state in (FeedState.CONNECTED_SYNCED, FeedState.CONNECTED, FeedState.LIVE)
                for v in views) and all(b is not None and b.valid for b in books))


@pytest.fixture
def fleet() -> Iterator[Supervisor]:
    cfg = load_config(None)
    sup = Supervisor(cfg)
    try:
        urls = sup.start_simulator([], seed=2)
        sup.cfg = cfg.with_sim(*urls)
        sup.start()
        _wait(lambda: _synced(sup), 15, "the fleet to sync", sup)
        yield sup
        broken = venue_limits_broken(urls[1])
    finally:
        sup.stop()
    assert run_segments(os.getpid()) == []
    assert broken == {}, f"the fleet broke limits of the real venues: {broken}"


def test_kill_9_a_feed_and_the_engine(fleet: Supervisor) -> None:
    sup = fleet
    # every segment of the run: private, ours, named per user and run
    import stat
    assert len(sup.created) == 5
    for name in sup.created:
        assert re.fullmatch(rf"obitui-{UID}-r{os.getpid()}x[0-9a-f]{{6}}-(stats|ring[0-3])", name), name
        st = os.lstat(f"/dev/shm/{name}")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    pid = sup.pids()["Bi-OB"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    _wait(lambda: sup.pids().get("Bi-OB", pid) != pid, 10, "Bi-OB restarted", sup)
    _wait(lambda: _synced(sup) and sup.stats.read_book(0).update_id > 0, 10, "Bi-OB synced again", sup)
    assert time.monotonic() - t0 < 10
    epid = sup.pids()["engine"]
    os.kill(epid, signal.SIGKILL)
    t0 = time.monotonic()
    _wait(lambda: sup.pids().get("engine", epid) != epid, 10, "engine restarted", sup)
    _wait(lambda: sup.stats.read_engine().pid != epid and _synced(sup), 10, "books valid again", sup)
    assert time.monotonic() - t0 < 10


def test_paused_engine_fills_a_ring_then_recovers() -> None:
    cfg = load_config(None)
    for f in cfg.feeds:
        f.ring_capacity = 1 << 16
    # a pause, not a hang: the supervisor's watchdog (tested in test_orphans) must not end it
    cfg.heartbeat_stale = 120.0
    sup = Supervisor(cfg)
    try:
        urls = sup.start_simulator([], seed=3, rate=400)
        sup.cfg = cfg.with_sim(*urls)
        rest = urls[1]
        sup.start()
        _wait(lambda: _synced(sup), 15, "sync", sup)
        epid = sup.pids()["engine"]
        os.kill(epid, signal.SIGSTOP)
        try:
            # @depth@100ms pushes 10 diffs/s (~6 KB/s at 400 steps/s): ~11 s to fill 64 KiB
            _wait(lambda: sup.ring_fill()[0][1] > 0, 40, "drops on the Bi-OB ring", sup)
        finally:
            os.kill(epid, signal.SIGCONT)
        _wait(lambda: sup.stats.read_feed(0).counters["ring_drops"] > 0, 5, "drops counted by the feed", sup)

        def book_true() -> bool:
            b = sup.stats.read_book(0)
            if not b.valid:
                return False
            t = truth(rest, "binance", b.update_id)
            if t is None:
                return False
            from obitui.headless import book_json
            f = sup.cfg.feeds[0]
            mine = book_json(b, f.digits, f.qdigits)
            return mine["bids"] == t["bids"][:20] and mine["asks"] == t["asks"][:20]
        _wait(book_true, 30, "the engine's book to equal the truth again", sup)
        # the feed publishes its counters every 100 ms: the resync may show after the book does
        _wait(lambda: sup.stats.read_feed(0).counters["resyncs"] >= 1, 5, "the resync counted", sup)
        assert venue_limits_broken(rest) == {}
    finally:
        sup.stop()


def _seqlock_writer(name: str, stop_at: float) -> None:
    blk = StatsBlock.attach(name)
    w = BookSlotWriter(blk, 0, "X", "binance", "BTCUSDT")
    k = 0
    while time.monotonic() < stop_at:
        k += 1
        w.publish(valid=True, crossed=False, update_id=k, pdec=2, qdec=2,
                  bids=[(k, k)] * 20, asks=[(k + 1, k)] * 20, obi=k / 1e9,
                  records_applied=k, invalidations=k)
    blk.close()


def test_seqlock_reads_are_consistent_under_heavy_writes() -> None:
    name = f"{TEST_PREFIX}-seqlock"
    blk = StatsBlock.create(name, 1, 1)
    proc = mp.get_context("spawn").Process(target=_seqlock_writer, args=(name, time.monotonic() + 4))
    try:
        proc.start()
        seen = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:
            v = blk.read_book(0)
            if v is None or v.update_id == 0:
                continue
            k = v.update_id
            assert v.records_applied == k and v.invalidations == k and v.obi == k / 1e9
            assert v.bids == [(k, k)] * 20 and v.asks == [(k + 1, k)] * 20
            seen += 1
        assert seen > 1000
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        blk.close()
        Segment.unlink(name)


def test_stale_segments_of_dead_runs_are_removed_live_ones_kept() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    dead_name = f"obitui-{UID}-r{dead}x00aa00-ring0"
    live_name = f"obitui-{UID}-r{os.getpid()}x00bb00-ring0"
    for n in (dead_name, live_name):
        Segment.create(n, 4096).close()
    try:
        removed, live = clean_stale_segments()
        assert dead_name in removed and live_name in live
        assert not Path("/dev/shm", dead_name).exists() and Path("/dev/shm", live_name).exists()
    finally:
        Segment.unlink(dead_name)
        Segment.unlink(live_name)


def test_a_segment_gone_after_the_listing_does_not_stop_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start and end side by side: a segment listed, then removed before it is looked at (its
    run ended, or another start removed it first), is passed over, not an error of this start."""
    import obitui.supervisor as supervisor
    gone = f"obitui-{UID}-r{os.getpid()}x00cc00-ring0"       # never created: gone by the look
    listdir = os.listdir
    monkeypatch.setattr(supervisor.os, "listdir", lambda d: [gone, *listdir(d)])
    removed, live = clean_stale_segments()
    assert gone not in removed and gone not in live


def test_replay_of_real_recordings_end_to_end(test_data: Path, tmp_path: Path) -> None:
    from obitui.capture import CaptureRecord, convert_cryptofeed, write_capture
    recs: list[CaptureRecord] = []
    url = "wss://stream.binance.com:9443/stream?streams=nknusdt@depth@100ms"
    for r in convert_cryptofeed(test_data / "recorded" / "BINANCE.http.0.0"):
        if "NKNUSDT" in r.url:
            recs.append(r)
    for r in convert_cryptofeed(test_data / "recorded" / "BINANCE.ws.1.0"):
        if '"stream":"nknusdt@depth@100ms"' in r.data:
            recs.append(CaptureRecord(r.t, r.venue, r.kind, url, r.data))
    n_books = 0
    for r in convert_cryptofeed(test_data / "recorded" / "BITGET.ws.1.0"):
        if '"channel":"books","instId":"EOSUSDT"}' in r.data:
            recs.append(r)
            n_books += 1
    cap = tmp_path / "session.jsonl.zst"
    write_capture(cap, sorted(recs, key=lambda r: r.t))
    res = subprocess.run([sys.executable, "-m", "obitui", "--replay", str(cap), "--speed", "0", "--no-ui",
                          "--json", "--duration", "60"], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads(res.stdout.splitlines()[-1])
    assert set(final["feeds"]) == {"Bi-OB", "Bg-OB"}
    bi, bg = final["feeds"]["Bi-OB"], final["feeds"]["Bg-OB"]
    assert bi["gaps"] == 0 and bi["parse_errors"] == 0
    assert bg["gaps"] == 0 and bg["checksum_failures"] == 0 and bg["frames"] >= n_books
    assert final["books"]["binance:NKNUSDT"]["valid"] and final["books"]["bitget:EOSUSDT"]["valid"]
    assert final["books"]["binance:NKNUSDT"]["update_id"] > 499869752

"""The simulator's `reorder` fault on connections that carry many markets: it swaps two
consecutive diffs of the SAME stream (a Binance depth stream, a Bitget books channel), so the
swap shows in that stream's own sequence however many other markets share the connection.
A diff still held back when its subscription or connection ends is dropped (counted)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from obitui.sim.conn import Conn
from obitui.sim.faults import Faults

SYMBOLS = ("BTCUSDT", "ETHUSDT", "PEPEUSDT", "JOPUUSDT", "DSOUSDT")
REORDER = 0.2
WANT_SWAPS = 2          # per stream
COLLECT_S = 25.0        # at most; each stream gets ~10 diffs/s


class SimProc:
    def __init__(self, proc: subprocess.Popen[str], binance_ws: str, binance_rest: str,
                 bitget_ws: str) -> None:
        self.proc = proc
        self.binance_ws = binance_ws
        self.binance_rest = binance_rest
        self.bitget_ws = bitget_ws

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{self.binance_rest}/sim/stats") as r:
                assert r.status == 200
                return orjson.loads(await r.read())


@pytest.fixture
def sim_proc() -> Iterator[SimProc]:
    """`obitui sim` in a process of its own on loopback, reorder on every market; stopped (and
    killed if it will not stop) at the end, and bound to this process's life (--parent-pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "obitui", "sim", "--host", "127.0.0.1", "--symbols", ",".join(SYMBOLS),
         "--seed", "11", "--rate", "40", "--depth", "200", "--minor-depth", "100",
         "--sim-fault", f"reorder={REORDER}", "--parent-pid", str(os.getpid())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()      # binance ws=... rest=...
        second = proc.stdout.readline().split()     # bitget ws=...
        assert first[:1] == ["binance"] and second[:1] == ["bitget"], (first, second)
        fields = dict(w.partition("=")[::2] for w in first[1:])
        bitget_ws = second[1].partition("=")[2]
        assert all(u.startswith(("ws://127.0.0.1:", "http://127.0.0.1:"))
                   for u in (fields["ws"], fields["rest"], bitget_ws))
        yield SimProc(proc, fields["ws"], fields["rest"], bitget_ws)
    finally:
        proc.terminate()
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
        if proc.stdout is not None:
            proc.stdout.close()
    assert rc == 0


def swaps_of(seq: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The pairs (a, b) of consecutive frames of one stream where b goes backwards."""
    return [(a, b) for a, b in zip(seq, seq[1:]) if b[0] < a[0]]


# ------------------------------------------------------------------ Binance
@pytest.mark.timeout(60)
async def test_binance_reorder_is_visible_in_each_streams_own_sequence(sim_proc: SimProc) -> None:
    """One combined stream of five depth streams (and their trades): in each depth stream's own
    (U, u) sequence, diffs come swapped (a frame whose U goes back below the previous one's),
    the swapped frame being exactly the previous diff of that stream; undone, the swaps leave
    each stream's chain whole (reorder alone loses nothing)."""
    names = [f"{s.lower()}@depth@100ms" for s in SYMBOLS]
    streams = "/".join(names + [f"{s.lower()}@trade" for s in SYMBOLS])
    per: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    async with websockets.connect(f"{sim_proc.binance_ws}/stream?streams={streams}", max_size=None) as ws:
        deadline = time.monotonic() + COLLECT_S
        while time.monotonic() < deadline:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5.0))
            d = msg["data"]
            if d["e"] != "depthUpdate":
                continue
            assert msg["stream"] == f"{d['s'].lower()}@depth@100ms"
            per[msg["stream"]].append((d["U"], d["u"]))
            if all(len(swaps_of(v)) >= WANT_SWAPS for v in per.values()):
                break
    for name, seq in per.items():
        swaps = swaps_of(seq)
        assert len(swaps) >= WANT_SWAPS, (name, len(seq), swaps)
        for a, b in swaps:
            # b was held back: it is the diff right before a in this stream
            assert b[1] + 1 == a[0], (name, a, b)
        chain = sorted(seq)[:-1]        # the last one may still have its held diff in flight
        assert all(y[0] == x[1] + 1 for x, y in zip(chain, chain[1:])), name
    counters = (await sim_proc.stats())["counters"]
    assert counters.get("injected_reorder", 0) >= WANT_SWAPS * len(names)
    assert counters.get("injected_gap", 0) == counters.get("injected_duplicate", 0) == 0


# ------------------------------------------------------------------ Bitget
@pytest.mark.timeout(60)
async def test_bitget_reorder_is_visible_in_each_instids_own_sequence(sim_proc: SimProc) -> None:
    """One connection with the books (and trade) channels of five markets: in each instId's own
    books updates, seq goes backwards, the late update being exactly the one whose seq the
    previous update's pseq names; the chain, put back in order, is whole."""
    async with websockets.connect(sim_proc.bitget_ws, max_size=None) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "args": [
            {"instType": "SPOT", "channel": ch, "instId": s} for s in SYMBOLS
            for ch in ("books", "trade")]}).decode())
        per: dict[str, list[tuple[int, int]]] = {s: [] for s in SYMBOLS}
        snapshots: set[str] = set()
        deadline = time.monotonic() + COLLECT_S
        while time.monotonic() < deadline:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5.0))
            if "event" in msg:
                assert msg["event"] == "subscribe", msg
                continue
            arg = msg["arg"]
            if arg["channel"] != "books":
                continue
            inst = arg["instId"]
            d = msg["data"][0]
            if msg["action"] == "snapshot":
                assert inst not in snapshots and not per[inst]
                snapshots.add(inst)
                continue
            assert inst in snapshots
            per[inst].append((int(d["seq"]), int(d["pseq"])))
            if all(len(swaps_of(v)) >= WANT_SWAPS for v in per.values()):
                break
    for inst, seq in per.items():
        swaps = swaps_of(seq)
        assert len(swaps) >= WANT_SWAPS, (inst, len(seq), swaps)
        for a, b in swaps:
            assert b[0] == a[1], (inst, a, b)     # b is the update a follows
        chain = sorted(seq)[:-1]
        assert all(y[1] == x[0] for x, y in zip(chain, chain[1:])), inst
    counters = (await sim_proc.stats())["counters"]
    assert counters.get("injected_reorder", 0) >= WANT_SWAPS * len(SYMBOLS)


# ------------------------------------------------------------------ the held diff's end
class FakeWs:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        pass


@pytest.mark.timeout(10)
async def test_conn_holds_one_diff_per_stream_and_drops_it_when_the_stream_ends() -> None:
    """Conn alone, reorder certain: the diffs of two interleaved streams are swapped within
    each stream (never across), non-diff frames pass untouched, and a held diff whose stream
    is unsubscribed or whose connection closes is dropped and counted."""
    faults = Faults(reorder=1.0)
    counters: dict[str, int] = {}
    ws = FakeWs()
    conn = Conn(ws, faults, counters, seed=1, peer="test")  # type: ignore[arg-type]
    for i in range(1, 5):
        conn.send_data(f"a{i}", diff=True, stream="a")
        conn.send_data(f"b{i}", diff=True, stream="b")
        conn.send_data(f"t{i}")                          # a trade: never held
    conn.send_data("a5", diff=True, stream="a")
    conn.send_data("b5", diff=True, stream="b")
    await asyncio.sleep(0.05)
    assert ws.sent == ["t1", "a2", "a1", "b2", "b1", "t2", "t3", "a4", "a3", "b4", "b3", "t4"]
    assert counters["injected_reorder"] == 6 and set(conn.held) == {"a", "b"}
    conn.drop_held("a")                                  # stream a unsubscribed
    assert counters["reorder_held_dropped"] == 1 and set(conn.held) == {"b"}
    conn.send_data("a6", diff=True, stream="a")          # a new subscription of a: held
    conn.drop_held("zzz")                                # nothing held: nothing counted
    assert counters["reorder_held_dropped"] == 1
    conn.close_soon()
    assert counters["reorder_held_dropped"] == 3 and not conn.held
    conn.send_data("b6", diff=True, stream="b")
    await conn.finish()
    assert counters["reorder_held_dropped"] == 3
    assert "a5" not in ws.sent and "b5" not in ws.sent and "a6" not in ws.sent

"""Hostile frames over a real socket: a loopback WebSocket server sends mutated real frames
(from tests/data) to each real feed. The feed never dies, every frame is counted in exactly
one fate (accounting invariant), and nothing is "unhandled"."""
from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import TEST_PREFIX
from obitui.accounting import feed_violations
from obitui.config import default_feeds
from obitui.core.ring import Ring
from obitui.core.shm import Segment
from obitui.core.stats import FEED_COUNTERS, FRAME_FATES, FeedSlotWriter, StatsBlock
from obitui.feeds.process import make_feed

# pytest-xdist: with the soak and the benchmarks, on one worker in turn
pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("heavy")]
# Bitget books answers a broken frame with a resync (unsubscribe + subscribe) and sends at most
# 9 client messages/s per connection (the venue cuts at 10): hostile frames cost it ~0.2 s each
FRAMES = {"Bi-OB": 1500, "Bi-TR": 1500, "Bg-OB": 300, "Bg-PR": 1500}


def base_frames(data: Path, label: str) -> list[str]:
    if label in ("Bi-OB", "Bi-TR"):
        want = "@depth" if label == "Bi-OB" else "@aggTrade"
        out = []
        for line in (data / "recorded/BINANCE.ws.1.0").read_text().splitlines():
            m = re.match(r"^[0-9.]+: (\{.*\})$", line)
            if m and want in m.group(1):
                out.append(m.group(1))
        return out
    if label == "Bg-OB":
        return [json.dumps(json.loads((data / f"vectors/ws_public_depth_{k}.json").read_text()))
                for k in ("snapshot", "update")]
    return ['{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":'
            '[{"instId":"BTCUSDT","lastPr":"64000.01","bidPr":"64000.00","askPr":"64000.02","bidSz":"0.5",'
            '"askSz":"1.25","ts":"1700000000000"}],"ts":1700000000001}']


HOSTILE_VALUES: list[Any] = [None, True, -1, 0, 2**63, 2**64 + 1, -(2**70), 1e308, "NaN", "1e5", "-0.1", "",
                             "9" * 40, "0." + "0" * 30 + "1", [], {}, [[]], [["1"]], [["1", "2", "3"]],
                             [{"p": 1}], "\u0000", "\ud7ff" * 3, [["0.1", None]], [["abc", "1"]]]


def mutate(rng: random.Random, frame: str) -> str | bytes:
    r = rng.random()
    if r < 0.15:                                     # truncated
        return frame[: rng.randrange(len(frame))]
    if r < 0.25:                                     # bytes flipped, maybe not UTF-8 any more
        b = bytearray(frame.encode())
        for _ in range(rng.randint(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if r < 0.30:
        return rng.choice(["", "null", "[]", "{}", "1", '"x"', "[" * 5000 + "]" * 5000, "pong", "ping",
                           '{"data": 5}', '{"arg": {}, "data": [null]}', '{"event": "error", "code": 30016}'])
    try:
        obj = json.loads(frame)
    except ValueError:
        return frame
    # replace one value somewhere in the object by a hostile one
    paths: list[tuple[Any, Any]] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append((o, k))
                walk(v)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                paths.append((o, i))
                walk(v)
    walk(obj)
    for _ in range(rng.randint(1, 3)):
        if paths:
            parent, key = rng.choice(paths)
            parent[key] = rng.choice(HOSTILE_VALUES)
    return json.dumps(obj)


@pytest.mark.parametrize("label", ["Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"])
async def test_hostile_frames_never_kill_a_feed(test_data: Path, label: str) -> None:
    rng = random.Random(f"fuzz-{label}")
    bases = base_frames(test_data, label)
    assert bases
    n_frames = FRAMES[label]
    frames = [mutate(rng, rng.choice(bases)) if rng.random() < 0.7 else rng.choice(bases)
              for _ in range(n_frames)]
    sent = asyncio.Event()

    async def handler(ws: Any) -> None:
        for f in frames:
            await ws.send(f)
        sent.set()
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        base = next(f for f in default_feeds() if f.label == label)
        from dataclasses import replace
        cfg = replace(base, ws_url=f"ws://127.0.0.1:{port}", rest_url="http://127.0.0.1:9",
                      stale_after=60.0)
        prefix = f"{TEST_PREFIX}-fuzz-{uuid.uuid4().hex[:8]}"
        stats = StatsBlock.create(prefix + "-stats", 1, 1)
        ring = Ring.create(prefix + "-ring", 1 << 20)
        consumer = Ring.attach(prefix + "-ring")
        try:
            slot = FeedSlotWriter(stats, 0, cfg.label, cfg.venue, cfg.stream_name, cfg.symbol, ring.name)
            feed = make_feed(cfg, 0, ring, slot, seed=3)
            task = asyncio.get_running_loop().create_task(feed.run())
            # every frame arrives (pongs and an exact "pong" text are counted apart on Bitget)
            for _ in range(1000):
                await asyncio.sleep(0.05)
                consumer.pop_batch(4096)
                c = slot.get("frames") + slot.get("pongs")
                if sent.is_set() and c >= n_frames or task.done():
                    break
            assert not task.done(), task.exception() if task.done() else None
            counters = dict(zip(FEED_COUNTERS, slot.counters))
            feed.stop.set()
            feed.skip_backoff.set()
            feed.request_restart_if_connected()
            await asyncio.wait_for(task, 10)
            final = dict(zip(FEED_COUNTERS, slot.counters))
        finally:
            consumer.close()
            ring.close()
            stats.close()
            Ring.unlink(ring.name)
            Segment.unlink(prefix + "-stats")
    assert feed_violations(label, counters) == []
    assert feed_violations(label, final, settled=True) == []
    # exact accounting: one connection (a reconnect would have lost or repeated frames), and
    # every frame sent counted once, as a frame or (Bitget's exact "pong" text) as a pong
    nonzero = str({k: v for k, v in counters.items() if v})
    assert counters["reconnects"] == 0 and final["reconnects"] == 0, nonzero
    pongs = sum(f == "pong" for f in frames) if label.startswith("Bg-") else 0
    assert counters["pongs"] == final["pongs"] == pongs, nonzero
    assert counters["frames"] == final["frames"] == n_frames - pongs, nonzero
    assert sum(final[k] for k in FRAME_FATES) == n_frames - pongs and final["frames_pending"] == 0, final
    assert counters["frames_rejected"] > n_frames * 0.2, counters
    assert counters["unhandled"] == 0
    assert counters["frame_errors"] == 0, "a handler raised: the parsers must reject it first (see the log)"

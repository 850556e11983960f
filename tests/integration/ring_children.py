"""Process bodies for the cross-process ring tests (importable by spawned children)."""
from __future__ import annotations

import time

from obitui.bench import _ringloops as loops
from obitui.core.ring import Ring


def produce_random(name: str, count: int, seed: int, max_size: int) -> None:
    ring = Ring.attach(name, role="producer")
    loops.produce_random(ring, count, seed, max_size)
    ring.close()


def produce_python(name: str, count: int) -> None:
    ring = Ring.attach(name, role="producer")
    for i in range(count):
        payload = i.to_bytes(8, "little") * (i % 9)
        while not ring.try_push(payload, i % 3):
            time.sleep(0)
    ring.close()


def produce_forever(name: str, started: object) -> None:
    ring = Ring.attach(name, role="producer")
    started.set()  # type: ignore[attr-defined]
    i = 0
    while True:
        payload = i.to_bytes(8, "little") * (1 + i % 40)
        if ring.try_push(payload):
            i += 1

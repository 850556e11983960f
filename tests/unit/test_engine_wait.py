"""The engine's futex wait (``ring.sleep_until_records``) against producers in another process:
no sleep when a ring already holds records, a wake-up by a push + ``wake_engine_if_sleeping``,
the timeout when nothing comes, the sleeping flag cleared after each call; and the wait knobs
of the config (``[engine] spin_us / nap_us``)."""
from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obitui.config import Config, ConfigError, engine_nap_us, engine_spin_us, load_config
from obitui.core.ring import Ring, sleep_until_records
from obitui.core.shm import Segment
from obitui.core.stats import ENGINE_SLEEPING_OFF, StatsBlock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def parts(shm_name: str) -> Iterator[tuple[StatsBlock, Ring, Ring]]:
    blk = StatsBlock.create(f"{shm_name}-st", 1, 1)
    prod = Ring.create(f"{shm_name}-r0", 1 << 16)
    cons = Ring.attach(prod.name)
    try:
        yield blk, prod, cons
    finally:
        cons.close()
        prod.close()
        blk.close()
        for p in Path("/dev/shm").glob(f"{shm_name}*"):
            Segment.unlink(p.name)


def _push_later(stats_name: str, ring_name: str, delay: float) -> None:
    blk = StatsBlock.attach(stats_name)
    ring = Ring.attach(ring_name, role="producer")
    time.sleep(delay)
    ring.push(b"x" * 24, kind=1)
    blk.wake_engine_if_sleeping()
    ring.close()
    blk.close()


def _sleeping(blk: StatsBlock) -> int:
    return blk.seg.load_u32(blk.engine_offset + ENGINE_SLEEPING_OFF)


def test_no_sleep_when_records_wait(parts: tuple[StatsBlock, Ring, Ring]) -> None:
    blk, prod, cons = parts
    prod.push(b"y" * 16, kind=1)
    sleeping, wake = blk.engine_wait_offsets()
    t = time.monotonic()
    assert sleep_until_records(blk.seg, sleeping, wake, [cons], 30.0) is True
    assert time.monotonic() - t < 10.0          # did not wait for the 30 s timeout
    assert _sleeping(blk) == 0
    assert len(cons.pop_batch(8)) == 1


def test_timeout_when_nothing_comes(parts: tuple[StatsBlock, Ring, Ring]) -> None:
    blk, _, cons = parts
    sleeping, wake = blk.engine_wait_offsets()
    t = time.monotonic()
    assert sleep_until_records(blk.seg, sleeping, wake, [cons], 0.2) is False
    assert time.monotonic() - t >= 0.19
    assert _sleeping(blk) == 0


def test_a_producer_in_another_process_wakes_it(parts: tuple[StatsBlock, Ring, Ring]) -> None:
    blk, prod, cons = parts
    name = prod.name
    prod.close()                     # the child process is the producer now
    sleeping, wake = blk.engine_wait_offsets()
    child = mp.get_context("spawn").Process(target=_push_later, args=(blk.seg.name, name, 0.5))
    child.start()
    try:
        t = time.monotonic()
        woke = False
        while time.monotonic() - t < 20.0 and not woke:
            sleep_until_records(blk.seg, sleeping, wake, [cons], 20.0)   # woken, not timed out
            woke = bool(cons.pop_batch(8))
        assert woke
        assert time.monotonic() - t < 15.0
        assert _sleeping(blk) == 0
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def test_wait_knobs(tmp_path: Path) -> None:
    cfg = Config()
    assert (engine_spin_us(cfg), engine_nap_us(cfg)) == (0, 0)         # block: sleep at once
    cfg.engine_wait = "batch"
    assert (engine_spin_us(cfg), engine_nap_us(cfg)) == (0, 200)
    p = tmp_path / "c.toml"
    p.write_text('[engine]\nwait = "block"\nspin_us = 40\nnap_us = 150\n')
    cfg = load_config(str(p))
    assert (engine_spin_us(cfg), engine_nap_us(cfg)) == (40, 150)
    p.write_text('[engine]\nspin_us = 1000000\n')
    with pytest.raises(ConfigError, match="engine.spin_us"):
        load_config(str(p))

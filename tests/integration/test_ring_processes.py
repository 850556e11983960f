"""The ring between real processes over /dev/shm: order, byte-exact integrity, wrap padding,
and a producer killed mid-stream."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TEST_PREFIX
from obitui.bench import _ringloops as loops
from obitui.core.ring import Ring, owned_ring
from tests.integration import ring_children

CTX = mp.get_context("spawn")


def _join(p: mp.process.BaseProcess) -> None:
    p.join(60)
    if p.is_alive():
        p.kill()
        p.join(5)
        pytest.fail("child process did not finish")
    assert p.exitcode == 0


@pytest.mark.timeout(300)
@pytest.mark.xdist_group("heavy")    # pytest-xdist: with the soak and the fuzz, on one worker in turn
@given(seed=st.integers(0, 2**32), max_size=st.sampled_from([0, 7, 64, 600, 3000, 8000]),
       capacity_log2=st.sampled_from([13, 16, 20]))
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_millions_of_random_records_cross_process(seed: int, max_size: int,
                                                  capacity_log2: int) -> None:
    capacity = 1 << capacity_log2
    max_size = min(max_size, capacity // 2 - 16)
    count = 1_000_000
    name = f"{TEST_PREFIX}-xproc"
    with owned_ring(name, capacity):
        consumer = Ring.attach(name)
        child = CTX.Process(target=ring_children.produce_random,
                            args=(name, count, seed, max_size))
        try:
            child.start()
            got, err = loops.consume_random(consumer, count, seed, max_size, 120.0)
            assert err is None, f"after {got} records: {err}"
            assert got == count
            assert consumer.pop() is None
            _join(child)
            assert consumer.drops == 0 and consumer.popped == count
        finally:
            if child.is_alive():
                child.kill()
                child.join(5)
            consumer.close()


@pytest.mark.timeout(120)
def test_python_api_cross_process(shm_name: str) -> None:
    count = 200_000
    with owned_ring(shm_name, 1 << 14) as _, Ring.attach(shm_name) as r:
        child = CTX.Process(target=ring_children.produce_python, args=(shm_name, count))
        child.start()
        try:
            i = 0
            while i < count:
                for kind, seq, payload in r.pop_batch(256):
                    assert (kind, seq) == (i % 3, i + 1)
                    assert payload == i.to_bytes(8, "little") * (i % 9)
                    i += 1
                if not child.is_alive() and r.used_bytes() == 0 and i < count:
                    pytest.fail(f"producer exited after {i} records")
            _join(child)
        finally:
            if child.is_alive():
                child.kill()
                child.join(5)


@pytest.mark.timeout(120)
def test_producer_killed_mid_stream_leaves_only_whole_records(shm_name: str) -> None:
    with owned_ring(shm_name, 1 << 16) as _, Ring.attach(shm_name) as r:
        started = CTX.Event()
        child = CTX.Process(target=ring_children.produce_forever, args=(shm_name, started))
        child.start()
        try:
            assert started.wait(30)
            i = 0
            while i < 300_000:
                for _, seq, payload in r.pop_batch(512):
                    assert seq == i + 1
                    assert payload == i.to_bytes(8, "little") * (1 + i % 40)
                    i += 1
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            for _, seq, payload in r.pop_batch(1_000_000):
                assert seq == i + 1
                assert payload == i.to_bytes(8, "little") * (1 + i % 40)
                i += 1
            assert r.pop() is None
            assert r.stats()["corrupt"] == 0
        finally:
            if child.is_alive():
                child.kill()
                child.join(5)

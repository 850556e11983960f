"""The SPSC ring in one process over real /dev/shm segments: API, wrap padding, full ring,
corruption and attach refusals."""
from __future__ import annotations

import mmap
import os
import struct
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TEST_PREFIX
from obitui.core.ring import HEADER_SIZE, PADDING_KIND, Ring, RingError, owned_ring

SHM = Path("/dev/shm")


def _patch(name: str, offset: int, data: bytes) -> None:
    """Write bytes into a segment from outside the ring, as a buggy or hostile process would."""
    fd = os.open(SHM / name, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as m:
            m[offset:offset + len(data)] = data
    finally:
        os.close(fd)


def test_push_pop_basics(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        assert w.capacity == 4096 and r.capacity == 4096
        assert r.pop() is None
        assert w.push(b"hello", 7)
        assert w.push(b"", 0)
        assert w.push(bytearray(b"ba"), 1)
        assert w.push(memoryview(b"mv"), 2)
        assert w.seq == 4
        assert r.used_bytes() == w.used_bytes() == 24 + 16 + 24 + 24
        assert r.pop() == (7, 1, b"hello")
        assert r.pop_batch(10) == [(0, 2, b""), (1, 3, b"ba"), (2, 4, b"mv")]
        assert r.pop() is None
        assert r.used_bytes() == 0
        assert r.drops == 0 and w.pushed == 4 and r.popped == 4
        assert (SHM / shm_name).stat().st_mode & 0o777 == 0o600
    assert not (SHM / shm_name).exists()


def test_roles_are_enforced(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        with pytest.raises(RingError):
            r.push(b"x")
        with pytest.raises(RingError):
            w.pop()
        m = Ring.attach(shm_name, role="monitor")
        w.push(b"abc")
        assert m.used_bytes() == 24 and m.seq == 1
        with pytest.raises(RingError):
            m.pop()
        m.close()
        with pytest.raises(ValueError):
            Ring.attach(shm_name, role="boss")


def test_bad_arguments(shm_name: str) -> None:
    for cap in (0, 1000, 4095, 3 * 4096):
        with pytest.raises(RingError, match="power of two"):
            Ring.create(shm_name, cap)
    assert not (SHM / shm_name).exists()
    with pytest.raises(RingError, match="invalid segment name"):
        Ring.create("../etc/passwd", 4096)
    with owned_ring(shm_name, 4096) as w:
        with pytest.raises(ValueError, match="exceeds"):
            w.push(bytes(2048))  # more than half the capacity with its header
        assert w.push(bytes(2048 - 16))
        with pytest.raises(ValueError):
            w.push(b"x", kind=PADDING_KIND)
        with pytest.raises(TypeError):
            w.push("text")  # type: ignore[arg-type]
        assert w.seq == 1
        with pytest.raises(RingError, match="exists"):
            Ring.create(shm_name, 4096)


def test_closed_ring_raises(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w:
        r = Ring.attach(shm_name)
        r.close()
        r.close()
        with pytest.raises(RingError, match="closed"):
            r.pop()
        with pytest.raises(RingError, match="closed"):
            r.used_bytes()
        assert w.push(b"still fine")


def test_full_ring_never_overwrites_and_counts(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        payload = bytes(range(48))  # 64-byte records
        accepted = 0
        while w.push(payload):
            accepted += 1
        assert accepted == 4096 // 64
        for _ in range(9):
            assert not w.push(payload)
        assert w.drops == r.drops == 10
        assert w.seq == accepted + 10
        assert r.used_bytes() == 4096
        got = r.pop_batch(1000)
        assert [s for _, s, _ in got] == list(range(1, accepted + 1))
        assert all(p == payload for _, _, p in got)
        # the next record after the drops shows the gap in seq
        assert w.push(b"after")
        assert r.pop() == (0, accepted + 11, b"after")
        # try_push on a full ring counts nothing
        while w.try_push(payload):
            pass
        seq = w.seq
        assert not w.try_push(payload)
        assert w.seq == seq and w.drops == 10


def test_wrap_inserts_padding(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        # 4000 bytes used, 96 left before the end: a 200-byte record must wrap
        for _ in range(4000 // 200):
            assert w.push(bytes(184))
        assert len(r.pop_batch(100)) == 20
        assert w.push(b"w" * 184)
        st_ = r.stats()
        assert st_["tail"] == 4000 + 96 + 200
        assert r.pop() == (0, 21, b"w" * 184)
        assert r.used_bytes() == 0


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 5)), min_size=1, max_size=300))
@settings(max_examples=150, deadline=None)
def test_random_sizes_against_a_model(ops: list[tuple[int, int]]) -> None:
    name = f"{TEST_PREFIX}-model"
    with owned_ring(name, 8192) as w, Ring.attach(name) as r:
        model: deque[tuple[int, int, bytes]] = deque()
        seq = 0
        for size, pops in ops:
            payload = os.urandom(size)
            seq += 1
            if w.push(payload, size % 7):
                model.append((size % 7, seq, payload))
            for _ in range(pops):
                got = r.pop()
                assert got == (model.popleft() if model else None)
            used = r.used_bytes()
            assert 0 <= used <= 8192
        assert r.pop_batch(10_000) == list(model)
        assert w.drops == seq - w.pushed


def test_corrupt_record_length_is_an_error_not_a_crash(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        w.push(b"a" * 10)
        w.push(b"b" * 10)
        _patch(shm_name, HEADER_SIZE, struct.pack("<I", 0xFFFFFFF0))
        with pytest.raises(RingError, match="corrupt record"):
            r.pop()
        with pytest.raises(RingError, match="corrupt record"):
            r.pop_batch(5)  # stays failed: the consumer cannot know where records start
        assert r.stats()["corrupt"] >= 1


@pytest.mark.parametrize("length", [0, 8, 15, 4097, 2**31])
def test_corrupt_lengths(shm_name: str, length: int) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        w.push(b"x" * 40)
        _patch(shm_name, HEADER_SIZE, struct.pack("<I", length))
        with pytest.raises(RingError):
            r.pop()


def test_corrupt_padding_and_tail(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        w.push(b"x" * 40)
        _patch(shm_name, HEADER_SIZE + 4, struct.pack("<H", PADDING_KIND))  # padding mid-buffer
        with pytest.raises(RingError):
            r.pop()
    with owned_ring(shm_name + "b", 4096) as w, Ring.attach(shm_name + "b") as r:
        _patch(shm_name + "b", 64, struct.pack("<Q", 10**9))  # tail far beyond capacity
        with pytest.raises(RingError):
            r.pop()


def test_attach_refuses_bad_segments(shm_name: str) -> None:
    with pytest.raises(RingError, match="does not exist"):
        Ring.attach(shm_name)
    # too small to hold a header
    fd = os.open(SHM / shm_name, os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"x" * 100)
    os.close(fd)
    with pytest.raises(RingError, match="smaller than its header"):
        Ring.attach(shm_name)
    os.unlink(SHM / shm_name)
    # wrong magic, wrong version, wrong size
    for offset, data, msg in [(0, b"NOTARING", "not an obitui ring"),
                              (8, struct.pack("<I", 99), "version 99"),
                              (16, struct.pack("<Q", 12345), "refused")]:
        with owned_ring(shm_name, 4096):
            _patch(shm_name, offset, data)
            with pytest.raises(RingError, match=msg):
                Ring.attach(shm_name)


def test_attach_refuses_wrong_file_size(shm_name: str) -> None:
    with owned_ring(shm_name, 4096):
        os.truncate(SHM / shm_name, HEADER_SIZE + 8192)
        with pytest.raises(RingError, match="segment is .* bytes"):
            Ring.attach(shm_name)


def test_attach_refuses_another_owner_and_open_modes(shm_name: str) -> None:
    with owned_ring(shm_name, 4096):
        os.chmod(SHM / shm_name, 0o644)
        with pytest.raises(RingError, match="mode 644"):
            Ring.attach(shm_name)
        os.chmod(SHM / shm_name, 0o600)
        if os.geteuid() == 0:
            os.chown(SHM / shm_name, 12345, 12345)
            with pytest.raises(RingError, match="owned by uid 12345"):
                Ring.attach(shm_name)
            os.chown(SHM / shm_name, 0, 0)
        else:
            pytest.skip("changing a file's owner needs root")


def test_symlink_is_not_followed(shm_name: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"\0" * 8192)
    (SHM / shm_name).symlink_to(target)
    with pytest.raises(RingError, match="symlink"):
        Ring.attach(shm_name)
    with pytest.raises(RingError, match="exists"):
        Ring.create(shm_name, 4096)
    assert target.read_bytes() == b"\0" * 8192


def test_segment_removed_after_a_block_that_raised(shm_name: str) -> None:
    with pytest.raises(RuntimeError):
        with owned_ring(shm_name, 4096) as w:
            w.push(b"x")
            raise RuntimeError("boom")
    assert not (SHM / shm_name).exists()
    assert Ring.unlink(shm_name) is False


def test_producer_reattach_continues_seq(shm_name: str) -> None:
    with owned_ring(shm_name, 4096) as w, Ring.attach(shm_name) as r:
        w.push(b"one")
        w2 = Ring.attach(shm_name, role="producer")
        w2.push(b"two")
        w2.close()
        assert r.pop_batch(5) == [(0, 1, b"one"), (0, 2, b"two")]


def test_consumer_counts_lost_records_and_resumes_after_a_restart(shm_name: str) -> None:
    """The consumer's own count of missing seqs equals the producer's drops once drained,
    and a consumer that attaches again (a restarted engine) resumes from the last seq."""
    with owned_ring(shm_name, 4096) as w:
        r = Ring.attach(shm_name)
        payload = bytes(48)
        while w.push(payload):
            pass
        for _ in range(4):
            w.push(payload)                   # 5 drops in all
        got = r.pop_batch(1000)
        assert r.lost == 0 and r.last_seq == got[-1][1]
        r.close()                             # the engine dies between two batches
        w.push(b"after the drops")
        r2 = Ring.attach(shm_name)
        assert r2.last_seq == got[-1][1]
        assert r2.pop() == (0, w.seq, b"after the drops")
        assert r2.lost == w.drops == 5
        st = r2.stats()
        assert st["seq"] == st["pushed"] + st["drops"]
        assert st["popped"] == st["pushed"] and st["lost"] == st["drops"]
        r2.close()

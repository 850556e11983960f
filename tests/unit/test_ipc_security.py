"""Local IPC security (issue #8): every segment is 0600, ours, named per user and run, opened
without following symlinks; attaching to anything else is refused with a clear message."""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from obitui.core.ring import Ring, RingError
from obitui.core.shm import Segment, ShmError
from obitui.core.stats import StatsBlock, StatsError

pytestmark = pytest.mark.timeout(60)
SHM = Path("/dev/shm")


def test_created_segments_are_private_regular_files(shm_name: str) -> None:
    blk = StatsBlock.create(shm_name, 2, 1)
    try:
        st = os.lstat(SHM / shm_name)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
    finally:
        blk.close()
        Segment.unlink(shm_name)


def test_stats_block_attach_refusals(shm_name: str, tmp_path: Path) -> None:
    with pytest.raises(StatsError, match="does not exist"):
        StatsBlock.attach(shm_name)
    blk = StatsBlock.create(shm_name, 2, 1)
    path = SHM / shm_name
    try:
        os.chmod(path, 0o644)                       # readable by others: refused
        with pytest.raises(StatsError, match="mode 644"):
            StatsBlock.attach(shm_name)
        os.chmod(path, 0o600)
        with open(path, "r+b") as fh:              # another layout version: refused, named
            fh.seek(8)
            fh.write(struct.pack("<I", 99))
        with pytest.raises(StatsError, match="layout version 99"):
            StatsBlock.attach(shm_name)
        with open(path, "r+b") as fh:              # not a stats block at all
            fh.write(b"NOTSTATS")
        with pytest.raises(StatsError, match="not an obitui stats block"):
            StatsBlock.attach(shm_name)
        if os.geteuid() == 0:                       # another owner
            os.chown(path, 4242, 4242)
            with pytest.raises(StatsError, match="owned by uid 4242"):
                StatsBlock.attach(shm_name)
            os.chown(path, 0, 0)
    finally:
        blk.close()
        Segment.unlink(shm_name)
    # wrong size: a truncated block
    blk = StatsBlock.create(shm_name, 2, 1)
    try:
        os.truncate(path, blk.seg.size - 4096)
        with pytest.raises(StatsError, match="refused|bytes"):
            StatsBlock.attach(shm_name)
    finally:
        blk.close()
        Segment.unlink(shm_name)


def test_planted_symlink_is_never_followed(shm_name: str, tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious" * 1024)
    (SHM / shm_name).symlink_to(target)
    try:
        with pytest.raises((ShmError, StatsError), match="symlink|exists"):
            StatsBlock.create(shm_name, 1, 1)
        with pytest.raises(StatsError, match="symlink"):
            StatsBlock.attach(shm_name)
        with pytest.raises(RingError, match="symlink"):
            Ring.attach(shm_name)
        with pytest.raises(RingError, match="exists"):
            Ring.create(shm_name, 4096)
        assert target.read_bytes() == b"precious" * 1024
    finally:
        (SHM / shm_name).unlink()


def test_a_fifo_or_directory_at_the_path_is_refused(shm_name: str) -> None:
    os.mkfifo(SHM / shm_name, 0o600)
    try:
        with pytest.raises(RingError, match="not a regular file|cannot open|refused"):
            Ring.attach(shm_name)
    finally:
        (SHM / shm_name).unlink()


def test_segment_names_are_validated() -> None:
    for bad in ("../etc/passwd", "a/b", "", "x" * 201, ".."):
        with pytest.raises(ShmError, match="invalid segment name"):
            Segment.create(bad, 4096)

"""Shared fixtures: unique segment names, and a check that no test leaves a segment behind."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")
TEST_PREFIX = f"obitui-{os.getuid()}-test"
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _ours() -> set[str]:
    return {p.name for p in SHM.glob(f"{TEST_PREFIX}*")}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Fail a test that leaves one of its segments in /dev/shm (and remove it)."""
    before = _ours()
    yield
    leaked = _ours() - before
    for name in leaked:
        try:
            (SHM / name).unlink()
        except FileNotFoundError:
            pass
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


@pytest.fixture
def shm_name() -> Iterator[str]:
    """A fresh segment name; whatever exists under it is unlinked after the test."""
    name = f"{TEST_PREFIX}-{uuid.uuid4().hex[:12]}"
    yield name
    for p in SHM.glob(f"{name}*"):
        if p.is_symlink() or p.exists():
            p.unlink()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the recorded exchange data is missing: expected {SHARED_DATA}")
    return SHARED_DATA

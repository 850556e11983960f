"""Shared fixtures: unique segment names, a check that no test leaves a segment behind,
Hypothesis seeding (derandomized in CI; elsewhere a printed seed that repeats a run), and under
pytest-xdist the `alone` tests run while no other test runs.

Everything here counts only this pytest process's own segments: its test prefix carries the pytest
pid, and fleets started in this process are named `obitui-<uid>-r<pytest pid>x...`. Another
pytest run, another pytest-xdist worker of this run (each is a process of its own) or a live fleet
of the same user on the host is never counted, nor removed."""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

SHM = Path("/dev/shm")
TEST_PREFIX = f"obitui-{os.getuid()}-test{os.getpid()}"
OWN_RUN_PREFIX = f"obitui-{os.getuid()}-r{os.getpid()}x"   # fleets supervised by this process

settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


ALONE_LOCKS = "OBITUI_PYTEST_ALONE_LOCKS"     # the lock directory, from the xdist controller to its workers
_ALONE_DIR = pytest.StashKey[str]()           # the controller's, removed at its end


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Outside CI, one random seed for the whole run, chosen here so the header can print it.
    pytest-xdist workers parse the command line anew: the environment carries the seed to them
    (they start after this hook), so the printed seed repeats every worker's tests too. The xdist
    controller makes the directory of the `alone` locks the same way."""
    if (config.getoption("numprocesses", None) and not hasattr(config, "workerinput")
            and ALONE_LOCKS not in os.environ):
        os.environ[ALONE_LOCKS] = tempfile.mkdtemp(prefix="obitui-pytest-locks-")
        config.stash[_ALONE_DIR] = os.environ[ALONE_LOCKS]
    if os.environ.get("CI") or config.getoption("hypothesis_seed", None) is not None:
        return
    config.option.hypothesis_seed = int(os.environ.get("OBITUI_HYPOTHESIS_SEED", random.randrange(1 << 32)))
    os.environ["OBITUI_HYPOTHESIS_SEED"] = str(config.option.hypothesis_seed)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (d := config.stash.get(_ALONE_DIR, None)) is not None:
        shutil.rmtree(d, ignore_errors=True)
        os.environ.pop(ALONE_LOCKS, None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Under pytest-xdist, a test marked `alone` (it judges the machine's speed, which the other
    workers' tests would take a share of) runs while no other test runs; the others run together.
    A readers-writer lock over the workers: every test holds `share` shared, an `alone` test
    exclusively; `gate` is held by an `alone` test from its wait on, so no new test starts before
    it. Taken outside the test's timeout (this wrapper is outside pytest-timeout's), held through
    setup, call and teardown."""
    locks = os.environ.get(ALONE_LOCKS)
    if not locks or not os.environ.get("PYTEST_XDIST_WORKER"):
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    with open(os.path.join(locks, "gate"), "a") as gate, open(os.path.join(locks, "share"), "a") as share:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(share, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(share, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove the segments a killed test run left (its pid in the name, no longer alive); a live
    run's are left alone."""
    import re
    pat = re.compile(rf"^obitui-{os.getuid()}-test(\d+)-")
    for p in SHM.glob(f"obitui-{os.getuid()}-test*"):
        m = pat.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not Path(f"/proc/{m.group(1)}").exists():
            p.unlink(missing_ok=True)


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("CI"):
        return "hypothesis: derandomized (CI profile)"
    seed = config.getoption("hypothesis_seed", None)
    return f"hypothesis seed: {seed} (repeat this run with --hypothesis-seed={seed})"
REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"


def _ours() -> set[str]:
    return {p.name for pat in (f"{TEST_PREFIX}*", f"{OWN_RUN_PREFIX}*") for p in SHM.glob(pat)}


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
def test_data() -> Path:
    """The real exchange recordings and vectors vendored in the repo (tests/data/README.md)."""
    if not (TEST_DATA / "recorded").is_dir():
        pytest.fail(f"the recorded exchange data is missing: expected {TEST_DATA}/recorded")
    return TEST_DATA


def release_segments(rings: list, stats: object) -> None:
    """Close and remove the rings and the stats block a test made (test segments in /dev/shm)."""
    from obitui.core.ring import Ring
    from obitui.core.shm import Segment
    for r in rings:
        name = r.name
        r.close()
        Ring.unlink(name)
    name = stats.seg.name  # type: ignore[attr-defined]
    stats.close()  # type: ignore[attr-defined]
    Segment.unlink(name)

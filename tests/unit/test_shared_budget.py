"""The REST weight budget every feed process of a venue shares (feeds/budget.py): one word in
the stats block changed by compare-and-swap, so processes taking at once never spend more than
the limit between them, and a Retry-After from the venue holds for all of them."""
from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import pytest

import obitui.feeds.budget as budget
from obitui.core.shm import Segment
from obitui.core.stats import StatsBlock
from obitui.feeds.budget import SharedWeightBudget
from tests.conftest import TEST_PREFIX

pytestmark = pytest.mark.timeout(60)


def _taker(name: str, pool: int, limit: int, tries: int, out: mp.Queue) -> None:
    b = SharedWeightBudget(StatsBlock.attach(name), pool, limit)
    got = 0
    for _ in range(tries):
        if b.take(1, time.time()) == 0.0:
            got += 1
    out.put(got)


@pytest.fixture
def block() -> StatsBlock:
    name = f"{TEST_PREFIX}-budget-{uuid.uuid4().hex[:8]}"
    blk = StatsBlock.create(name, 1, 1)
    try:
        yield blk
    finally:
        blk.seg.close()
        Segment.unlink(name)


def test_processes_taking_at_once_never_spend_more_than_the_limit(block: StatsBlock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "WEIGHT_WINDOW_S", 3600.0)       # one window for the whole test
    limit, tries = 200_000, 150_000
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_taker, args=(block_name(block),
                                               3, limit, tries, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    window_changed = int(time.time() // budget.WEIGHT_WINDOW_S) != SharedWeightBudget(block, 3, limit).window
    assert not window_changed
    # exactly the limit was granted in all (300,000 asked), and the word says so
    assert sum(got) == limit and SharedWeightBudget(block, 3, limit).used == limit
    assert min(got) > 0                                        # both took part
    # another pool is untouched
    assert SharedWeightBudget(block, 4, limit).used == 0


def block_name(block: StatsBlock) -> str:
    return block.seg.path.rsplit("/", 1)[-1]


def test_the_venues_count_only_raises_ours_and_a_ban_holds_for_every_process(block: StatsBlock) -> None:
    a, b = SharedWeightBudget(block, 0, 100), SharedWeightBudget(StatsBlock.attach(block_name(block)), 0, 100)
    now = time.time()
    assert a.take(60, now) == 0.0 and b.used == 60
    b.note("40", now)                      # an answer sent before our last request: ours stays
    assert a.used == 60
    b.note("90", now)                      # other hosts' or unseen requests: the venue's count wins
    assert a.used == 90 and a.take(20, now) > 0 and a.wait(10, now) == 0.0
    b.note("not a number", now)
    assert a.used == 90
    assert a.banned_for() == 0.0
    b.ban(2.0)
    assert 1.5 < a.banned_for() <= 2.0
    a.ban(0.5)                             # a shorter ban does not end a longer one
    assert a.banned_for() > 1.5


def test_a_late_caller_never_rolls_the_minute_back(block: StatsBlock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose ``now`` is still in minute W while another one already counts W+1: its
    change applies to W+1's count, never sets the window back to W."""
    monkeypatch.setattr(budget, "WEIGHT_WINDOW_S", 60.0)
    a, b = SharedWeightBudget(block, 1, 6000), SharedWeightBudget(block, 1, 6000)
    w = int(time.time() // 60)
    new = (w + 1) * 60.0 + 1          # B is already in the next minute
    old = (w + 1) * 60.0 - 1          # A's clock reading from just before it
    assert b.take(5800, new) == 0.0
    a.note("40", old)                 # the venue's count of the old minute: no effect on the new one
    assert a.window == w + 1 and b._read() == (w + 1, 5800)
    assert b.take(400, new) > 0       # 6200 would be over: waits
    a.spend(10, old)                  # counted in the current (newer) minute
    assert b._read() == (w + 1, 5810)

"""A real engine over real rings and a real stats block in /dev/shm, its log lines captured:
the setup the engine's unit tests share (removed again on exit, also when a test fails)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from obitui.config import Config, book_plan
from obitui.core.ring import Ring
from obitui.core.stats import StatsBlock
from obitui.engine import Engine
from tests.conftest import release_segments


@contextmanager
def running_engine(cfg: Config, shm_name: str, n_books: int | None = None,
                   with_index: bool = False) -> Iterator[tuple[Engine, StatsBlock, list[Ring], list[logging.LogRecord]]]:
    plan = book_plan(cfg.feeds)
    stats = StatsBlock.create(shm_name + "-stats", len(cfg.feeds), n_books or len(plan),
                              book_keys=plan if with_index else ())
    rings = [Ring.create(f"{shm_name}-ring{i}", 1 << 16) for i in range(len(cfg.feeds))]
    lines: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lines.append  # type: ignore[method-assign]
    logger = logging.getLogger("obitui.engine")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    eng = Engine(cfg, [r.name for r in rings], shm_name + "-stats")
    try:
        yield eng, stats, rings, lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        eng.close()
        release_segments(rings, stats)

"""The engine keeps why a book was invalidated: a feed's BOOK_INVALID record carries a reason
(gap, checksum, disconnected, feed_started, operator_resync, ...), and so do the engine's own
invalidations (ring_loss, bad_record, corrupt_ring). Per book the engine keeps the last reason
and a count per reason, and logs them, rate-limited. The stats block's BookSlot publishes
``invalidations`` (the valid -> invalid transitions) and the last reason.

An in-process engine on real rings and a real stats block, fed record by record; every record
carries its market's book index (``config.feed_book_ids``), as the feeds write it."""
from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from obitui import engine as engine_mod
from obitui.config import feed_book_ids, load_config
from obitui.core.records import Kind, encode_book, encode_invalid
from obitui.core.ring import Ring
from obitui.core.stats import StatsBlock
from obitui.engine import Engine
from tests.unit.engine_rig import running_engine

pytestmark = pytest.mark.timeout(60)

BI_OB, BI_TR, BG_OB = 0, 1, 2          # the default feeds: Bi-OB, Bi-TR, Bg-OB, Bg-PR
BI_KEY, BG_KEY = "binance:BTCUSDT", "bitget:BTCUSDT"


@dataclass
class Rig:
    engine: Engine
    stats: StatsBlock
    rings: list[Ring]
    lines: list[logging.LogRecord]

    def book_id(self, feed: int) -> int:
        """The book index the (single-market) feed's records carry."""
        return feed_book_ids(self.engine.cfg.feeds)[feed][0]

    def snapshot(self, feed: int, update_id: int) -> None:
        bids = [(27_000 * 10**8, 10**8)]
        asks = [(27_001 * 10**8, 2 * 10**8)]
        packed = b"".join(struct.pack("<qq", p, q) for p, q in bids + asks)
        now = time.time_ns()
        self._push(feed, Kind.BOOK_SNAPSHOT, encode_book(Kind.BOOK_SNAPSHOT, self.book_id(feed), now, now, update_id,
                                                         update_id, packed, len(bids), len(asks), 8, 8))

    def invalid(self, feed: int, reason: str) -> None:
        self._push(feed, Kind.BOOK_INVALID, encode_invalid(self.book_id(feed), time.time_ns(), reason))

    def _push(self, feed: int, kind: Kind, payload: bytes) -> None:
        assert self.rings[feed].push(payload, int(kind))
        assert self.engine.poll() == 1

    def book(self, key: str) -> engine_mod.EngineBook:
        return self.engine.by_key[key]

    def book_lines(self, key: str) -> list[logging.LogRecord]:
        return [r for r in self.lines if f"book {key}" in r.getMessage()]


@pytest.fixture
def rig(shm_name: str) -> Iterator[Rig]:
    cfg = load_config(None)
    with running_engine(cfg, shm_name, n_books=2) as (eng, stats, rings, lines):
        yield Rig(eng, stats, rings, lines)


def test_the_reason_is_kept_counted_and_the_published_counter_unchanged(rig: Rig) -> None:
    rig.invalid(BI_OB, "feed_started")            # a new feed: the book was not valid yet
    eb = rig.book(BI_KEY)
    assert (eb.last_invalid_reason, dict(eb.invalid_reasons), eb.invalidations) == \
        ("feed_started", {"feed_started": 1}, 0)
    rig.snapshot(BI_OB, 10)
    assert eb.book.valid
    rig.invalid(BI_OB, "gap")
    assert not eb.book.valid and eb.last_invalid_reason == "gap" and eb.invalidations == 1
    rig.invalid(BI_OB, "gap")                     # the same reason, still invalid: a repeat
    rig.invalid(BI_OB, "disconnected")            # still invalid, but now for another reason
    rig.snapshot(BI_OB, 20)
    rig.invalid(BI_OB, "checksum")
    rig.invalid(BI_TR, "gap")                     # a trade feed has no book to invalidate
    assert eb.last_invalid_reason == "checksum"
    assert dict(eb.invalid_reasons) == {"feed_started": 1, "gap": 1, "disconnected": 1, "checksum": 1}
    assert eb.invalidations == 2
    # the other book heard nothing
    other = rig.book(BG_KEY)
    assert (other.last_invalid_reason, dict(other.invalid_reasons), other.invalidations) == ("", {}, 0)
    assert rig.engine.invalidation_summary()[BI_KEY] == {
        "invalidations": 2, "last_reason": "checksum",
        "reasons": {"feed_started": 1, "gap": 1, "disconnected": 1, "checksum": 1}}
    # the stats block says the transitions, the book invalid, and why
    rig.engine.publish(False)
    bv = rig.stats.read_book(0)
    assert bv is not None and bv.invalidations == 2 and not bv.valid and bv.reason == "checksum"
    other_bv = rig.stats.read_book(1)
    assert other_bv is not None and other_bv.invalidations == 0 and other_bv.reason == ""


def test_the_engines_own_invalidations_carry_their_reason(rig: Rig) -> None:
    rig.snapshot(BI_OB, 10)
    assert rig.rings[BI_OB].push(b"short", int(Kind.BOOK_DELTA))     # not a book record
    rig.engine.poll()
    eb = rig.book(BI_KEY)
    assert eb.last_invalid_reason == "bad_record" and eb.invalidations == 1
    rig.invalid(BI_OB, "")                        # no reason given
    rig.invalid(BI_OB, "odd\x00\nreason")
    assert dict(eb.invalid_reasons) == {"bad_record": 1, "unspecified": 1, "odd??reason": 1}


def test_the_log_says_why_at_most_once_per_interval_per_book(rig: Rig) -> None:
    rig.invalid(BI_OB, "feed_started")
    first = rig.book_lines(BI_KEY)
    assert len(first) == 1 and first[0].levelno == logging.INFO, [r.getMessage() for r in first]
    assert "feed_started" in first[0].getMessage()
    # a burst inside the interval: counted, not logged
    for uid in range(3):
        rig.snapshot(BI_OB, 10 + uid)
        rig.invalid(BI_OB, "checksum")
    assert len(rig.book_lines(BI_KEY)) == 1
    eb = rig.book(BI_KEY)
    assert eb.invalid_reasons["checksum"] == 3 and eb.invalid_unlogged == 3
    # the other book has an interval of its own
    rig.invalid(BG_OB, "disconnected")
    assert len(rig.book_lines(BG_KEY)) == 1
    # one interval later the next invalidation is logged, with what the burst left out
    eb.invalid_log_at -= engine_mod.INVALID_LOG_EVERY
    rig.snapshot(BI_OB, 30)
    rig.invalid(BI_OB, "gap")
    lines = rig.book_lines(BI_KEY)
    assert len(lines) == 2, [r.getMessage() for r in lines]
    text = lines[1].getMessage()
    assert lines[1].levelno == logging.WARNING
    assert "invalidated: gap" in text and "checksum 3" in text and "3 more since the last line" in text, text
    # the engine's last words sum every book up
    rig.engine.running = False
    rig.engine.run()
    summary = [r.getMessage() for r in rig.book_lines(BI_KEY)][-1]
    assert "4 invalidations, last: gap" in summary and "checksum 3" in summary, summary


def test_a_book_invalid_because_its_feed_stopped_is_routine(rig: Rig) -> None:
    """A feed that is stopped (the fleet's end, an operator's restart) says ``stopped``, not
    ``disconnected``: logged at INFO, while a lost connection stays a WARNING."""
    rig.snapshot(BI_OB, 10)
    rig.invalid(BI_OB, "stopped")
    lines = rig.book_lines(BI_KEY)
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in lines]
    rig.snapshot(BG_OB, 10)
    rig.invalid(BG_OB, "disconnected")
    lines = rig.book_lines(BG_KEY)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING

"""Operator commands for one market (issue #19, obitui/controller.py): a symbol resolves to the
book index of that market on that feed, the plain label of a feed split into processes
(``Bi-OB#1``, ``#2``) finds the process whose symbols hold it, and the command word carries the
book. Without a symbol a command is for every book of the feed, as before."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from obitui.config import book_plan, feed_book_ids, load_config
from obitui.controller import StatsController, command_and_wait, command_by_label, resolve
from obitui.core.shm import Segment
from obitui.core.stats import ALL_BOOKS, AckResult, Command, StatsBlock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def split(tmp_path: Path):  # noqa: ANN201
    p = tmp_path / "obitui.toml"
    p.write_text("""
[[feeds]]
label = "Bi-OB"
venue = "binance"
channel = "depth"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
processes = 2
[[feeds]]
label = "Bi-TR"
venue = "binance"
channel = "trade"
symbols = ["XRPUSDT", "ADAUSDT"]
[[feeds]]
label = "Bg-OB"
venue = "bitget"
channel = "books"
""")
    return load_config(p)


@pytest.fixture
def stats(shm_name: str, split) -> Iterator[StatsBlock]:  # noqa: ANN001
    plan = book_plan(split.feeds)
    blk = StatsBlock.create(shm_name, len(split.feeds), len(plan), book_keys=plan)
    yield blk
    blk.close()
    Segment.unlink(shm_name)


def test_the_split_fleet(split) -> None:  # noqa: ANN001
    assert [(f.label, f.symbols) for f in split.feeds] == [
        ("Bi-OB#1", ("BTCUSDT", "SOLUSDT")), ("Bi-OB#2", ("ETHUSDT", "XRPUSDT")),
        ("Bi-TR", ("XRPUSDT", "ADAUSDT")), ("Bg-OB", ("BTCUSDT",))]


def test_a_symbol_resolves_to_its_process_and_book(split) -> None:  # noqa: ANN001
    plan = book_plan(split.feeds)
    ids = feed_book_ids(split.feeds)
    assert resolve(split, "Bi-OB", "XRPUSDT") == (1, plan.index("binance:XRPUSDT")) == (1, ids[1][1])
    assert resolve(split, "Bi-OB", "btcusdt") == (0, plan.index("binance:BTCUSDT"))
    assert resolve(split, "Bi-OB", "binance:SOLUSDT") == (0, plan.index("binance:SOLUSDT"))
    assert resolve(split, "Bi-OB#2", "ETHUSDT") == (1, plan.index("binance:ETHUSDT"))
    assert resolve(split, "Bi-TR", "XRPUSDT") == (2, plan.index("binance:XRPUSDT"))   # the same market's slot
    assert resolve(split, "Bg-OB", "BTCUSDT") == (3, plan.index("bitget:BTCUSDT"))
    assert resolve(split, "Bg-OB") == (3, ALL_BOOKS) and resolve(split, "Bi-OB#1") == (0, ALL_BOOKS)
    for label, symbol, says in (("Bi-OB", "DOGEUSDT", "no market"), ("Bi-OB#1", "ETHUSDT", "no market"),
                                ("Bg-OB", "binance:BTCUSDT", "no market"), ("Kr-OB", "BTCUSDT", "no feed"),
                                ("Bi-OB", None, "Bi-OB#1, Bi-OB#2")):
        with pytest.raises(KeyError, match=says):
            resolve(split, label, symbol)


def test_the_command_word_carries_the_book(split, stats: StatsBlock) -> None:  # noqa: ANN001
    plan = book_plan(split.feeds)
    assert command_by_label(split, stats, "Bi-OB", Command.RESYNC, "SOLUSDT") == 1
    assert stats.read_command_book(0) == (1, Command.RESYNC, plan.index("binance:SOLUSDT"))
    assert command_by_label(split, stats, "Bi-OB#1", Command.RESYNC_INVALID) == 2
    assert stats.read_command_book(0) == (2, Command.RESYNC_INVALID, ALL_BOOKS)
    assert command_by_label(split, stats, "Bg-OB", Command.RECONNECT) == 1
    assert stats.read_command(3) == (1, Command.RECONNECT)
    ctl = StatsController(split, stats)
    assert ctl.command("Bi-OB", Command.RESYNC, symbol="XRPUSDT") == 1
    assert stats.read_command_book(1) == (1, Command.RESYNC, plan.index("binance:XRPUSDT"))


def test_the_ack_names_the_process_that_answered(split, stats: StatsBlock) -> None:  # noqa: ANN001
    stats.ack_command(1, 1, AckResult.OK, "resync of ETHUSDT started")     # the answer to come
    ack = command_and_wait(split, stats, "Bi-OB", Command.RESYNC, timeout=2, symbol="ETHUSDT")
    assert ack.ok and ack.label == "Bi-OB#2" and ack.seq == 1
    assert ack.message() == "Bi-OB#2: resync acknowledged: resync of ETHUSDT started"
    assert stats.read_command_book(1)[2] == book_plan(split.feeds).index("binance:ETHUSDT")

"""The publisher's messages written in C from a BookSlot's bytes (``obitui.bus._encode.
BookMessages``, issue #21) against what the Python path gives for the same slot: the slot read
into a BookView (``StatsBlock.read_book``), its message by ``headless.book_json`` plus v, host,
key, label, ts, its trades as the publisher wrote them; ``orjson.dumps`` of those, byte for
byte. Slots are written into a real stats block (``/dev/shm``) and copied out under its
seqlock, as the publisher reads them."""
from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from obitui.bus import schema
from obitui.bus._encode import SLOT_BYTES, BookMessages
from obitui.core import stats as S
from obitui.core.stats import BookView, StatsBlock
from obitui.headless import book_json
from obitui.widgets.format import fmt_fixed

pytestmark = pytest.mark.timeout(60)

HOST, KEY = "h1", "binance:BTCUSDT"


@pytest.fixture
def block(shm_name: str) -> Iterator[StatsBlock]:
    """A real stats block of 2 book slots (removed by ``shm_name`` whatever happens)."""
    st = StatsBlock.create(shm_name, 1, 2)
    try:
        yield st
    finally:
        st.close()


def write_slot(st: StatsBlock, j: int, bv: BookView, obi_pos: int = 0, n_bids: int | None = None,
               n_asks: int | None = None) -> bytes:
    """``bv`` into book slot ``j`` as the engine lays it out (under the seqlock); returns the
    slot's bytes as the publisher copies them."""
    raw = bytearray(S._BOOK_END)
    bb = bv.bids[0] if bv.bids else (0, 0)
    ba = bv.asks[0] if bv.asks else (0, 0)
    nb = len(bv.bids) if n_bids is None else n_bids
    na = len(bv.asks) if n_asks is None else n_asks
    S._BOOK_FIXED.pack_into(raw, 0, 0, S._b(bv.exchange, 16), S._b(bv.symbol, 16), S._b(bv.label, 16),
                            int(bv.valid), int(bv.crossed), bv.update_id, bv.last_update_ns, bv.price_decimals,
                            bv.qty_decimals, nb, na, bb[0], ba[0], bb[1], ba[1], bv.obi, bv.buy_qty_1s,
                            bv.sell_qty_1s, bv.buy_count_1s, bv.sell_count_1s, bv.last_trade_price,
                            bv.last_trade_qty, bv.last_trade_side, bv.last_trade_ns, bv.invalidations,
                            bv.records_applied, obi_pos, 0, S._b(bv.reason, S.REASON_SIZE))
    raw[S._BOOK_MARKET_OFF:S._BOOK_MARKET_OFF + S._BOOK_MARKET.size] = S.pack_market(
        (bv.ticker_ns, bv.ticker_last, bv.ticker_bid, bv.ticker_bid_qty, bv.ticker_ask, bv.ticker_ask_qty),
        (bv.day_ns, bv.day_open, bv.day_high, bv.day_low, bv.day_volume), bv.trades)
    for side, off in ((bv.bids, S._BOOK_LEVELS_OFF), (bv.asks, S._BOOK_ASKS_OFF)):
        for i, (p, q) in enumerate(side[:S.TOP_N]):
            S._PAIR.pack_into(raw, off + 16 * i, p, q)
    raw[S._BOOK_TAPE_OFF:S._BOOK_END] = S.pack_tape(bv.tape)
    off = st.book_offset(j)
    st._publish(off, bytes(raw))
    got = st.seg.read_consistent(off, SLOT_BYTES)
    assert got is not None
    return got


def reference(st: StatsBlock, j: int, digits: int, qdigits: int, levels: int,
              trades_seen: int | None) -> tuple[bytes, bytes | None]:
    """The book and trade messages of slot ``j`` the Python way (the publisher before the C
    writer): read_book, book_json + v/host/key/label/ts, the tape's new trades oldest first.
    Trades that cannot be written raise ``TradesRefused`` with the book message."""
    bv = st.read_book(j, history=False)
    assert bv is not None
    msg = book_json(bv, digits, qdigits, levels)
    msg.update(v=schema.SCHEMA, host=HOST, key=KEY, label=bv.label, ts=round(bv.last_update_ns / 1e9, 6))
    trade = None
    new = bv.trades - trades_seen if trades_seen is not None else 0
    book = orjson.dumps(msg)
    if new > 0 and bv.tape:
        pdec, qdec = bv.price_decimals, bv.qty_decimals
        try:
            trades = [{"price": fmt_fixed(p, digits, pdec), "qty": fmt_fixed(q, qdigits, qdec),
                       "side": "buy" if s == 1 else "sell", "ts": round(ts / 1e9, 6)}
                      for ts, p, q, s in reversed(bv.tape[:new])]
            trade = orjson.dumps({"v": schema.SCHEMA, "host": HOST, "key": KEY, "trades": trades,
                                  "missed": max(0, new - len(bv.tape))})
        except Exception as exc:
            raise TradesRefused(book) from exc
    return book, trade


class TradesRefused(Exception):
    """The Python path wrote the book but not its trades."""

    def __init__(self, book: bytes) -> None:
        super().__init__("trades refused")
        self.book = book


def views() -> list[BookView]:
    """Views that take every path of a book message: both sides or one or none, a last trade,
    a ticker with and without the 24 h figures, more decimals than digits (padded), fewer (a
    level that would lose a digit is written with all of them), an invalid book with a reason."""
    base = BookView("Bi-OB", "binance", "BTCUSDT", True, False, 41, 1_796_548_544_160_512_345, 2, 5,
                    [(2_700_000 - i, 1000 + 37 * i) for i in range(20)],
                    [(2_700_001 + i, 2000 + 11 * i) for i in range(20)], 0.5919761234, [],
                    500, 300, 2, 1, 2_700_000, 1000, 1, 1_796_548_544_101_000_000, 0, 10, [], 0, "")
    tick = dict(ticker_ns=1_796_548_544_000_000_000, ticker_last=2_700_001, ticker_bid=2_700_000,
                ticker_ask=2_700_002)
    day = dict(day_ns=1, day_open=2_600_000, day_high=2_800_000, day_low=2_500_000, day_volume=123_456_789)
    r = dataclasses.replace
    return [
        base,
        r(base, update_id=42, bids=base.bids[:3], obi=-0.25),
        r(base, update_id=43, asks=[], last_trade_side=2),
        r(base, update_id=44, bids=[], asks=[], valid=False, reason="gap: 12 > 11"),
        r(base, update_id=45, **tick),
        r(base, update_id=46, **tick, **day),
        r(base, update_id=47, **tick, **(day | {"day_open": 0})),
        r(base, update_id=48, price_decimals=4, qty_decimals=8),            # padded
        r(base, update_id=49, price_decimals=1, qty_decimals=2),            # would cut: all digits
        r(base, update_id=50, price_decimals=1, qty_decimals=2, crossed=True),
        r(base, update_id=51, bids=[(-5, 0), (0, 7)], last_trade_side=0),
        r(base, update_id=52, bids=[(-3, 1)], asks=[(2, 1)], obi=1e-7),    # mid sum <= 0: no spread
        r(base, update_id=53, label="Bg-OB", reason='a "quoted"\\ reason', valid=False),
    ]


def test_a_book_message_is_book_json_byte_for_byte(block: StatsBlock) -> None:
    """Every view twice (a new message, then the same figures: none), after the other views of
    the same book (its last trade and ticker text reused or made again), at several level
    counts and scales."""
    vs = views()
    for levels in (20, 5, 0):
        for digits, qdigits in ((2, 5), (3, 8), (8, 8)):
            w = BookMessages(HOST, KEY, digits, qdigits, levels, schema.SCHEMA)
            for bv in vs + vs[::-1][1:] + vs[1:]:          # never the same view twice in a row
                raw = write_slot(block, 0, bv)
                want, _ = reference(block, 0, digits, qdigits, levels, None)
                assert w.messages(raw) == (want, None), bv
                assert w.messages(raw) == (None, None)             # nothing changed: nothing sent
                w.forget()                                          # a console asked for everything
                assert w.messages(raw) == (want, None)


def test_the_trades_since_the_last_message_oldest_first(block: StatsBlock) -> None:
    base = views()[0]
    w = BookMessages(HOST, KEY, 2, 5, 20, schema.SCHEMA)
    tape: list[tuple[int, int, int, int]] = []
    seen = None
    uid = 100
    for trades, new_ones in ((0, 0), (3, 3), (3, 0), (30, 27), (31, 1), (10, 0)):
        for k in range(new_ones):
            tape.insert(0, (1_796_548_544_000_000_000 + k * 1_000_017, 2_700_000 + k, 17 + k, 1 + k % 2))
        uid += 1
        bv = dataclasses.replace(base, update_id=uid, trades=trades, tape=tape[:S.TAPE_N])
        raw = write_slot(block, 0, bv)
        want = reference(block, 0, 2, 5, 20, seen)
        got = w.messages(raw)
        assert got == want, (trades, got, want)
        seen = trades
        if trades == 30:                        # 27 new, 8 on the tape: 19 missed
            body = orjson.loads(got[1])
            assert body["missed"] == 19 and len(body["trades"]) == 8
            assert body["trades"][-1]["price"] == fmt_fixed(tape[0][1], 2, 2)      # the newest last
    # an engine that started again counts from 0: no trade message, then new ones again
    assert w.messages(write_slot(block, 0, dataclasses.replace(base, update_id=500, trades=2, tape=tape[:2])))[1] is None
    raw = write_slot(block, 0, dataclasses.replace(base, update_id=501, trades=4, tape=tape[:4]))
    assert w.messages(raw) == reference(block, 0, 2, 5, 20, 2)


def test_trades_no_message_can_carry_never_hold_the_book_back(block: StatsBlock) -> None:
    """A tape entry at an int64 edge: the book message goes (the bytes of the Python path), the
    trades are left out with the reason in ``trade_error``, and they are not tried again."""
    base = views()[0]
    w = BookMessages(HOST, KEY, 2, 5, 20, schema.SCHEMA)
    assert w.messages(write_slot(block, 0, dataclasses.replace(base, update_id=1, trades=0)))[1] is None
    bad = dataclasses.replace(base, update_id=2, trades=1, tape=[(1_796_548_544_000_000_000, -2**63, 1, 1)])
    raw = write_slot(block, 0, bad)
    book, trade = w.messages(raw)
    assert book == reference(block, 0, 2, 5, 20, None)[0] and trade is None
    assert isinstance(w.trade_error, ValueError)
    assert w.messages(raw) == (None, None) and w.trade_error is None          # sent: nothing new
    good = dataclasses.replace(bad, update_id=3, trades=2, tape=[(1_796_548_544_000_000_001, 5, 1, 2)] + bad.tape)
    raw = write_slot(block, 0, good)
    assert w.messages(raw) == reference(block, 0, 2, 5, 20, 1) and w.trade_error is None


def test_a_slot_without_a_market_gives_nothing(block: StatsBlock) -> None:
    w = BookMessages(HOST, KEY, 2, 5, 20, schema.SCHEMA)
    assert w.messages(block.seg.read_consistent(block.book_offset(1), SLOT_BYTES)) is None
    with pytest.raises(ValueError):
        w.messages(b"\0" * 100)                 # shorter than a slot: refused, never read past


def _random_view(rng: random.Random) -> tuple[BookView, int, int]:
    """A slot's figures from anywhere in their ranges: int64 edges, scales beyond what
    fmt_fixed takes, counts past the slot's levels, bytes that are no UTF-8; two slots in three
    plausible (no edges), the third wild."""
    wild = rng.random() < 1 / 3

    def i64() -> int:
        if not wild:
            return rng.choice([rng.randint(-10**15, 10**15), rng.randint(0, 10**6) * 10 ** rng.randint(0, 9), 0])
        return rng.choice([rng.randint(-10**18, 10**18), rng.randint(0, 10**6) * 10 ** rng.randint(0, 12),
                           2**63 - 1, -(2**63 - 1), -2**63, 0, rng.randint(-5, 5)])

    def u64() -> int:
        return rng.choice([rng.randint(0, 10**6), 2**64 - 1, 2**63, 0] if wild else [rng.randint(0, 10**6), 0])

    def dec() -> int:
        if not wild:
            return rng.randint(0, 20)
        return rng.choice([rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 140), 200, 2**32 - 1])

    def text(n: int) -> str:
        return rng.choice(["", "Bi-OB", "gap: 1 > 2", "\x01\"\\\u00e9", bytes(rng.randrange(256) for _ in range(n))
                           .decode("latin-1")])[:n]
    nb, na = rng.randint(0, 20), rng.randint(0, 20)
    bv = BookView(text(8) or "L", "binance", "BTCUSDT", rng.random() < 0.8, rng.random() < 0.1, u64(), i64(),
                  dec(), dec(), [(i64(), i64()) for _ in range(nb)], [(i64(), i64()) for _ in range(na)],
                  rng.choice([rng.uniform(-1, 1), 0.0, float("nan"), float("inf"), 1e-9, -0.0]), [],
                  i64(), i64(), u64(), u64(), i64(), i64(), rng.choice([0, 1, 2, 2**64 - 1]), u64(), 0, 0, [], 0,
                  text(24), rng.choice([0, i64()]), i64(), i64(), i64(), i64(), i64(), rng.choice([0, i64()]), i64(),
                  i64(), i64(), i64(), u64(),
                  [(i64(), i64(), i64(), rng.choice([1, 2, -1])) for _ in range(rng.randint(0, S.TAPE_N))])
    # counts past the levels the slot holds (a corrupt or a future writer): read as TOP_N
    return bv, rng.choice([nb, nb, 2**32 - 1]) if nb else 0, rng.choice([na, na, 2**32 - 1]) if na else 0


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:             # the same refusal both ways, not a crash
        return type(exc)


def test_random_slots_give_what_the_python_path_gives(block: StatsBlock) -> None:
    """3,000 slots with figures from anywhere in their ranges: the same bytes both ways, or the
    same error (an int64 edge fmt_fixed refuses, a scale it cannot take)."""
    rng = random.Random(2121)
    errors = same = with_trades = trades_refused = 0
    for _ in range(3000):
        bv, nb, na = _random_view(rng)
        try:
            write_slot(block, 0, bv, n_bids=nb, n_asks=na)
        except struct.error:             # a figure the slot cannot hold at all
            continue
        digits, qdigits = rng.choice([2, 8, 0, 2, 8, 18, 19]), rng.choice([5, 8, 0, 18])
        levels = rng.choice([20, 5, 0])
        seen = rng.choice([None, 0, max(0, bv.trades - 3)])
        w = BookMessages(HOST, KEY, digits, qdigits, levels, schema.SCHEMA)
        raw = block.seg.read_consistent(block.book_offset(0), SLOT_BYTES)
        if seen is not None:              # a message before, with ``seen`` trades
            first = bytearray(raw)
            struct.pack_into("<Q", first, S._BOOK_MARKET_OFF + 88, seen)
            struct.pack_into("<Q", first, 64, (bv.update_id + 1) % 2**64)
            if isinstance(_outcome(lambda: w.messages(bytes(first))), type):
                seen = None               # that one was refused: nothing was sent before
        try:
            want = reference(block, 0, digits, qdigits, levels, seen)
            refused = False
        except TradesRefused as exc:            # the book goes, its trades are left out
            want, refused = (exc.book, None), True
        except Exception as exc:
            want, refused = type(exc), False
        got = _outcome(lambda: w.messages(raw))
        assert (not isinstance(got, type) and w.trade_error is not None) == refused, (bv, got, w.trade_error)
        trades_refused += refused
        if isinstance(want, type):
            errors += 1
            assert isinstance(got, type) and issubclass(got, Exception), (bv, want, got)
        else:
            assert got == want, (bv, digits, qdigits, levels, seen)
            same += 1
            with_trades += want[1] is not None
    # every way is taken often
    assert errors > 500 and same > 1000 and with_trades > 200 and trades_refused >= 5, \
        (errors, same, with_trades, trades_refused)


def test_a_book_no_message_can_carry_is_counted_and_the_round_goes_on(shm_name: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The publisher's round over a real stats block: one book holds a price fmt_fixed refuses
    (INT64_MIN); it is counted (``frame_errors``) and logged, and every other book of the round
    is still sent (here, with no server, counted as not connected), then again once the engine
    writes a good slot for it."""
    import asyncio

    from obitui.bus.publisher import LABEL, Publisher, PublishSpec
    from obitui.config import book_plan, load_config
    from obitui.headless import book_markets
    cfg = load_config(None)
    plan = book_plan(cfg.feeds)
    st = StatsBlock.create(shm_name, len(cfg.feeds) + 1, len(plan), book_keys=plan)
    try:
        markets = book_markets(cfg)
        base = views()[0]
        for k, (key, (j, f)) in enumerate(markets.items()):
            venue, sym = key.split(":", 1)
            write_slot(st, j, dataclasses.replace(base, exchange=venue, symbol=sym, label=f.label, update_id=k + 1))
        bad_key, (bad_j, bad_f) = next(iter(markets.items()))
        bad = dataclasses.replace(base, exchange=bad_key.split(":")[0], symbol=bad_key.split(":")[1],
                                  label=bad_f.label, update_id=99, bids=[(-2**63, 1)])
        write_slot(st, bad_j, bad)
        pub = Publisher(cfg, st, len(cfg.feeds), [], PublishSpec("nats://127.0.0.1:1", "h1"))
        with caplog.at_level("WARNING", logger="obitui.publisher"):
            asyncio.run(pub.tick())
        assert pub.me.get("frame_errors") == 1
        assert f"{LABEL}: book {bad_key}: it not published: " in caplog.text
        # every other book went to send(); the feeds message too (no connection: not queued)
        assert pub.me.get("frames") == pub.me.get("frames_discarded") == len(markets) - 1 + 1
        asyncio.run(pub.tick())                       # nothing new: the bad slot is not read again
        assert pub.me.get("frame_errors") == 1 and pub.me.get("frames") == len(markets)
        write_slot(st, bad_j, dataclasses.replace(bad, update_id=100, bids=base.bids))
        asyncio.run(pub.tick())
        assert pub.me.get("frame_errors") == 1 and pub.me.get("frames") == len(markets) + 1
        # a new trade no message can carry: the book goes, its trades are counted and left out
        # (a publisher of its own: the log says the 1st, 10th, 100th ... of its errors)
        pub = Publisher(cfg, st, len(cfg.feeds), [], PublishSpec("nats://127.0.0.1:1", "h1"))
        asyncio.run(pub.tick())
        assert pub.me.get("frame_errors") == 0 and pub.me.get("frames") == len(markets) + 1
        write_slot(st, bad_j, dataclasses.replace(bad, update_id=101, bids=base.bids, trades=1,
                                                  tape=[(1_796_548_544_000_000_000, -2**63, 1, 1)]))
        with caplog.at_level("WARNING", logger="obitui.publisher"):
            asyncio.run(pub.tick())
        assert pub.me.get("frame_errors") == 1 and pub.me.get("frames") == len(markets) + 2
        assert f"{LABEL}: book {bad_key}: its trades not published: ValueError" in caplog.text
    finally:
        st.close()

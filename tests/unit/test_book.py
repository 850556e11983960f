"""The Cython order book against a dict/Decimal model, and its reporting of odd states."""
from __future__ import annotations

import random
import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from obitui.core.book import OrderBook, level_checksum
from obitui.feeds.bitget.checksum import bitget_checksum
from tests.book_model import ModelBook


def test_basics() -> None:
    b = OrderBook(digits=8)
    assert b.best_bid() is None and b.best_ask() is None and b.obi(20) == 0.0
    b.apply_snapshot([["100.0", "1.5"], ["99.5", "2"]], [["100.5", "1.00"], ["101", "0.5000"]])
    assert b.best_bid() == ("100.0", "1.5")
    assert b.best_ask() == ("100.5", "1.00")
    assert len(b.bids) == 2 and len(b.asks) == 2 and len(b) == 4
    assert b.top(1) == ([("100.0", "1.5")], [("100.5", "1.00")])
    assert b.top(10)[1] == [("100.5", "1.00"), ("101", "0.5000")]
    assert b.obi(20) == pytest.approx((3.5 - 1.5) / 5.0)
    b.apply([["99.5", "0"], ["99.9", "3"]], [["100.5", "0.00000000"], ["105", "0"]])
    assert b.top(5) == ([("100.0", "1.5"), ("99.9", "3")], [("101", "0.5000")])
    assert not b.crossed


def test_float_keys_bug_cannot_happen() -> None:
    """The system obitui replaces keyed levels by float: 30000.96 never got deleted."""
    b = OrderBook(8)
    b.apply_snapshot([["30000.96", "1"]], [["30001.00", "1"]])
    b.apply([["30000.9600", "0"]], [])
    assert len(b.bids) == 0
    assert b.obi(20) == -1.0


def test_snapshot_in_any_order_with_duplicates_and_zeros() -> None:
    b = OrderBook(8)
    b.apply_snapshot([["99", "1"], ["101", "2"], ["100", "0"], ["99", "5"]], [["103", "1"], ["102", "0"]])
    assert b.top(5) == ([("101", "2"), ("99", "5")], [("103", "1")])


def test_crossed_book_is_reported_not_repaired() -> None:
    b = OrderBook(8)
    b.apply_snapshot([["100", "1"]], [["101", "1"]])
    assert not b.crossed and b.crossed_count == 0
    b.apply([["101.5", "1"]], [])
    assert b.crossed and b.crossed_count == 1
    assert b.best_bid() == ("101.5", "1") and b.best_ask() == ("101", "1")  # untouched
    b.apply([["102", "1"]], [])
    assert b.crossed_count == 1  # still the same crossing
    b.apply([["101.5", "0"], ["102", "0"]], [])
    assert not b.crossed
    b.apply([], [["100", "2"]])  # touching (bid == ask) counts as crossed
    assert b.crossed and b.crossed_count == 2


@pytest.mark.parametrize("level", [["abc", "1"], ["1e3", "1"], ["-1", "1"], ["100", "-1"],
                                   ["100", "1.000000001"], ["0", "1"], ["100"], [100, "1"],
                                   ["", "1"], ["99999999999999999", "1"]])
def test_bad_level_raises_and_leaves_book_unchanged(level: list) -> None:
    b = OrderBook(8)
    b.apply_snapshot([["100", "1"]], [["101", "1"]])
    before = b.top(10)
    with pytest.raises((ValueError, TypeError)):
        b.apply([["99", "7"], level], [["102", "3"]])
    assert b.top(10) == before
    with pytest.raises((ValueError, TypeError)):
        b.apply_snapshot([level], [])
    assert b.top(10) == before


def test_extra_elements_per_level_are_ignored() -> None:
    b = OrderBook(8)
    b.apply_snapshot([["100", "1", "extra", 7]], [["101", "2", []]])
    assert b.top(1) == ([("100", "1")], [("101", "2")])


def test_large_and_tiny_prices() -> None:
    b = OrderBook(8)
    b.apply_snapshot([["0.00000001", "92233720368"]], [["92233720368.54775807", "0.00000001"]])
    assert b.best_bid() == ("0.00000001", "92233720368")
    assert b.best_ask() == ("92233720368.54775807", "0.00000001")
    assert b.obi(1) == (9223372036800000000 - 1) / (9223372036800000000 + 1)


def test_checksum_depth_and_missing_levels() -> None:
    import zlib
    b = OrderBook(8)
    b.apply_snapshot([["1.10", "2"]], [["1.20", "3.0"], ["1.3", "4"]])
    expected = zlib.crc32(b"1.10:2:1.20:3.0:1.3:4")
    assert bitget_checksum(b) == (expected - 2**32 if expected >= 2**31 else expected)
    assert bitget_checksum(OrderBook(8)) == 0
    assert level_checksum(b) == bitget_checksum(b) and level_checksum(b, 1) == bitget_checksum(b, 1)


def test_fixed_levels_and_memory() -> None:
    b = OrderBook(2)
    b.apply_snapshot([[f"{100 + i}.00", "1"] for i in range(10_000)][::-1], [])
    assert len(b.bids) == 10_000
    assert b.bids.fixed_levels(1) == [(1_009_900, 100)]
    assert b.nbytes < 10_000 * 24 * 3


prices = st.builds(lambda i, d: (Decimal(i) / (10 ** d)), st.integers(1, 9 * 10**10), st.integers(0, 8))
qtys = st.one_of(st.just(Decimal(0)), st.builds(lambda i, d: Decimal(i) / (10 ** d),
                                                   st.integers(0, 10**10), st.integers(0, 8)))


def _text(d: Decimal, extra_zeros: int) -> str:
    s = format(d, "f")
    if extra_zeros:
        s += ("" if "." in s else ".") + "0" * extra_zeros
    return s


levels = st.lists(st.tuples(prices, qtys, st.integers(0, 3), st.integers(0, 3)), max_size=30).map(
    lambda xs: [[_text(p, zp), _text(q, zq)] for p, q, zp, zq in xs])


def _model_checksum(model: ModelBook, depth: int = 25) -> int:
    b, a = model.top(depth)
    parts: list[str] = []
    for i in range(depth):
        for side in (b, a):
            if i < len(side):
                parts += side[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(8)
        self.model = ModelBook()
        self.live = False

    @rule(depth=st.sampled_from([0, 1, 3, 32]))
    def tombstone_depth(self, depth: int) -> None:
        # 0: every delete below the best level leaves a tombstone (the default is 32 levels)
        self.book.bids.tomb_depth = depth
        self.book.asks.tomb_depth = depth

    @rule(bids=levels, asks=levels)
    def snapshot(self, bids: list, asks: list) -> None:
        self.book.apply_snapshot(bids, asks)
        self.model.snapshot(bids, asks)
        self.live = True

    @precondition(lambda self: self.live)
    @rule(bids=levels, asks=levels)
    def update(self, bids: list, asks: list) -> None:
        self.book.apply(bids, asks)
        self.model.apply(bids, asks)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_known_and_absent(self, data: st.DataObject) -> None:
        known = [p for p, _ in self.model.top(1000)[0]]
        pick = data.draw(st.lists(st.sampled_from(known), max_size=5)) if known else []
        bids = [[p, "0"] for p in pick] + [["0.12345678", "0.000"]]
        self.book.apply(bids, [])
        self.model.apply(bids, [])

    @invariant()
    def agrees(self) -> None:
        for n in (1, 5, 20, 1000):
            assert self.book.top(n) == self.model.top(n)
            assert self.book.obi(n) == self.model.obi(n)
        mb, ma = self.model.top(1)
        assert self.book.best_bid() == (mb[0] if mb else None)
        assert self.book.best_ask() == (ma[0] if ma else None)
        assert len(self.book.bids) == len(self.model.bids)
        assert len(self.book.asks) == len(self.model.asks)
        crossed = bool(mb and ma and Decimal(mb[0][0]) >= Decimal(ma[0][0]))
        assert self.book.crossed == crossed
        assert bitget_checksum(self.book) == _model_checksum(self.model)
        packed, nb, na, _, _ = self.book.packed()
        assert (nb, na) == (len(self.model.bids), len(self.model.asks))
        assert packed == _pack(self.model.top(10**6)[0] + self.model.top(10**6)[1])


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)


def _pack(levels: list) -> bytes:
    import struct
    from obitui.core.fixed import parse_fixed
    return b"".join(struct.pack("<qq", parse_fixed(p), parse_fixed(q)) for p, q in levels)


@given(st.lists(levels, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_packed_records_path_equals_string_path(frames: list) -> None:
    by_text, by_packed = OrderBook(8), OrderBook(8)
    by_text.apply_snapshot(frames[0], frames[0][::-1])
    by_packed.apply_snapshot_packed(_pack(frames[0]), _pack(frames[0][::-1]), 8, 8)
    for f in frames[1:]:
        by_text.apply(f, f[:3])
        by_packed.apply_packed(_pack(f), _pack(f[:3]), 8, 8)
    assert by_text.bids.fixed_levels() == by_packed.bids.fixed_levels()
    assert by_text.asks.fixed_levels() == by_packed.asks.fixed_levels()
    assert by_text.obi(20) == by_packed.obi(20)
    assert by_text.crossed == by_packed.crossed


@pytest.mark.parametrize("depth", [0, 32])
def test_tombstones_deep_churn_against_a_dict(depth: int) -> None:
    """Deep deletes leave tombstones (reused by nearby inserts, revived by updates, compacted
    once numerous); every view still equals a plain dict's, over a long random walk."""
    rnd = random.Random(depth + 5)
    book = OrderBook(2)
    book.bids.tomb_depth = book.asks.tomb_depth = depth
    model: dict[int, dict[int, int]] = {0: {}, 1: {}}
    snap = [[f"{p}.00", "1"] for p in range(10_000, 8_000, -1)]
    book.apply_snapshot(snap, [])
    model[0] = {p * 100: 100 for p in range(8_001, 10_001)}
    most_dead = 0
    for step in range(30_000):
        deep = rnd.random() < 0.5
        p = rnd.randint(7_000, 10_050) if deep else 10_000 - int(rnd.expovariate(0.2))
        p = p * 100 + (rnd.randint(1, 99) if rnd.random() < 0.1 else 0)   # off-grid inserts
        q = 0 if rnd.random() < 0.45 else rnd.randint(1, 500)
        book.apply([[f"{p // 100}.{p % 100:02d}", str(q)]], [])
        if q:
            model[0][p] = q * 100
        else:
            model[0].pop(p, None)
        most_dead = max(most_dead, book.bids.tombstones)
        if step % 997 == 0 or step > 29_990:
            want = sorted(model[0].items(), reverse=True)
            assert book.bids.fixed_levels() == want
            assert len(book.bids) == len(want)
            assert book.bids.fixed_levels(7) == want[:7]
            assert book.bids.total_qty(50) == sum(q for _, q in want[:50])
    assert most_dead > (64 if depth == 0 else 10)   # the churn did leave tombstones
    assert book.bids.tombstones <= max(64, len(book.bids) // 4)   # and compaction bounds them


def test_packed_records_are_validated() -> None:
    import struct
    b = OrderBook(8)
    with pytest.raises(ValueError, match="whole"):
        b.apply_packed(b"\x00" * 8, b"")
    with pytest.raises(ValueError, match="must be > 0"):
        b.apply_packed(struct.pack("<qq", -5, 1), b"")
    with pytest.raises(ValueError, match="must be > 0"):
        b.apply_packed(struct.pack("<qq", 5, -1), b"")
    b.apply_packed(memoryview(b"\x00" + struct.pack("<qq", 5, 1))[1:], bytearray())  # unaligned
    assert b.bids.fixed_levels() == [(5, 1)]


number_text = st.one_of(
    st.from_regex(r"\A[0-9]{1,22}(\.[0-9]{1,22})?\Z", fullmatch=True),
    st.text(alphabet="0123456789.-+e x\u00e9", max_size=30),
    st.builds(lambda a, b, z: f"{a}.{b:0{z}d}", st.integers(0, 10**12), st.integers(0, 10**9), st.integers(0, 20)))


@given(number_text, st.integers(0, 18))
@settings(max_examples=2000, deadline=None)
def test_level_decimals_read_like_parse_fixed(text: str, digits: int) -> None:
    """The book reads level strings a word at a time (SWAR) and leaves every text it does not
    fully read to parse_fixed: the value and the decimals kept must be parse_fixed's, from a
    list and from a frame's text alike."""
    from obitui.core.fixed import format_fixed, parse_fixed_decimals
    try:
        want = parse_fixed_decimals(text, digits)
    except ValueError:
        want = None
    book = OrderBook(digits)
    try:
        book.apply([["1", text]], [])
    except ValueError:
        assert want is None, text
        return
    assert want is not None, text
    value, decimals = want
    assert book.bids.fixed_levels() == ([(10**digits, value)] if value else [])
    if value:
        assert book.best_bid() == ("1", format_fixed(value, digits, decimals))
    frame = '{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["1","%s"]],"a":[]}' % text
    from obitui.feeds.binance._scan import DepthScanner
    scanned = OrderBook(digits)
    scanner = DepthScanner(scanned)
    if scanner.scan(frame) is not None:     # the scanner may decline, never differ
        scanner.apply(False)
        assert scanned.bids.fixed_levels() == book.bids.fixed_levels()
        assert scanned.best_bid() == book.best_bid()


def test_long_decimals_rebuild_exactly() -> None:
    """Every text parse_fixed takes (up to 128 characters) comes back as it was received, in
    the views and in the checksum (a fixed 64-byte buffer once failed on 100 decimals)."""
    price, qty = "1." + "0" * 100, "2." + "0" * 125
    b = OrderBook(8)
    b.apply([[price, qty]], [["3." + "0" * 50, "4"]])
    assert b.best_bid() == (price, qty)
    assert b.top(1) == ([(price, qty)], [("3." + "0" * 50, "4")])
    text = f"{price}:{qty}:3.{'0' * 50}:4"
    crc = zlib.crc32(text.encode())
    assert bitget_checksum(b) == (crc - (1 << 32) if crc >= 1 << 31 else crc)
    many = OrderBook(8)      # 50 such levels a side: more text than any fixed checksum buffer
    many.apply([[f"{i}." + "0" * 100, "1." + "0" * 100] for i in range(1, 60)],
               [[f"{i}." + "0" * 100, "1." + "0" * 100] for i in range(100, 160)])
    b_top, a_top = many.top(50)
    text = ":".join(f"{bp}:{bq}:{ap}:{aq}" for (bp, bq), (ap, aq) in zip(b_top, a_top))
    crc = zlib.crc32(text.encode())
    assert bitget_checksum(many, 50) == (crc - (1 << 32) if crc >= 1 << 31 else crc)


def test_stub_names_every_public_attribute() -> None:
    """obitui/core/book.pyi is what editors and type checkers see: it must not fall behind."""
    import ast
    from pathlib import Path

    import obitui.core.book as mod
    tree = ast.parse(Path(mod.__file__).with_name("book.pyi").read_text())
    stub: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            stub[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        elif isinstance(node, ast.FunctionDef):
            stub.setdefault("", set()).add(node.name)
    for cls in (mod.OrderBook, mod.BookSide):
        public = {n for n in dir(cls) if not n.startswith("_")}
        assert public <= stub[cls.__name__], public - stub[cls.__name__]
    assert {"level_checksum", "crc32_signed"} <= stub[""]


def _record(kind_snapshot: bool, bids: list, asks: list, last_id: int, recv_ns: int) -> bytes:
    from obitui.core.records import Kind, encode_book
    book = OrderBook(8)
    payload = book.apply(bids, asks, True)
    return encode_book(Kind.BOOK_SNAPSHOT if kind_snapshot else Kind.BOOK_DELTA, 3, 7, recv_ns,
                       last_id - 1, last_id, *payload)


@given(st.lists(st.tuples(st.booleans(), levels, levels), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_apply_record_equals_decode_book_then_apply_packed(records: list) -> None:
    """The engine's one call per ring record does what decode_book + apply_(snapshot_)packed
    did: same levels, validity, update id, decimals shown, receive time."""
    from obitui.core.records import BOOK_HEADER, decode_book
    from obitui.core.book import OrderBook as OB
    fast, slow = OB(8), OB(8)
    slow_pdec = slow_qdec = 8
    for k, (snap, bids, asks) in enumerate(records):
        payload = _record(snap, bids, asks, 100 + k, 5_000 + k)
        got = fast.apply_record(memoryview(payload), snap)
        rec = decode_book(payload)
        if snap:
            slow.apply_snapshot_packed(rec.bids, rec.asks, rec.pdec, rec.qdec)
            slow.valid = True
            slow_pdec, slow_qdec = rec.pdec, rec.qdec
        elif slow.valid:
            slow.apply_packed(rec.bids, rec.asks, rec.pdec, rec.qdec)
            slow_pdec, slow_qdec = max(slow_pdec, rec.pdec), max(slow_qdec, rec.qdec)
        else:
            assert got == -1 and not fast.valid
            continue
        slow.update_id = rec.last_id
        assert got == rec.recv_ns
        assert fast.update_id == slow.update_id and fast.valid == slow.valid
        assert (fast.shown_pdec, fast.shown_qdec) == (slow_pdec, slow_qdec)
        assert fast.bids.fixed_levels() == slow.bids.fixed_levels()
        assert fast.asks.fixed_levels() == slow.asks.fixed_levels()
        assert fast.crossed == slow.crossed
    assert BOOK_HEADER.size == 48


def test_apply_record_rejects_what_decode_book_rejects() -> None:
    import struct
    good = _record(True, [["1.5", "2"]], [["2.5", "1"]], 9, 1)
    b = OrderBook(8)
    with pytest.raises(ValueError, match="shorter than its header"):
        b.apply_record(good[:40], True)
    with pytest.raises(ValueError, match="does not hold 1\\+1 levels"):
        b.apply_record(good + b"\x00" * 8, True)
    bad_price = good[:48] + struct.pack("<qq", -5, 1) + good[64:]
    with pytest.raises(ValueError, match="must be > 0"):
        b.apply_record(bad_price, True)
    assert len(b) == 0 and not b.valid and b.update_id == 0      # nothing applied
    assert b.apply_record(_record(False, [["1", "1"]], [], 3, 1), False) == -1   # no snapshot yet
    assert b.apply_record(good, True) == 1 and b.valid and b.update_id == 9 and len(b) == 2


def test_price_strings_follow_the_text_last_received() -> None:
    """Price strings are cached per side (by price and decimals): a price received again with
    other trailing zeros shows the new text, and strings handed out outlive the book."""
    b = OrderBook(8)
    b.apply([["100.5", "1"]], [])
    first = b.best_bid()
    b.apply([["100.5000", "2"]], [])
    assert b.best_bid() == ("100.5000", "2")
    b.apply([["100.50", "3"]], [])
    assert b.best_bid() == ("100.50", "3") and first == ("100.5", "1")
    # far more prices than cache slots, read twice: every string right both times
    many = OrderBook(2)
    many.apply([[f"{p}.{p % 100:02d}", "1"] for p in range(1000, 3000)], [])
    once = many.bids.levels()
    assert many.bids.levels() == once == [(f"{p}.{p % 100:02d}", "1") for p in range(2999, 999, -1)]
    del many
    assert once[0] == ("2999.99", "1")

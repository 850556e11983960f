"""Hostile input for every parser (issue #8): whatever arrives, the parser returns a value or
raises its own documented error; nothing else escapes, nothing hangs, nothing crashes."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obitui.capture import CaptureError, CaptureRecord, read_capture
from obitui.config import Config, ConfigError, load_config
from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum
from obitui.core.fixed import format_fixed, parse_fixed
from obitui.core.records import (BOOK_HEADER, INVALID, TICKER, TRADE, RecordError, decode_book, decode_invalid,
                                 decode_ticker, decode_trade)
from obitui.core.ring import Ring, RingError, owned_ring
from obitui.feeds.binance.sync import DepthFormatError, DepthSync, SyncResult, parse_depth_event, parse_snapshot

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20)
decimal_like = st.one_of(
    st.text(alphabet="0123456789.-+eE ", max_size=40),
    st.text(max_size=20),
    st.from_regex(r"\A[0-9]{1,25}(\.[0-9]{0,20})?\Z"),
)
level = st.one_of(st.tuples(decimal_like, decimal_like).map(list), json_values)


@FUZZ
@given(decimal_like, st.integers(min_value=0, max_value=18))
def test_parse_fixed_returns_an_exact_int_or_value_error(text: str, digits: int) -> None:
    try:
        v = parse_fixed(text, digits)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(v, int) and -(2**63) <= v < 2**63
    frac = text.split(".")[1] if "." in text else ""
    assert parse_fixed(format_fixed(v, digits, len(frac)), digits) == v


def _depth_event() -> st.SearchStrategy[dict]:
    good = st.fixed_dictionaries({
        "e": st.sampled_from(["depthUpdate", "trade", "", None]),
        "E": st.one_of(st.integers(min_value=-5, max_value=2**64), json_values),
        "s": st.text(max_size=10),
        "U": st.one_of(st.integers(min_value=-5, max_value=2**64), json_values),
        "u": st.one_of(st.integers(min_value=-5, max_value=2**64), json_values),
        "b": st.one_of(st.lists(level, max_size=4), json_values),
        "a": st.one_of(st.lists(level, max_size=4), json_values),
    })
    return st.one_of(good, st.dictionaries(st.text(max_size=3), json_values, max_size=6))


@FUZZ
@given(st.lists(_depth_event(), min_size=1, max_size=12), st.integers(min_value=0, max_value=2**40))
def test_binance_depth_events_through_the_sync_never_escape(events: list[dict], snap_id: int) -> None:
    book = OrderBook(8)
    sync = DepthSync(book, pack=True)
    for i, data in enumerate(events):
        try:
            ev = parse_depth_event(data)
        except DepthFormatError as exc:
            assert str(exc)
            continue
        assert 0 <= ev.first_id <= ev.last_id < 2**63
        assert isinstance(ev.bids, list) and isinstance(ev.asks, list)
        try:
            res = sync.on_event(ev)
        except (ValueError, TypeError) as exc:  # a level that is not a decimal pair: the feed resyncs
            assert str(exc)
            sync.reset()
            continue
        assert isinstance(res, SyncResult)
        if i == 2:
            try:
                res = sync.on_snapshot(snap_id, [["1.0", "2.0"]], [["3.0", "4.0"]])
            except (ValueError, TypeError) as exc:
                assert str(exc)
                sync.reset()
            else:
                assert isinstance(res, SyncResult)
                assert book.valid == (res is SyncResult.SYNCED), res
    if book.valid:
        bids, asks = book.top(50)
        assert bids == sorted(bids, key=lambda lv: -float(lv[0])) and asks == sorted(asks, key=lambda lv: float(lv[0]))


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"lastUpdateId": json_values, "bids": json_values,
                                                       "asks": json_values})))
def test_binance_rest_snapshot_bodies(body: object) -> None:
    """parse_snapshot returns the three parts of a well-shaped body or raises DepthFormatError
    (its docstring), never AttributeError/TypeError; what it returns the book parses or
    refuses with a ValueError (a string that is not a decimal of 8 digits)."""
    try:
        last, bids, asks = parse_snapshot(body)  # type: ignore[arg-type]
    except DepthFormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert not _well_shaped_snapshot(body), body
        return
    assert _well_shaped_snapshot(body), body
    assert isinstance(last, int) and 0 <= last < 2**63 and last == body["lastUpdateId"]  # type: ignore[index]
    assert bids is body["bids"] and asks is body["asks"]  # type: ignore[index]
    book = OrderBook(8)
    try:
        book.apply_snapshot(bids, asks)
    except ValueError as exc:
        assert str(exc)
        return
    got_bids, got_asks = book.top(len(bids) + len(asks) + 1)
    assert len(got_bids) <= len(bids) and len(got_asks) <= len(asks)


def _well_shaped_snapshot(body: object) -> bool:
    """The documented shape, spelled out independently of parse_snapshot."""
    if not isinstance(body, dict):
        return False
    last = body.get("lastUpdateId")
    if type(last) is not int or not 0 <= last < 2**63:
        return False
    return all(isinstance(body.get(k), list)
               and all(isinstance(lv, list) and len(lv) >= 2 and isinstance(lv[0], str)
                       and isinstance(lv[1], str) for lv in body[k])
               for k in ("bids", "asks"))


@pytest.mark.parametrize("body, message", [
    (None, "must be a JSON object, got NoneType"),
    ([1, 2, 3], "must be a JSON object, got list"),
    ("lastUpdateId", "must be a JSON object, got str"),
    ({"bids": [], "asks": []}, "'lastUpdateId' must be an int"),
    ({"lastUpdateId": True, "bids": [], "asks": []}, "'lastUpdateId' must be an int"),
    ({"lastUpdateId": -1, "bids": [], "asks": []}, "'lastUpdateId' must be an int"),
    ({"lastUpdateId": 2**63, "bids": [], "asks": []}, "'lastUpdateId' must be an int"),
    ({"lastUpdateId": 1, "asks": []}, "'bids' must be a list"),
    ({"lastUpdateId": 1, "bids": [], "asks": {}}, "'asks' must be a list"),
    ({"lastUpdateId": 1, "bids": [["1.0"]], "asks": []}, "bids[0] must be a [price, quantity] pair"),
    ({"lastUpdateId": 1, "bids": [], "asks": [["1.0", "2"], "3.0"]}, "asks[1] must be a [price, quantity] pair"),
    ({"lastUpdateId": 1, "bids": [[1.0, "2"]], "asks": []}, "bids[0] must be a [price, quantity] pair"),
    ({"lastUpdateId": 1, "bids": [{"p": "1", "q": "2"}], "asks": []}, "bids[0] must be a [price, quantity] pair"),
])
def test_binance_rest_snapshot_errors_say_what_is_wrong(body: object, message: str) -> None:
    with pytest.raises(DepthFormatError) as err:
        parse_snapshot(body)  # type: ignore[arg-type]
    assert type(err.value) is DepthFormatError and message in str(err.value), str(err.value)


def test_binance_rest_snapshot_of_the_protocol_shape() -> None:
    body = orjson.loads(b'{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],'
                        b'"asks":[["4.00000200","12.00000000"]]}')
    assert parse_snapshot(body) == (1027024, [["4.00000000", "431.00000000"]],
                                    [["4.00000200", "12.00000000"]])


@FUZZ
@given(st.lists(level, max_size=8), st.lists(level, max_size=8), st.lists(level, max_size=8))
def test_book_levels_of_any_shape(bids: list, asks: list, update: list) -> None:
    book = OrderBook(8)
    try:
        book.apply_snapshot(bids, asks)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        assert book.top(50) == ([], [])       # a refused snapshot leaves the book as it was
        return
    before = book.top(50)
    try:
        book.apply(update, [], True)
    except (ValueError, TypeError) as exc:
        assert str(exc)
    else:
        assert book.top(50)[1] == before[1]   # an update of bids only leaves the asks alone
    assert -(2**31) <= bitget_checksum(book) < 2**31
    assert -1.0 <= book.obi(20) <= 1.0


def _book_like(nb: int, na: int, delta: int, header: bytes) -> bytes:
    """A book header claiming nb+na levels, followed by that many levels give or take delta bytes."""
    hdr = bytearray(header)
    struct.pack_into("<II", hdr, 4, nb, na)
    return bytes(hdr) + bytes(max(0, 16 * (nb + na) + delta))


# plain random bytes are almost never as long as a record (Hypothesis keeps them short), so
# lengths at and around each record's size are drawn on purpose
record_payloads = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from([INVALID.size, TRADE.size, TICKER.size, BOOK_HEADER.size]),
              st.integers(min_value=-2, max_value=20)).flatmap(
        lambda t: st.binary(min_size=max(0, sum(t)), max_size=max(0, sum(t)))),
    st.builds(_book_like, st.integers(0, 4), st.integers(0, 4),
              st.sampled_from([0, 0, 0, -16, -1, 1, 16]), st.binary(min_size=48, max_size=48)),
)


@FUZZ
@given(record_payloads)
def test_record_decoders_reject_garbage(payload: bytes) -> None:
    """Whether a payload decodes depends on its length alone (the records are fixed layouts):
    the right length decodes, any other raises RecordError with a message."""
    n = len(payload)
    book_ok = n >= BOOK_HEADER.size and n == BOOK_HEADER.size + 16 * sum(BOOK_HEADER.unpack_from(payload)[3:5])
    for decode, ok in ((decode_book, book_ok), (decode_trade, n == TRADE.size),
                       (decode_ticker, n == TICKER.size), (decode_invalid, n >= INVALID.size)):
        try:
            out = decode(payload)
        except RecordError as exc:
            assert not ok and str(exc), (decode.__name__, n)
            continue
        assert ok, (decode.__name__, n)
        if decode is decode_book:
            assert len(out.bids) == 16 * out.n_bids and len(out.asks) == 16 * out.n_asks
        elif decode is decode_invalid:
            assert out[2] == payload[INVALID.size:].decode("utf-8", "replace")


@FUZZ
@given(st.text(max_size=300))
def test_config_toml_of_any_text(tmp_path: Path, text: str) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        cfg = load_config(str(p))
    except ConfigError as exc:
        assert str(exc)
        return
    _assert_usable(cfg)


CONFIG_KEYS = st.sampled_from(["obi_levels", "label", "venue", "channel", "symbol", "ring_capacity",
                               "stale_after", "max_frame", "ping_interval", "digits", "cpu", "wait"])


def _toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


@FUZZ
@given(st.lists(st.tuples(CONFIG_KEYS, st.one_of(st.integers(), st.text(max_size=8), st.booleans(),
                                                  st.floats(allow_nan=False, allow_infinity=False))),
                max_size=6))
def test_config_values_of_wrong_types_are_config_errors(tmp_path: Path, pairs: list) -> None:
    top = [f"{k} = {_toml_value(v)}" for k, v in pairs if k == "obi_levels"]
    feed = [f"{k} = {_toml_value(v)}" for k, v in pairs if k not in ("obi_levels", "wait")]
    eng = [f"{k} = {_toml_value(v)}" for k, v in pairs if k in ("wait", "cpu")]
    base = ["label = 'X'", "venue = 'binance'", "channel = 'depth'"]
    keys = {line.split(" = ")[0] for line in feed}
    text = "\n".join(top + ["[[feeds]]"] + [b for b in base if b.split(" = ")[0] not in keys] + feed
                     + ["[engine]"] + eng) + "\n"
    p = tmp_path / "c.toml"
    p.write_text(text)
    try:
        cfg = load_config(str(p))
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _assert_usable(cfg)


def _assert_usable(cfg: Config) -> None:
    """What load_config accepts is usable."""
    assert cfg.feeds and 1 <= cfg.obi_levels <= 20
    for f in cfg.feeds:
        assert 0 <= f.digits <= 18 and 65536 <= f.ring_capacity <= 1 << 34
        assert 0 <= f.stale_after <= 86400 and 4096 <= f.max_frame <= 1 << 30 and 0 < f.ping_interval <= 30
        assert f.cpu is None or f.cpu >= 0


GOOD_CAPTURE_LINE = st.builds(
    lambda t, venue, kind, url, data: orjson.dumps({"t": t, "venue": venue, "kind": kind, "url": url,
                                                     "data": data}),
    st.integers(min_value=0, max_value=2**63 - 1), st.sampled_from(["binance", "bitget"]),
    st.sampled_from(["ws", "rest"]), st.text(max_size=10), st.text(max_size=20))


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120), json_values.map(lambda v: json.dumps(v).encode()),
                          GOOD_CAPTURE_LINE), max_size=8),
       st.sampled_from(["plain", "zst", "zst, not compressed"]))
def test_capture_files_of_any_bytes(tmp_path: Path, lines: list[bytes], form: str) -> None:
    """Every non-blank line ends as exactly one record or one error naming its line, in order."""
    p = tmp_path / ("c.jsonl" if form == "plain" else "c.jsonl.zst")
    data = b"\n".join(lines)
    if form == "zst":
        import zstandard
        p.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        p.write_bytes(data)
    errors: list[str] = []
    try:
        recs = list(read_capture(p, errors))
    except CaptureError as exc:       # an unreadable (not zstd) file as a whole
        assert form == "zst, not compressed" and data and "not a readable zstd stream" in str(exc), exc
        return
    assert form != "zst, not compressed" or not data
    want_recs, want_errors = [], []
    parts = data.split(b"\n")
    for no, line in enumerate([part + b"\n" for part in parts[:-1]] + parts[-1:], 1):
        if not line.strip():
            continue
        try:
            want_recs.append(CaptureRecord.from_json(line, f"{p}:{no}"))
        except CaptureError as exc:
            want_errors.append(str(exc))
    assert recs == want_recs and errors == want_errors
    assert all(e.startswith(f"{p}:") for e in errors)
    for r in recs:
        assert r.t >= 0 and isinstance(r.data, str)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=4096 + 511), st.binary(min_size=1, max_size=16)),
                min_size=1, max_size=6))
def test_ring_over_a_corrupted_segment(shm_name: str, patches: list[tuple[int, bytes]]) -> None:
    """Random bytes written over the header and the data of a live ring: attach refuses it, or
    pops return records or raise RingError; never an out-of-bounds read, never a hang."""
    with owned_ring(shm_name, 4096) as w:
        for i in range(20):
            w.push(bytes([i]) * (8 + i))
        path = f"/dev/shm/{shm_name}"
        fd = os.open(path, os.O_RDWR)
        try:
            for off, data in patches:
                os.pwrite(fd, data, off)
        finally:
            os.close(fd)
        try:
            r = Ring.attach(shm_name)
        except RingError as exc:
            assert str(exc)
            return
        try:
            for _ in range(100):
                try:
                    batch = r.pop_batch(64)
                except RingError as exc:
                    assert "corrupt" in str(exc)
                    with pytest.raises(RingError):     # and it stays failed
                        r.pop_batch(1)
                    break
                if not batch:
                    break
                for kind, seq, payload in batch:
                    assert 0 <= kind < 0xFFFF and len(payload) <= r.max_payload
        finally:
            r.close()

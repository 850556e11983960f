"""Hostile input for every parser (issue #8): whatever arrives, the parser returns a value or
raises its own documented error; nothing else escapes, nothing hangs, nothing crashes."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obitui.capture import CaptureError, read_capture
from obitui.config import ConfigError, load_config
from obitui.core.book import OrderBook, bitget_checksum
from obitui.core.fixed import format_fixed, parse_fixed
from obitui.core.records import RecordError, decode_book, decode_invalid, decode_ticker, decode_trade
from obitui.core.ring import Ring, RingError, owned_ring
from obitui.feeds.binance import DepthFormatError, DepthSync, SyncResult, parse_depth_event, parse_snapshot

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
        except DepthFormatError:
            continue
        try:
            res = sync.on_event(ev)
        except (ValueError, TypeError):      # a level that is not a decimal pair: the feed resyncs
            sync.reset()
            continue
        assert isinstance(res, SyncResult)
        if i == 2:
            try:
                sync.on_snapshot(snap_id, [["1.0", "2.0"]], [["3.0", "4.0"]])
            except (ValueError, TypeError):
                sync.reset()
    if book.valid:
        bids, asks = book.top(50)
        assert bids == sorted(bids, key=lambda lv: -float(lv[0])) and asks == sorted(asks, key=lambda lv: float(lv[0]))


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"lastUpdateId": json_values, "bids": json_values,
                                                       "asks": json_values})))
def test_binance_rest_snapshot_bodies(body: object) -> None:
    try:
        last, bids, asks = parse_snapshot(body)  # type: ignore[arg-type]
    except (DepthFormatError, AttributeError, TypeError):
        return
    book = OrderBook(8)
    try:
        book.apply_snapshot(bids, asks)
    except (ValueError, TypeError):
        return
    assert last >= 0


@FUZZ
@given(st.lists(level, max_size=8), st.lists(level, max_size=8), st.lists(level, max_size=8))
def test_book_levels_of_any_shape(bids: list, asks: list, update: list) -> None:
    book = OrderBook(8)
    try:
        book.apply_snapshot(bids, asks)
    except (ValueError, TypeError):
        return
    try:
        book.apply(update, [], True)
    except (ValueError, TypeError):
        pass
    bitget_checksum(book)
    assert -1.0 <= book.obi(20) <= 1.0


@FUZZ
@given(st.binary(max_size=300))
def test_record_decoders_reject_garbage(payload: bytes) -> None:
    for decode in (decode_book, decode_trade, decode_ticker, decode_invalid):
        try:
            decode(payload)
        except RecordError:
            pass


@FUZZ
@given(st.text(max_size=300))
def test_config_toml_of_any_text(tmp_path: Path, text: str) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_config(str(p))
    except ConfigError as exc:
        assert str(exc)


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
    # what is accepted is usable
    f = cfg.feeds[0]
    assert 1 <= cfg.obi_levels <= 20 and 0 <= f.digits <= 18 and 65536 <= f.ring_capacity <= 1 << 34
    assert 0 <= f.stale_after <= 86400 and 4096 <= f.max_frame <= 1 << 30 and 0 < f.ping_interval <= 30
    assert f.cpu is None or f.cpu >= 0


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120), json_values.map(lambda v: json.dumps(v).encode())), max_size=8),
       st.booleans())
def test_capture_files_of_any_bytes(tmp_path: Path, lines: list[bytes], zst: bool) -> None:
    p = tmp_path / ("c.jsonl.zst" if zst else "c.jsonl")
    data = b"\n".join(lines)
    if zst:
        import zstandard
        data = zstandard.ZstdCompressor().compress(data) if random.random() < 0.5 else data
    p.write_bytes(data)
    errors: list[str] = []
    try:
        recs = list(read_capture(p, errors))
    except CaptureError as exc:       # an unreadable (e.g. not zstd) file as a whole
        assert str(exc)
        return
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

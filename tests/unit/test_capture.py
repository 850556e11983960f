"""Capture files (contract): round trips, compression, and bad lines rejected with a reason."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obitui.capture import CaptureError, CaptureRecord, convert_cryptofeed, read_capture, write_capture


def test_round_trip_plain_and_zstd(tmp_path: Path) -> None:
    recs = [CaptureRecord(1_700_000_000_123_456_789, "binance", "ws", "wss://x/stream", '{"a":"é\\n"}'),
            CaptureRecord(1, "bitget", "rest", "https://y", "pong")]
    for name in ("c.jsonl", "c.jsonl.zst"):
        assert write_capture(tmp_path / name, recs) == 2
        assert list(read_capture(tmp_path / name)) == recs
    line = (tmp_path / "c.jsonl").read_text().splitlines()[0]
    assert line.startswith('{"t":1700000000123456789,"venue":"binance","kind":"ws"')


@pytest.mark.parametrize("line,why", [
    ("not json", "not JSON"), ("[1]", "JSON object"), ('{"t":-1,"venue":"binance","kind":"ws","url":"","data":""}', "'t'"),
    ('{"t":1.5,"venue":"binance","kind":"ws","url":"","data":""}', "'t'"),
    ('{"t":1,"venue":"kraken","kind":"ws","url":"","data":""}', "'venue'"),
    ('{"t":1,"venue":"binance","kind":"fix","url":"","data":""}', "'kind'"),
    ('{"t":1,"venue":"binance","kind":"ws","url":"","data":5}', "'data'"),
])
def test_bad_lines(tmp_path: Path, line: str, why: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"t":1,"venue":"binance","kind":"ws","url":"u","data":"d"}\n' + line + "\n")
    with pytest.raises(CaptureError, match=why):
        list(read_capture(p))
    errors: list[str] = []
    assert len(list(read_capture(p, errors))) == 1
    assert len(errors) == 1 and "bad.jsonl:2" in errors[0]


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jsonl"
        p.write_bytes(data)
        errors: list[str] = []
        for rec in read_capture(p, errors):
            assert isinstance(rec, CaptureRecord)


def test_convert_all_recordings(test_data: Path) -> None:
    # BINANCE.ws.1.0 has 267 lines: the connection line, one empty line and 265 frames
    counts = {}
    for f in sorted((test_data / "recorded").iterdir()):
        recs = list(convert_cryptofeed(f))
        counts[f.name] = len(recs)
        assert all(r.t > 1_600_000_000 * 10**9 for r in recs)
    assert counts == {"BINANCE.http.0.0": 4, "BINANCE.ws.1.0": 265, "BINANCE_FUTURES.http.0.0": 4,
                      "BINANCE_FUTURES.ws.1.0": 1535, "BITGET.ws.1.0": 684, "BITGET.ws.2.0": 473}

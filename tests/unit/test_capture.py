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
    with pytest.raises(CaptureError, match=why) as raised:
        list(read_capture(p))
    errors: list[str] = []
    assert list(read_capture(p, errors)) == [CaptureRecord(1, "binance", "ws", "u", "d")]
    assert errors == [str(raised.value)]
    assert errors[0].startswith(f"{p}:2: ") and why in errors[0]


GOOD_LINE = b'{"t":1,"venue":"bitget","kind":"rest","url":"u","data":"d"}'


@given(st.lists(st.one_of(st.binary(max_size=60), st.just(GOOD_LINE), st.just(b"  ")), max_size=10))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash(chunks: list[bytes]) -> None:
    """Every non-blank line is a record or exactly one error naming that line; blank lines
    are neither."""
    import tempfile
    data = b"\n".join(chunks)
    parts = data.split(b"\n")
    nonblank = [no for no, part in enumerate(parts, 1) if part.strip()]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jsonl"
        p.write_bytes(data)
        errors: list[str] = []
        recs = list(read_capture(p, errors))
    assert all(isinstance(rec, CaptureRecord) for rec in recs)
    assert len(recs) + len(errors) == len(nonblank), (recs, errors)
    err_lines = [int(e[len(f"{p}:"):].split(":", 1)[0]) for e in errors]
    assert all(e.startswith(f"{p}:") for e in errors) and err_lines == sorted(set(err_lines))
    assert set(err_lines) <= set(nonblank)
    assert all(parts[no - 1] != GOOD_LINE for no in err_lines)
    assert recs.count(CaptureRecord(1, "bitget", "rest", "u", "d")) >= sum(
        parts[no - 1] == GOOD_LINE for no in nonblank)


def test_convert_all_recordings(test_data: Path) -> None:
    # BINANCE.ws.1.0 has 267 lines: the connection line, one empty line and 265 frames
    counts = {}
    for f in sorted((test_data / "recorded").iterdir()):
        recs = list(convert_cryptofeed(f))
        counts[f.name] = len(recs)
        assert all(r.t > 1_600_000_000 * 10**9 for r in recs)
    assert counts == {"BINANCE.http.0.0": 4, "BINANCE.ws.1.0": 265, "BINANCE_FUTURES.http.0.0": 4,
                      "BINANCE_FUTURES.ws.1.0": 1535, "BITGET.ws.1.0": 684, "BITGET.ws.2.0": 473}


RECORDINGS = ["BINANCE.http.0.0", "BINANCE.ws.1.0", "BINANCE_FUTURES.http.0.0", "BINANCE_FUTURES.ws.1.0",
              "BITGET.ws.1.0", "BITGET.ws.2.0"]


@pytest.mark.parametrize("name", RECORDINGS)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_real_recordings_read_back_without_errors(tmp_path: Path, test_data: Path, name: str,
                                                   suffix: str) -> None:
    """Every real recording, converted and written as a capture (in two appended batches, as
    the recorder writes), reads back record for record with no error at all."""
    recs = list(convert_cryptofeed(test_data / "recorded" / name))
    p = tmp_path / (name + suffix)
    half = len(recs) // 2
    assert write_capture(p, recs[:half]) + write_capture(p, recs[half:]) == len(recs)
    errors: list[str] = []
    assert list(read_capture(p, errors)) == recs
    assert errors == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_corrupt_real_capture_reports_each_bad_line(tmp_path: Path, test_data: Path, suffix: str) -> None:
    """A real capture with four damaged lines and one blanked: exactly four errors, each
    naming its line and what is wrong; every other record read as written."""
    recs = list(convert_cryptofeed(test_data / "recorded" / "BINANCE.ws.1.0"))
    assert len(recs) == 265
    lines = [r.to_json() for r in recs]
    lines[0] = lines[0][:-40]                                                    # line 1: cut short
    lines[9] = lines[9].replace(b'"venue":"binance"', b'"venue":"kraken"', 1)    # line 10
    lines[99] = b"[" + lines[99] + b"]"                                          # line 100
    lines[149] = b"   "                                                          # line 150: blank
    lines[199] = lines[199].replace(b'"t":', b'"t":-', 1)                        # line 200
    p = tmp_path / ("corrupt" + suffix)
    data = b"\n".join(lines) + b"\n"
    if suffix == ".jsonl.zst":
        import zstandard
        data = zstandard.ZstdCompressor().compress(data)
    p.write_bytes(data)

    errors: list[str] = []
    got = list(read_capture(p, errors))
    assert got == [r for i, r in enumerate(recs) if i not in (0, 9, 99, 149, 199)]
    assert len(errors) == 4, errors
    assert errors[0].startswith(f"{p}:1: not JSON (")
    assert errors[1:] == [f"{p}:10: 'venue' must be one of ('binance', 'bitget'), got 'kraken'",
                          f"{p}:100: a capture line must be a JSON object",
                          f"{p}:200: 't' must be a non-negative int (unix ns), got -{recs[199].t}"]
    with pytest.raises(CaptureError) as raised:       # without an errors list: the first one
        list(read_capture(p))
    assert str(raised.value) == errors[0]


def test_truncated_or_foreign_zstd_capture_is_an_error(tmp_path: Path, test_data: Path) -> None:
    """A .zst capture cut inside a frame (a recorder killed mid-write) or not zstd at all: the
    records before the damage, then CaptureError naming the last good line, with or without an
    errors list. A cut file must never read as a shorter clean one."""
    recs = list(convert_cryptofeed(test_data / "recorded" / "BINANCE.ws.1.0"))
    whole = tmp_path / "whole.jsonl.zst"
    write_capture(whole, recs[:100])
    first_frame = whole.stat().st_size
    write_capture(whole, recs[100:])
    data = whole.read_bytes()
    cut = tmp_path / "cut.jsonl.zst"
    for size in (first_frame + 20, len(data) - 1):      # inside the second frame
        cut.write_bytes(data[:size])
        for errors in (None, []):
            got: list[CaptureRecord] = []
            with pytest.raises(CaptureError) as raised:
                for rec in read_capture(cut, errors):
                    got.append(rec)
            assert got == recs[:len(got)] and len(got) >= 100
            assert str(raised.value) == (f"{cut}: not a readable zstd stream after line {len(got)} "
                                         "(the file ends inside a zstd frame)")
            assert errors in (None, [])
    cut.write_bytes(data[:first_frame])                 # cut exactly between frames: whole frames
    assert list(read_capture(cut, [])) == recs[:100]
    plain = tmp_path / "plain.jsonl.zst"
    plain.write_bytes(b"".join(r.to_json() + b"\n" for r in recs[:3]))
    with pytest.raises(CaptureError, match=rf"^{plain}: not a readable zstd stream after line 0 \("):
        list(read_capture(plain, []))

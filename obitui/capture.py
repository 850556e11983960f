"""Capture files (**contract**, shared by recording and replay), and conversion of the
third-party recordings in ``shared/data/recorded`` into them.

A capture is JSON Lines, optionally zstd-compressed (``.jsonl.zst``), one object per frame
received or REST body:
``{"t": <receive time, unix ns>, "venue": "binance"|"bitget", "kind": "ws"|"rest",
"url": "<the URL or stream>", "data": "<the raw text exactly as received>"}``.

``venue`` names the exchange (a registered venue's ``exchange``); which of its APIs a record
belongs to (Binance spot or USD-M, Bitget v2 or v3) the URL and the frames tell
(``Venue.recognise``).
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from obitui.feeds.venue import exchange_of_url, exchanges

VENUES = exchanges()
KINDS = ("ws", "rest")


class CaptureError(ValueError):
    """A capture line that is not a valid capture record."""


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    t: int
    venue: str
    kind: str
    url: str
    data: str

    def to_json(self) -> bytes:
        return orjson.dumps({"t": self.t, "venue": self.venue, "kind": self.kind,
                             "url": self.url, "data": self.data})

    @staticmethod
    def from_json(line: bytes | str, where: str = "") -> CaptureRecord:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CaptureError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise CaptureError(f"{where}: a capture line must be a JSON object")
        t, venue, kind, url, data = (obj.get(k) for k in ("t", "venue", "kind", "url", "data"))
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise CaptureError(f"{where}: 't' must be a non-negative int (unix ns), got {t!r}")
        if venue not in VENUES:
            raise CaptureError(f"{where}: 'venue' must be one of {VENUES}, got {venue!r}")
        if kind not in KINDS:
            raise CaptureError(f"{where}: 'kind' must be one of {KINDS}, got {kind!r}")
        if not isinstance(url, str) or not isinstance(data, str):
            raise CaptureError(f"{where}: 'url' and 'data' must be strings")
        return CaptureRecord(t, venue, kind, url, data)


class _TruncatedZstd(Exception):
    """The file ends inside a zstd frame (a writer stopped mid-frame): what follows is lost."""


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every zstd frame of a file, one after the other (a capture
    is appended to in batches, each its own frame). Unlike ``stream_reader``, which returns a
    clean end of file there, a file that ends inside a frame raises _TruncatedZstd."""

    def __init__(self, f: IO[bytes]) -> None:
        import zstandard
        self.f = f
        self.dctx = zstandard.ZstdDecompressor()
        self.dobj = self.dctx.decompressobj()
        self.in_frame = False          # bytes of the current frame were fed, its end not seen
        self.out = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self.out:
            chunk = self.f.read(1 << 16)
            if not chunk:
                if self.in_frame:
                    raise _TruncatedZstd("the file ends inside a zstd frame")
                return 0
            parts = []
            while chunk:
                self.in_frame = True
                parts.append(self.dobj.decompress(chunk))
                if not self.dobj.eof:
                    break
                chunk = self.dobj.unused_data
                self.dobj = self.dctx.decompressobj()
                self.in_frame = False
            self.out = b"".join(parts)
        n = min(len(buf), len(self.out))
        buf[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def _open_text(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".zst":
        import zstandard
        if "r" in mode:
            return io.BufferedReader(_ZstdFrames(open(path, "rb")))
        return zstandard.ZstdCompressor(level=3).stream_writer(open(path, "ab"))  # type: ignore[return-value]
    return open(path, "rb" if "r" in mode else "ab")


def read_capture(path: str | os.PathLike[str], errors: list[str] | None = None) -> Iterator[CaptureRecord]:
    """Yield the records of a capture file. A bad line raises CaptureError, or, when an
    ``errors`` list is given, is appended to it (with its line number) and skipped. A ``.zst``
    file that is not zstd, or that ends inside a frame (truncated), raises CaptureError once
    the lines before the damage have been yielded, ``errors`` or not."""
    p = Path(path)
    import zstandard
    with _open_text(p, "r") as lines:
        no = 0
        while True:
            try:
                line = lines.readline()
            except (zstandard.ZstdError, _TruncatedZstd) as exc:
                raise CaptureError(f"{p}: not a readable zstd stream after line {no} ({exc})") from None
            if not line:
                break
            no += 1
            if not line.strip():
                continue
            try:
                yield CaptureRecord.from_json(line, f"{p}:{no}")
            except CaptureError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))


def write_capture(path: str | os.PathLike[str], records: Iterable[CaptureRecord]) -> int:
    """Append records to a capture file; returns how many were written."""
    n = 0
    with _open_text(Path(path), "w") as out:
        for rec in records:
            out.write(rec.to_json() + b"\n")
            n += 1
    return n


# ------------------------------------------------------------------ third-party recordings
_CONN = re.compile(r"^(\S+) <-> ([0-9.]+)$")
_SENT = re.compile(r"^(\S+) <- ([0-9.]+): (.*)$")
_REST = re.compile(r"^(\S+) -> ([0-9.]+): (.*)$")
_RECV = re.compile(r"^([0-9.]+): (.*)$")


def _ns(ts: str) -> int:
    whole, _, frac = ts.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def _venue(url: str) -> str:
    exchange = exchange_of_url(url)
    if exchange is None:
        raise CaptureError(f"unknown venue in URL {url!r}")
    return exchange


def convert_cryptofeed(path: str | os.PathLike[str]) -> Iterator[CaptureRecord]:
    """Convert a cryptofeed sample file (``<url> <-> ts``, ``<url> <- ts: sent``,
    ``ts: received``, ``<url> -> ts: rest body``) into capture records. Frames the client sent
    are not captured (a capture holds what was received)."""
    url = ""
    venue = ""
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            if m := _CONN.match(line):
                url, venue = m.group(1), _venue(m.group(1))
                continue
            if _SENT.match(line):
                continue
            if m := _REST.match(line):
                yield CaptureRecord(_ns(m.group(2)), _venue(m.group(1)), "rest", m.group(1), m.group(3))
                continue
            if m := _RECV.match(line):
                if not url:
                    raise CaptureError(f"{path}:{no}: a received frame before any connection line")
                yield CaptureRecord(_ns(m.group(1)), venue, "ws", url, m.group(2))
                continue
            raise CaptureError(f"{path}:{no}: unrecognised line {line[:80]!r}")

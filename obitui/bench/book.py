"""`obitui bench book`: the Cython order book against a pure-Python book on
sortedcontainers.SortedDict doing the same work, side by side in one process.

Stream: a seeded, Binance-shaped market: a 5000-level snapshot per side (8-decimal strings),
then frames of 1-10 level updates concentrated near the top of book (geometric depth), about
5% deep updates, 20% deletes (some of absent levels), and a mid that walks. Figures:
- level updates/s from strings: SortedDict book (Decimal keys), OrderBook per level
  (`apply([[p, q]], [])`), OrderBook per frame (`apply(bids, asks)`, the batch path), over
  lists made up front, and both books again over lists fresh from orjson (as a feed has them);
- level updates/s from the wire (each frame as the Binance combined stream's JSON text): the
  SortedDict book after orjson, the OrderBook after orjson, and the raw-frame scanner path that
  the synced Binance depth feed runs (`DepthScanner.scan`, `DepthSync.continuity` on the scanned
  ids, `DepthScanner.apply` and `DepthSync.applied`);
- the structure choice: the same pre-parsed int64 stream applied without the GIL to the sorted
  array book and to a std::map book, and a top-20 copy + OBI(20) on each;
- top-20 + OBI(20) through the Python API (strings out);
- memory per 10k levels.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import struct
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from sortedcontainers import SortedDict

from obitui.bench.machine import machine_info
from obitui.bench.stats import median
from obitui.core.book import OrderBook
from obitui.core.fixed import parse_fixed
from obitui.feeds.binance._scan import DepthScanner
from obitui.feeds.binance.sync import DepthSync

TICK = 1_000_000  # 0.01 in 8-digit fixed point
SEGMENTS = 4      # a round walks the stream in this many turns per variant


def _s(v: int) -> str:
    return f"{v // 10**8}.{v % 10**8:08d}"


def make_stream(levels: int = 5000, frames: int = 40_000, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    mid = 27_000 * 10**8

    def qty() -> str:
        return _s(rnd.randint(1, 5 * 10**8))

    snap_b = [[_s(mid - (i + 1) * TICK), qty()] for i in range(levels)]
    snap_a = [[_s(mid + i * TICK), qty()] for i in range(levels)]
    out: list[tuple[list[list[str]], list[list[str]]]] = []
    for f in range(frames):
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        if f % 50 == 0:
            step = rnd.choice((-1, 1))
            if step > 0:
                asks.append([_s(mid), "0.00000000"])      # the old best ask would cross
            else:
                bids.append([_s(mid - TICK), "0.00000000"])
            mid += step * TICK
        for _ in range(rnd.randint(1, 10)):
            depth = rnd.randint(0, levels - 1) if rnd.random() < 0.05 else min(
                int(rnd.expovariate(0.15)), levels - 1)
            q = "0.00000000" if rnd.random() < 0.2 else qty()
            if rnd.random() < 0.5:
                bids.append([_s(mid - (depth + 1) * TICK), q])
            else:
                asks.append([_s(mid + depth * TICK), q])
        out.append((bids, asks))
    n_updates = sum(len(b) + len(a) for b, a in out)
    return {"snapshot": (snap_b, snap_a), "frames": out, "updates": n_updates}


class SortedDictBook:
    """The pure-Python reference: SortedDict keyed by Decimal (exact), values Decimal."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def apply_snapshot(self, bids: list, asks: list) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def apply(self, bids: list, asks: list) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                qd = Decimal(q)
                if qd:
                    side[Decimal(p)] = qd
                else:
                    side.pop(Decimal(p), None)

    def top_obi(self, n: int) -> tuple[list, list, float]:
        b = [(k, self.bids[k]) for k in self.bids.islice(len(self.bids) - n if len(self.bids) > n else 0, reverse=True)]
        a = [(k, self.asks[k]) for k in self.asks.islice(0, n)]
        sb = sum(q for _, q in b)
        sa = sum(q for _, q in a)
        return b, a, float((sb - sa) / (sb + sa)) if sb + sa else 0.0


class SortedDictIntBook:
    """The pure-Python engine's equivalent: SortedDict keyed by int64 fixed point, levels
    unpacked from the same packed (price, qty) records with struct.iter_unpack."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def apply_packed(self, bids: bytes, asks: bytes) -> None:
        for side, packed in ((self.bids, bids), (self.asks, asks)):
            for p, q in _PAIR.iter_unpack(packed):
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)


_PAIR = struct.Struct("<qq")


class ScannedBook:
    """An OrderBook fed as the synced Binance depth feed feeds it: a DepthScanner reads each
    frame, the sync rule (DepthSync.continuity) judges the scanned ids, and the levels are applied
    when the event is the next one."""

    def __init__(self, book: OrderBook) -> None:
        self.book = book
        self.scanner = DepthScanner(book)
        self.sync = DepthSync(book)
        self.sync.synced = True      # past the snapshot and its first event: update_id is 0


def _pack(levels: list[list[str]]) -> bytes:
    return b"".join(_PAIR.pack(parse_fixed(p), parse_fixed(q)) for p, q in levels)


def _timed(fn: Callable[[], Any]) -> float:
    """Wall time of fn() with the cyclic GC off (and a collection before): every variant runs
    on the same footing, whatever garbage the previous one left (a collection landing in one
    variant's window skewed the ratios by up to 1.5x between runs)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def run(quick: bool = False, repeats: int = 5, log: Callable[[str], None] = print) -> dict[str, Any]:
    from obitui.bench import _bookloops as loops

    stream = make_stream(frames=4_000 if quick else 40_000)
    snap_b, snap_a = stream["snapshot"]
    frames = stream["frames"]
    n = stream["updates"]
    res: dict[str, Any] = {"machine": machine_info(), "repeats": repeats, "updates": n,
                           "levels_per_side": len(snap_b)}

    # Each variant applies frames[lo:hi] to its book and returns the seconds that took. A round
    # walks the stream in SEGMENTS, every variant of a group taking each segment in turn, so a
    # slow spell of this shared machine weighs on both sides of a ratio; the ratio of a round is
    # its total times' ratio, and the reported one the median over the rounds.
    def each_frame(apply: Callable[[Any, Any], Any], part: list) -> float:
        t0 = time.perf_counter()
        for b, a in part:
            apply(b, a)
        return time.perf_counter() - t0

    def over_lists(book: Any, lo: int, hi: int) -> float:
        return each_frame(book.apply, frames[lo:hi])

    def per_level(book: Any, lo: int, hi: int) -> float:
        apply, part = book.apply, frames[lo:hi]
        empty: list = []
        t0 = time.perf_counter()
        for b, a in part:
            for lvl in b:
                apply([lvl], empty)
            for lvl in a:
                apply(empty, [lvl])
        return time.perf_counter() - t0

    # the same, with lists fresh from the parser, as a feed applies them (it parses a frame and
    # applies it at once): chunks of 100 frames (~550 levels, ~110 KB of objects, within a
    # core's L2 as one frame's are), each orjson-loaded untimed right before its frames are
    # applied; two clock reads per 100 frames keep the timing overhead under 0.5%. The rows
    # above read 221k levels of Python objects allocated long before (~45 MB), where memory
    # reads of the objects weigh on both books.
    chunk = 100
    chunks = [orjson.dumps(frames[i:i + chunk]) for i in range(0, len(frames), chunk)]

    def fresh(book: Any, lo: int, hi: int) -> float:
        apply, total = book.apply, 0.0
        for c in chunks[lo // chunk:(hi + chunk - 1) // chunk]:
            loaded = orjson.loads(c)
            t0 = time.perf_counter()
            for b, a in loaded:
                apply(b, a)
            total += time.perf_counter() - t0
        return total

    # from packed int64 records (the engine's path: ring payloads), no strings involved
    packed = [(_pack(b), _pack(a)) for b, a in frames]
    snap_packed = (_pack(snap_b), _pack(snap_a))

    def over_packed(book: Any, lo: int, hi: int) -> float:
        return each_frame(book.apply_packed, packed[lo:hi])

    def int_book() -> SortedDictIntBook:
        book = SortedDictIntBook()
        book.apply_packed(*snap_packed)
        return book

    def packed_book() -> OrderBook:
        book = OrderBook(8)
        book.apply_snapshot_packed(*snap_packed)
        return book

    # from the wire: each frame as the Binance combined stream sends it (one text per frame)
    texts = [orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1_700_000_000_000 + i, "s": "BTCUSDT", "U": 2 * i + 1, "u": 2 * i + 2,
        "b": b, "a": a}}).decode() for i, (b, a) in enumerate(frames)]

    def orjson_frames(book: Any, lo: int, hi: int) -> float:
        loads, apply, part = orjson.loads, book.apply, texts[lo:hi]
        t0 = time.perf_counter()
        for t in part:
            d = loads(t)["data"]
            apply(d["b"], d["a"])
        return time.perf_counter() - t0

    def scanned(fed: ScannedBook, lo: int, hi: int) -> float:
        scan, apply, part = fed.scanner.scan, fed.scanner.apply, texts[lo:hi]
        continuity, applied = fed.sync.continuity, fed.sync.applied
        t0 = time.perf_counter()
        for t in part:
            ids = scan(t)
            if ids is None:
                raise RuntimeError("the scanner declined a frame")
            first, last, _, pu, _, _ = ids
            if continuity(first, last, pu if pu >= 0 else None) is None:
                applied(last, apply(False))   # the same work as the SortedDict book: no ring payload
        took = time.perf_counter() - t0
        if fed.book.update_id != 2 * hi:
            raise RuntimeError("the scanner path did not apply every frame")
        return took

    def strings_book(make: Callable[[], Any]) -> Callable[[], Any]:
        def build() -> Any:
            book = make()
            book.apply_snapshot(snap_b, snap_a)   # not timed: the rates are per update
            return book
        return build

    sd, ob = strings_book(SortedDictBook), strings_book(lambda: OrderBook(8))

    def scanned_book() -> ScannedBook:
        return ScannedBook(ob())

    groups = [
        [("SortedDict (Decimal)", sd, over_lists), ("OrderBook per level", ob, per_level),
         ("OrderBook batch", ob, over_lists)],
        [("SortedDict (Decimal), fresh lists", sd, fresh), ("OrderBook batch, fresh lists", ob, fresh)],
        [("SortedDict (int64 records)", int_book, over_packed),
         ("OrderBook packed records", packed_book, over_packed)],
        [("SortedDict (Decimal), orjson frames", sd, orjson_frames),
         ("OrderBook, orjson + batch (frames)", ob, orjson_frames),
         ("OrderBook, raw-frame scanner (frames)", scanned_book, scanned)],
    ]
    step = max(chunk, len(frames) // SEGMENTS // chunk * chunk)
    rates: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for group in groups:
        times: dict[str, list[float]] = {name: [] for name, _, _ in group}
        for _ in range(repeats):
            books = [build() for _, build, _ in group]
            total = [0.0] * len(group)
            gc.collect()
            gc.disable()    # the cyclic GC off in every timed section, for every variant alike
            try:
                for lo in range(0, len(frames), step):
                    for k, (_, _, timed) in enumerate(group):
                        total[k] += timed(books[k], lo, min(lo + step, len(frames)))
            finally:
                gc.enable()
            for k, (name, _, _) in enumerate(group):
                times[name].append(total[k])
            del books
        base = group[0][0]
        for name, _, _ in group:
            rates[name] = n / median(times[name])
            ratios[name] = median([b / t for b, t in zip(times[base], times[name])])
            log(f"updates/s {name:38s} {rates[name] / 1e6:8.3f} M  {ratios[name]:5.1f}x")
    res["ratios"] = ratios

    # where the scanner path's time goes: the scan alone, per frame
    def scan_only(scanner: DepthScanner) -> None:
        scan = scanner.scan
        for t in texts:
            scan(t)
    scan_times = []
    for _ in range(repeats):
        book = OrderBook(8)
        book.apply_snapshot(snap_b, snap_a)
        scanner = DepthScanner(book)
        scan_times.append(_timed(lambda: scan_only(scanner)))
    per_frame_total = len(texts) and 1e9 * n / rates["OrderBook, raw-frame scanner (frames)"] / len(texts)
    res["scanner_split_ns_per_frame"] = {"scan": round(1e9 * median(scan_times) / len(texts)),
                                         "scan_sync_apply": round(per_frame_total),
                                         "levels_per_frame": round(n / len(texts), 2)}
    log(f"scanner path per frame: scan {res['scanner_split_ns_per_frame']['scan']} ns, scan + sync rule + "
        f"apply {res['scanner_split_ns_per_frame']['scan_sync_apply']} ns ({n / len(texts):.1f} levels/frame)")
    res["updates_per_s"] = rates
    res["ratio_scan_vs_sorteddict_frames"] = ratios["OrderBook, raw-frame scanner (frames)"]
    res["ratio_orjson_batch_vs_sorteddict_frames"] = ratios["OrderBook, orjson + batch (frames)"]
    res["ratio_packed_vs_sorteddict_int"] = ratios["OrderBook packed records"]
    res["ratio_batch_vs_sorteddict"] = ratios["OrderBook batch"]
    res["ratio_batch_fresh_vs_sorteddict"] = ratios["OrderBook batch, fresh lists"]
    res["ratio_per_level_vs_sorteddict"] = ratios["OrderBook per level"]

    # structure: same int64 stream, no GIL, array book vs std::map
    side, price, qty = array("q"), array("q"), array("q")
    for b, a in frames:
        for s_, levels in ((0, b), (1, a)):
            for p, q in levels:
                side.append(s_)
                price.append(parse_fixed(p))
                qty.append(parse_fixed(q))
    struct: dict[str, float] = {}
    arr_t, map_t, arr_top, map_top = [], [], [], []
    for _ in range(repeats):
        ab = OrderBook(8)
        ab.apply_snapshot(snap_b, snap_a)
        mb = loops.MapBook()
        for p, q in snap_b:
            mb_set(mb, 0, p, q)
        for p, q in snap_a:
            mb_set(mb, 1, p, q)
        arr_t.append(loops.apply_stream_array(ab, side, price, qty))
        map_t.append(loops.apply_stream_map(mb, side, price, qty))
        if ab.bids.fixed_levels(20) != mb.top(20)[0] or ab.asks.fixed_levels(20) != mb.top(20)[1]:
            raise RuntimeError("array and map books disagree")
        arr_top.append(loops.top_obi_array(ab, 200_000, 20))
        map_top.append(loops.top_obi_map(mb, 200_000, 20))
    struct["array_updates_per_s"] = len(side) / (median(arr_t) / 1e9)
    struct["map_updates_per_s"] = len(side) / (median(map_t) / 1e9)
    struct["array_top20_obi_ns"] = median(arr_top)
    struct["map_top20_obi_ns"] = median(map_top)
    res["structure"] = struct
    log(f"int64 stream, no GIL: sorted array {struct['array_updates_per_s'] / 1e6:.1f} M/s, "
        f"std::map {struct['map_updates_per_s'] / 1e6:.1f} M/s; top-20+OBI: array "
        f"{struct['array_top20_obi_ns']:.0f} ns, map {struct['map_top20_obi_ns']:.0f} ns")

    # Python-level top-20 + OBI (strings out)
    ob = OrderBook(8)
    ob.apply_snapshot(snap_b, snap_a)
    sd = SortedDictBook()
    sd.apply_snapshot(snap_b, snap_a)
    iters = 20_000 if quick else 100_000

    def py_query() -> None:
        top, obi = ob.top, ob.obi
        for _ in range(iters):
            top(20)
            obi(20)

    def sd_query() -> None:
        q = sd.top_obi
        for _ in range(iters // 10):
            q(20)

    res["py_top20_obi_us"] = median([_timed(py_query) for _ in range(repeats)]) / iters * 1e6
    res["sorteddict_top20_obi_us"] = median([_timed(sd_query) for _ in range(repeats)]) / (iters // 10) * 1e6
    log(f"top-20 + OBI via Python API: OrderBook {res['py_top20_obi_us']:.2f} us, "
        f"SortedDict {res['sorteddict_top20_obi_us']:.2f} us")

    # the same query on a live book: a frame applied before every query, the query's cost being
    # the difference between the loop with queries and the same loop without (fresh books,
    # alternating, median over the rounds)
    live_frames = frames[:20_000]

    def live(query: bool) -> float:
        book = OrderBook(8)
        book.apply_snapshot(snap_b, snap_a)
        apply, top, obi = book.apply, book.top, book.obi

        def loop() -> None:
            if query:
                for b, a in live_frames:
                    apply(b, a)
                    top(20)
                    obi(20)
            else:
                for b, a in live_frames:
                    apply(b, a)
        return _timed(loop)

    diffs = []
    for _ in range(repeats):
        with_q, without = live(True), live(False)
        diffs.append((with_q - without) / len(live_frames) * 1e6)
    res["py_top20_obi_live_us"] = median(diffs)
    log(f"top-20 + OBI via Python API on a live book (a frame applied between queries): "
        f"{res['py_top20_obi_live_us']:.2f} us")

    # memory per 10k levels
    ten_k = [[_s(10**10 + i * TICK), "1.00000000"] for i in range(10_000)]
    ob = OrderBook(8)
    ob.apply_snapshot(ten_k[::-1], [])
    res["orderbook_bytes_per_10k"] = ob.bids.nbytes
    tracemalloc.start()
    sd = SortedDictBook()
    sd.apply(ten_k, [])
    res["sorteddict_bytes_per_10k"] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    log(f"memory per 10k levels: OrderBook {res['orderbook_bytes_per_10k'] / 1024:.0f} KiB "
        f"(array capacity), SortedDict {res['sorteddict_bytes_per_10k'] / 1024:.0f} KiB")
    return res


def mb_set(mb: Any, side: int, p: str, q: str) -> None:
    from obitui.bench import _bookloops as loops
    loops.apply_stream_map(mb, array("q", [side]), array("q", [parse_fixed(p)]),
                           array("q", [parse_fixed(q)]))


def markdown(res: dict[str, Any]) -> str:
    r = res["updates_per_s"]
    s = res["structure"]
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}; "
             f"{res['updates']} level updates after a {res['levels_per_side']}-level snapshot "
             f"per side; median of {res['repeats']} rounds.", "",
             "| book | input | level updates/s | vs SortedDict, same input |", "|---|---|---:|---:|"]
    for k, v in r.items():
        kind = ("records" if "records" in k else "frames" if "frames" in k else
                "fresh" if "fresh" in k else "strings")
        what = {"records": "packed int64 records", "frames": "frame texts (JSON)",
                "strings": "decimal strings (lists made up front)",
                "fresh": "decimal strings (lists fresh from orjson)"}[kind]
        lines.append(f"| {k} | {what} | {v / 1e6:.3f} M | {res['ratios'][k]:.1f}x |")
    lines += ["", "| structure (pre-parsed int64, no GIL) | updates/s | top-20 copy + OBI(20) |",
              "|---|---:|---:|",
              f"| sorted array, best at the end (chosen) | {s['array_updates_per_s'] / 1e6:.1f} M | "
              f"{s['array_top20_obi_ns']:.0f} ns |",
              f"| C++ std::map | {s['map_updates_per_s'] / 1e6:.1f} M | {s['map_top20_obi_ns']:.0f} ns |",
              "", f"Top-20 + OBI(20) through the Python API (40 string tuples out): "
              f"{res['py_top20_obi_us']:.2f} us (SortedDict book: {res['sorteddict_top20_obi_us']:.2f} us); "
              f"on a live book, a frame applied between queries: {res['py_top20_obi_live_us']:.2f} us.",
              f"Memory per 10k levels: OrderBook {res['orderbook_bytes_per_10k'] / 1024:.0f} KiB "
              f"(array capacity; 24 B/level used), SortedDict with Decimal keys "
              f"{res['sorteddict_bytes_per_10k'] / 1024:.0f} KiB (tracemalloc)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the frames (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds (the median is reported)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    res = run(args.quick, args.repeats, log)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"ratio batch/SortedDict from strings: {res['ratio_batch_vs_sorteddict']:.1f}x (lists made up "
              f"front), {res['ratio_batch_fresh_vs_sorteddict']:.1f}x (lists fresh from orjson); "
              f"from int64 records: {res['ratio_packed_vs_sorteddict_int']:.1f}x; from frame texts: "
              f"scanner {res['ratio_scan_vs_sorteddict_frames']:.1f}x, orjson + batch "
              f"{res['ratio_orjson_batch_vs_sorteddict_frames']:.1f}x")
        if args.markdown:
            print(markdown(res))
    return 0

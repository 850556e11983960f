"""`obitui bench ring`: the shared-memory ring against multiprocessing.Queue, Pipe, faster-fifo
and pyzmq PUSH/PULL over ipc://, between two processes, side by side in one run.

Throughput: the consumer times from its first record to its last (the producer never drops:
it waits while full); the Python loops are the same minimal loop for every implementation (a
prebuilt payload, one call per record). One-way latency: the producer stamps CLOCK_MONOTONIC
into each record and paces them (the Cython ring: 2 us busy pacing; Python producers: a 50 us
sleep, so a spinning producer does not starve a baseline's feeder thread); the consumer spins
(the ring) or blocks in recv (the baselines, as they are used) and subtracts. Round trip: ping-pong over two rings. Each throughput figure is the
median of ``repeats`` runs; latency runs drop the first 10% as warm-up.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from typing import Any

from obitui.bench.machine import machine_info
from obitui.bench.stats import latency_summary, median
from obitui.core.ring import Ring

_STAMP = struct.Struct("<QQ")
_RING_CAPACITY = 1 << 22


# ------------------------------------------------------------------ per-implementation endpoints
def _endpoints(impl: str, spec: dict[str, Any], role: str, chan: Any) -> tuple[Callable, Callable]:
    """Return (send(bytes), recv() -> bytes) for one side of ``impl``."""
    if impl == "ring-py":
        if role == "producer":
            ring = Ring.attach(spec["ring"], role="producer")
            push = ring.try_push

            def send(b: bytes) -> None:
                while not push(b):
                    pass
            return send, None  # type: ignore[return-value]
        ring = Ring.attach(spec["ring"])
        pop = ring.pop

        def recv() -> bytes:
            while True:
                rec = pop()
                if rec is not None:
                    return rec[2]
        return None, recv  # type: ignore[return-value]
    if impl == "mp.Queue":
        return chan.put, chan.get
    if impl == "mp.Pipe":
        reader, writer = chan
        return writer.send_bytes, reader.recv_bytes
    if impl == "faster-fifo":
        q = chan
        pending: list[bytes] = []

        def recv_ff() -> bytes:
            if not pending:
                pending.extend(reversed(q.get_many(max_messages_to_get=4096)))
            return pending.pop()
        return q.put, recv_ff
    if impl == "pyzmq":
        import zmq
        ctx = zmq.Context.instance()
        if role == "producer":
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.connect(spec["zmq_addr"])
            return sock.send, None  # type: ignore[return-value]
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(spec["zmq_addr"])
        return None, sock.recv  # type: ignore[return-value]
    raise ValueError(impl)


def _child(impl: str, role: str, spec: dict[str, Any], chan: Any, ready: Any, go: Any,
           results: Any) -> None:
    """Body of a benchmark process (spawned)."""
    count, size, gap = spec["count"], spec["size"], spec["gap_ns"]
    if impl == "ring-cy":
        from obitui.bench import _ringloops as loops
        if role == "producer":
            ring = Ring.attach(spec["ring"], role="producer")
            ready.set()
            go.wait()
            loops.produce(ring, count, size, gap)
            ring.close()
            return
        ring = Ring.attach(spec["ring"])
        lat = array("Q", bytes(8 * count)) if gap else None
        ready.set()
        errors, elapsed = loops.consume(ring, count, memoryview(lat) if lat is not None else None)
        ring.close()
        results.put({"elapsed_ns": elapsed, "errors": errors,
                     "lat": list(lat) if lat is not None else None})
        return
    if not gap:
        _throughput_child(impl, role, spec, chan, ready, go, results)
        return
    send, recv = _endpoints(impl, spec, role, chan)
    if role == "producer":
        payload = bytearray(size)
        ready.set()
        go.wait()
        now = time.monotonic_ns
        pause = gap / 1e9
        for i in range(count):
            _STAMP.pack_into(payload, 0, i, now())
            send(bytes(payload))
            # sleep, not spin: a spinning producer starves mp.Queue's feeder thread of the GIL
            time.sleep(pause)
        time.sleep(0.2)  # let socket-based baselines drain before the process exits
        return
    ready.set()
    lat: list[int] = []
    b = b""
    for _ in range(count):
        b = recv()
        lat.append(time.monotonic_ns() - _STAMP.unpack_from(b)[1])
    errors = int(_STAMP.unpack_from(b)[0] != count - 1)
    results.put({"elapsed_ns": 0, "errors": errors, "lat": lat})


def _throughput_child(impl: str, role: str, spec: dict[str, Any], chan: Any, ready: Any,
                      go: Any, results: Any) -> None:
    """The same minimal loop for every implementation: a prebuilt payload per call on the
    producer, one receive call per record on the consumer, the last index checked."""
    count, size = spec["count"], spec["size"]
    if role == "producer":
        payloads = [bytes(_STAMP.pack(i, 0)) + bytes(size - 16) for i in (0, count - 1)]
        if impl == "ring-py":
            ring = Ring.attach(spec["ring"], role="producer")
            push = ring.try_push
            body = payloads[0]
            ready.set()
            go.wait()
            for _ in range(count - 1):
                while not push(body):
                    pass
            while not push(payloads[1]):
                pass
            ring.close()
            return
        send, _ = _endpoints(impl, spec, role, chan)
        body = payloads[0]
        ready.set()
        go.wait()
        for _ in range(count - 1):
            send(body)
        send(payloads[1])
        time.sleep(0.2)
        return
    if impl == "ring-py":
        ring = Ring.attach(spec["ring"])
        pop = ring.pop
        ready.set()
        rec = None
        while rec is None:
            rec = pop()
        first = time.monotonic_ns()
        got = 1
        while got < count:
            rec = pop()
            if rec is not None:
                got += 1
        elapsed = time.monotonic_ns() - first
        last = rec[2]
        ring.close()
    else:
        _, recv = _endpoints(impl, spec, role, chan)
        ready.set()
        last = recv()
        first = time.monotonic_ns()
        for _ in range(count - 1):
            last = recv()
        elapsed = time.monotonic_ns() - first
    results.put({"elapsed_ns": elapsed, "errors": int(_STAMP.unpack_from(last)[0] != count - 1),
                 "lat": None})


def _pingpong_child(out_name: str, back_name: str, count: int, ready: Any) -> None:
    from obitui.bench import _ringloops as loops
    inn = Ring.attach(out_name)
    out = Ring.attach(back_name, role="producer")
    ready.set()
    loops.pong(inn, out, count)
    inn.close()
    out.close()


# ------------------------------------------------------------------ orchestration
def _run_pair(impl: str, count: int, size: int, gap_ns: int = 0, timeout: float = 120.0) -> dict:
    ctx = mp.get_context("spawn")
    spec: dict[str, Any] = {"count": count, "size": size, "gap_ns": gap_ns}
    chan: Any = None
    ring_name = None
    tmpdir = None
    if impl.startswith("ring"):
        ring_name = f"obitui-{os.getuid()}-bench{os.getpid()}-ring"
        Ring.create(ring_name, _RING_CAPACITY).close()
        spec["ring"] = ring_name
    elif impl == "mp.Queue":
        chan = ctx.Queue()
    elif impl == "mp.Pipe":
        chan = ctx.Pipe(duplex=False)
    elif impl == "faster-fifo":
        import faster_fifo
        chan = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
    elif impl == "pyzmq":
        tmpdir = tempfile.mkdtemp(prefix="obitui-bench-")
        spec["zmq_addr"] = f"ipc://{tmpdir}/push.ipc"
    results = ctx.Queue()
    go = ctx.Event()
    readies = [ctx.Event(), ctx.Event()]
    cons = ctx.Process(target=_child, args=(impl, "consumer", spec, chan, readies[0], go, results))
    prod = ctx.Process(target=_child, args=(impl, "producer", spec, chan, readies[1], go, results))
    procs = [cons, prod]
    try:
        cons.start()
        if not readies[0].wait(30):
            raise RuntimeError(f"{impl}: consumer did not start")
        prod.start()
        if not readies[1].wait(30):
            raise RuntimeError(f"{impl}: producer did not start")
        go.set()
        res = results.get(timeout=timeout)
        for p in procs:
            p.join(10)
        return res
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if ring_name:
            Ring.unlink(ring_name)
        if tmpdir:
            for f in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, f))
            os.rmdir(tmpdir)


def _round_trip(count: int) -> dict:
    from obitui.bench import _ringloops as loops
    ctx = mp.get_context("spawn")
    base = f"obitui-{os.getuid()}-bench{os.getpid()}"
    out = Ring.create(base + "-ping", 1 << 16)
    back_creator = Ring.create(base + "-pong", 1 << 16)
    back_creator.close()
    ready = ctx.Event()
    child = ctx.Process(target=_pingpong_child, args=(base + "-ping", base + "-pong", count, ready))
    try:
        child.start()
        if not ready.wait(30):
            raise RuntimeError("pong process did not start")
        back = Ring.attach(base + "-pong")
        rtts = array("Q", bytes(8 * count))
        errors = loops.ping(out, back, count, memoryview(rtts))
        back.close()
        child.join(30)
        skip = count // 10
        return {"errors": errors, **latency_summary(rtts[skip:])}
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
        out.close()
        Ring.unlink(base + "-ping")
        Ring.unlink(base + "-pong")


def available_baselines() -> list[str]:
    impls = ["mp.Queue", "mp.Pipe"]
    try:
        import faster_fifo  # noqa: F401
        impls.append("faster-fifo")
    except ImportError:
        pass
    try:
        import zmq  # noqa: F401
        impls.append("pyzmq")
    except ImportError:
        pass
    return impls


def run(quick: bool = False, repeats: int = 3, sizes: tuple[int, ...] = (64, 512),
        log: Callable[[str], None] = print) -> dict:
    scale = 0.1 if quick else 1.0
    counts = {"ring-cy": 5_000_000, "ring-py": 1_000_000, "mp.Queue": 200_000,
              "mp.Pipe": 300_000, "faster-fifo": 300_000, "pyzmq": 500_000}
    impls = ["ring-cy", "ring-py"] + available_baselines()
    out: dict[str, Any] = {"machine": machine_info(), "repeats": repeats, "throughput": {},
                           "latency_one_way": {}, "round_trip": {}}
    for size in sizes:
        for impl in impls:
            n = max(1000, int(counts[impl] * scale))
            rates = []
            for _ in range(repeats):
                res = _run_pair(impl, n, size)
                if res["errors"]:
                    raise RuntimeError(f"{impl} {size}B: {res['errors']} integrity errors")
                rates.append(n / (res["elapsed_ns"] / 1e9))
            out["throughput"].setdefault(str(size), {})[impl] = median(rates)
            log(f"throughput {size:4d}B {impl:12s} {median(rates) / 1e6:10.3f} M rec/s")
    for impl in impls:
        n = max(2000, int((200_000 if impl == "ring-cy" else 20_000) * scale))
        gap = 2_000 if impl == "ring-cy" else 50_000
        res = _run_pair(impl, n, 64, gap_ns=gap)
        lat = res["lat"][n // 10:]
        out["latency_one_way"][impl] = latency_summary(lat)
        s = out["latency_one_way"][impl]
        log(f"one-way 64B {impl:12s} p50 {s['p50_us']:8.2f} us  p99 {s['p99_us']:8.2f} us  "
            f"p99.9 {s['p999_us']:8.2f} us")
    rt = _round_trip(max(10_000, int(500_000 * scale)))
    out["round_trip"]["ring-cy"] = rt
    log(f"round trip ring-cy p50 {rt['p50_us']:.2f} us  p99 {rt['p99_us']:.2f} us  "
        f"p99.9 {rt['p999_us']:.2f} us")
    out["ratios"] = ratios(out)
    return out


def ratios(res: dict) -> dict[str, float]:
    r: dict[str, float] = {}
    for size, row in res["throughput"].items():
        for fast in ("ring-cy", "ring-py"):
            for base in row:
                if not base.startswith("ring"):
                    r[f"{fast}/{base} {size}B"] = row[fast] / row[base]
    return r


def markdown(res: dict) -> str:
    lines = [f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, Python "
             f"{res['machine']['python']}, Linux {res['machine']['kernel']}, "
             f"{res['machine']['date']}; median of {res['repeats']} runs.", "",
             "| records/s | " + " | ".join(f"{s} B" for s in res["throughput"]) + " |",
             "|---|" + "---:|" * len(res["throughput"])]
    impls = list(next(iter(res["throughput"].values())))
    for impl in impls:
        lines.append(f"| {impl} | " + " | ".join(
            f"{res['throughput'][s][impl] / 1e6:.3f} M" for s in res["throughput"]) + " |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f}x |" for k, v in res["ratios"].items()]
    lines += ["", "| one-way latency, 64 B | p50 us | p99 us | p99.9 us |", "|---|---:|---:|---:|"]
    for impl, s in res["latency_one_way"].items():
        lines.append(f"| {impl} | {s['p50_us']:.2f} | {s['p99_us']:.2f} | {s['p999_us']:.2f} |")
    rt = res["round_trip"]["ring-cy"]
    lines += ["", f"Round trip (ring-cy ping-pong, 16 B): p50 {rt['p50_us']:.2f} us, "
              f"p99 {rt['p99_us']:.2f} us, p99.9 {rt['p999_us']:.2f} us."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench ring", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10%% of the record counts (a smoke run)")
    ap.add_argument("--repeats", type=int, default=3, help="throughput runs per case (median)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table at the end")
    args = ap.parse_args(argv)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    res = run(quick=args.quick, repeats=args.repeats, log=log)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res["ratios"].items():
            print(f"ratio {k}: {v:.1f}x")
        if args.markdown:
            print(markdown(res))
    return 0

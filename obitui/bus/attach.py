"""`obitui --attach nats://a:4222[,nats://b:4222]`: the console over remote fleets, read from
NATS (docs/NATS.md), with no local feeds.

``Fleets`` keeps, per host seen on any of the servers, its last feeds message, its books and
its last heartbeat; a host whose last message is older than ``schema.STALE_HOST_S`` is stale.
``snapshot()`` gives the headless JSON shape with every feed and book keyed ``host/...`` and a
``hosts`` object; ``status_line()`` the status line with ``host/label`` segments. Each URL is
its own connection (a list in one URL, ``a,b``, is one cluster).

The Textual console does not read ``Fleets``: ``obitui.bus.mirror`` writes what it holds into a
stats block of the console's own, which the screens read as they read a local fleet's."""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import math
import signal
import sys
import threading
import time
from typing import Any, TextIO

import orjson

from obitui.bus import schema
from obitui.core.fixed import decimals_of
from obitui.bus.publisher import client_options, redact

log = logging.getLogger("obitui.attach")


MAX_HOSTS = 256             # hosts kept; a message of one more (junk host names): counted, dropped
MAX_BOOKS = 4096            # host/key books (and trade tapes) kept in all; one more: counted, dropped
MAX_FEEDS = 256             # feeds in one feeds message (stats.MAX_FEED_SLOTS)
MAX_KEY = 64                # characters of a book key (venue:SYMBOL)
MAX_TS = (2 ** 63 - 1) / 1e9    # the latest time in seconds whose nanoseconds fit int64
TAPE_KEPT = 50              # recent trades kept per market


def time_ok(ts: Any) -> bool:
    """A time of a message (seconds since the epoch): a finite number whose nanoseconds fit
    int64, not before the epoch."""
    return type(ts) in (int, float) and math.isfinite(ts) and 0 <= ts <= MAX_TS


def count_ok(v: Any) -> bool:
    """A count of a message: an int (not a bool) in [0, int64]."""
    return type(v) is int and 0 <= v <= 2 ** 63 - 1


def _key_ok(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY and ":" in key and key.isprintable()


def trade_problem(tr: Any) -> str | None:
    """Why one trade of a trade message cannot be taken (None: it can): an object with
    ``price``/``qty`` decimal strings, ``side`` buy/sell, ``ts`` a time (``time_ok``)."""
    if not isinstance(tr, dict):
        return f"a trade that is no object ({type(tr).__name__})"
    for name in ("price", "qty"):
        v = tr.get(name)
        if not isinstance(v, str):
            return f"a trade's {name} that is no decimal string ({type(v).__name__})"
        try:
            decimals_of(v)
        except ValueError as exc:
            return f"a trade's {name}: {exc}"
    if tr.get("side") not in ("buy", "sell"):
        return f"a trade's side {str(tr.get('side'))[:20]!r} (buy or sell)"
    if not time_ok(tr.get("ts")):
        return f"a trade's ts {str(tr.get('ts'))[:30]!r} (seconds since the epoch)"
    return None


def feed_problem(fv: Any) -> str | None:
    """Why one feed of a feeds message cannot be taken (None: it can): an object with a
    ``state`` word; ``markets``, ``books``, ``books_synced`` counts when given."""
    if not isinstance(fv, dict):
        return f"a feed that is no object ({type(fv).__name__})"
    if not isinstance(fv.get("state"), str):
        return "a feed without a state word"
    for name in ("markets", "books", "books_synced"):
        if name in fv and not count_ok(fv[name]):
            return f"a feed's {name} {str(fv[name])[:30]!r} is no count"
    return None


class Fleets:
    """What the attached servers said, per host (fed by the NATS callbacks).

    Every message is checked as it comes (``on_message``): one that cannot be read is counted
    (``bad``) and logged, never kept; within a readable one, a trade or a feed that cannot be
    taken is left out, counted and logged one by one. What is kept is what ``snapshot``,
    ``status_line`` and the console's mirror rely on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hosts: dict[str, dict[str, Any]] = {}      # host -> {"seen", "beat", "url", "control", "books"}
        self.feeds: dict[str, dict[str, Any]] = {}      # host -> feeds message
        self.books: dict[str, dict[str, Any]] = {}      # host/key -> book message
        self.trades: dict[str, list[dict[str, Any]]] = {}   # host/key -> recent trades, newest last
        self.trade_count: dict[str, int] = {}           # host/key -> trades received in all
        self.feeds_at: dict[str, float] = {}            # host -> when its feeds message came
        self.bad = 0                                    # messages (or parts) that could not be read
        # what changed since the console's mirror last took it (``take_changes``)
        self.dirty_books: set[str] = set()              # host/key
        self.dirty_feeds: set[str] = set()              # host

    def _bad(self, where: str, why: Any, what: str = "unreadable message") -> None:
        with self.lock:
            self.bad += 1
            n = self.bad
        if n in (1, 10, 100) or n % 1000 == 0:
            log.warning("attach: %s on %s (%s); %d so far", what, where, why, n)

    def on_message(self, url: str, subject: str, data: bytes) -> str | None:
        """Take one message; returns its host when that host was not known before. Never
        raises: what cannot be taken is counted and logged."""
        try:
            return self._take(url, subject, data)
        except Exception as exc:            # a case the checks below missed: still never the end
            self._bad(subject, f"{type(exc).__name__}: {exc}")
            return None

    def _take(self, url: str, subject: str, data: bytes) -> str | None:
        kind = subject.rsplit(".", 1)[-1]
        if kind in ("control", "resend"):
            return None          # requests to a publisher, not its state
        dropped: list[str] = []  # parts left out of a readable message (trades, feeds)
        try:
            msg = orjson.loads(data)
            if not isinstance(msg, dict) or msg.get("v") != schema.SCHEMA:
                raise ValueError(f"schema {msg.get('v') if isinstance(msg, dict) else '?'}")
            host = msg["host"]
            if not isinstance(host, str) or not host or schema.token(host) != host:
                raise ValueError(f"host {host!r} is not one subject token")
            if subject.split(".")[1:2] != [host]:
                raise ValueError(f"host {host!r} on another host's subject")
            if kind in ("book", "trade") and not _key_ok(msg.get("key")):
                raise ValueError(f"key {str(msg.get('key'))[:MAX_KEY]!r} is not venue:SYMBOL")
            if kind == "book" and not (isinstance(msg.get("bids"), list) and isinstance(msg.get("asks"), list)):
                raise ValueError("no bids/asks")
            if kind == "feeds":
                fvs = msg.get("feeds")
                if not isinstance(fvs, dict) or len(fvs) > MAX_FEEDS:
                    raise ValueError("no feeds" if not isinstance(fvs, dict) else f"{len(fvs)} feeds")
                order = msg.get("order", [])
                if not (isinstance(order, list) and all(isinstance(lb, str) for lb in order)):
                    raise ValueError("order is not a list of labels")
                if msg.get("engine") is not None and not isinstance(msg["engine"], dict):
                    raise ValueError("engine is not an object")
                keep = {}
                for label, fv in fvs.items():
                    why = feed_problem(fv)
                    if why is None:
                        keep[label] = fv
                    else:
                        dropped.append(f"{label[:20]!r}: {why}")
                msg["feeds"] = keep
            if kind == "trade":
                got = msg.get("trades", [])
                if not isinstance(got, list):
                    raise ValueError("trades is not a list")
                keep_t = []
                for tr in got:
                    why = trade_problem(tr)
                    if why is None:
                        keep_t.append(tr)
                    else:
                        dropped.append(why)
                got = keep_t
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            self._bad(subject, exc)
            return None
        for why in dropped:
            self._bad(subject, why, "part of a message left out")
        now = time.monotonic()
        full = ""
        key = f"{host}/{msg['key']}" if kind in ("book", "trade") else ""
        with self.lock:
            new = host not in self.hosts
            kept = self.books if kind == "book" else self.trades
            if new and len(self.hosts) >= MAX_HOSTS:
                full = f"more than {MAX_HOSTS} hosts"
            elif key and key not in kept and len(kept) >= MAX_BOOKS:
                full = f"more than {MAX_BOOKS} books"
            else:
                h = self.hosts.setdefault(host, {"url": url, "beat": 0.0, "control": False})
                h["seen"] = now
                if kind == "heartbeat":
                    h["beat"] = now
                    h["control"] = bool(msg.get("control"))
                    h["stopping"] = msg.get("stopping") is True     # its fleet said it stops
                    h["books"] = msg.get("books") if count_ok(msg.get("books")) else None
                elif kind == "feeds":
                    self.feeds[host] = msg
                    self.feeds_at[host] = now
                    self.dirty_feeds.add(host)
                elif kind == "book":
                    self.books[key] = msg
                    self.dirty_books.add(key)
                elif kind == "trade":
                    tape = self.trades.setdefault(key, [])
                    tape.extend(got)
                    del tape[:-TAPE_KEPT]
                    self.trade_count[key] = self.trade_count.get(key, 0) + len(got)
                    self.dirty_books.add(key)
        if full:
            self._bad(subject, full, "message left out")
            return None
        return host if new else None

    def count_bad(self, what: str, exc: BaseException) -> None:
        """A message taken in but unusable later (the mirror could not write it): counted and
        logged like an unreadable one."""
        self._bad(what, exc, "unusable message")

    def drop_trade(self, key: str, trade: dict[str, Any], exc: BaseException) -> None:
        """A trade of ``key``'s tape the console cannot show (its price beyond its book's
        scale): out of the tape, counted and logged once."""
        with self.lock:
            tape = self.trades.get(key)
            if tape is not None:
                self.trades[key] = [t for t in tape if t is not trade]
        self._bad(key, exc, "trade left out")

    def take_changes(self) -> tuple[set[str], set[str]]:
        """(host/key of the books, hosts of the feeds messages) that changed since the last
        call, for the console's mirror (the caller holds ``lock``)."""
        books, feeds = self.dirty_books, self.dirty_feeds
        self.dirty_books, self.dirty_feeds = set(), set()
        return books, feeds

    def snapshot(self, levels: int = 20) -> dict[str, Any]:
        """The headless JSON shape over every host: feeds ``host/label``, books ``host/key``."""
        now = time.monotonic()
        out: dict[str, Any] = {"ts": round(time.time(), 3), "hosts": {}, "feeds": {}, "books": {}}
        with self.lock:
            for host, h in sorted(self.hosts.items()):
                age = now - max(h.get("beat", 0.0), h.get("seen", 0.0))
                stale = age > schema.STALE_HOST_S
                stopped = bool(h.get("stopping"))
                out["hosts"][host] = {"url": redact(h["url"]), "stale": stale, "age_s": round(age, 3),
                                      "control": h["control"], "stopped": stopped}
                fm = self.feeds.get(host)
                if fm is not None:
                    order = fm.get("order", [])
                    for label in order + [k for k in fm["feeds"] if k not in order]:
                        fv = fm["feeds"].get(label)
                        if fv is None:
                            continue
                        fv = dict(fv, host=host)
                        if stopped:
                            fv.update(state="stopped", reason="its fleet stopped")
                        elif stale:
                            fv["stale"] = True
                        out["feeds"][f"{host}/{label}"] = fv
                    out.setdefault("engines", {})[host] = fm.get("engine")
            engines = out.get("engines", {})
            for key, b in sorted(self.books.items()):
                host = key.split("/", 1)[0]
                view = {k: v for k, v in b.items() if k not in ("v",)}
                view["bids"], view["asks"] = b["bids"][:levels], b["asks"][:levels]
                # stale with its host, or with the host's engine (a hung engine publishes nothing)
                engine = engines.get(host) or {}
                hv = out["hosts"].get(host, {})
                view["stale"] = hv.get("stale", True) or hv.get("stopped", False) or bool(engine.get("stale"))
                out["books"][key] = view
        return out


def status_line(snap: dict[str, Any]) -> str:
    """``[Attached] host/Bi-OB: connected_synced (150/150 books) | ... | host: stale 4.2s``."""
    parts = []
    for key, fv in snap["feeds"].items():
        text = f"{key}: {fv['state']}"
        if fv.get("stale"):
            text += " (stale)"
        elif "books" in fv and fv.get("markets", 1) > 1:
            text += f" ({fv.get('books_synced', 0)}/{fv['books']} books)"
        parts.append(text)
    for host, h in snap["hosts"].items():
        if h.get("stopped"):
            parts.append(f"{host}: stopped")
        elif h["stale"]:
            parts.append(f"{host}: stale {h['age_s']:.1f}s")
    for url, state in snap.get("servers", {}).items():
        if state != "connected":
            parts.append(f"{url}: {state}")
    if not parts:
        parts.append("waiting for a fleet")
    return "[Attached] " + " | ".join(parts)


class Attachment:
    """The NATS connections of an attached console, in a thread of their own (the UI and the
    headless loop read ``fleets`` and call ``control``)."""

    def __init__(self, urls: list[str], creds: str | None = None, ca_file: str | None = None) -> None:
        self.urls = urls
        self.creds, self.ca_file = creds, ca_file
        self.fleets = Fleets()
        self.loop = asyncio.new_event_loop()
        self.conns: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, name="obitui-attach", daemon=True)
        # made here, not in the loop's thread: a close() right after start() finds it (an
        # asyncio.Event binds to the loop that first waits on it)
        self._stop = asyncio.Event()


    def servers(self) -> dict[str, str]:
        """Per server URL (secrets left out): ``connected``, ``connecting``, or ``cannot connect
        (why)``: a typo in a URL is not a quiet fleet."""
        out = {}
        for url in self.urls:
            nc = self.conns.get(url)
            if nc is not None and getattr(nc, "is_connected", False):
                out[redact(url)] = "connected"
            elif url in self.errors:
                out[redact(url)] = f"cannot connect ({self.errors[url]})"
            else:
                out[redact(url)] = "connecting"
        return out
    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        connecting = [asyncio.get_running_loop().create_task(self._connect(u)) for u in self.urls]
        await self._stop.wait()
        # each _connect ends by itself once _stop is set (within about a second); cancelled
        # only should one not
        done, late = await asyncio.wait(connecting, timeout=2.0)
        for t in late:
            t.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
        for nc in self.conns.values():
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:
                pass

    @staticmethod
    async def _abandon(task: asyncio.Task[Any]) -> None:
        """End a nats.connect() that has not connected: cancelled until it is done, for at most
        a second (nats-py can take a cancellation for a timeout of its own and try again; the
        next one ends it); a connection it made meanwhile is closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while not task.done() and loop.time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
        if task.done() and not task.cancelled() and task.exception() is None:
            try:
                await asyncio.wait_for(task.result().close(), 2.0)
            except Exception:
                pass

    async def _connect(self, url: str) -> None:
        import nats
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            async def on_error(exc: Exception, url: str = url) -> None:
                self.errors[url] = f"{type(exc).__name__}: {exc}"
                log.debug("attach: %s: %r", redact(url), exc)

            # bounded: nats.connect() with endless reconnects retries a first connection forever
            connecting = loop.create_task(nats.connect(
                **client_options(url, self.creds, self.ca_file), name="obitui console", connect_timeout=2.0,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1.0,
                error_cb=on_error))
            stopping = loop.create_task(self._stop.wait())
            try:
                await asyncio.wait({connecting, stopping}, timeout=3.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                late = not connecting.done()
                if late:                    # stopped, or no connection in time (one made meanwhile: closed)
                    await self._abandon(connecting)
            if self._stop.is_set():
                if not late and connecting.exception() is None:
                    self.conns[url] = connecting.result()         # closed by _main
                return
            if late or connecting.exception() is not None:
                exc = None if late else connecting.exception()
                self.errors[url] = (f"{type(exc).__name__}: {exc}" if exc is not None and str(exc)
                                    else f"{type(exc).__name__}: no answer (server down or unreachable?)"
                                    if exc is not None else "TimeoutError: no connection in 3 s")
                attempt += 1
                log.warning("attach: cannot connect to %s: %s", redact(url), self.errors[url])
                try:
                    await asyncio.wait_for(self._stop.wait(), min(10.0, 0.5 * 2 ** attempt))
                except asyncio.TimeoutError:
                    pass
                continue
            nc = connecting.result()
            self.errors.pop(url, None)
            self.conns[url] = nc

            async def on_msg(msg: Any, url: str = url, nc: Any = nc) -> None:
                new = self.fleets.on_message(url, msg.subject, msg.data)
                if new:          # a host seen for the first time: ask it for everything
                    try:
                        await nc.publish(schema.resend_subject(new), b"{}")
                    except Exception as exc:
                        log.warning("attach: cannot ask %s for its books: %r", new, exc)

            await nc.subscribe(schema.ALL, cb=on_msg)
            log.info("attach: subscribed to %s on %s", schema.ALL, redact(url))
            return

    def control(self, host: str, label: str, cmd: str, symbol: str | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
        """Send ``cmd`` (reconnect, resync, resync_invalid) for ``label`` to ``host``'s fleet and
        wait for its answer (``{"ok": ..., "text"|"error": ...}``)."""
        return self.control_async(host, label, cmd, symbol, timeout).result(timeout + 1.0)

    def control_async(self, host: str, label: str, cmd: str, symbol: str | None = None,
                      timeout: float = 5.0) -> concurrent.futures.Future[dict[str, Any]]:
        """``control`` without waiting: a future of the answer. An answer that is not the
        host's own says why in ``code``: ``not_attached``, ``timeout`` (no answer within
        ``timeout`` s), ``no_responders`` (nobody serves the host's control subject),
        ``error`` (the request could not be sent), ``bad_answer``."""
        with self.fleets.lock:
            url = self.fleets.hosts.get(host, {}).get("url")
        nc = self.conns.get(url) if url else None
        if nc is None or self.loop.is_closed() or not self.thread.is_alive():
            done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
            done.set_result({"ok": False, "code": "not_attached", "error": f"host {host} is not attached"})
            return done
        req = {"label": label, "cmd": cmd}
        if symbol:
            req["symbol"] = symbol

        async def ask() -> dict[str, Any]:
            import nats.errors
            try:
                msg = await nc.request(schema.control_subject(host), orjson.dumps(req), timeout=timeout)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                return {"ok": False, "code": "timeout", "error": f"no answer from {host} in {timeout:g} s"}
            except nats.errors.NoRespondersError:
                return {"ok": False, "code": "no_responders", "error": f"nobody answers for {host}"}
            except Exception as exc:
                return {"ok": False, "code": "error", "error": f"no answer from {host}: {type(exc).__name__}"}
            try:
                out = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                out = None
            return out if isinstance(out, dict) else {"ok": False, "code": "bad_answer", "error": "bad answer"}

        return asyncio.run_coroutine_threadsafe(ask(), self.loop)

    def close(self) -> None:
        """Stop the connections and the thread (at once when nothing is connected yet)."""
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:        # the loop closed meanwhile: nothing left to stop
                pass
        if self.thread.is_alive():
            self.thread.join(5)


def run(urls: list[str], *, as_json: bool, interval: float, duration: float | None,
        levels: int = 20, creds: str | None = None, ca_file: str | None = None,
        out: TextIO = sys.stdout) -> int:
    """Headless attach: a status line or a JSON object per interval until ``duration`` or a
    signal (exit 0)."""
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    from obitui.headless import emit_or_gone
    att = Attachment(urls, creds, ca_file)
    att.start()
    freeze_heap()
    try:
        t0 = time.monotonic()
        next_print = t0 + interval
        while not stop["now"]:
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if now >= next_print:
                next_print += interval
                if not emit_or_gone(lambda: _emit(att, as_json, levels, out), out):
                    return 0            # `obitui --attach ... | head`: the reader is gone
            time.sleep(min(0.05, max(0.0, next_print - time.monotonic())))
        emit_or_gone(lambda: _emit(att, as_json, levels, out), out)
        return 0
    finally:
        att.close()


def freeze_heap() -> None:
    """What the process holds once attached (modules, the attachment, its loop) lives as long
    as it does: kept out of the cyclic GC, so that a collection scans only what messages make
    since. A full collection over it stalled the console's decoding for 9-17 ms a few times a
    minute (BENCHMARKS.md, `bench nats`), as the feeds, the engine and the UI already avoid."""
    gc.collect()
    gc.freeze()


_emit_failed_at = [-1e9]


def _emit(att: Attachment, as_json: bool, levels: int, out: TextIO) -> None:
    """One status line or JSON object. What the messages hold was checked as they came; should
    one still not be shown, the line is left out, counted and logged (with its traceback, at
    most every 10 s), and the run goes on."""
    try:
        snap = att.fleets.snapshot(levels)
        snap["servers"] = att.servers()
        text = json.dumps(snap) if as_json else status_line(snap)
    except Exception as exc:
        att.fleets.count_bad("the status", exc)
        now = time.monotonic()
        if now - _emit_failed_at[0] >= 10.0:
            _emit_failed_at[0] = now
            log.exception("attach: the status could not be written: %r", exc)
        return
    out.write(text + "\n")
    out.flush()

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
import json
import logging
import signal
import sys
import threading
import time
from typing import Any, TextIO

import orjson

from obitui.bus import schema
from obitui.bus.publisher import client_options, redact

log = logging.getLogger("obitui.attach")


class Fleets:
    """What the attached servers said, per host (fed by the NATS callbacks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hosts: dict[str, dict[str, Any]] = {}      # host -> {"seen", "beat", "url", "control"}
        self.feeds: dict[str, dict[str, Any]] = {}      # host -> feeds message
        self.books: dict[str, dict[str, Any]] = {}      # host/key -> book message
        self.trades: dict[str, list[dict[str, Any]]] = {}   # host/key -> recent trades, newest last
        self.trade_count: dict[str, int] = {}           # host/key -> trades received in all
        self.feeds_at: dict[str, float] = {}            # host -> when its feeds message came
        self.bad = 0                                    # messages that could not be read
        # what changed since the console's mirror last took it (``take_changes``)
        self.dirty_books: set[str] = set()              # host/key
        self.dirty_feeds: set[str] = set()              # host

    def on_message(self, url: str, subject: str, data: bytes) -> str | None:
        """Take one message; returns its host when that host was not known before."""
        kind = subject.rsplit(".", 1)[-1]
        if kind in ("control", "resend"):
            return None          # requests to a publisher, not its state
        try:
            msg = orjson.loads(data)
            if not isinstance(msg, dict) or msg.get("v") != schema.SCHEMA:
                raise ValueError(f"schema {msg.get('v') if isinstance(msg, dict) else '?'}")
            host = msg["host"]
            if not isinstance(host, str) or not host or schema.token(host) != host:
                raise ValueError(f"host {host!r} is not one subject token")
            if subject.split(".")[1:2] != [host]:
                raise ValueError(f"host {host!r} on another host's subject")
            if kind in ("book", "trade") and not isinstance(msg.get("key"), str):
                raise ValueError("no key")
            if kind == "book" and not (isinstance(msg.get("bids"), list) and isinstance(msg.get("asks"), list)):
                raise ValueError("no bids/asks")
            if kind == "book" and ":" not in msg["key"]:
                raise ValueError(f"key {msg['key']!r} is not venue:SYMBOL")
            if kind == "feeds" and not isinstance(msg.get("feeds"), dict):
                raise ValueError("no feeds")
            if kind == "trade" and not isinstance(msg.get("trades", []), list):
                raise ValueError("trades is not a list")
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            self.bad += 1
            if self.bad in (1, 10, 100) or self.bad % 1000 == 0:
                log.warning("attach: unreadable message on %s (%s); %d so far", subject, exc, self.bad)
            return None
        now = time.monotonic()
        with self.lock:
            new = host not in self.hosts
            h = self.hosts.setdefault(host, {"url": url, "beat": 0.0, "control": False})
            h["seen"] = now
            if kind == "heartbeat":
                h["beat"] = now
                h["control"] = bool(msg.get("control"))
                h["order"] = msg.get("feeds", [])
                h["books"] = msg.get("books")
            elif kind == "feeds":
                self.feeds[host] = msg
                self.feeds_at[host] = now
                self.dirty_feeds.add(host)
            elif kind == "book":
                key = f"{host}/{msg['key']}"
                self.books[key] = msg
                self.dirty_books.add(key)
            elif kind == "trade":
                key = f"{host}/{msg['key']}"
                got = msg.get("trades", [])
                tape = self.trades.setdefault(key, [])
                tape.extend(got)
                del tape[:-50]
                self.trade_count[key] = self.trade_count.get(key, 0) + len(got)
                self.dirty_books.add(key)
        return host if new else None

    def count_bad(self, what: str, exc: BaseException) -> None:
        """A message taken in but unusable later (the mirror could not write it): counted and
        logged like an unreadable one."""
        self.bad += 1
        if self.bad in (1, 10, 100) or self.bad % 1000 == 0:
            log.warning("attach: unusable message (%s: %s); %d so far", what, exc, self.bad)

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
                out["hosts"][host] = {"url": redact(h["url"]), "stale": stale, "age_s": round(age, 3),
                                      "control": h["control"]}
                fm = self.feeds.get(host)
                if fm is not None:
                    for label in fm.get("order", []) + [k for k in fm["feeds"] if k not in fm.get("order", [])]:
                        fv = fm["feeds"].get(label)
                        if fv is None:
                            continue
                        fv = dict(fv, host=host)
                        if stale:
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
                view["stale"] = out["hosts"].get(host, {}).get("stale", True) or bool(engine.get("stale"))
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
        if h["stale"]:
            parts.append(f"{host}: stale {h['age_s']:.1f}s")
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
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        connecting = [asyncio.get_running_loop().create_task(self._connect(u)) for u in self.urls]
        await self._stop.wait()
        for t in connecting:
            t.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        for nc in self.conns.values():
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:
                pass

    async def _connect(self, url: str) -> None:
        import nats
        attempt = 0
        while self._stop is not None and not self._stop.is_set():
            async def on_error(exc: Exception, url: str = url) -> None:
                self.errors[url] = f"{type(exc).__name__}: {exc}"
                log.debug("attach: %s: %r", redact(url), exc)

            try:
                # bounded: nats.connect() with endless reconnects retries a first connection forever
                nc = await asyncio.wait_for(nats.connect(
                    **client_options(url, self.creds, self.ca_file), name="obitui console", connect_timeout=2.0,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1.0,
                    error_cb=on_error), 3.0)
            except Exception as exc:
                self.errors[url] = f"{type(exc).__name__}: {exc}"
                attempt += 1
                log.warning("attach: cannot connect to %s: %s", redact(url), self.errors[url])
                try:
                    await asyncio.wait_for(self._stop.wait(), min(10.0, 0.5 * 2 ** attempt))
                except asyncio.TimeoutError:
                    pass
                continue
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
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
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
    att = Attachment(urls, creds, ca_file)
    att.start()
    try:
        t0 = time.monotonic()
        next_print = t0 + interval
        while not stop["now"]:
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if now >= next_print:
                next_print += interval
                _emit(att, as_json, levels, out)
            time.sleep(min(0.05, max(0.0, next_print - time.monotonic())))
        _emit(att, as_json, levels, out)
        return 0
    finally:
        att.close()


def _emit(att: Attachment, as_json: bool, levels: int, out: TextIO) -> None:
    snap = att.fleets.snapshot(levels)
    out.write((json.dumps(snap) if as_json else status_line(snap)) + "\n")
    out.flush()

"""Replay of a capture file (obitui.capture) by the simulator's servers.

Every WebSocket client of a venue receives that venue's recorded frames from the start of the
capture, in order: with the original pacing (``speed`` 1), faster or slower (``speed`` X), or as
fast as the client reads (``speed`` 0). A client that names streams (Binance ``/stream?streams=``
or ``/ws/<stream>``, also under USD-M's ``/public`` and ``/market`` routes) or subscribes (Bitget
``op: subscribe``, v2 or v3 args) gets the frames of those streams and channels only (a Bitget
subscribe is acknowledged by the replay itself); one that does neither gets everything. REST
requests are answered with the recorded REST bodies of the venue for the requested symbol (those
recorded for the same path when there are any: spot and USD-M apart), in order (the last one
again once they run out). Bitget text pings are answered."""
from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict
from pathlib import Path

from urllib.parse import parse_qs, urlparse

import orjson
from aiohttp import WSMsgType, web

from obitui.capture import CaptureRecord, read_capture

log = logging.getLogger("obitui.sim")


class ReplaySimulator:
    def __init__(self, capture: str | Path, speed: float = 1.0, host: str = "127.0.0.1",
                 port_base: int | None = None) -> None:
        self.path = Path(capture)
        self.speed = speed
        self.host = host
        self.port_base = port_base
        self.errors: list[str] = []
        self.ws: dict[str, list[CaptureRecord]] = defaultdict(list)
        self.rest: dict[str, list[CaptureRecord]] = defaultdict(list)
        for rec in read_capture(self.path, self.errors):
            (self.ws if rec.kind == "ws" else self.rest)[rec.venue].append(rec)
        for e in self.errors:
            log.warning("replay: skipped a bad capture line: %s", e)
        self.rest_served: dict[tuple[str, str, str], int] = defaultdict(int)
        self.done: set[str] = set()           # venues whose frames were all sent to a client
        self.finished = asyncio.Event()
        self._keys = {id(r): _frame_key(r) for recs in self.ws.values() for r in recs}
        self.ports: dict[str, int] = {}
        self.counters: dict[str, int] = defaultdict(int)
        self._runners: list[web.AppRunner] = []
        self._clients: set[web.WebSocketResponse] = set()

    @property
    def binance_ws_url(self) -> str:
        return f"ws://{self.host}:{self.ports['binance']}"

    @property
    def binance_rest_url(self) -> str:
        return f"http://{self.host}:{self.ports['binance']}"

    @property
    def bitget_ws_url(self) -> str:
        return f"ws://{self.host}:{self.ports['bitget']}/v2/ws/public"

    def banner(self) -> list[str]:
        return [f"binance ws={self.binance_ws_url} rest={self.binance_rest_url}",
                f"bitget ws={self.bitget_ws_url}",
                f"bitget rest=http://{self.host}:{self.ports['bitget']}"]

    async def start(self) -> None:
        from obitui.sim.server import PortInUseError
        for i, venue in enumerate(("binance", "bitget")):
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", self._handler(venue))
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            self._runners.append(runner)
            sock = socket.socket()
            try:
                sock.bind((self.host, 0 if self.port_base is None else self.port_base + i))
            except OSError as exc:
                sock.close()
                await self.stop()
                raise PortInUseError(f"cannot listen for {venue} replay: {exc.strerror}") from None
            sock.listen(64)
            await web.SockSite(runner, sock).start()
            self.ports[venue] = sock.getsockname()[1]

    async def stop(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=1001, message=b"replay stopped")
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> ReplaySimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _handler(self, venue: str):  # noqa: ANN202
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._serve_ws(venue, request)
            symbol = request.query.get("symbol", "")
            bodies = [b for b in self.rest[venue] if not symbol or _query_symbol(b.url) in ("", symbol)]
            same_path = [b for b in bodies if urlparse(b.url).path == request.path]
            bodies = same_path or bodies
            if not bodies:
                return web.Response(status=404, text="no REST bodies for this request in the capture\n")
            served = (venue, symbol, request.path if same_path else "")
            i = min(self.rest_served[served], len(bodies) - 1)
            self.rest_served[served] += 1
            return web.Response(text=bodies[i].data, content_type="application/json")
        return handle

    async def _blast(self, ws: web.WebSocketResponse, transport: asyncio.Transport, venue: str,
                     frames: list, wanted: set[str]) -> None:
        """Speed 0: the frames pre-encoded as WebSocket text frames and written to the socket
        in large batches, as fast as the client reads them (aiohttp's per-frame writer tops out
        near 13k frames/s on this machine, below what a feed reads)."""
        data = [self._ws_text(rec.data.encode()) for rec in frames
                if not (wanted and (self._keys[id(rec)].startswith("event:")
                                    or self._keys[id(rec)] not in wanted))]
        for i in range(0, len(data), 256):
            if ws.closed or transport.is_closing():
                return
            transport.write(b"".join(data[i:i + 256]))
            self.counters[f"{venue}_frames"] += len(data[i:i + 256])
            while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():
                await asyncio.sleep(0.0002)
            await asyncio.sleep(0)
        self.done.add(venue)
        if self.done >= {v for v, recs in self.ws.items() if recs}:
            self.finished.set()

    @staticmethod
    def _ws_text(payload: bytes) -> bytes:
        """An unmasked, unfragmented server text frame (RFC 6455 5.2)."""
        n = len(payload)
        if n < 126:
            return bytes((0x81, n)) + payload
        if n < 1 << 16:
            return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
        return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload

    async def _serve_ws(self, venue: str, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20, timeout=2.0, compress=False)
        await ws.prepare(request)
        self._clients.add(ws)
        self.counters[f"{venue}_connections"] += 1
        wanted: set[str] = set()
        if venue == "binance":
            route = next((r for r in ("/public", "/market") if request.path.startswith(r + "/")), "")
            path = request.path[len(route):]
            if path == "/stream":
                wanted = set(filter(None, request.query.get("streams", "").split("/")))
            elif path.startswith("/ws/"):
                wanted = set(path[4:].split("/"))
        subscribed = asyncio.Event()
        if wanted or venue == "binance":
            subscribed.set()
        reader = asyncio.get_running_loop().create_task(self._read(ws, venue, wanted, subscribed))
        try:
            try:
                await asyncio.wait_for(subscribed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass              # no subscribe: everything
            frames = self.ws[venue]
            if self.speed == 0 and request.transport is not None:
                await self._blast(ws, request.transport, venue, frames, wanted)
                await reader
                return ws
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            first = frames[0].t if frames else 0
            for rec in frames:
                key = self._keys[id(rec)]
                if wanted and key.startswith("event:"):
                    continue      # the replay acknowledged the subscribes itself
                if wanted and key not in wanted:
                    continue
                if self.speed > 0:
                    delay = (rec.t - first) / 1e9 / self.speed - (loop.time() - t0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                if ws.closed:
                    break
                await ws.send_str(rec.data)
                self.counters[f"{venue}_frames"] += 1
            else:
                self.done.add(venue)
                if self.done >= {v for v, recs in self.ws.items() if recs}:
                    self.finished.set()
            await reader   # keep the socket open until the client leaves
        finally:
            reader.cancel()
            self._clients.discard(ws)
        return ws

    async def _read(self, ws: web.WebSocketResponse, venue: str, wanted: set[str],
                    subscribed: asyncio.Event) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "ping":
                    await ws.send_str("pong")
                    continue
                if venue == "bitget":
                    try:
                        req = orjson.loads(msg.data)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(req, dict) and req.get("op") == "subscribe":
                        for arg in req.get("args") or []:
                            if isinstance(arg, dict):
                                wanted.add(f"{arg.get('channel', arg.get('topic'))}:"
                                           f"{arg.get('instId', arg.get('symbol'))}")
                                await ws.send_str(orjson.dumps({"event": "subscribe", "arg": arg}).decode())
                        subscribed.set()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break


def _query_symbol(url: str) -> str:
    q = parse_qs(urlparse(url).query)
    return q.get("symbol", [""])[0]


def _frame_key(rec: CaptureRecord) -> str:
    """What a frame belongs to: a Binance stream name, a Bitget 'channel:instId', or 'event:'."""
    try:
        msg = orjson.loads(rec.data)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(msg, dict):
        return ""
    if rec.venue == "binance":
        return str(msg.get("stream", ""))
    if "event" in msg:
        return "event:"
    arg = msg.get("arg")
    if isinstance(arg, dict):
        return f"{arg.get('channel', arg.get('topic'))}:{arg.get('instId', arg.get('symbol'))}"
    return ""

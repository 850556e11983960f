"""Simulated Binance spot: WebSocket raw (/ws/<stream>) and combined (/stream?streams=...)
streams with live SUBSCRIBE/UNSUBSCRIBE, server pings, and REST /api/v3/depth with weights,
429/418 + Retry-After (PROTOCOLS.md, Binance spot)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from obitui.sim.conn import Conn
from obitui.sim.market import ASK, BID, MarketModel, Step, fmt

if TYPE_CHECKING:
    from obitui.sim.server import Simulator

log = logging.getLogger("obitui.sim")

STREAM_RE = re.compile(r"^[a-z0-9]+@[A-Za-z0-9_@]+$")
DEPTH_KINDS = ("depth", "depth@100ms", "depth@1000ms")
DECIMALS = 8           # Binance spot strings carry 8 decimals: "27000.01000000"
WEIGHT_WINDOW_S = 60.0


def depth_weight(limit: int) -> int:
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


class BinanceVenue:
    name = "binance"

    def __init__(self, sim: Simulator, models: dict[str, MarketModel]) -> None:
        self.sim = sim
        self.models = models
        self.conns: set[Conn] = set()
        self.weight_used = 0
        self.window_start = time.monotonic()
        self.requests_after_429 = 0
        self.banned_until = 0.0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws", self.ws_handler), web.get("/ws/{stream:.+}", self.ws_handler),
                web.get("/stream", self.ws_handler), web.get("/api/v3/depth", self.depth),
                web.get("/api/v3/ping", self.ping), web.get("/api/v3/time", self.time)]

    # ------------------------------------------------------------ formatting
    def px(self, model: MarketModel, ticks: int) -> str:
        return fmt(ticks, model.spec.price_decimals, DECIMALS)

    def qty(self, model: MarketModel, lots: int) -> str:
        return fmt(lots, model.spec.qty_decimals, DECIMALS)

    def book_body(self, model: MarketModel, bids: dict[int, int], asks: dict[int, int],
                  update_id: int, limit: int) -> dict[str, Any]:
        b = sorted(bids.items(), reverse=True)[:limit]
        a = sorted(asks.items())[:limit]
        return {"lastUpdateId": update_id,
                "bids": [[self.px(model, p), self.qty(model, q)] for p, q in b],
                "asks": [[self.px(model, p), self.qty(model, q)] for p, q in a]}

    def on_step(self, symbol: str, model: MarketModel, step: Step) -> None:
        """Fan one market step out to the subscribers of its streams."""
        if not self.conns:
            return
        low = symbol.lower()
        now_ms = step.ts_ms
        depth_payload = None
        trade_payloads: list[bytes] | None = None
        for conn in list(self.conns):
            subs = conn.subs
            for kind in DEPTH_KINDS:
                name = f"{low}@{kind}"
                if name in subs:
                    if depth_payload is None:
                        b = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == BID]
                        a = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == ASK]
                        depth_payload = orjson.dumps({"e": "depthUpdate", "E": now_ms, "s": symbol,
                                                      "U": step.first_id, "u": step.last_id,
                                                      "b": b, "a": a})
                    conn.send_data(self._wrap(conn, name, depth_payload), diff=True)
            name = f"{low}@trade"
            if step.trades and name in subs:
                if trade_payloads is None:
                    trade_payloads = [orjson.dumps({
                        "e": "trade", "E": now_ms, "s": symbol, "t": t.trade_id,
                        "p": self.px(model, t.price), "q": self.qty(model, t.lots), "T": now_ms,
                        "m": t.buyer_is_maker, "M": True}) for t in step.trades]
                for p in trade_payloads:
                    conn.send_data(self._wrap(conn, name, p))

    @staticmethod
    def _wrap(conn: Conn, stream: str, payload: bytes) -> str:
        if conn.subs.get("__combined__"):
            return '{"stream":"' + stream + '","data":' + payload.decode() + "}"
        return payload.decode()

    # ------------------------------------------------------------ WebSocket
    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=64 * 1024, timeout=2.0, compress=False)
        await ws.prepare(request)
        sim = self.sim
        conn = Conn(ws, sim.faults, sim.counters, sim.next_conn_seed(), f"binance {request.remote}")
        combined = request.path == "/stream"
        conn.subs["__combined__"] = combined
        if combined:
            for s in filter(None, request.query.get("streams", "").split("/")):
                conn.subs[s] = True
        elif "stream" in request.match_info:
            for s in request.match_info["stream"].split("/"):
                conn.subs[s] = True
        self.conns.add(conn)
        sim.count("binance_connections")
        pinger = asyncio.get_running_loop().create_task(self._pinger(conn))
        try:
            async for msg in ws:
                conn.last_rx = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    if not sim.faults.no_pong:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.subs["__ping_outstanding__"] = None
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            pinger.cancel()
            self.conns.discard(conn)
            await conn.finish()
        return ws

    async def _pinger(self, conn: Conn) -> None:
        """Ping every ping_interval; a ping unanswered for pong_timeout disconnects (unless
        no_ping_check); `disconnect=S` closes the connection S seconds after it opened."""
        sim = self.sim
        conn.subs["__ping_outstanding__"] = None
        next_ping = time.monotonic() + sim.config.ping_interval
        while not conn.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if conn.disconnect_due():
                return
            if now >= next_ping:
                next_ping = now + sim.config.ping_interval
                if conn.subs["__ping_outstanding__"] is None:
                    conn.subs["__ping_outstanding__"] = now
                try:
                    await conn.ws.ping(b"obitui-sim")
                except Exception as exc:  # transport already closing
                    log.debug("sim: ping failed: %s", exc)
                    return
            since = conn.subs["__ping_outstanding__"]
            if not sim.faults.no_ping_check and since is not None and now - since > sim.config.pong_timeout:
                sim.count("closed_no_pong")
                conn.close_soon(1008, "pong timeout")
                return

    def _on_text(self, conn: Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            conn.send_control(orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}).decode())
            return
        if not isinstance(req, dict):
            conn.send_control(orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}).decode())
            return
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params", [])
        if not isinstance(rid, (int, str)) or isinstance(rid, bool):
            conn.send_control(orjson.dumps({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None}).decode())
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) and STREAM_RE.match(p) for p in params):
                conn.send_control(orjson.dumps({"error": {"code": 2, "msg": "Invalid request: invalid stream name"}, "id": rid}).decode())
                return
            for p in params:
                if method == "SUBSCRIBE":
                    conn.subs[p] = True
                else:
                    conn.subs.pop(p, None)
            conn.send_control(orjson.dumps({"result": None, "id": rid}).decode())
        elif method == "LIST_SUBSCRIPTIONS":
            streams = [s for s in conn.subs if not s.startswith("__")]
            conn.send_control(orjson.dumps({"result": streams, "id": rid}).decode())
        else:
            conn.send_control(orjson.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}).decode())

    # ------------------------------------------------------------ REST
    def _limit_check(self, weight: int) -> web.Response | None:
        sim = self.sim
        f = sim.faults
        now = time.monotonic()
        if f.rest_down:
            f.rest_down -= 1
            sim.count("injected_rest_down")
            return _error(503, -1001, "Service unavailable.")
        if f.http_418:
            f.http_418 -= 1
            sim.count("injected_http_418")
            return _error(418, -1003, "Way too many requests; IP banned.", sim.config.retry_after_418)
        if f.http_429:
            f.http_429 -= 1
            sim.count("injected_http_429")
            return _error(429, -1003, "Too many requests.", sim.config.retry_after_429)
        if now < self.banned_until:
            sim.count("http_418")
            return _error(418, -1003, "IP banned.", int(self.banned_until - now) + 1)
        if now - self.window_start >= WEIGHT_WINDOW_S:
            self.window_start = now
            self.weight_used = 0
            self.requests_after_429 = 0
        if self.weight_used + weight > sim.config.weight_limit:
            self.requests_after_429 += 1
            if self.requests_after_429 > 5:
                self.banned_until = now + sim.config.retry_after_418
                sim.count("http_418")
                return _error(418, -1003, "Way too many requests; IP banned.", sim.config.retry_after_418)
            sim.count("http_429")
            return _error(429, -1003, "Too many requests.", int(self.window_start + WEIGHT_WINDOW_S - now) + 1)
        self.weight_used += weight
        return None

    async def depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'.")
        if not 1 <= limit <= 5000:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.")
        if symbol not in self.models:
            return _error(400, -1121, "Invalid symbol.")
        refused = self._limit_check(depth_weight(limit))
        if refused is not None:
            return refused
        model = self.models[symbol]
        f = self.sim.faults
        self.sim.count("rest_depth")
        if f.stale_snapshot:
            f.stale_snapshot -= 1
            self.sim.count("injected_stale_snapshot")
            old = model.history[0][0] if len(model.history) < 500 else model.history[-500][0]
            past = model.book_at(old)
            if past is not None:
                body = self.book_body(model, past[0], past[1], old, limit)
                return _json(body, self._weight_headers())
        body = self.book_body(model, model.bids, model.asks, model.update_id, limit)
        return _json(body, self._weight_headers())

    def _weight_headers(self) -> dict[str, str]:
        return {"x-mbx-used-weight-1m": str(self.weight_used)}

    async def ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": int(time.time() * 1000)})

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close_soon(1001, "simulator shutting down")


def _json(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, code: int, msg: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return _json({"code": code, "msg": msg}, headers, status)

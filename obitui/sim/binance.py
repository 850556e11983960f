"""Simulated Binance spot: WebSocket raw (/ws/<stream>) and combined (/stream?streams=...)
streams with live SUBSCRIBE/UNSUBSCRIBE, server pings, serverShutdown, and REST /api/v3/depth,
/api/v3/exchangeInfo, /api/v3/ticker/24hr with weights, 429/418 + Retry-After
(docs/PROTOCOLS.md, Binance spot).

The venue's limits are enforced as the real one does, and every breach is counted with
``Simulator.violation``: more than 5 incoming messages a second on a connection (control
frames included) closes it; more than 1024 streams on a connection are refused (in the URL of
a combined stream, which may be that long, or by SUBSCRIBE); REST weight
over ``weight_limit`` per minute and IP answers 429, and a request sent before a 429's
Retry-After (or during a ban) answers 418.
Depth streams push at their real speed: ``@depth@100ms`` at most every 100 ms, ``@depth`` and
``@depth@1000ms`` at most every second, each push carrying the diff accumulated since the last
one (U/u continuous).

``BinanceVenue`` is the spot dialect; Binance USD-M futures (``obitui.sim.binance_usdm``) is
a subclass that changes the routes, the formats, the limits and the REST endpoints and keeps
these code paths (pings, faults, pacing, limits). Both are served on the Binance server:
``served_paths()`` lists what each answers."""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from obitui.sim.conn import Conn
from obitui.sim.market import BID, MarketModel, Step, Trade, fmt
from obitui.sim.universe import listings

if TYPE_CHECKING:
    from obitui.sim.server import Simulator

log = logging.getLogger("obitui.sim")

STREAM_RE = re.compile(r"^[a-z0-9]+@[A-Za-z0-9_@]+$")
# depth stream suffix -> push interval (s)
DEPTH_INTERVALS = {"depth@100ms": 0.1, "depth": 1.0, "depth@1000ms": 1.0}
DECIMALS = 8           # Binance spot strings carry 8 decimals: "27000.01000000"
WEIGHT_WINDOW_S = 60.0  # REQUEST_WEIGHT interval: 1 MINUTE, fixed windows of the wall clock
DEPTH_MAX_LIMIT = 5000  # a larger depth limit is answered with 5000 levels
EXCHANGE_INFO_WEIGHT = 20
TICKER_PATH = "ticker/24hr"
WS_MSG_LIMIT = 5        # incoming messages (text, ping, pong) per second and connection
MAX_STREAMS = 1024      # streams per connection
RETRY_SLACK_S = 0.05    # a retry this close to Retry-After's end counts as on time
AGG_ID_OFFSET = 500_000  # aggTrade ids: one aggregate per simulated trade, numbered apart
# the kinds of stream a route serves (spot: every stream on the root)
STREAM_KINDS = frozenset({"depth", "trade", "aggTrade"})


def stream_kind(name: str) -> str:
    """``btcusdt@depth@100ms`` -> ``depth``; ``btcusdt@aggTrade`` -> ``aggTrade``."""
    return name.partition("@")[2].partition("@")[0]


def served_paths() -> dict[str, tuple[str, ...]]:
    """The URL paths the Binance server answers, by venue API (``binance``, ``binance-usdm``)."""
    from obitui.sim.binance_usdm import BinanceUsdmVenue
    return {cls.venue_name: cls.paths() for cls in (BinanceVenue, BinanceUsdmVenue)}


def ticker_weight(n: int | None) -> int:
    """Weight of GET /api/v3/ticker/24hr: ``n`` symbols asked (None: every symbol)."""
    if n is None or n > 100:
        return 80
    return 2 if n <= 20 else 40


def depth_weight(limit: int) -> int:
    """Weight of GET /api/v3/depth by its (capped) limit."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


@dataclass(slots=True)
class IpLimits:
    """REST rate-limit state of one client IP."""
    window: int = -1             # wall-clock window number (time // WEIGHT_WINDOW_S)
    used: int = 0                # weight used in it
    retry_until: float = 0.0     # monotonic: a 429 told this IP to wait until then
    banned_until: float = 0.0    # monotonic: a 418 ban ends then


@dataclass(slots=True)
class DepthAcc:
    """One depth stream speed's diff accumulated since its last push (ticks -> lots, 0 deletes)."""
    first: int = 0               # U of the next push; 0: nothing accumulated
    last: int = 0
    prev: int = 0                # the u of the step before ``first`` (USD-M ``pu``)
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    pushed_at: float = -math.inf


class BinanceVenue:
    """One Binance API on the Binance server: spot here; subclasses change the class
    attributes and the few methods that differ (binance_usdm.py)."""
    venue_name = "binance"          # the truth / config venue name
    key = "binance"                 # prefix of its counters and violations
    # WebSocket route prefix -> the stream kinds it serves (another kind connects, stays silent)
    ws_routes: dict[str, frozenset[str]] = {"": STREAM_KINDS}
    depth_intervals = DEPTH_INTERVALS
    trade_streams = ("trade", "aggTrade")
    ws_msg_limit = WS_MSG_LIMIT
    max_streams = MAX_STREAMS
    rest_prefix = "/api/v3"
    exchange_info_weight = EXCHANGE_INFO_WEIGHT
    default_depth_limit = 100
    count_prefix = ""               # of its REST counters (rest_depth, rest_exchange_info)

    def __init__(self, sim: Simulator, models: dict[str, MarketModel]) -> None:
        self.sim = sim
        self.models = models
        self.conns: set[Conn] = set()
        self.ips: dict[str, IpLimits] = {}
        self.depth_acc: dict[tuple[str, float], DepthAcc] = {}
        self.server_group: list[BinanceVenue] = [self]   # the APIs on the same server
        self._intervals = sorted(set(self.depth_intervals.values()))
        # stream name -> the connections subscribed to it (what a market step reaches)
        self.watchers: dict[str, set[Conn]] = {}
        self._names: dict[str, tuple[list[tuple[float, list[str]]], list[tuple[str, str]]]] = {}

    def share_server(self, other: BinanceVenue) -> None:
        """``other`` is served on the same server: a serverShutdown reaches both."""
        self.server_group.append(other)
        other.server_group = self.server_group

    @classmethod
    def paths(cls) -> tuple[str, ...]:
        """The URL paths it answers (``<stream>``: a stream name, or several joined by /)."""
        ws = tuple(p for r in cls.ws_routes for p in (f"{r}/ws", f"{r}/ws/<stream>", f"{r}/stream"))
        return ws + tuple(f"{cls.rest_prefix}/{e}" for e in ("depth", "exchangeInfo", TICKER_PATH, "ping", "time"))

    def routes(self) -> list[web.RouteDef]:
        out = []
        for r in self.ws_routes:
            out += [web.get(f"{r}/ws", self.ws_handler), web.get(r + "/ws/{stream:.+}", self.ws_handler),
                    web.get(f"{r}/stream", self.ws_handler)]
        p = self.rest_prefix
        return out + [web.get(f"{p}/depth", self.depth), web.get(f"{p}/exchangeInfo", self.exchange_info),
                      web.get(f"{p}/{TICKER_PATH}", self.ticker_24hr),
                      web.get(f"{p}/ping", self.ping), web.get(f"{p}/time", self.time)]

    # ------------------------------------------------------------ configuration
    @property
    def weight_limit(self) -> int:
        return self.sim.config.weight_limit

    @property
    def ping_interval(self) -> float:
        return self.sim.config.ping_interval

    @property
    def pong_timeout(self) -> float:
        return self.sim.config.pong_timeout

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

    def depth_event(self, symbol: str, model: MarketModel, acc: DepthAcc, now_ms: int) -> dict[str, Any]:
        return {"e": "depthUpdate", "E": now_ms, "s": symbol, "U": acc.first, "u": acc.last,
                "b": [[self.px(model, p), self.qty(model, q)] for p, q in acc.bids.items()],
                "a": [[self.px(model, p), self.qty(model, q)] for p, q in acc.asks.items()]}

    def trade_event(self, kind: str, symbol: str, model: MarketModel, t: Trade, now_ms: int) -> dict[str, Any]:
        if kind == "trade":
            return {"e": "trade", "E": now_ms, "s": symbol, "t": t.trade_id,
                    "p": self.px(model, t.price), "q": self.qty(model, t.lots), "T": now_ms,
                    "m": t.buyer_is_maker, "M": True}
        return {"e": "aggTrade", "E": now_ms, "s": symbol, "a": t.trade_id - AGG_ID_OFFSET,
                "p": self.px(model, t.price), "q": self.qty(model, t.lots),
                "f": t.trade_id, "l": t.trade_id, "T": now_ms, "m": t.buyer_is_maker, "M": True}

    @staticmethod
    def _serves(conn: Conn, kind: str) -> bool:
        """Whether the route this connection came in on carries streams of ``kind``."""
        return kind in conn.subs["__kinds__"]

    def _streams_of(self, symbol: str) -> tuple[list[tuple[float, list[str]]], list[tuple[str, str]]]:
        """A market's stream names: the depth ones by push interval, the trade ones by kind."""
        names = self._names.get(symbol)
        if names is None:
            low = symbol.lower()
            depth = [(iv, [f"{low}@{k}" for k, v in self.depth_intervals.items() if v == iv])
                     for iv in self._intervals]
            names = self._names[symbol] = (depth, [(k, f"{low}@{k}") for k in self.trade_streams])
        return names

    def subscribe(self, conn: Conn, stream: str) -> None:
        conn.subs[stream] = True
        self.watchers.setdefault(stream, set()).add(conn)

    def unsubscribe(self, conn: Conn, stream: str) -> None:
        conn.subs.pop(stream, None)
        conn.drop_held(stream)      # a depth diff `reorder` still held back is never sent
        watching = self.watchers.get(stream)
        if watching is not None:
            watching.discard(conn)
            if not watching:
                del self.watchers[stream]

    def on_step(self, symbol: str, model: MarketModel, step: Step) -> None:
        """Fan one market step out to the subscribers of its streams: trades at once, depth
        diffs accumulated and pushed at each depth stream's speed."""
        if self.sim.faults.server_shutdown:
            self.server_shutdown()
        if not self.conns:
            if self.depth_acc:
                self.depth_acc.clear()
            return
        watchers = self.watchers
        now_ms = step.ts_ms
        depth_names, trade_names = self._streams_of(symbol)
        now = 0.0
        for interval, names in depth_names:
            targets = [(conn, name) for name in names for conn in watchers.get(name, ())
                       if self._serves(conn, "depth")]
            key = (symbol, interval)
            if not targets:
                self.depth_acc.pop(key, None)
                continue
            acc = self.depth_acc.get(key)
            if acc is None:
                acc = self.depth_acc[key] = DepthAcc()
            if not acc.first:
                acc.first, acc.prev = step.first_id, step.prev_id
            acc.last = step.last_id
            for side, p, q in step.changes:
                (acc.bids if side == BID else acc.asks)[p] = q
            now = now or time.monotonic()
            if now - acc.pushed_at < interval:
                continue
            payload = orjson.dumps(self.depth_event(symbol, model, acc, now_ms))
            self.depth_acc[key] = DepthAcc(pushed_at=now)
            for conn, name in targets:
                conn.send_data(self._wrap(conn, name, payload), diff=True, stream=name)
        if not step.trades:
            return
        for kind, name in trade_names:
            payloads: list[bytes] | None = None
            for conn in watchers.get(name, ()):
                if not self._serves(conn, kind):
                    continue
                if payloads is None:
                    payloads = [orjson.dumps(self.trade_event(kind, symbol, model, t, now_ms))
                                for t in step.trades]
                for p in payloads:
                    conn.send_data(self._wrap(conn, name, p))

    def server_shutdown(self) -> None:
        """The `server_shutdown=S` fault (one-shot): every open connection of the server (each
        API on it) is told ``serverShutdown`` now and closed S seconds later, as the venue does
        before maintenance. Connections opened meanwhile (to another server) are not affected."""
        delay = self.sim.faults.server_shutdown
        self.sim.faults.server_shutdown = 0.0
        conns = [c for v in self.server_group for c in v.conns if not c.closed]
        payload = orjson.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)})
        for conn in conns:
            conn.send_control(self._wrap(conn, "!serverShutdown", payload))
        self.sim.count("binance_server_shutdowns")
        log.info("sim: serverShutdown sent to %d binance connection(s); closing them in %g s",
                 len(conns), delay)

        def close() -> None:
            for conn in conns:
                conn.close_soon(1001, "server shutdown")
        asyncio.get_running_loop().call_later(delay, close)

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
        conn = Conn(ws, sim.faults, sim.counters, sim.next_conn_seed(), f"{self.key} {request.remote}")
        route = next((r for r in self.ws_routes if r and request.path.startswith(r + "/")), "")
        combined = request.path == f"{route}/stream"
        conn.subs["__combined__"] = combined
        conn.subs["__kinds__"] = self.ws_routes[route]
        if combined:
            streams = list(filter(None, request.query.get("streams", "").split("/")))
        else:
            streams = request.match_info["stream"].split("/") if "stream" in request.match_info else []
        for s in streams[:self.max_streams]:
            self.subscribe(conn, s)
        self.conns.add(conn)
        sim.count(f"{self.key}_connections")
        if len(set(streams)) > self.max_streams:
            sim.violation(f"{self.key}_streams", f"{request.remote}: {len(set(streams))} streams "
                          f"in the URL (limit {self.max_streams})")
            conn.close_soon(1008, "Too many streams")
        pinger = asyncio.get_running_loop().create_task(self._pinger(conn))
        received: collections.deque[float] = collections.deque()   # when the last messages came
        try:
            async for msg in ws:
                now = conn.last_rx = time.monotonic()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG):
                    # the venue's limit: 5 incoming messages a second, control frames included
                    received.append(now)
                    while received and now - received[0] >= 1.0:
                        received.popleft()
                    if len(received) > self.ws_msg_limit:
                        sim.violation(f"{self.key}_ws_msg_rate", f"{request.remote}: {len(received)} "
                                      f"messages within 1 s (limit {self.ws_msg_limit})")
                        conn.close_soon(1008, "Too many requests")
                        break
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
            for stream in [s for s in conn.subs if not s.startswith("__")]:
                self.unsubscribe(conn, stream)
            await conn.finish()
        return ws

    async def _pinger(self, conn: Conn) -> None:
        """Ping every ping_interval; a ping unanswered for pong_timeout disconnects (unless
        no_ping_check); `disconnect=S` closes the connection S seconds after it opened."""
        sim = self.sim
        conn.subs["__ping_outstanding__"] = None
        next_ping = time.monotonic() + self.ping_interval
        while not conn.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if conn.disconnect_due():
                return
            if now >= next_ping:
                next_ping = now + self.ping_interval
                if conn.subs["__ping_outstanding__"] is None:
                    conn.subs["__ping_outstanding__"] = now
                try:
                    await conn.ws.ping(b"obitui-sim")
                except Exception as exc:  # transport already closing
                    log.debug("sim: ping failed: %s", exc)
                    return
            since = conn.subs["__ping_outstanding__"]
            if not sim.faults.no_ping_check and since is not None and now - since > self.pong_timeout:
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
            if method == "SUBSCRIBE":
                have = sum(1 for s in conn.subs if not s.startswith("__"))
                new = len(set(params) - set(conn.subs))
                if have + new > self.max_streams:
                    self.sim.violation(f"{self.key}_streams", f"{conn.peer}: {have} + {new} streams "
                                       f"(limit {self.max_streams} per connection): refused")
                    conn.send_control(orjson.dumps({"error": {"code": 2, "msg": "Invalid request: too many "
                                                    f"streams (at most {self.max_streams})"}, "id": rid}).decode())
                    return
            for p in params:
                if method == "SUBSCRIBE":
                    self.subscribe(conn, p)
                else:
                    self.unsubscribe(conn, p)
            conn.send_control(orjson.dumps({"result": None, "id": rid}).decode())
        elif method == "LIST_SUBSCRIPTIONS":
            streams = [s for s in conn.subs if not s.startswith("__")]
            conn.send_control(orjson.dumps({"result": streams, "id": rid}).decode())
        else:
            conn.send_control(orjson.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}).decode())

    # ------------------------------------------------------------ REST
    def _ip(self, request: web.Request) -> IpLimits:
        """The IP's limits, its weight window rolled to the current minute."""
        ip = self.ips.setdefault(request.remote or "?", IpLimits())
        window = int(time.time() // WEIGHT_WINDOW_S)
        if window != ip.window:
            ip.window, ip.used = window, 0
        return ip

    def _limit_check(self, request: web.Request, weight: int) -> web.Response | None:
        """None when the request may be served (its weight is then used); otherwise the
        answer: an injected fault, or the venue's 429/418 (counted as violations)."""
        sim = self.sim
        f = sim.faults
        ip = self._ip(request)
        now = time.monotonic()
        if f.rest_down:
            f.rest_down -= 1
            sim.count("injected_rest_down")
            return self._error(ip, 503, -1001, "Service unavailable.")
        if now < ip.banned_until:
            sim.count("http_418")
            sim.violation(f"{self.key}_rest_banned", f"{request.remote}: request during an IP ban "
                          f"({ip.banned_until - now:.2f} s left)")
            return self._error(ip, 418, -1003, "Way too many requests; IP banned.",
                               math.ceil(ip.banned_until - now))
        if now < ip.retry_until - RETRY_SLACK_S:
            # it did not back off after a 429: the venue bans the IP
            ip.banned_until = now + sim.config.retry_after_418
            sim.count("http_418")
            sim.violation(f"{self.key}_rest_retry_after", f"{request.remote}: request "
                          f"{ip.retry_until - now:.2f} s before a 429's Retry-After ended")
            return self._error(ip, 418, -1003, "Way too many requests; IP banned.", sim.config.retry_after_418)
        if f.http_418:
            f.http_418 -= 1
            sim.count("injected_http_418")
            ip.banned_until = now + sim.config.retry_after_418
            return self._error(ip, 418, -1003, "Way too many requests; IP banned.", sim.config.retry_after_418)
        if f.http_429:
            f.http_429 -= 1
            sim.count("injected_http_429")
            ip.retry_until = now + sim.config.retry_after_429
            return self._error(ip, 429, -1003, "Too many requests.", sim.config.retry_after_429)
        limit = self.weight_limit
        if ip.used + weight > limit:
            wait = (ip.window + 1) * WEIGHT_WINDOW_S - time.time()
            ip.retry_until = now + wait
            sim.count("http_429")
            sim.violation(f"{self.key}_rest_weight", f"{request.remote}: weight {ip.used} + {weight} > "
                          f"{limit} per minute")
            return self._error(ip, 429, -1003, "Too many requests; current limit of IP is "
                               f"{limit} requests per minute.", max(1, math.ceil(wait)))
        ip.used += weight
        return None

    @staticmethod
    def _weight_headers(ip: IpLimits) -> dict[str, str]:
        return {"x-mbx-used-weight-1m": str(ip.used)}

    def _error(self, ip: IpLimits, status: int, code: int, msg: str,
               retry_after: int | None = None) -> web.Response:
        return _error(status, code, msg, retry_after, self._weight_headers(ip))

    def depth_limit(self, ip: IpLimits, raw: str) -> int | web.Response:
        """The depth request's limit (capped), or the venue's answer to a bad one."""
        try:
            limit = int(raw)
        except ValueError:
            return self._error(ip, 400, -1100, "Illegal characters found in parameter 'limit'.")
        if limit < 1:
            return self._error(ip, 400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.")
        return min(limit, DEPTH_MAX_LIMIT)

    def depth_weight(self, limit: int) -> int:
        return depth_weight(limit)

    async def depth(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        symbol = request.query.get("symbol", "")
        limit = self.depth_limit(ip, request.query.get("limit", str(self.default_depth_limit)))
        if isinstance(limit, web.Response):
            return limit
        if symbol not in self.models:
            return self._error(ip, 400, -1121, "Invalid symbol.")
        refused = self._limit_check(request, self.depth_weight(limit))
        if refused is not None:
            return refused
        model = self.models[symbol]
        f = self.sim.faults
        self.sim.count(f"{self.count_prefix}rest_depth")
        if f.stale_snapshot:
            f.stale_snapshot -= 1
            self.sim.count("injected_stale_snapshot")
            old = model.history[0][0] if len(model.history) < 500 else model.history[-500][0]
            past = model.book_at(old)
            if past is not None:
                body = self.book_body(model, past[0], past[1], old, limit)
                return _json(body, self._weight_headers(ip))
        body = self.book_body(model, model.bids, model.asks, model.update_id, limit)
        return _json(body, self._weight_headers(ip))

    def symbol_info(self, model: MarketModel) -> dict[str, Any]:
        """One entry of exchangeInfo ``symbols`` (the fields a market-data client reads, and
        the usual others)."""
        spec = model.spec
        tick = fmt(1, spec.price_decimals, DECIMALS)
        step = fmt(1, spec.qty_decimals, DECIMALS)
        listing = listings()[spec.symbol]
        base, quote = listing.base, listing.quote
        return {
            "symbol": spec.symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
            "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
                 "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
            ],
            "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _wanted(self, ip: str, q: Any) -> list[str] | None | web.Response:
        """The symbols a REST query names (``symbol``, or ``symbols`` as a JSON list; None:
        every one), or the venue's error answer for a bad combination or list."""
        if "symbol" in q and "symbols" in q:
            return self._error(ip, 400, -1128, "Combination of optional parameters invalid.")
        if "symbols" in q:
            try:
                wanted = orjson.loads(q["symbols"])
            except orjson.JSONDecodeError:
                wanted = None
            if (not isinstance(wanted, list) or not wanted
                    or not all(isinstance(w, str) for w in wanted)):
                return self._error(ip, 400, -1100, "Illegal characters found in parameter 'symbols'.")
            return wanted
        if "symbol" in q:
            return [q["symbol"]]
        return None

    async def exchange_info(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        q = request.query
        asked = self._wanted(ip, q)
        if isinstance(asked, web.Response):
            return asked
        wanted = list(self.models) if asked is None else asked
        if any(w not in self.models for w in wanted):
            return self._error(ip, 400, -1121, "Invalid symbol.")
        refused = self._limit_check(request, self.exchange_info_weight)
        if refused is not None:
            return refused
        self.sim.count(f"{self.count_prefix}rest_exchange_info")
        body = {
            "timezone": "UTC", "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [self.symbol_info(self.models[w]) for w in dict.fromkeys(wanted)],
        }
        return _json(body, self._weight_headers(ip))

    def ticker(self, model: MarketModel, now_ms: int) -> dict[str, Any]:
        """One symbol's 24 h ticker (GET /api/v3/ticker/24hr), from the model's day figures."""
        spec, day = model.spec, model.day
        bb, bq = model.levels(BID, 1)[0]
        ba, aq = model.asks.peekitem(0)
        last_trade = model.recent_trades[-1] if model.recent_trades else None
        last = last_trade.price if last_trade else bb
        px = self.px
        vwap = day.quote // day.base if day.base else last
        first_id = model.trade_id - day.count + 1
        return {"symbol": spec.symbol, "priceChange": px(model, last - day.open) if last >= day.open
                else "-" + px(model, day.open - last),
                "priceChangePercent": f"{(last - day.open) * 100 / day.open:.3f}",
                "weightedAvgPrice": px(model, vwap), "prevClosePrice": px(model, day.open),
                "lastPrice": px(model, last), "lastQty": self.qty(model, last_trade.lots if last_trade else 0),
                "bidPrice": px(model, bb), "bidQty": self.qty(model, bq),
                "askPrice": px(model, ba), "askQty": self.qty(model, aq),
                "openPrice": px(model, day.open), "highPrice": px(model, max(day.high, last)),
                "lowPrice": px(model, min(day.low, last)), "volume": self.qty(model, day.base),
                "quoteVolume": _decimals(day.quote, spec.price_decimals + spec.qty_decimals),
                "openTime": now_ms - 86_400_000, "closeTime": now_ms,
                "firstId": first_id, "lastId": model.trade_id, "count": day.count}

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """GET ticker/24hr: every symbol (a list), ``symbol`` (one object) or ``symbols`` (a
        JSON list); the weight grows with the number of symbols (every one: 80 on spot)."""
        ip = self._ip(request)
        q = request.query
        asked = self._wanted(ip, q)
        if isinstance(asked, web.Response):
            return asked
        wanted = asked
        if wanted is not None and any(w not in self.models for w in wanted):
            return self._error(ip, 400, -1121, "Invalid symbol.")
        refused = self._limit_check(request, self.ticker_weight(None if wanted is None else len(set(wanted))))
        if refused is not None:
            return refused
        self.sim.count(f"{self.count_prefix}rest_ticker")
        now_ms = int(time.time() * 1000)
        body: Any = [self.ticker(self.models[s], now_ms) for s in dict.fromkeys(wanted or self.models)]
        if "symbol" in q:
            body = body[0]
        return _json(body, self._weight_headers(ip))

    def ticker_weight(self, n: int | None) -> int:
        return ticker_weight(n)

    async def ping(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        refused = self._limit_check(request, 1)
        return refused or _json({}, self._weight_headers(ip))

    async def time(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        refused = self._limit_check(request, 1)
        return refused or _json({"serverTime": int(time.time() * 1000)}, self._weight_headers(ip))

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close_soon(1001, "simulator shutting down")


def _decimals(value: int, decimals: int) -> str:
    """Integer units of 10**-decimals as a string of exactly DECIMALS decimals (truncated)."""
    if decimals > DECIMALS:
        return fmt(value // 10 ** (decimals - DECIMALS), DECIMALS)
    return fmt(value, decimals, DECIMALS)


def _json(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, code: int, msg: str, retry_after: int | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return _json({"code": code, "msg": msg}, headers or None, status)

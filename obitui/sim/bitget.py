"""Simulated Bitget v2 public WebSocket (/v2/ws/public): subscribe/unsubscribe with acks and
errors (30001 unknown symbol, 30016 bad parameters), `books` snapshot then updates chained by
seq/pseq (optional CRC32 checksum over the original strings; seq, pseq and checksum as decimal
strings with `bitget_string_seq` or the `string_seq` fault), books1/5/15, the full v2 `ticker`,
`trade`, text ping/pong, and a disconnect after 2 minutes without a ping (docs/PROTOCOLS.md,
Bitget v2). REST on the same port: GET /api/v2/spot/public/symbols and /api/v2/spot/market/tickers
(every symbol, or ``?symbol=``), at most 20 requests a second per IP and endpoint (beyond: 429).

The same server speaks Bitget v3 (UTA) public on /v3/ws/public (``obitui.sim.bitget_v3``): one
exchange, two APIs over the same books and seq space. A ``BitgetDialect`` holds what differs
(names, error shapes, ticker and trade fields, when a books snapshot is sent); the connection
handling, limits, faults and fan-out below are shared. ``served_paths()`` lists the paths.

The venue's per-connection limits are enforced as the real one does, and every breach is
counted with ``Simulator.violation``: more than 10 client messages (subscribe, unsubscribe,
ping) in a second closes the connection (``bitget_ws_msg_rate``); more than 240 subscribe and
unsubscribe requests in an hour are refused with 30006 (``bitget_subscribe_rate``); a
subscription beyond 1000 channels is refused (``bitget_channels``). The limits are the
SimConfig ``bitget_*`` fields, so tests can reach them quickly. The venue counts "240
subscription requests/hour/connection": a request is one message, whatever the number of its
args, so one subscribe may carry hundreds of channels (a message may be 64 KiB: ~900 args).
REST requests over 20 a second per IP and endpoint answer 429 (``bitget_rest_rate``).

A market step reaches only the connections with a channel of its symbol (``watchers``)."""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from obitui.sim.conn import Conn
from obitui.sim.market import ASK, BID, MarketModel, Step, Trade, fmt
from obitui.sim.universe import QUOTE_USDT, listings

if TYPE_CHECKING:
    from obitui.sim.server import Simulator

log = logging.getLogger("obitui.sim")

INST_TYPES = ("SPOT", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES")
CHANNELS = ("books", "books1", "books5", "books15", "ticker", "trade")
MSG_WINDOW_S = 1.0            # client messages are counted over this sliding window
SUBSCRIBE_WINDOW_S = 3600.0   # subscribe/unsubscribe requests over this one
ERROR_TEXTS = {30002: "illegal request", 30003: "invalid op", 30006: "request too many",
               30007: "request over limit,connection close", 30016: "Param error"}
REST_PATHS = ("/api/v2/spot/public/symbols", "/api/v2/spot/market/tickers")
REST_PER_S = 20               # REST requests per second per IP and endpoint
WS_MAX_MSG = 64 * 1024        # a client message (~900 subscribe args); beyond: Close 1009


def served_paths() -> dict[str, tuple[str, ...]]:
    """The URL paths the Bitget server answers, by venue API (``bitget``, ``bitget-v3``)."""
    from obitui.sim.bitget_v3 import V3
    return {d.name: (d.path, *REST_PATHS) for d in (V2, V3)}


class BitgetDialect:
    """Bitget v2 (classic) public: what a dialect decides. ``bitget_v3.V3Dialect`` overrides it."""
    name = "bitget"                 # the truth / config venue name
    key = "bitget"                  # prefix of its counters and violations
    path = "/v2/ws/public"
    channel_key, symbol_key = "channel", "instId"
    inst_types = INST_TYPES
    live_inst_type = "SPOT"         # the instType whose channels carry data (the spot markets)
    channels = CHANNELS
    trade_channel = "trade"
    bids_key, asks_key = "bids", "asks"
    defer_snapshot = False          # v3: the books snapshot goes out with the next market step

    def check_arg(self, arg: Any, models: dict[str, MarketModel]) -> tuple[int, str] | None:
        """None for a valid subscription arg, else (error code, message)."""
        inst_type, channel, inst = (arg.get("instType"), arg.get(self.channel_key),
                                    arg.get(self.symbol_key))
        if channel not in self.channels or not isinstance(inst_type, str) or not isinstance(inst, str):
            return 30016, "Param error"
        if inst not in models or inst_type not in self.inst_types:
            return 30001, self.not_found(inst_type, channel, inst)
        return None

    def not_found(self, inst_type: str, channel: str, inst: str) -> str:
        return f"instType:{inst_type},channel:{channel},instId:{inst} doesn't exist"

    def error(self, code: int, msg: str, arg: Any, op: str | None, conn_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"event": "error"}
        if arg is not None:
            body["arg"] = arg
        body["code"] = code
        body["msg"] = msg
        if op:
            body["op"] = op
        return body

    def ticker_fields(self, venue: BitgetVenue, model: MarketModel, ts: int) -> dict[str, str]:
        return venue.ticker_fields(model, ts)

    def trade(self, venue: BitgetVenue, model: MarketModel, t: Trade, ts_ms: int) -> dict[str, str]:
        return {"ts": str(ts_ms), "price": venue.px(model, t.price), "size": venue.qty(model, t.lots),
                "side": "sell" if t.buyer_is_maker else "buy", "tradeId": str(t.trade_id)}


V2 = BitgetDialect()


@dataclass(slots=True)
class PendingSnapshot:
    """A v3 books snapshot taken at subscribe time (the book after ``seq``), sent with the next
    market step, when the next update's seq is known."""
    arg: dict[str, str]
    data: dict[str, Any]
    seq: int


@dataclass(slots=True)
class ConnLimits:
    """One connection's dialect, keep-alive and limit bookkeeping."""
    last_ping: float
    dialect: BitgetDialect = V2
    conn_id: str = ""
    msgs: collections.deque[float] = field(default_factory=collections.deque)
    requests: collections.deque[float] = field(default_factory=collections.deque)
    cut: bool = False             # closed for a breach: what it sends next is not read
    error_sent: bool = False      # the `bitget_error` fault reached it in this round
    pending: dict[tuple[str, str, str], PendingSnapshot] = field(default_factory=dict)


class BitgetVenue:
    name = "bitget"

    def __init__(self, sim: Simulator, models: dict[str, MarketModel]) -> None:
        self.sim = sim
        self.models = models
        self.conns: set[Conn] = set()
        self.last_ticker: dict[str, float] = {}
        self.limits: dict[Conn, ConnLimits] = {}
        # symbol -> the connections with a channel of it -> those channels (key -> arg)
        self.watchers: dict[str, dict[Conn, dict[tuple[str, str, str], dict[str, str]]]] = {}
        self.rest_calls: dict[tuple[str, str], collections.deque[float]] = {}
        self._error_round = False
        from obitui.sim.bitget_v3 import V3
        self.dialects: tuple[BitgetDialect, ...] = (V2, V3)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(d.path, self._ws_route(d)) for d in self.dialects] + [
                web.get(REST_PATHS[0], self.rest_symbols), web.get(REST_PATHS[1], self.rest_tickers)]

    def _ws_route(self, dialect: BitgetDialect):  # noqa: ANN202
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.ws_handler(request, dialect)
        return handler

    def conn_counts(self) -> dict[str, int]:
        """Open connections by API (``bitget``: v2, ``bitget-v3``)."""
        out = {d.name: 0 for d in self.dialects}
        for lim in self.limits.values():
            out[lim.dialect.name] += 1
        return out

    # ------------------------------------------------------------ formatting
    @staticmethod
    def px(model: MarketModel, ticks: int) -> str:
        return fmt(ticks, model.spec.price_decimals)

    @staticmethod
    def qty(model: MarketModel, lots: int) -> str:
        return fmt(lots, model.spec.qty_decimals)

    def levels(self, model: MarketModel, side: int, n: int | None = None) -> list[list[str]]:
        return [[self.px(model, p), self.qty(model, q)] for p, q in model.levels(side, n)]

    def checksum(self, model: MarketModel) -> int:
        b = self.levels(model, BID, 25)
        a = self.levels(model, ASK, 25)
        parts: list[str] = []
        for i in range(25):
            if i < len(b):
                parts += b[i]
            if i < len(a):
                parts += a[i]
        c = zlib.crc32(":".join(parts).encode())
        return c - (1 << 32) if c >= (1 << 31) else c

    def _checksums_on(self) -> bool:
        return self.sim.config.bitget_checksum or bool(self.sim.faults.bad_checksum)

    def _book_data(self, model: MarketModel, bids: list, asks: list, seq: int, pseq: int,
                   ts_ms: int, conn: Conn, dialect: BitgetDialect = V2) -> dict[str, Any]:
        strings = self.sim.config.bitget_string_seq or self.sim.faults.string_seq
        d: dict[str, Any] = {dialect.asks_key: asks, dialect.bids_key: bids,
                             "seq": str(seq) if strings else seq,
                             "pseq": str(pseq) if strings else pseq, "ts": str(ts_ms)}
        if self._checksums_on():
            c = self.checksum(model)
            if self.sim.faults.bad_checksum and conn.rng.random() < self.sim.faults.bad_checksum:
                conn.count("injected_bad_checksum")
                c = (c + 1) if c < (1 << 31) - 1 else c - 1
            d["checksum"] = str(c) if strings else c
        if strings:
            conn.count("string_seq_frames")
        return d

    def snapshot_frame(self, conn: Conn, arg: dict[str, str], model: MarketModel, depth: int | None,
                       dialect: BitgetDialect = V2) -> str:
        ts = int(time.time() * 1000)
        data = self._book_data(model, self.levels(model, BID, depth), self.levels(model, ASK, depth),
                               model.seq, 0, ts, conn, dialect)
        return orjson.dumps({"action": "snapshot", "arg": arg, "data": [data], "ts": ts}).decode()

    def pending_snapshot(self, conn: Conn, arg: dict[str, str], model: MarketModel,
                         dialect: BitgetDialect) -> PendingSnapshot:
        """The full book now (after seq S), its seq decided when it is sent."""
        ts = int(time.time() * 1000)
        data = self._book_data(model, self.levels(model, BID), self.levels(model, ASK),
                               model.seq, 0, ts, conn, dialect)
        return PendingSnapshot(arg, data, model.seq)

    def send_pending(self, conn: Conn, snap: PendingSnapshot, step: Step) -> None:
        """Send a v3 snapshot before the update of ``step``. When seq jumps by more than 1 to
        that update, the snapshot reports (with probability ``bitget_v3_snapshot_inside``, drawn
        from the connection's seeded generator) a seq strictly between S and the update's seq,
        as the real venue may: the client's rule is snapshot seq within [pseq, seq] of the first
        update. Its content stays the book after S."""
        seq = snap.seq
        if (step.prev_seq == snap.seq and step.seq - snap.seq > 1
                and conn.rng.random() < self.sim.config.bitget_v3_snapshot_inside):
            seq = snap.seq + 1 + conn.rng.randrange(step.seq - snap.seq - 1)
            conn.count("bitget_v3_snapshot_seq_inside")
        d = snap.data
        d["seq"] = str(seq) if isinstance(d["seq"], str) else seq
        conn.send_data(orjson.dumps({"action": "snapshot", "arg": snap.arg, "data": [d],
                                     "ts": int(d["ts"])}).decode())

    def subscribe(self, conn: Conn, key: tuple[str, str, str], arg: dict[str, str]) -> None:
        conn.subs[key] = arg
        self.watchers.setdefault(key[2], {}).setdefault(conn, {})[key] = arg

    def unsubscribe(self, conn: Conn, key: tuple[str, str, str]) -> None:
        conn.subs.pop(key, None)
        conn.drop_held(key)         # a books diff `reorder` still held back is never sent
        by_conn = self.watchers.get(key[2])
        if by_conn is None or conn not in by_conn:
            return
        by_conn[conn].pop(key, None)
        if not by_conn[conn]:
            del by_conn[conn]
            if not by_conn:
                del self.watchers[key[2]]

    def on_step(self, symbol: str, model: MarketModel, step: Step) -> None:
        if self.sim.faults.bitget_error or self._error_round:
            self._inject_errors()
        watching = self.watchers.get(symbol)
        if not watching:
            return
        now = time.monotonic()
        ticker_due = now - self.last_ticker.get(symbol, 0.0) >= self.sim.config.ticker_interval
        if ticker_due:
            self.last_ticker[symbol] = now
        bids = asks = None
        for conn, keys in list(watching.items()):
            lim = self.limits.get(conn)
            if lim is None:
                continue
            dialect = lim.dialect
            for key, arg in keys.items():
                inst_type, channel, _ = key
                if inst_type != dialect.live_inst_type:
                    continue
                if channel == "books":
                    if bids is None:
                        bids = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == BID]
                        asks = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == ASK]
                    pending = lim.pending.pop(key, None)
                    if pending is not None:
                        self.send_pending(conn, pending, step)
                    data = self._book_data(model, bids, asks, step.seq, step.prev_seq, step.ts_ms, conn, dialect)
                    conn.send_data(orjson.dumps({"action": "update", "arg": arg, "data": [data],
                                                 "ts": step.ts_ms}).decode(), diff=True, stream=key)
                elif channel.startswith("books"):
                    conn.send_data(self.snapshot_frame(conn, arg, model, int(channel[5:]), dialect))
                elif channel == dialect.trade_channel and step.trades:
                    data = [dialect.trade(self, model, t, step.ts_ms) for t in step.trades]
                    conn.send_data(orjson.dumps({"action": "update", "arg": arg, "data": data,
                                                 "ts": step.ts_ms}).decode())
                elif channel == "ticker" and ticker_due:
                    conn.send_data(self.ticker_frame(arg, model, dialect))

    def ticker_fields(self, model: MarketModel, ts: int) -> dict[str, str]:
        """The v2 `ticker` channel's fields, all strings (the day opens at the start price:
        the simulated day has no UTC boundary, so openUtc is the same open)."""
        bb, bq = model.levels(BID, 1)[0]
        ba, aq = model.levels(ASK, 1)[0]
        last = model.recent_trades[-1].price if model.recent_trades else bb
        day = model.day
        change = f"{(last - day.open) / day.open:.4f}"
        return {"instId": model.spec.symbol, "lastPr": self.px(model, last),
                "open24h": self.px(model, day.open), "high24h": self.px(model, max(day.high, last)),
                "low24h": self.px(model, min(day.low, last)), "change24h": change,
                "bidPr": self.px(model, bb), "askPr": self.px(model, ba),
                "bidSz": self.qty(model, bq), "askSz": self.qty(model, aq),
                "baseVolume": self.qty(model, day.base),
                "quoteVolume": fmt(day.quote, model.spec.price_decimals + model.spec.qty_decimals),
                "openUtc": self.px(model, day.open), "changeUtc24h": change, "ts": str(ts)}

    def ticker_frame(self, arg: dict[str, str], model: MarketModel, dialect: BitgetDialect = V2) -> str:
        ts = int(time.time() * 1000)
        d = dialect.ticker_fields(self, model, ts)
        return orjson.dumps({"action": "snapshot", "arg": arg, "data": [d], "ts": ts}).decode()

    # ------------------------------------------------------------ REST
    @staticmethod
    def _rest(data: Any, status: int = 200, code: str = "00000", msg: str = "success") -> web.Response:
        return web.Response(status=status, content_type="application/json",
                            body=orjson.dumps({"code": code, "msg": msg, "requestTime": int(time.time() * 1000),
                                               "data": data}))

    def _rest_refused(self, request: web.Request) -> web.Response | None:
        """The venue's REST limit: 20 requests a second per IP and endpoint; beyond, 429 and a
        violation."""
        now = time.monotonic()
        q = self.rest_calls.setdefault((request.remote or "?", request.path), collections.deque())
        while q and now - q[0] >= 1.0:
            q.popleft()
        if len(q) >= REST_PER_S:
            self.sim.violation("bitget_rest_rate", f"{request.remote}: over {REST_PER_S} requests a "
                                                   f"second to {request.path}")
            return self._rest(None, 429, "429", "Too Many Requests")
        q.append(now)
        return None

    def _rest_models(self, request: web.Request) -> list[MarketModel] | web.Response:
        refused = self._rest_refused(request)
        if refused is not None:
            return refused
        want = request.query.get("symbol")
        if not want:
            return list(self.models.values())
        if want not in self.models:
            return self._rest(None, 400, "40034", f"Parameter {want[:40]} does not exist")
        return [self.models[want]]

    async def rest_symbols(self, request: web.Request) -> web.Response:
        """GET /api/v2/spot/public/symbols[?symbol=]: the spot symbols (every field a string)."""
        models = self._rest_models(request)
        if isinstance(models, web.Response):
            return models
        data = []
        for m in models:
            sym = m.spec.symbol
            listing = listings()[sym]
            data.append({"symbol": sym, "baseCoin": listing.base, "quoteCoin": listing.quote,
                         "minTradeAmount": "0", "maxTradeAmount": "900000000000000000000",
                         "takerFeeRate": "0.001", "makerFeeRate": "0.001",
                         "pricePrecision": str(m.spec.price_decimals),
                         "quantityPrecision": str(m.spec.qty_decimals),
                         "quotePrecision": str(m.spec.price_decimals + m.spec.qty_decimals),
                         "status": "online", "minTradeUSDT": "1", "buyLimitPriceRatio": "0.05",
                         "sellLimitPriceRatio": "0.05", "areaSymbol": "no", "orderQuantity": "200",
                         "openTime": "", "offTime": ""})
        return self._rest(data)

    async def rest_tickers(self, request: web.Request) -> web.Response:
        """GET /api/v2/spot/market/tickers[?symbol=]: the ticker channel's figures, REST names."""
        models = self._rest_models(request)
        if isinstance(models, web.Response):
            return models
        ts = int(time.time() * 1000)
        data = []
        for m in models:
            t = self.ticker_fields(m, ts)
            to_usdt = QUOTE_USDT[listings()[m.spec.symbol].quote]
            usdt = t["quoteVolume"] if to_usdt == 1.0 else f"{float(t['quoteVolume']) * to_usdt:.4f}"
            data.append({"symbol": t["instId"], "high24h": t["high24h"], "open": t["open24h"],
                         "low24h": t["low24h"], "lastPr": t["lastPr"], "quoteVolume": t["quoteVolume"],
                         "baseVolume": t["baseVolume"], "usdtVolume": usdt,
                         "bidPr": t["bidPr"], "askPr": t["askPr"], "bidSz": t["bidSz"], "askSz": t["askSz"],
                         "openUtc": t["openUtc"], "ts": t["ts"], "changeUtc24h": t["changeUtc24h"],
                         "change24h": t["change24h"]})
        return self._rest(data)

    # ------------------------------------------------------------ limits and injected errors
    def _message_allowed(self, conn: Conn, lim: ConnLimits) -> bool:
        """Count one client message; over the limit the venue closes the connection."""
        if lim.cut:
            return False
        now = time.monotonic()
        q = lim.msgs
        while q and now - q[0] >= MSG_WINDOW_S:
            q.popleft()
        q.append(now)
        limit = self.sim.config.bitget_msgs_per_s
        if len(q) > limit:
            lim.cut = True
            self.sim.violation(f"{lim.dialect.key}_ws_msg_rate", f"{conn.peer}: {len(q)} messages in "
                                                     f"{MSG_WINDOW_S:g} s (limit {limit}): disconnected")
            conn.close_soon(WSCloseCode.POLICY_VIOLATION, "request over limit")
            return False
        return True

    def _request_allowed(self, conn: Conn, op: str) -> bool:
        """Count one subscribe/unsubscribe request against the hourly budget: the docs' "240
        subscription requests/hour/connection" counts messages, so a request counts once
        however many args it carries."""
        lim = self.limits.get(conn)
        if lim is None:
            return True
        now = time.monotonic()
        q = lim.requests
        while q and now - q[0] >= SUBSCRIBE_WINDOW_S:
            q.popleft()
        limit = self.sim.config.bitget_subscribes_per_hour
        if len(q) >= limit:
            self.sim.violation(f"{lim.dialect.key}_subscribe_rate", f"{conn.peer}: {op} beyond {limit} requests "
                                                        f"in {SUBSCRIBE_WINDOW_S:g} s: refused")
            self._error(conn, 30006, ERROR_TEXTS[30006], op=op)
            return False
        q.append(now)
        return True

    def _inject_errors(self) -> None:
        """The `bitget_error=CODE` fault: every connection with a subscription gets one error
        event CODE for it (op subscribe, its arg) and loses that subscription, once while the
        fault is set."""
        code = self.sim.faults.bitget_error
        if not code:
            self._error_round = False
            for lim in self.limits.values():
                lim.error_sent = False
            return
        self._error_round = True
        for conn in list(self.conns):
            lim = self.limits.get(conn)
            if lim is None or lim.error_sent or conn.closed or not conn.subs:
                continue
            lim.error_sent = True
            key, arg = next(iter(conn.subs.items()))
            self.unsubscribe(conn, key)
            lim.pending.pop(key, None)
            text = lim.dialect.not_found(*key) if code == 30001 else ERROR_TEXTS.get(code, "error")
            self.sim.count("injected_bitget_error")
            self._error(conn, code, text, arg, "subscribe")

    # ------------------------------------------------------------ WebSocket
    async def ws_handler(self, request: web.Request, dialect: BitgetDialect = V2) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=WS_MAX_MSG, timeout=2.0, compress=False)
        await ws.prepare(request)
        sim = self.sim
        seed = sim.next_conn_seed()
        conn = Conn(ws, sim.faults, sim.counters, seed, f"{dialect.key} {request.remote}")
        conn_id = "".join(random.Random(seed).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=20))
        lim = self.limits[conn] = ConnLimits(time.monotonic(), dialect, conn_id)
        self.conns.add(conn)
        sim.count(f"{dialect.key}_connections")
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(conn, lim))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not self._message_allowed(conn, lim):
                        continue
                    if msg.data == "ping":
                        lim.last_ping = time.monotonic()
                        if not sim.faults.no_pong:
                            conn.send_control("pong")
                        continue
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    if not sim.faults.no_pong:
                        await ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            watchdog.cancel()
            self.conns.discard(conn)
            self.limits.pop(conn, None)
            for key in list(conn.subs):
                self.unsubscribe(conn, key)
            await conn.finish()
        return ws

    async def _watchdog(self, conn: Conn, lim: ConnLimits) -> None:
        sim = self.sim
        while not conn.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if conn.disconnect_due():
                return
            if (not sim.faults.no_ping_check
                    and now - lim.last_ping > sim.config.bitget_ping_timeout):
                sim.count("closed_no_ping")
                conn.close_soon(1000, "no ping")
                return

    def _error(self, conn: Conn, code: int, msg: str, arg: Any = None, op: str | None = None) -> None:
        lim = self.limits.get(conn)
        dialect, conn_id = (lim.dialect, lim.conn_id) if lim is not None else (V2, "")
        conn.send_control(orjson.dumps(dialect.error(code, msg, arg, op, conn_id)).decode())

    def _on_text(self, conn: Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(conn, 30016, "Param error")
            return
        if not isinstance(req, dict) or req.get("op") not in ("subscribe", "unsubscribe") \
                or not isinstance(req.get("args"), list):
            self._error(conn, 30016, "Param error")
            return
        op = req["op"]
        if not self._request_allowed(conn, op):
            return
        lim = self.limits.get(conn)
        dialect = lim.dialect if lim is not None else V2
        for arg in req["args"]:
            if not isinstance(arg, dict):
                self._error(conn, 30016, "Param error", op=op)
                continue
            bad = dialect.check_arg(arg, self.models)
            if bad is not None:
                self._error(conn, *bad, arg, op)
                continue
            inst_type, channel, inst = arg["instType"], arg[dialect.channel_key], arg[dialect.symbol_key]
            key = (inst_type, channel, inst)
            clean = {"instType": inst_type, dialect.channel_key: channel, dialect.symbol_key: inst}
            limit = self.sim.config.bitget_max_channels
            if op == "subscribe" and key not in conn.subs and len(conn.subs) >= limit:
                self.sim.violation(f"{dialect.key}_channels",
                                   f"{conn.peer}: a subscription beyond {limit} channels: refused")
                self._error(conn, 30016, f"Param error: at most {limit} channels per connection", clean, op)
                continue
            conn.send_control(orjson.dumps({"event": op, "arg": clean}).decode())
            if lim is not None:
                lim.pending.pop(key, None)
            if op == "unsubscribe":
                self.unsubscribe(conn, key)
                continue
            self.subscribe(conn, key, clean)
            if inst_type != dialect.live_inst_type:
                continue  # a real symbol under the wrong instType: acked, then silent
            model = self.models[inst]
            if channel == "books":
                if self.sim.faults.lost_snapshot:
                    self.sim.faults.lost_snapshot -= 1
                    self.sim.count("injected_lost_snapshot")
                    continue          # acked, updates follow, the snapshot never comes
                if dialect.defer_snapshot and lim is not None:
                    lim.pending[key] = self.pending_snapshot(conn, clean, model, dialect)
                else:
                    conn.send_data(self.snapshot_frame(conn, clean, model, None, dialect))
            elif channel == dialect.trade_channel:
                ts = int(time.time() * 1000)
                data = [dialect.trade(self, model, t, ts) for t in reversed(model.recent_trades)]
                conn.send_data(orjson.dumps({"action": "snapshot", "arg": clean, "data": data,
                                             "ts": ts}).decode())
            elif channel == "ticker":
                conn.send_data(self.ticker_frame(clean, model, dialect))

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close_soon(1001, "simulator shutting down")

"""Simulated Bitget v2 public WebSocket (/v2/ws/public): subscribe/unsubscribe with acks and
errors (30001 unknown symbol, 30016 bad parameters), `books` snapshot then updates chained by
seq/pseq (optional CRC32 checksum over the original strings), books1/5/15, `ticker`, `trade`,
text ping/pong, and a disconnect after 2 minutes without a ping (PROTOCOLS.md, Bitget v2)."""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from obitui.sim.conn import Conn
from obitui.sim.market import ASK, BID, MarketModel, Step, fmt

if TYPE_CHECKING:
    from obitui.sim.server import Simulator

log = logging.getLogger("obitui.sim")

INST_TYPES = ("SPOT", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES")
CHANNELS = ("books", "books1", "books5", "books15", "ticker", "trade")


class BitgetVenue:
    name = "bitget"

    def __init__(self, sim: Simulator, models: dict[str, MarketModel]) -> None:
        self.sim = sim
        self.models = models
        self.conns: set[Conn] = set()
        self.last_ticker: dict[str, float] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v2/ws/public", self.ws_handler)]

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
                   ts_ms: int, conn: Conn) -> dict[str, Any]:
        d: dict[str, Any] = {"asks": asks, "bids": bids, "seq": seq, "pseq": pseq, "ts": str(ts_ms)}
        if self._checksums_on():
            c = self.checksum(model)
            if self.sim.faults.bad_checksum and conn.rng.random() < self.sim.faults.bad_checksum:
                conn.count("injected_bad_checksum")
                c = (c + 1) if c < (1 << 31) - 1 else c - 1
            d["checksum"] = c
        return d

    def snapshot_frame(self, conn: Conn, arg: dict[str, str], model: MarketModel, depth: int | None) -> str:
        ts = int(time.time() * 1000)
        data = self._book_data(model, self.levels(model, BID, depth), self.levels(model, ASK, depth),
                               model.seq, 0, ts, conn)
        return orjson.dumps({"action": "snapshot", "arg": arg, "data": [data], "ts": ts}).decode()

    def on_step(self, symbol: str, model: MarketModel, step: Step) -> None:
        if not self.conns:
            return
        now = time.monotonic()
        ticker_due = now - self.last_ticker.get(symbol, 0.0) >= self.sim.config.ticker_interval
        if ticker_due:
            self.last_ticker[symbol] = now
        bids = asks = None
        for conn in list(self.conns):
            for key, arg in conn.subs.items():
                inst_type, channel, inst = key
                if inst != symbol or inst_type != "SPOT":
                    continue
                if channel == "books":
                    if bids is None:
                        bids = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == BID]
                        asks = [[self.px(model, p), self.qty(model, q)] for s, p, q in step.changes if s == ASK]
                    data = self._book_data(model, bids, asks, step.seq, step.prev_seq, step.ts_ms, conn)
                    conn.send_data(orjson.dumps({"action": "update", "arg": arg, "data": [data],
                                                 "ts": step.ts_ms}).decode(), diff=True)
                elif channel in ("books1", "books5", "books15"):
                    conn.send_data(self.snapshot_frame(conn, arg, model, int(channel[5:])))
                elif channel == "trade" and step.trades:
                    data = [self._trade(model, t, step.ts_ms) for t in step.trades]
                    conn.send_data(orjson.dumps({"action": "update", "arg": arg, "data": data,
                                                 "ts": step.ts_ms}).decode())
                elif channel == "ticker" and ticker_due:
                    conn.send_data(self.ticker_frame(arg, model))

    def _trade(self, model: MarketModel, t: Any, ts_ms: int) -> dict[str, str]:
        return {"ts": str(ts_ms), "price": self.px(model, t.price), "size": self.qty(model, t.lots),
                "side": "sell" if t.buyer_is_maker else "buy", "tradeId": str(t.trade_id)}

    def ticker_frame(self, arg: dict[str, str], model: MarketModel) -> str:
        ts = int(time.time() * 1000)
        bb, bq = model.levels(BID, 1)[0]
        ba, aq = model.levels(ASK, 1)[0]
        last = model.recent_trades[-1].price if model.recent_trades else bb
        d = {"instId": model.spec.symbol, "lastPr": self.px(model, last), "bidPr": self.px(model, bb),
             "askPr": self.px(model, ba), "bidSz": self.qty(model, bq), "askSz": self.qty(model, aq),
             "open24h": self.px(model, model.spec.start_price), "ts": str(ts)}
        return orjson.dumps({"action": "snapshot", "arg": arg, "data": [d], "ts": ts}).decode()

    # ------------------------------------------------------------ WebSocket
    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=64 * 1024, timeout=2.0, compress=False)
        await ws.prepare(request)
        sim = self.sim
        conn = Conn(ws, sim.faults, sim.counters, sim.next_conn_seed(), f"bitget {request.remote}")
        conn.subs_last_ping = time.monotonic()  # type: ignore[attr-defined]
        self.conns.add(conn)
        sim.count("bitget_connections")
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if msg.data == "ping":
                        conn.subs_last_ping = time.monotonic()  # type: ignore[attr-defined]
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
            await conn.finish()
        return ws

    async def _watchdog(self, conn: Conn) -> None:
        sim = self.sim
        while not conn.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if conn.disconnect_due():
                return
            if (not sim.faults.no_ping_check
                    and now - conn.subs_last_ping > sim.config.bitget_ping_timeout):  # type: ignore[attr-defined]
                sim.count("closed_no_ping")
                conn.close_soon(1000, "no ping")
                return

    def _error(self, conn: Conn, code: int, msg: str, arg: Any = None, op: str | None = None) -> None:
        body: dict[str, Any] = {"event": "error"}
        if arg is not None:
            body["arg"] = arg
        body["code"] = code
        body["msg"] = msg
        if op:
            body["op"] = op
        conn.send_control(orjson.dumps(body).decode())

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
        for arg in req["args"]:
            if not isinstance(arg, dict):
                self._error(conn, 30016, "Param error", op=op)
                continue
            inst_type, channel, inst = arg.get("instType"), arg.get("channel"), arg.get("instId")
            if channel not in CHANNELS or not isinstance(inst_type, str) or not isinstance(inst, str):
                self._error(conn, 30016, "Param error", arg, op)
                continue
            if inst not in self.models or inst_type not in INST_TYPES:
                self._error(conn, 30001, f"instType:{inst_type},channel:{channel},instId:{inst} "
                                         "doesn't exist", arg, op)
                continue
            key = (inst_type, channel, inst)
            clean = {"instType": inst_type, "channel": channel, "instId": inst}
            conn.send_control(orjson.dumps({"event": op, "arg": clean}).decode())
            if op == "unsubscribe":
                conn.subs.pop(key, None)
                continue
            conn.subs[key] = clean
            if inst_type != "SPOT":
                continue  # a real symbol under the wrong instType: acked, then silent
            model = self.models[inst]
            if channel == "books":
                if self.sim.faults.lost_snapshot:
                    self.sim.faults.lost_snapshot -= 1
                    self.sim.count("injected_lost_snapshot")
                    continue          # acked, updates follow, the snapshot never comes
                conn.send_data(self.snapshot_frame(conn, clean, model, None))
            elif channel == "trade":
                ts = int(time.time() * 1000)
                data = [self._trade(model, t, ts) for t in reversed(model.recent_trades)]
                conn.send_data(orjson.dumps({"action": "snapshot", "arg": clean, "data": data,
                                             "ts": ts}).decode())
            elif channel == "ticker":
                conn.send_data(self.ticker_frame(clean, model))

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close_soon(1001, "simulator shutting down")

"""Simulated Bitget v3 (UTA) public WebSocket, /v3/ws/public on the Bitget server: a dialect of
``obitui.sim.bitget`` over the same books and seq space as v2 (docs/PROTOCOLS.md, Bitget v3).

- Subscribe ``{"op":"subscribe","args":[{"instType":"spot","topic":"books","symbol":"BTCUSDT"}]}``
  (instType lowercase: spot, usdt-futures, coin-futures, usdc-futures); one ack per arg
  ``{"event":"subscribe","arg":{...}}``; topics books, books1, books5, books50, ticker,
  publicTrade.
- Errors come WITHOUT ``arg``: an unknown symbol is ``{"event":"error","code":30001,"msg":
  "{\\"instType\\":\\"spot\\",\\"symbol\\":\\"NOPE\\",\\"topic\\":\\"books\\"} doesn't exist",
  "connId":"..."}``; a bad parameter (an uppercase instType, an unknown topic) is 30016
  ``Param error``.
- ``books``: a snapshot (levels under ``a``/``b``, ``pseq`` 0) then updates chained by
  ``seq``/``pseq``. The snapshot goes out with the next market step and, when seq jumps by
  more than 1 there, reports (some of the time, seeded) a seq strictly between the seq S of
  the book it holds and the next update's seq: the v3 rule for the first update is snapshot
  seq within [pseq, seq]. seq/pseq strings and checksums as v2 (``bitget_string_seq``,
  ``bitget_checksum``).
- ``ticker``: lastPrice, bid1Price/bid1Size, ask1Price/ask1Size, openPrice24h, highPrice24h,
  lowPrice24h, volume24h, turnover24h, price24hPcnt, ts (all strings).
- ``publicTrade``: a snapshot of recent trades, then updates of ``{i, p, v, S, T, isRPI}``.

Text ping/pong, the message, subscribe and channel limits and the Bitget faults are the v2
code paths; breaches are violations named ``bitget_v3_*``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from obitui.sim.bitget import BitgetDialect
from obitui.sim.market import ASK, BID, MarketModel, Trade, fmt

if TYPE_CHECKING:
    from obitui.sim.bitget import BitgetVenue

V3_INST_TYPES = ("spot", "usdt-futures", "coin-futures", "usdc-futures")
V3_TOPICS = ("books", "books1", "books5", "books50", "ticker", "publicTrade")


class V3Dialect(BitgetDialect):
    name = "bitget-v3"
    key = "bitget_v3"
    path = "/v3/ws/public"
    channel_key, symbol_key = "topic", "symbol"
    inst_types = V3_INST_TYPES
    live_inst_type = "spot"
    channels = V3_TOPICS
    trade_channel = "publicTrade"
    bids_key, asks_key = "b", "a"
    defer_snapshot = True

    def check_arg(self, arg: Any, models: dict[str, MarketModel]) -> tuple[int, str] | None:
        inst_type, topic, symbol = arg.get("instType"), arg.get("topic"), arg.get("symbol")
        if (inst_type not in self.inst_types or topic not in self.channels
                or not isinstance(symbol, str) or not symbol):
            return 30016, "Param error"
        if symbol not in models:
            return 30001, self.not_found(inst_type, topic, symbol)
        return None

    def not_found(self, inst_type: str, channel: str, inst: str) -> str:
        arg = {"instType": inst_type, "symbol": inst, "topic": channel}
        return orjson.dumps(arg, option=orjson.OPT_SORT_KEYS).decode() + " doesn't exist"

    def error(self, code: int, msg: str, arg: Any, op: str | None, conn_id: str) -> dict[str, Any]:
        return {"event": "error", "code": code, "msg": msg, "connId": conn_id}

    def ticker_fields(self, venue: BitgetVenue, model: MarketModel, ts: int) -> dict[str, str]:
        bb, bq = model.levels(BID, 1)[0]
        ba, aq = model.levels(ASK, 1)[0]
        last = model.recent_trades[-1].price if model.recent_trades else bb
        day = model.day
        return {"symbol": model.spec.symbol, "lastPrice": venue.px(model, last),
                "bid1Price": venue.px(model, bb), "bid1Size": venue.qty(model, bq),
                "ask1Price": venue.px(model, ba), "ask1Size": venue.qty(model, aq),
                "openPrice24h": venue.px(model, day.open),
                "highPrice24h": venue.px(model, max(day.high, last)),
                "lowPrice24h": venue.px(model, min(day.low, last)),
                "volume24h": venue.qty(model, day.base),
                "turnover24h": fmt(day.quote, model.spec.price_decimals + model.spec.qty_decimals),
                "price24hPcnt": f"{(last - day.open) / day.open:.4f}", "ts": str(ts)}

    def trade(self, venue: BitgetVenue, model: MarketModel, t: Trade, ts_ms: int) -> dict[str, str]:
        return {"i": str(t.trade_id), "p": venue.px(model, t.price), "v": venue.qty(model, t.lots),
                "S": "sell" if t.buyer_is_maker else "buy", "T": str(ts_ms), "isRPI": "no"}


V3 = V3Dialect()

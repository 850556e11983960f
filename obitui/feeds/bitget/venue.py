"""Bitget, as obitui knows it: the v2 (classic) public API and the v3 (UTA) one
(docs/PROTOCOLS.md, Bitget).

Both are one WebSocket per connection with JSON subscribe requests, text ping/pong, a
``books`` channel (snapshot, then updates chained by seq/pseq) and a ``ticker``. v3 names
things differently (``topic``/``symbol``, lowercase ``instType``, levels under ``a``/``b``,
``lastPrice``/``bid1Price`` in the ticker), sends error events without ``arg``, and its
first update after a snapshot may start before the snapshot's seq (snapshot seq within
``[pseq, seq]``)."""
from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from obitui.feeds.venue import Channel, FeedSpec, Venue

if TYPE_CHECKING:
    from obitui.capture import CaptureRecord
    from obitui.config import FeedConfig
    from obitui.feeds.symbols import Scales


@dataclass(frozen=True, kw_only=True)
class BitgetVenue(Venue):
    api: int                       # 2 (classic) or 3 (UTA)
    channel_key: str               # "channel" (v2) or "topic" (v3)
    symbol_key: str                # "instId" (v2) or "symbol" (v3)
    inst_types: tuple[str, ...]    # the instType words this API takes
    # per connection: at most 10 client messages per second (subscribe, unsubscribe, ping),
    # 240 subscribe requests per hour, 1000 channels; a ping at least every 30 s
    max_client_msgs: int = 10
    subscribes_per_hour: int = 240
    max_channels: int = 1000
    info_path: str = "/api/v2/spot/public/symbols"

    def arg(self, inst_type: str, channel: str, symbol: str) -> dict[str, str]:
        """A subscription's ``arg``."""
        return {"instType": inst_type, self.channel_key: channel, self.symbol_key: symbol}


def _stream_name(v: Venue, cfg: FeedConfig) -> str:
    return f"{cfg.inst_type}:{cfg.channel}:{cfg.symbol}"


def _scales(v: Venue, rest_url: str, symbols: list[str]) -> dict[str, Scales]:
    """Spot symbols' price and quantity precisions (v2 REST; the same market under v3)."""
    from obitui.feeds.symbols import Scales, SymbolInfoError, get_json
    assert isinstance(v, BitgetVenue)
    out: dict[str, Scales] = {}
    wanted = set(symbols)
    # one market: ask for it; several: the whole list in one request (the venue limits
    # requests per second, and one list is lighter than a request per symbol)
    queries = [f"?symbol={urllib.parse.quote(symbols[0])}"] if len(symbols) == 1 else [""]
    for query in queries:
        body = get_json(f"{rest_url.rstrip('/')}{v.info_path}{query}")
        try:
            if str(body.get("code")) != "00000":
                raise SymbolInfoError(f"Bitget answered code {body.get('code')}: {body.get('msg')}")
            for s in body["data"]:
                if s["symbol"] in wanted:
                    out[s["symbol"]] = Scales(int(s["pricePrecision"]), int(s["quantityPrecision"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SymbolInfoError(f"symbols answer without precisions ({exc!r})") from None
    return out


def _markets(v: Venue, rest_url: str) -> dict[str, tuple[str, float]]:
    """Every online spot symbol -> (quote coin, 24 h quote volume): the symbols and tickers of
    every symbol (v2 REST; the same markets under v3)."""
    from obitui.feeds.symbols import SymbolInfoError, get_json
    assert isinstance(v, BitgetVenue)
    base = rest_url.rstrip("/")
    bodies = [get_json(f"{base}{v.info_path}"), get_json(f"{base}/api/v2/spot/market/tickers")]
    try:
        for body in bodies:
            if str(body.get("code")) != "00000":
                raise SymbolInfoError(f"Bitget answered code {body.get('code')}: {body.get('msg')}")
        volumes = {t["symbol"]: float(t["quoteVolume"]) for t in bodies[1]["data"]}
        return {s["symbol"]: (s["quoteCoin"], volumes.get(s["symbol"], 0.0))
                for s in bodies[0]["data"] if s["status"] == "online"}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SymbolInfoError(f"symbols or tickers answer without a symbol's figures ({exc!r})") from None


def _recognise(v: Venue, rec: CaptureRecord) -> Iterable[FeedSpec]:
    """Books and ticker channels found in the data frames (their ``arg``)."""
    assert isinstance(v, BitgetVenue)
    if rec.kind != "ws" or '"data"' not in rec.data:
        return ()
    try:
        msg = orjson.loads(rec.data)
    except orjson.JSONDecodeError:
        return ()
    arg = msg.get("arg") if isinstance(msg, dict) else None
    if not isinstance(arg, dict) or "data" not in msg:
        return ()
    is_v3 = "topic" in arg or "/v3/" in rec.url
    if is_v3 != (v.api == 3):
        return ()
    ch, sym = arg.get(v.channel_key), arg.get(v.symbol_key)
    if ch not in v.channel_names or not isinstance(sym, str) or not sym:
        return ()
    return (FeedSpec(v.name, ch, sym, (("inst_type", str(arg.get("instType", v.defaults["inst_type"]))),)),)


_CHANNELS = (Channel("books", "OB", "book", "obitui.feeds.bitget.feed:BitgetBooksFeed", 60.0),
             Channel("ticker", "PR", "ticker", "obitui.feeds.bitget.feed:BitgetTickerFeed", 60.0))

V2 = BitgetVenue(
    name="bitget", exchange="bitget", title="Bitget (v2 public)", label_prefix="Bg",
    ws_url="wss://ws.bitget.com/v2/ws/public", rest_url="https://api.bitget.com",
    channels=_CHANNELS, sim_ws_path="/v2/ws/public", sim_module="obitui.sim.bitget",
    defaults={"inst_type": "SPOT"},
    api=2, channel_key="channel", symbol_key="instId",
    inst_types=("SPOT", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES"),
    stream_name_of=_stream_name, scales_of=_scales, recognise_of=_recognise,
    markets_of=_markets,
)

V3 = BitgetVenue(
    name="bitget-v3", exchange="bitget", title="Bitget (v3 UTA public)", label_prefix="Bg3",
    ws_url="wss://ws.bitget.com/v3/ws/public", rest_url="https://api.bitget.com",
    channels=_CHANNELS, sim_ws_path="/v3/ws/public", sim_module="obitui.sim.bitget",
    defaults={"inst_type": "spot"},
    api=3, channel_key="topic", symbol_key="symbol",
    inst_types=("spot", "usdt-futures", "coin-futures", "usdc-futures"),
    stream_name_of=_stream_name, scales_of=_scales, recognise_of=_recognise,
    markets_of=_markets,
)

VENUES = (V2, V3)

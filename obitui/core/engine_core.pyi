from typing import Any

from obitui.core.book import OrderBook
from obitui.core.ring import Ring
from obitui.core.shm import Segment

class MarketState:
    book: OrderBook
    index: int
    has_book: bool
    invalidations: int
    applied: int
    dirty: bool
    sampled: bool
    market_dirty: bool
    published_at: float
    buy_count: int
    sell_count: int
    trades_seen: int
    last_invalid_reason: str
    def __init__(self, book: OrderBook, stats: Any, index: int, label: str, exchange: str, symbol: str,
                 has_book: bool = True) -> None: ...
    @property
    def last_trade(self) -> tuple[int, int, int, int]: ...
    @property
    def ticker(self) -> tuple[int, ...] | None: ...
    @property
    def day(self) -> tuple[int, ...] | None: ...
    @property
    def buy_qty(self) -> int: ...
    @property
    def sell_qty(self) -> int: ...
    @property
    def tape_entries(self) -> list[tuple[int, int, int, int]]: ...
    @property
    def trades_in_window(self) -> int: ...
    @property
    def latency_histogram(self) -> list[int]: ...
    def obi(self, levels: int) -> float: ...
    def push_obi(self, value: float) -> None: ...

class EngineCore:
    records: int
    batches: int
    def __init__(self, owner: Any, rings: list[Ring], books: list[Any], feed_book_ids: list[list[int]],
                 is_book_feed: list[bool]) -> None: ...
    def poll(self, max_records: int = 512) -> int: ...
    def publish(self, sample_obi: bool, now: float, levels: int, idle_before: float, chunk: int,
                max_records: int = 512) -> int: ...
    def run_until(self, deadline: float, seg: Segment, sleeping_offset: int, wake_offset: int, spin: bool,
                  spin_s: float, nap_s: float, sleep_timeout: float, max_records: int = 512) -> int: ...

from typing import Union

from obitui.core.book import OrderBook

_Text = Union[str, bytes]
_Payload = tuple[bytes, int, int, int, int]   # packed pairs, n_bids, n_asks, max pdec, max qdec
_Ids = tuple[int, int, int, int, int, int]     # U, u, E, pu (-1 when absent), n_bids, n_asks

class DepthScanner:
    book: OrderBook
    layout: int
    def __init__(self, book: OrderBook) -> None: ...
    def scan(self, text: _Text) -> _Ids | None: ...
    @property
    def ids(self) -> _Ids | None: ...
    def apply(self, pack: bool = True) -> _Payload | None: ...

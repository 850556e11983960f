# The BookSlot's C layout, for the extensions that read or write a slot in place (the engine's
# writer, obitui/core/engine_core.pyx; the NATS publisher's messages, obitui/bus/_encode.pyx).
# obitui.core.stats is the layout's one definition: each user checks these against its structs
# at import (sizes, counts and offsets), so a change there that is not made here fails at once.
from libc.stdint cimport uint64_t, int64_t, uint32_t

cdef enum:
    TOP_N = 20
    OBI_HISTORY = 256
    HIST_BUCKETS = 64
    TAPE_N = 8
    REASON_SIZE = 24
    # where the sections lie in a slot
    MARKET_OFF = 256        # MarketSection
    LEVELS_OFF = 512        # TOP_N (price, qty) int64 pairs of bids, best first, then the asks'
    ASKS_OFF = 832
    OBI_OFF = 1152          # OBI_HISTORY doubles
    HIST_OFF = 3200         # HIST_BUCKETS u64
    TAPE_OFF = 3712         # TAPE_N TapeEntry, newest first
    SLOT_END = 3968

cdef packed struct BookFixed:
    uint64_t seq
    char exchange[16]
    char symbol[16]
    char label[16]
    uint32_t valid
    uint32_t crossed
    uint64_t update_id
    int64_t published_ns
    uint32_t pdec
    uint32_t qdec
    uint32_t n_bids
    uint32_t n_asks
    int64_t best_bid
    int64_t best_ask
    int64_t best_bid_qty
    int64_t best_ask_qty
    double obi
    int64_t buy_qty
    int64_t sell_qty
    uint64_t buy_count
    uint64_t sell_count
    int64_t trade_price
    int64_t trade_qty
    uint64_t trade_side
    uint64_t trade_ns
    uint64_t invalidations
    uint64_t applied
    uint64_t obi_pos
    uint64_t reserved
    char reason[24]

cdef packed struct MarketSection:
    int64_t ticker[6]       # exch ns, last, bid, bid qty, ask, ask qty
    int64_t day[5]          # exch ns, open, high, low, volume
    uint64_t trades

cdef struct TapeEntry:
    int64_t ts
    int64_t price
    int64_t qty
    int64_t side


cdef inline int check_layout(object stats) except -1:
    """These declarations against ``obitui.core.stats`` (the module), at a user's import."""
    assert sizeof(BookFixed) == stats._BOOK_FIXED.size, "BookFixed is not stats._BOOK_FIXED"
    assert sizeof(MarketSection) == stats._BOOK_MARKET.size and sizeof(TapeEntry) * TAPE_N == stats.TAPE_SIZE
    assert (TOP_N, OBI_HISTORY, HIST_BUCKETS, TAPE_N, REASON_SIZE) == (
        stats.TOP_N, stats.OBI_HISTORY, stats.HIST_BUCKETS, stats.TAPE_N, stats.REASON_SIZE)
    assert (MARKET_OFF, LEVELS_OFF, ASKS_OFF, OBI_OFF, HIST_OFF, TAPE_OFF, SLOT_END) == (
        stats._BOOK_MARKET_OFF, stats._BOOK_LEVELS_OFF, stats._BOOK_ASKS_OFF, stats._BOOK_OBI_OFF,
        stats._BOOK_HIST_OFF, stats._BOOK_TAPE_OFF, stats._BOOK_END), "the slot's offsets are not stats'"
    return 0

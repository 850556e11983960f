# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The engine's per-record and per-publish work in C (issue #19: <= 5 us of CPU per record).

``MarketState``: one market of the fleet (one BookSlot): its order book, its 1 s trade window
and sums, last trade, ticker, 24 h figures, tape, OBI samples, latency histogram, and the writer
of its BookSlot (the layout of ``obitui.core.stats``, written in place under the slot's
seqlock). The engine's ``EngineBook`` is a Python subclass that adds what only the rare paths
need (its key, the counts of invalidation reasons, log pacing).

``EngineCore``: the rings and the routes. ``poll`` reads every ring's records in place (no
Python object per record) and applies them; ``publish`` is one round over the books. What is
rare and wants Python (a lost record, a refused record, an invalidation, a corrupt ring) is a
call back into the owner (``obitui.engine.Engine``): ``_lost(i, seq, last)``,
``_bad(i, kind, seq, why)``, ``_invalidate(eb, reason[, clean])``,
``_invalidate_feed(i, reason)``, ``_corrupt(i, exc)``, in the order the records came."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset

from obitui.core.book cimport BookSide, Level, OrderBook, obi_int128
from obitui.core.slot cimport (
    ASKS_OFF, HIST_BUCKETS, HIST_OFF, LEVELS_OFF, MARKET_OFF, OBI_HISTORY, OBI_OFF, REASON_SIZE, SLOT_END,
    TAPE_N, TAPE_OFF, TOP_N, BookFixed, MarketSection, TapeEntry, check_layout,
)
from cpython.exc cimport PyErr_CheckSignals
from obitui.core.ring cimport Ring, sleep_on
from obitui.core.shm cimport (
    Segment, obi_rec_header, obi_book_header, obi_trade_record, obi_ticker_record, obi_day_record,
    obi_invalid_header, OBI_REC_HDR, obi_load_relaxed_u64, obi_store_relaxed_u64, obi_store_release_u64,
    obi_fence_seq_cst, obi_monotonic_ns, obi_realtime_ns, timespec,
)

from obitui.core import stats as _stats
from obitui.core.records import SIDE_BUY as _SIDE_BUY, Kind

cdef struct WindowTrade:
    int64_t t_ns            # monotonic ns when the engine took it
    int64_t qty
    int32_t side

check_layout(_stats)       # the BookSlot's layout (obitui/core/slot.pxd) is obitui.core.stats's

cdef int SNAPSHOT = Kind.BOOK_SNAPSHOT
cdef int DELTA = Kind.BOOK_DELTA
cdef int TRADE = Kind.TRADE
cdef int TICKER = Kind.TICKER
cdef int INVALID = Kind.BOOK_INVALID
cdef int DAY = Kind.TICKER_DAY
cdef int SIDE_BUY = _SIDE_BUY

cdef extern from "<time.h>" nogil:
    int nanosleep(const timespec *req, timespec *rem)
cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline int64_t _clamp(obi_int128 v) noexcept nogil:
    """An exact sum as the slot's int64 field holds it: at the bound when past it (a second's
    volume of a tiny-priced coin at 8 decimals can pass it)."""
    if v > I64_MAX:
        return I64_MAX
    if v < -I64_MAX - 1:
        return -I64_MAX - 1
    return <int64_t>v


cdef inline int _bucket(int64_t recv_ns) noexcept nogil:
    """log2 bucket of now - recv_ns: [2**i, 2**(i+1)) ns; 0 for <= 0 (``stats.hist_bucket``)."""
    cdef obi_int128 lat = <obi_int128>obi_realtime_ns() - <obi_int128>recv_ns
    cdef uint64_t v
    if lat <= 0:
        return 0
    if lat >= (<obi_int128>1 << 63):
        return 63
    v = <uint64_t>lat
    return 63 - __builtin_clzll(v)


cdef inline void _names(char *dst, str text):
    cdef bytes b = text.encode("utf-8")[:16]
    memset(dst, 0, 16)
    memcpy(dst, <const char *>b, len(b))


cdef class MarketState:
    """One market's figures and the writer of its BookSlot (the engine is its one writer)."""
    cdef readonly OrderBook book
    cdef readonly Py_ssize_t index          # the book slot, the id its records carry
    cdef public bint has_book               # a book feed serves this market (else trades/ticker only)
    cdef public uint64_t invalidations      # valid -> invalid transitions
    cdef public int64_t applied             # book records applied
    cdef public bint dirty                  # figures changed since the last publish
    cdef public bint sampled                # OBI samples pushed since the last publish
    cdef public bint market_dirty           # ticker, 24 h figures or tape changed since then
    cdef public double published_at         # monotonic time of the last publish
    cdef obi_int128 buy_sum, sell_sum       # the last second's quantities (exact)
    cdef readonly int64_t buy_count, sell_count
    cdef readonly uint64_t trades_seen
    cdef int64_t trade[4]                   # the last trade: price, qty, side, exch ns
    cdef bint has_ticker, has_day
    cdef MarketSection market
    cdef TapeEntry tape[TAPE_N]             # a ring: the newest at tape_next - 1
    cdef Py_ssize_t tape_next, tape_n
    cdef WindowTrade *win                   # the last second's trades, a growing ring
    cdef Py_ssize_t win_cap, win_head, win_n
    cdef double obi_value
    cdef int64_t obi_applied
    cdef double obi_hist[OBI_HISTORY]
    cdef uint64_t obi_pos, obi_published
    cdef uint64_t hist[HIST_BUCKETS]
    cdef Segment seg
    cdef Py_ssize_t offset
    cdef bint whole                         # the next publish writes the whole slot (the first)
    cdef char name_bytes[48]                # exchange, symbol, label (16 bytes each)
    cdef char reason_bytes[REASON_SIZE]
    cdef str _reason

    def __cinit__(self, *args, **kwargs):
        self.win = NULL

    def __init__(self, OrderBook book, object stats, Py_ssize_t index, str label, str exchange, str symbol,
                 bint has_book=True):
        self.book = book
        self.index = index
        self.has_book = has_book
        self.seg = stats.seg
        self.offset = stats.book_offset(index)
        self.seg._check(self.offset, SLOT_END)
        self.dirty = True
        self.market_dirty = True
        self.whole = True
        self.published_at = float("-inf")
        self.obi_applied = -1
        self._reason = ""
        _names(self.name_bytes, exchange)
        _names(self.name_bytes + 16, symbol)
        _names(self.name_bytes + 32, label)

    def __dealloc__(self):
        free(self.win)

    # ---- what Python reads (the engine's rare paths, tests)
    @property
    def last_trade(self) -> tuple:
        """(price, qty, side, exch ns) of the last trade; zeros before the first."""
        return (self.trade[0], self.trade[1], self.trade[2], self.trade[3])

    @property
    def ticker(self):
        """(exch ns, last, bid, bid qty, ask, ask qty), or None before the first ticker."""
        return tuple(self.market.ticker[k] for k in range(6)) if self.has_ticker else None

    @property
    def day(self):
        """(exch ns, 24 h open, high, low, volume), or None before the first."""
        return tuple(self.market.day[k] for k in range(5)) if self.has_day else None

    @property
    def buy_qty(self) -> int:
        """The last second's bought quantity, as the slot says it (int64 bound)."""
        return _clamp(self.buy_sum)

    @property
    def sell_qty(self) -> int:
        return _clamp(self.sell_sum)

    @property
    def tape_entries(self) -> list:
        """The last TAPE_N trades, newest first: (exch ns, price, qty, side)."""
        cdef TapeEntry tape[TAPE_N]
        cdef Py_ssize_t k, n = self._tape_newest_first(tape)
        return [(tape[k].ts, tape[k].price, tape[k].qty, tape[k].side) for k in range(n)]

    cdef Py_ssize_t _tape_newest_first(self, TapeEntry *out) noexcept:
        """The tape as the slot holds it: newest first, zeros after the last; returns how many."""
        cdef Py_ssize_t k, j = self.tape_next
        memset(out, 0, sizeof(TapeEntry) * TAPE_N)
        for k in range(self.tape_n):
            j = (j + TAPE_N - 1) % TAPE_N
            out[k] = self.tape[j]
        return self.tape_n

    @property
    def trades_in_window(self) -> int:
        return self.win_n

    @property
    def latency_histogram(self) -> list:
        return [self.hist[k] for k in range(HIST_BUCKETS)]

    @property
    def last_invalid_reason(self) -> str:
        """Why the book was last made invalid (its BookSlot says the first 24 bytes)."""
        return self._reason

    @last_invalid_reason.setter
    def last_invalid_reason(self, str reason):
        cdef bytes b = reason.encode("utf-8")[:REASON_SIZE]
        self._reason = reason
        memset(self.reason_bytes, 0, REASON_SIZE)
        memcpy(self.reason_bytes, <const char *>b, len(b))

    def obi(self, int levels) -> float:
        """The book's OBI over ``levels`` levels (0.0 while invalid), computed again only when
        book records were applied since."""
        return self.obi_of(levels)

    def push_obi(self, double value) -> None:
        self._push_obi(value)

    cdef inline void _push_obi(self, double value) noexcept:
        self.obi_hist[self.obi_pos % OBI_HISTORY] = value
        self.obi_pos += 1

    # ---- the per-record paths
    cdef double obi_of(self, int levels) except? -2.0:
        cdef obi_int128 b, a
        if not self.book.valid:
            return 0.0
        if self.obi_applied != self.applied:
            self.book._depth_sums(levels, &b, &a)
            if a + b == 0:
                self.obi_value = 0.0
            elif a + b < (<obi_int128>1 << 53):
                self.obi_value = <double>(b - a) / <double>(b + a)    # exact operands: one rounding
            else:
                self.obi_value = self.book.obi(levels)                 # exact sums in Python
            self.obi_applied = self.applied
        return self.obi_value

    cdef int add_trade(self, int64_t now_ns, const obi_trade_record *t) except -1:
        cdef Py_ssize_t k, cap
        cdef WindowTrade *grown
        if self.win_n == self.win_cap:
            cap = self.win_cap * 2 if self.win_cap else 16
            grown = <WindowTrade *>malloc(cap * sizeof(WindowTrade))
            if grown == NULL:
                raise MemoryError()
            for k in range(self.win_n):
                grown[k] = self.win[(self.win_head + k) % self.win_cap]
            free(self.win)
            self.win, self.win_cap, self.win_head = grown, cap, 0
        k = (self.win_head + self.win_n) % self.win_cap
        self.win[k].t_ns = now_ns
        self.win[k].qty = t.qty
        self.win[k].side = t.side
        self.win_n += 1
        if t.side == SIDE_BUY:
            self.buy_sum += t.qty
            self.buy_count += 1
        else:
            self.sell_sum += t.qty
            self.sell_count += 1
        self.trade[0], self.trade[1], self.trade[2], self.trade[3] = t.price, t.qty, t.side, t.exch_ns
        self.tape[self.tape_next].ts = t.exch_ns
        self.tape[self.tape_next].price = t.price
        self.tape[self.tape_next].qty = t.qty
        self.tape[self.tape_next].side = t.side
        self.tape_next = (self.tape_next + 1) % TAPE_N
        if self.tape_n < TAPE_N:
            self.tape_n += 1
        self.trades_seen += 1
        self.dirty = self.market_dirty = True
        return 0

    cdef void expire(self, int64_t cutoff_ns) noexcept:
        """Trades taken before ``cutoff_ns`` leave the 1 s window and its sums."""
        cdef WindowTrade *w
        cdef bint gone = False
        while self.win_n and self.win[self.win_head].t_ns < cutoff_ns:
            w = &self.win[self.win_head]
            if w.side == SIDE_BUY:
                self.buy_sum -= w.qty
                self.buy_count -= 1
            else:
                self.sell_sum -= w.qty
                self.sell_count -= 1
            self.win_head = (self.win_head + 1) % self.win_cap
            self.win_n -= 1
            gone = True
        if gone:
            self.dirty = True

    # ---- the BookSlot
    cdef int write_slot(self, double now, int levels) except -1:
        """Publish what can have changed since the last publish (the whole slot the first
        time): the fixed fields, the levels shown, the OBI samples pushed since, the latency
        histogram, and the market section and tape when they changed."""
        cdef OrderBook b = self.book
        cdef BookFixed f
        cdef char *s
        cdef uint64_t *seq
        cdef Py_ssize_t nb, na, k
        cdef uint64_t p, last
        cdef int64_t lv[2 * TOP_N * 2]
        cdef TapeEntry tape[TAPE_N]
        cdef double obi = self.obi_of(levels)
        if self.seg.base == NULL:
            raise ValueError("the stats block is closed")
        s = self.seg.base + self.offset
        nb = _top_pairs(b.bids, lv)
        na = _top_pairs(b.asks, lv + 2 * TOP_N)
        memset(&f, 0, sizeof(f))
        memcpy(f.exchange, self.name_bytes, 48)
        f.valid = b.valid
        f.crossed = b.crossed
        f.update_id = b.update_id
        f.published_ns = <int64_t>obi_realtime_ns()
        f.pdec = b.shown_pdec
        f.qdec = b.shown_qdec
        f.n_bids = nb
        f.n_asks = na
        if nb:
            f.best_bid, f.best_bid_qty = lv[0], lv[1]
        if na:
            f.best_ask, f.best_ask_qty = lv[2 * TOP_N], lv[2 * TOP_N + 1]
        f.obi = obi
        f.buy_qty, f.sell_qty = _clamp(self.buy_sum), _clamp(self.sell_sum)
        f.buy_count, f.sell_count = self.buy_count, self.sell_count
        f.trade_price, f.trade_qty = self.trade[0], self.trade[1]
        f.trade_side, f.trade_ns = <uint64_t>self.trade[2], <uint64_t>self.trade[3]
        f.invalidations = self.invalidations
        f.applied = self.applied
        f.obi_pos = self.obi_pos
        memcpy(f.reason, self.reason_bytes, REASON_SIZE)
        if self.market_dirty or self.whole:
            self.market.trades = self.trades_seen
            self._tape_newest_first(tape)
        # seqlock: odd while the slot changes (stats.StatsBlock.read_book retries)
        seq = <uint64_t *>s
        obi_store_relaxed_u64(seq, obi_load_relaxed_u64(seq) | 1)
        obi_fence_seq_cst()
        if self.whole:
            memset(s + 8, 0, SLOT_END - 8)
            memcpy(s + OBI_OFF, self.obi_hist, 8 * OBI_HISTORY)
        else:
            last = self.obi_published
            if self.obi_pos - last >= OBI_HISTORY:
                memcpy(s + OBI_OFF, self.obi_hist, 8 * OBI_HISTORY)
            else:
                for p in range(last, self.obi_pos):
                    k = p % OBI_HISTORY
                    memcpy(s + OBI_OFF + 8 * k, &self.obi_hist[k], 8)
        memcpy(s + 8, (<char *>&f) + 8, sizeof(f) - 8)
        memcpy(s + LEVELS_OFF, lv, 16 * nb)
        memcpy(s + ASKS_OFF, lv + 2 * TOP_N, 16 * na)
        memcpy(s + HIST_OFF, self.hist, 8 * HIST_BUCKETS)
        if self.market_dirty or self.whole:
            memcpy(s + MARKET_OFF, &self.market, sizeof(MarketSection))
            memcpy(s + TAPE_OFF, tape, sizeof(tape))
        obi_store_release_u64(seq, (obi_load_relaxed_u64(seq) | 1) + 1)
        self.obi_published = self.obi_pos
        self.whole = False
        self.market_dirty = False
        self.dirty = self.sampled = False
        self.published_at = now
        return 0


cdef inline Py_ssize_t _top_pairs(BookSide side, int64_t *out) noexcept nogil:
    """The best TOP_N levels of a side as (price, qty) pairs, best first."""
    cdef Py_ssize_t i, j = side.n - 1
    cdef Py_ssize_t n = side.live if side.live < TOP_N else TOP_N
    for i in range(n):
        j = side.live_at_or_below(j)
        out[2 * i] = side.lv[j].key * side.sign
        out[2 * i + 1] = side.lv[j].qty
        j -= 1
    return n


cdef class EngineCore:
    """The engine's rings, routes and books; ``poll`` and ``publish`` (see the module)."""
    cdef list rings                  # Ring, one per feed
    cdef list books                  # MarketState (the owner's EngineBook), by book index
    cdef object owner
    cdef Py_ssize_t n_books, n_rings
    cdef uint8_t *member             # member[i * n_books + j]: book j is one of feed i's
    cdef uint8_t *is_book            # feed i is a book feed
    cdef uint64_t *last_seq          # per ring: the seq of the last record read
    cdef readonly uint64_t records
    cdef readonly uint64_t batches
    cdef double last_work            # monotonic s of the last poll that found records

    def __cinit__(self, *args, **kwargs):
        self.member = NULL
        self.is_book = NULL
        self.last_seq = NULL

    def __init__(self, object owner, list rings, list books, list feed_book_ids, list is_book_feed):
        cdef Py_ssize_t i
        self.owner = owner
        self.rings = rings
        self.books = books
        self.n_rings = len(rings)
        self.n_books = len(books)
        self.last_work = obi_monotonic_ns() * 1e-9
        self.member = <uint8_t *>malloc(max(1, self.n_rings * self.n_books))
        self.is_book = <uint8_t *>malloc(max(1, self.n_rings))
        self.last_seq = <uint64_t *>malloc(max(1, self.n_rings) * sizeof(uint64_t))
        if self.member == NULL or self.is_book == NULL or self.last_seq == NULL:
            raise MemoryError()
        memset(self.member, 0, max(1, self.n_rings * self.n_books))
        for i in range(self.n_rings):
            for j in feed_book_ids[i]:
                self.member[i * self.n_books + j] = 1
            self.is_book[i] = bool(is_book_feed[i])
            # resume loss detection where a previous engine (killed, restarted) stopped
            self.last_seq[i] = rings[i].last_seq

    def __dealloc__(self):
        free(self.member)
        free(self.is_book)
        free(self.last_seq)

    def poll(self, Py_ssize_t max_records=512) -> int:
        """Read and apply up to ``max_records`` records of every ring; returns how many."""
        return self._poll(max_records)

    def run_until(self, double deadline, Segment seg, size_t sleeping_offset, size_t wake_offset, bint spin,
                  double spin_s, double nap_s, double sleep_timeout, Py_ssize_t max_records=512) -> int:
        """The engine's loop between two publish rounds: poll the rings until the monotonic
        ``deadline`` (s). When a poll finds nothing: with ``spin`` poll on; else, once ``spin_s``
        has passed without records, sleep on the wake word (``ring.sleep_until_records``, at
        most ``sleep_timeout``). After a poll that found records, pause ``nap_s`` when > 0 (the
        ``batch`` wait). Returns early when the owner stops running (a signal's handler runs
        here). Returns the records applied."""
        cdef Py_ssize_t n, total = 0
        cdef double now
        cdef timespec nap
        nap.tv_sec = <long>nap_s
        nap.tv_nsec = <long>((nap_s - <long>nap_s) * 1e9)
        while True:
            n = self._poll(max_records)
            total += n
            now = obi_monotonic_ns() * 1e-9
            PyErr_CheckSignals()            # a handler (SIGTERM: stop) runs here
            if now >= deadline or not self.owner.running:
                return total
            if n:
                self.last_work = now        # spin_s counts from the last records, across rounds
                if nap_s > 0:
                    with nogil:
                        nanosleep(&nap, NULL)     # records are coming: let the next ones gather
                continue
            if spin or now - self.last_work < spin_s:
                continue
            # flag, check the rings, futex wait, unflag (ring.sleep_until_records)
            sleep_on(seg, sleeping_offset, wake_offset, self.rings, min(sleep_timeout, deadline - now))

    cdef Py_ssize_t _poll(self, Py_ssize_t max_records) except -1:
        cdef Py_ssize_t i, n = 0, m
        for i in range(self.n_rings):
            m = self._drain(i, max_records)
            if m:
                self.batches += 1
                n += m
        self.records += n
        return n

    cdef Py_ssize_t _drain(self, Py_ssize_t i, Py_ssize_t max_records) except -1:
        cdef Ring ring = <Ring>self.rings[i]
        cdef obi_rec_header *rh
        cdef int rc, kind
        cdef Py_ssize_t n = 0, plen
        cdef uint64_t seq, last = self.last_seq[i]
        cdef const char *p
        cdef uint16_t bid
        cdef MarketState eb
        cdef int64_t recv_ns
        cdef int64_t now_mono = 0
        cdef obi_trade_record tr
        cdef obi_ticker_record tk
        cdef obi_day_record dy
        cdef const uint8_t *row = self.member + i * self.n_books
        cdef bint book_feed = self.is_book[i]
        cdef bint waiting
        owner = self.owner
        if ring.hdr == NULL or ring.corrupt_reason is not None:
            # never read again: its head and tail cannot be trusted (the feed's restart brings a
            # new ring); its books stay invalid
            owner._corrupt(i, ring.corrupt_reason or "the ring is closed")
            return 0
        while n < max_records:
            rc = ring.read_next(&rh)
            if rc == 0:
                break
            if rc < 0:
                ring.commit()
                self.last_seq[i] = last
                try:
                    ring.raise_corrupt()
                except Exception as exc:
                    owner._corrupt(i, str(exc))
                return n
            n += 1
            # the header as read_next checked it: the producer's memory may change under us
            seq = rh.seq
            kind = rh.type
            plen = ring.read_length - OBI_REC_HDR
            p = <const char *>rh + OBI_REC_HDR
            if last and seq != last + 1:
                owner._lost(i, seq, last)
            last = seq
            if kind == DELTA or kind == SNAPSHOT:
                if plen < <Py_ssize_t>sizeof(obi_book_header):
                    # its id cannot be trusted: one of the feed's books missed a change
                    owner._bad(i, kind, seq, f"book record of {plen} bytes is shorter than its header")
                    owner._invalidate_feed(i, "bad_record")
                    continue
                bid = (<const uint8_t *>p)[0] | (<const uint8_t *>p)[1] << 8
                if bid >= self.n_books or not row[bid] or not book_feed:
                    owner._bad(i, kind, seq, f"book {bid} is not a book of this feed")
                    continue
                eb = <MarketState>self.books[bid]
                waiting = kind == DELTA and not eb.book.valid
                try:
                    # header check, levels and update id (records.decode_book's rules)
                    recv_ns = eb.book.apply_raw(p, plen, kind == SNAPSHOT)
                except (ValueError, MemoryError) as exc:
                    owner._bad(i, kind, seq, f"book {(<object>eb).key}: {exc}")
                    owner._invalidate(eb, "bad_record", False)
                    continue
                if waiting:
                    continue        # a delta while waiting for a snapshot: not applied
                eb.applied += 1
                eb.dirty = True
                if recv_ns > 0:     # a receive time (0 or less is none: no latency to count)
                    eb.hist[_bucket(recv_ns)] += 1
            elif kind == TRADE:
                eb = self._fixed_record(i, kind, seq, p, plen, sizeof(tr), &tr, row, "trade")
                if eb is None:
                    continue
                if not now_mono:
                    now_mono = <int64_t>obi_monotonic_ns()
                eb.add_trade(now_mono, &tr)
            elif kind == TICKER:
                eb = self._fixed_record(i, kind, seq, p, plen, sizeof(tk), &tk, row, "ticker")
                if eb is None:
                    continue
                eb.market.ticker[0], eb.market.ticker[1], eb.market.ticker[2] = tk.exch_ns, tk.last, tk.bid
                eb.market.ticker[3], eb.market.ticker[4], eb.market.ticker[5] = tk.bid_qty, tk.ask, tk.ask_qty
                eb.has_ticker = True
                eb.dirty = eb.market_dirty = True
            elif kind == DAY:
                eb = self._fixed_record(i, kind, seq, p, plen, sizeof(dy), &dy, row, "24 h")
                if eb is None:
                    continue
                eb.market.day[0], eb.market.day[1], eb.market.day[2] = dy.exch_ns, dy.open, dy.high
                eb.market.day[3], eb.market.day[4] = dy.low, dy.volume
                eb.has_day = True
                eb.dirty = eb.market_dirty = True
            elif kind == INVALID:
                if plen < <Py_ssize_t>sizeof(obi_invalid_header):
                    owner._bad(i, kind, seq, "book-invalid record too short")
                    owner._invalidate_feed(i, "bad_record")
                    continue
                bid = (<const uint8_t *>p)[0] | (<const uint8_t *>p)[1] << 8
                if bid >= self.n_books or not row[bid]:
                    owner._bad(i, kind, seq, f"book {bid} is not a market of this feed")
                    continue
                if book_feed:       # a trade or ticker feed has no book to invalidate
                    owner._invalidate(self.books[bid], PyBytes_FromStringAndSize(
                        p + sizeof(obi_invalid_header), plen - sizeof(obi_invalid_header)).decode("utf-8", "replace"))
            else:
                owner._bad(i, kind, seq, "unknown record kind")
        ring.commit()
        self.last_seq[i] = last
        return n

    cdef MarketState _fixed_record(self, Py_ssize_t i, int kind, uint64_t seq, const char *p, Py_ssize_t plen,
                                   Py_ssize_t size, void *out, const uint8_t *row, str what):
        """A fixed-size record (trade, ticker, 24 h) of ring i, copied into ``out``: the market
        it names, or None when it is refused (counted and logged by the owner)."""
        cdef uint16_t bid
        if plen != size:
            self.owner._bad(i, kind, seq, f"{what} record of {plen} bytes, expected {size}")
            return None
        memcpy(out, p, size)
        bid = (<const uint8_t *>p)[0] | (<const uint8_t *>p)[1] << 8      # every record's first field
        if bid >= self.n_books or not row[bid]:
            self.owner._bad(i, kind, seq, f"book {bid} is not a market of this feed")
            return None
        return <MarketState>self.books[bid]

    def publish(self, bint sample_obi, double now, int levels, double idle_before,
                Py_ssize_t chunk, Py_ssize_t max_records=512) -> int:
        """One publish round: every book's trade window moves to ``now`` (monotonic s); with
        ``sample_obi`` its OBI goes into its history; the books that changed (or whose only
        news is samples, when last published before ``idle_before``) are written into their
        slots. The rings are polled after every ``chunk`` books, so a record that comes during
        the round waits for a chunk at most. Returns the books published."""
        cdef Py_ssize_t k, n = 0
        cdef MarketState eb
        cdef int64_t cutoff_ns = <int64_t>((now - 1.0) * 1e9)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        for k in range(self.n_books):
            if k % chunk == chunk - 1:
                self.poll(max_records)
            eb = <MarketState>self.books[k]
            if eb.win_n:
                eb.expire(cutoff_ns)
            if sample_obi:
                eb._push_obi(eb.obi_of(levels))
                eb.sampled = True
            if eb.dirty or (eb.sampled and eb.published_at < idle_before):
                eb.write_slot(now, levels)
                n += 1
        return n

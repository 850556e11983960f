# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Order book keyed by exact int64 fixed-point prices, with the order-book imbalance of the
best n levels: OBI(n) = (bid qty - ask qty) / (bid qty + ask qty), from exact integer sums
(0 for an empty book).

Each side is one sorted array of levels with the best level at the END, so the updates that
dominate real streams (near the top of book) insert and delete with a short shift, a lookup near
the top is a few branch-free comparisons before any binary search, and a deep delete leaves a
tombstone rather than moving the levels above it (BookSide). Bids use key = price,
asks key = -price, so one implementation serves both. Each level keeps the number of decimals
its price and size had on the wire: ``format_fixed`` rebuilds the original strings, which
``level_checksum`` is computed over. A crossed book is reported (flag + counter), never repaired.

Venue-free: a feed's own frame readers (its package under obitui/feeds) fill Level arrays and
apply them through the Cython entry points of book.pxd.
"""
cimport cython
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact, PyBytes_FromStringAndSize,
)
from cpython.list cimport PyList_CheckExact, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport PyObject
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memmove, memcpy, memset
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from obitui.core.fixed cimport parse_fixed_c, format_fixed_c, fixed_error, plain_fixed, FIXED_OK
from obitui.core.shm cimport obi_book_header

# ---------------------------------------------------------------- CRC32 (IEEE, as zlib)
cdef uint32_t[256] CRC_TABLE
cdef uint32_t _c
for _i in range(256):
    _c = _i
    for _k in range(8):
        _c = (0xEDB88320 ^ (_c >> 1)) if (_c & 1) else (_c >> 1)
    CRC_TABLE[_i] = _c


cdef inline uint32_t crc32_update(uint32_t c, const char *buf, Py_ssize_t n) noexcept nogil:
    """Feed ``buf`` to a running CRC32 (start at 0xFFFFFFFF, xor the end with it)."""
    cdef Py_ssize_t i
    for i in range(n):
        c = CRC_TABLE[(c ^ <uint8_t>buf[i]) & 0xFF] ^ (c >> 8)
    return c


cdef inline uint32_t crc32_c(const char *buf, Py_ssize_t n) noexcept nogil:
    return crc32_update(0xFFFFFFFFU, buf, n) ^ 0xFFFFFFFFU


cdef enum:
    TOP_LINEAR = 8         # lower_bound compares the best 8 levels, then 16,
    TOP_NEAR = 32          # then 32, before a binary search
    TOMB_DEPTH = 32        # deletes deeper than this (from the end of the array) leave a tombstone
    TOMB_REUSE = 32        # an insert looks this far either way for a tombstone to shift into
    TOMB_MIN = 64          # compact once tombstones exceed this and a quarter of the live levels


cdef inline void _shift_down(Level *at, Py_ssize_t count) noexcept nogil:
    """at[0:count] = at[1:count + 1]: a short run (near the top) copied in place, a long one
    by memmove."""
    cdef Py_ssize_t i
    if count > 16:
        memmove(at, at + 1, count * sizeof(Level))
        return
    for i in range(count):
        at[i] = at[i + 1]


cdef inline void _shift_up(Level *at, Py_ssize_t count) noexcept nogil:
    """at[1:count + 1] = at[0:count]."""
    cdef Py_ssize_t i
    if count > 16:
        memmove(at + 1, at, count * sizeof(Level))
        return
    for i in range(count, 0, -1):
        at[i] = at[i - 1]


cdef class BookSide:
    """One side of the book. ``len(side)`` is its number of levels.

    A delete deeper than ``tomb_depth`` levels from the end of the array keeps its slot with
    quantity 0 (a tombstone) instead of moving every level above it: a new level next to a
    tombstone shifts only the levels up to it, an update at its price revives it, and the array
    is compacted once tombstones outnumber a quarter of the live levels. The best level (the
    end of the array) is always a live one. Readers walk from the end and skip tombstones.
    """

    def __cinit__(self, int64_t sign=1, int digits=8, int qdigits=-1):
        self.lv = NULL
        self.n = 0
        self.live = 0
        self.dead = 0
        self.cap = 0
        self.sign = sign
        self.digits = digits
        self.qdigits = digits if qdigits < 0 else qdigits
        self.tomb_depth = TOMB_DEPTH
        memset(self.pcache_str, 0, sizeof(self.pcache_str))

    def __dealloc__(self):
        cdef Py_ssize_t i
        free(self.lv)
        for i in range(PRICE_CACHE):
            Py_XDECREF(self.pcache_str[i])
            self.pcache_str[i] = NULL

    cdef int reserve(self, Py_ssize_t want) noexcept nogil:
        cdef Py_ssize_t cap = self.cap if self.cap else 64
        cdef Level *p
        if want <= self.cap:
            return 0
        while cap < want:
            cap *= 2
        p = <Level *>realloc(self.lv, cap * sizeof(Level))
        if p == NULL:
            return -1
        self.lv = p
        self.cap = cap
        return 0

    cdef Py_ssize_t lower_bound(self, int64_t key) noexcept nogil:
        """First index whose key is >= ``key`` (tombstones keep their keys, so the array stays
        strictly ascending). The top of book is at the end, where most updates land: count
        how many of the best 8, then 16, then 32 levels are >= key (branch-free compares, no
        mispredicted branch per level), and only below those binary-search the rest with
        conditional moves."""
        cdef const Level *lv = self.lv
        cdef Py_ssize_t n = self.n, c, j, base, length, half
        if n < TOP_NEAR:
            c = 0
            for j in range(n):
                c += lv[j].key < key
            return c
        c = 0
        for j in range(1, TOP_LINEAR + 1):
            c += lv[n - j].key >= key
        if c < TOP_LINEAR:
            return n - c
        for j in range(TOP_LINEAR + 1, 2 * TOP_LINEAR + 1):
            c += lv[n - j].key >= key
        if c < 2 * TOP_LINEAR:
            return n - c
        for j in range(2 * TOP_LINEAR + 1, TOP_NEAR + 1):
            c += lv[n - j].key >= key
        if c < TOP_NEAR:
            return n - c
        # every index >= n - TOP_NEAR holds a key >= `key`: the answer is in [0, n - TOP_NEAR]
        base = 0
        length = n - TOP_NEAR
        if length == 0:
            return 0
        while length > 1:
            half = length >> 1
            base = base + half if lv[base + half].key < key else base
            length -= half
        return base + (lv[base].key < key)

    cdef int set_level(self, int64_t price, int64_t qty, uint8_t pdec, uint8_t qdec) noexcept nogil:
        """Absolute quantity: 0 deletes (an absent level is fine). -1 only if out of memory."""
        cdef int64_t key = price * self.sign
        cdef Py_ssize_t pos = self.lower_bound(key), j, lim
        cdef Level *lv = self.lv
        cdef bint found = pos < self.n and lv[pos].key == key
        if qty == 0:
            if not found or lv[pos].qty == 0:
                return 0
            self.live -= 1
            if pos == self.n - 1 or self.n - pos <= self.tomb_depth:
                _shift_down(lv + pos, self.n - pos - 1)
                self.n -= 1
                while self.n > 0 and lv[self.n - 1].qty == 0:   # the best stays a live level
                    self.n -= 1
                    self.dead -= 1
            else:
                lv[pos].qty = 0
                self.dead += 1
                if self.dead > TOMB_MIN and self.dead > self.live >> 2:
                    self.compact()
            return 0
        if found:
            if lv[pos].qty == 0:
                self.dead -= 1
                self.live += 1
            lv[pos].qty = qty
            lv[pos].pdec = pdec
            lv[pos].qdec = qdec
            return 0
        if self.dead and self.n - pos > self.tomb_depth:
            # a tombstone nearby takes the shift: below pos first (deeper), then above
            j = pos - 1
            lim = pos - TOMB_REUSE if pos > TOMB_REUSE else 0
            while j >= lim and lv[j].qty != 0:
                j -= 1
            if j >= lim:
                memmove(&lv[j], &lv[j + 1], (pos - 1 - j) * sizeof(Level))
                pos -= 1
            else:
                j = pos
                lim = pos + TOMB_REUSE if pos + TOMB_REUSE < self.n else self.n
                while j < lim and lv[j].qty != 0:
                    j += 1
                if j >= lim:
                    j = -1
                else:
                    memmove(&lv[pos + 1], &lv[pos], (j - pos) * sizeof(Level))
            if j >= 0:
                lv[pos].key = key
                lv[pos].qty = qty
                lv[pos].pdec = pdec
                lv[pos].qdec = qdec
                self.dead -= 1
                self.live += 1
                return 0
        if self.reserve(self.n + 1) < 0:
            return -1
        lv = self.lv
        _shift_up(lv + pos, self.n - pos)
        lv[pos].key = key
        lv[pos].qty = qty
        lv[pos].pdec = pdec
        lv[pos].qdec = qdec
        self.n += 1
        self.live += 1
        return 0

    cdef void compact(self) noexcept nogil:
        """Drop every tombstone (order kept)."""
        cdef Py_ssize_t r, w = 0
        for r in range(self.n):
            if self.lv[r].qty != 0:
                if w != r:
                    self.lv[w] = self.lv[r]
                w += 1
        self.n = w
        self.dead = 0

    cdef int load_sorted_best_first(self, const Level *src, Py_ssize_t n) noexcept nogil:
        """Replace the side with ``src`` (keys strictly descending = best first, no zeros)."""
        cdef Py_ssize_t i
        if self.reserve(n) < 0:
            return -1
        for i in range(n):
            self.lv[n - 1 - i] = src[i]
        self.n = n
        self.live = n
        self.dead = 0
        return 0

    cdef void clear(self) noexcept nogil:
        self.n = 0
        self.live = 0
        self.dead = 0

    cdef int64_t best_price(self) noexcept nogil:
        return self.lv[self.n - 1].key * self.sign

    cdef Py_ssize_t live_at_or_below(self, Py_ssize_t j) noexcept nogil:
        """Index of the first live level at j or deeper (a walk from the best level calls
        this with the index below the previous one); -1 past the deepest."""
        while j >= 0 and self.lv[j].qty == 0:
            j -= 1
        return j

    def __len__(self) -> int:
        return self.live

    def levels(self, Py_ssize_t n=-1) -> list:
        """The best ``n`` levels (all with -1) as original (price, qty) strings, best first."""
        cdef Py_ssize_t i, j = self.n - 1
        if n < 0 or n > self.live:
            n = self.live
        cdef list out = PyList_New(n)
        for i in range(n):
            j = self.live_at_or_below(j)
            lvl = _level_strings(self, &self.lv[j])
            Py_INCREF(lvl)
            PyList_SET_ITEM(out, i, lvl)
            j -= 1
        return out

    def fixed_levels(self, Py_ssize_t n=-1) -> list:
        """The best ``n`` levels as (price, qty) int64 fixed point, best first."""
        cdef Py_ssize_t i, j = self.n - 1
        if n < 0 or n > self.live:
            n = self.live
        out = []
        for i in range(n):
            j = self.live_at_or_below(j)
            out.append((self.lv[j].key * self.sign, self.lv[j].qty))
            j -= 1
        return out

    def total_qty(self, Py_ssize_t n) -> int:
        """Exact sum of the quantities of the best ``n`` levels."""
        return _int128_to_py(_sum_best(self, n))

    @property
    def tombstones(self) -> int:
        """Deleted deep levels whose slots are not reclaimed yet (see the class doc)."""
        return self.dead

    @property
    def nbytes(self) -> int:
        """Memory held by this side's level array."""
        return self.cap * sizeof(Level)


cdef inline Py_ssize_t _top_into(BookSide s, Py_ssize_t n, int64_t *prices,
                                 int64_t *qtys) noexcept nogil:
    cdef Py_ssize_t i, j = s.n - 1
    n = min(n, s.live)
    for i in range(n):
        j = s.live_at_or_below(j)
        prices[i] = s.lv[j].key * s.sign
        qtys[i] = s.lv[j].qty
        j -= 1
    return n


cdef inline obi_int128 _sum_best(BookSide s, Py_ssize_t n) noexcept nogil:
    """Exact sum of the quantities of the best ``n`` levels (tombstones add 0 and do not count
    as levels)."""
    cdef obi_int128 acc = 0
    cdef Py_ssize_t j = s.n - 1, seen = 0
    if n > s.live:
        n = s.live
    while seen < n:
        if s.lv[j].qty:
            acc += s.lv[j].qty
            seen += 1
        j -= 1
    return acc


cdef object _int128_to_py(obi_int128 v):
    cdef bint neg = v < 0
    cdef obi_int128 m = -v if neg else v
    cdef uint64_t hi = <uint64_t>(m >> 64), lo = <uint64_t>m
    r = (int(hi) << 64) | int(lo)
    return -r if neg else r


cdef extern from *:
    """
    /* A new str holding the n ASCII characters at buf (no decoding pass). */
    static PyObject *obi_ascii_str(const char *buf, Py_ssize_t n) {
        PyObject *s = PyUnicode_New(n, 127);
        if (s != NULL) memcpy(PyUnicode_DATA(s), buf, n);
        return s;
    }
    """
    object obi_ascii_str(const char *buf, Py_ssize_t n)


cdef object _price_string(BookSide side, Level *lv):
    """The level's price as its original string, from the side's small cache of price strings
    (direct-mapped by price and decimals): prices near the top outlive many reads of the book,
    quantities seldom do, so only prices are kept."""
    cdef char buf[TEXT_CAP]
    cdef uint64_t h = (<uint64_t>lv.key ^ (<uint64_t>lv.pdec << 56)) * <uint64_t>0x9E3779B97F4A7C15
    cdef Py_ssize_t slot = <Py_ssize_t>(h >> (64 - PRICE_CACHE_BITS)), n
    cdef PyObject *old = side.pcache_str[slot]
    if old != NULL and side.pcache_key[slot] == lv.key and side.pcache_dec[slot] == lv.pdec:
        return <object>old
    n = format_fixed_c(lv.key * side.sign, side.digits, lv.pdec, buf, TEXT_CAP)
    if n < 0:       # cannot happen: the value came from a text with these decimals
        raise ValueError(f"price {lv.key * side.sign} does not format with {lv.pdec} decimals")
    text = obi_ascii_str(buf, n)
    Py_INCREF(text)
    Py_XDECREF(old)
    side.pcache_str[slot] = <PyObject *>text
    side.pcache_key[slot] = lv.key
    side.pcache_dec[slot] = lv.pdec
    return text


cdef tuple _level_strings(BookSide side, Level *lv):
    """The level's (price, qty) as the original strings (the decimals it was received with)."""
    cdef char buf[TEXT_CAP]
    cdef Py_ssize_t n = format_fixed_c(lv.qty, side.qdigits, lv.qdec, buf, TEXT_CAP)
    if n < 0:       # cannot happen: the value came from a text with these decimals
        raise ValueError(f"quantity {lv.qty} does not format with {lv.qdec} decimals")
    return (_price_string(side, lv), obi_ascii_str(buf, n))


cdef extern from *:
    """
    #define OBI_LIST_ITEMS(o) (((PyListObject *)(o))->ob_item)
    static inline void obi_prefetch(const void *p) { __builtin_prefetch(p); }
    /* The item array of a [price, qty, ...] list or tuple, else NULL. */
    static inline PyObject **obi_pair_items(PyObject *o) {
        if (PyList_CheckExact(o)) return PyList_GET_SIZE(o) >= 2 ? ((PyListObject *)o)->ob_item : NULL;
        if (PyTuple_CheckExact(o)) return PyTuple_GET_SIZE(o) >= 2 ? ((PyTupleObject *)o)->ob_item : NULL;
        return NULL;
    }
    /* The characters of an exact, compact ASCII str (as orjson and literals make), else NULL. */
    static inline const char *obi_ascii(PyObject *o, Py_ssize_t *n) {
        if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o)) {
            *n = PyUnicode_GET_LENGTH(o);
            return (const char *)PyUnicode_DATA(o);
        }
        return NULL;
    }
    """
    PyObject **OBI_LIST_ITEMS(PyObject *o) noexcept nogil
    void obi_prefetch(const void *p) noexcept nogil
    PyObject **obi_pair_items(PyObject *o) noexcept nogil
    const char *obi_ascii(PyObject *o, Py_ssize_t *n) noexcept nogil


cdef inline void _prefetch_levels(object bids, object asks):
    """Start the memory reads of both sides' levels, of their item arrays and of their
    strings, in three short passes, so that cold objects are fetched side by side rather than
    one chain after another (a no-op for objects still in cache, as orjson's are)."""
    cdef PyObject **items[2]
    cdef Py_ssize_t count[2]
    cdef Py_ssize_t k
    cdef int side, stage
    cdef PyObject **pair
    if not (PyList_CheckExact(bids) and PyList_CheckExact(asks)):
        return
    items[0] = OBI_LIST_ITEMS(<PyObject *>bids)
    items[1] = OBI_LIST_ITEMS(<PyObject *>asks)
    count[0] = PyList_GET_SIZE(bids)
    count[1] = PyList_GET_SIZE(asks)
    for stage in range(3):
        for side in range(2):
            for k in range(count[side]):
                if stage == 0:
                    obi_prefetch(items[side][k])
                    continue
                pair = obi_pair_items(items[side][k])
                if pair == NULL:
                    continue
                if stage == 1:
                    obi_prefetch(pair)
                else:
                    obi_prefetch(pair[0])
                    obi_prefetch(pair[1])


cdef inline const char *_text_ptr(object o, Py_ssize_t *n) except NULL:
    if isinstance(o, str):
        return PyUnicode_AsUTF8AndSize(o, n)
    if PyBytes_CheckExact(o):
        n[0] = PyBytes_GET_SIZE(o)
        return PyBytes_AS_STRING(o)
    raise TypeError(f"price and quantity must be str or bytes, not {type(o).__name__}")


cdef inline int _apply_to(BookSide s, const Level *levels, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s.set_level(levels[i].key, levels[i].qty, levels[i].pdec, levels[i].qdec) < 0:
            return -1
    return 0


cdef enum:
    TEXT_CAP = 320          # a level's number as text: sign, 19 digits, '.', up to 255 decimals


cdef tuple pack_levels(const Level *levels, Py_ssize_t nb, Py_ssize_t na):
    """Parsed levels (``key`` holding the price), bids then asks, as a ring payload: (packed
    int64 (price, qty) pairs; n_bids; n_asks; the most price decimals; the most quantity
    decimals)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 * (nb + na))
    cdef char *p = out
    cdef Py_ssize_t i
    cdef int pd = 0, qd = 0
    for i in range(nb + na):
        memcpy(p + 16 * i, &levels[i].key, 8)
        memcpy(p + 16 * i + 8, &levels[i].qty, 8)
        pd = max(pd, levels[i].pdec)
        qd = max(qd, levels[i].qdec)
    return out, nb, na, pd, qd


cdef inline uint32_t _crc_level(BookSide side, Py_ssize_t *j, uint32_t crc, bint *first) noexcept nogil:
    """Feed ":price:qty" (no leading ':' for the very first) of the next live level at index
    j[0] or deeper, if any, to the running CRC, and move j below it."""
    cdef char buf[TEXT_CAP]
    cdef Level *lv
    cdef Py_ssize_t k
    j[0] = side.live_at_or_below(j[0])
    if j[0] < 0:
        return crc
    lv = &side.lv[j[0]]
    j[0] -= 1
    if not first[0]:
        crc = crc32_update(crc, b":", 1)
    first[0] = False
    k = format_fixed_c(lv.key * side.sign, side.digits, lv.pdec, buf, TEXT_CAP)
    crc = crc32_update(crc, buf, k if k > 0 else 0)
    crc = crc32_update(crc, b":", 1)
    k = format_fixed_c(lv.qty, side.qdigits, lv.qdec, buf, TEXT_CAP)
    return crc32_update(crc, buf, k if k > 0 else 0)


cdef class OrderBook:
    """Bids and asks keyed by exact int64 fixed-point prices with ``digits`` decimals, and
    quantities with ``qty_digits`` decimals (default: ``digits``). Per symbol, the scales come
    from the venue's tick and step sizes, so that a large memecoin quantity fits int64 (1e11
    units at 8 decimals would not); a value that does not fit raises ValueError.

    Inputs are lists of (price, qty) decimal strings as received (extra elements per level are
    ignored). A call is atomic: every level is parsed first, and a bad one raises ValueError
    naming it with the book unchanged.
    """

    def __cinit__(self, int digits=8, int qty_digits=-1):
        if digits < 0 or digits > 18:
            raise ValueError(f"digits must be in [0, 18], got {digits}")
        if qty_digits < 0:
            qty_digits = digits
        elif qty_digits > 18:
            raise ValueError(f"qty_digits must be in [0, 18], got {qty_digits}")
        self.digits = digits
        self.qty_digits = qty_digits
        self.bids = BookSide(1, digits, qty_digits)
        self.asks = BookSide(-1, digits, qty_digits)
        self.scratch = NULL
        self.scratch_cap = 0
        self.shown_pdec = 8
        self.shown_qdec = 8
        self.update_id = 0
        self.valid = False

    def __dealloc__(self):
        free(self.scratch)

    # ------------------------------------------------------------ Cython-level entry points
    cdef int apply_levels(self, int side, const Level *levels, Py_ssize_t n) noexcept nogil:
        """Apply parsed levels to side 0 (bids) or 1 (asks); ``key`` holds the PRICE here."""
        cdef int rc
        if side == 0:
            rc = _apply_to(self.bids, levels, n)
        else:
            rc = _apply_to(self.asks, levels, n)
        if rc == 0:
            self.levels_applied += n
        return rc

    cdef void clear(self) noexcept nogil:
        self.bids.clear()
        self.asks.clear()
        self.crossed = False

    cdef void check_crossed(self) noexcept nogil:
        cdef bint now = (self.bids.n > 0 and self.asks.n > 0
                         and self.bids.best_price() >= self.asks.best_price())
        if now and not self.crossed:
            self.crossed_count += 1
        self.crossed = now

    cdef void _depth_sums(self, Py_ssize_t n, obi_int128 *b, obi_int128 *a) noexcept nogil:
        """Exact sums of the quantities of the best ``n`` bids and asks."""
        b[0] = _sum_best(self.bids, n)
        a[0] = _sum_best(self.asks, n)

    cdef double obi_c(self, Py_ssize_t n) noexcept nogil:
        cdef obi_int128 b, a
        self._depth_sums(n, &b, &a)
        if a + b == 0:
            return 0.0
        return <double>(b - a) / <double>(b + a)

    cdef Py_ssize_t top_into(self, int side, Py_ssize_t n, int64_t *prices,
                             int64_t *qtys) noexcept nogil:
        """Copy the best ``n`` levels of side 0 (bids) or 1 (asks) as int64 price/qty, best
        first; returns how many were copied."""
        if side == 0:
            return _top_into(self.bids, n, prices, qtys)
        return _top_into(self.asks, n, prices, qtys)

    cdef int32_t checksum_c(self, Py_ssize_t depth) noexcept nogil:
        cdef Py_ssize_t i, jb = self.bids.n - 1, ja = self.asks.n - 1
        cdef uint32_t crc = 0xFFFFFFFFU
        cdef bint first = True
        if depth > 50:
            depth = 50
        for i in range(depth):
            crc = _crc_level(self.bids, &jb, crc, &first)
            crc = _crc_level(self.asks, &ja, crc, &first)
        return <int32_t>(crc ^ 0xFFFFFFFFU)

    # ------------------------------------------------------------ parsing
    cdef Py_ssize_t _parse(self, object levels, Py_ssize_t offset) except -1:
        """Parse a list of levels into scratch[offset:]; returns how many."""
        cdef Py_ssize_t count = len(levels), k, np, nq
        cdef const char *sp
        cdef const char *sq
        cdef int64_t price, qty
        cdef int pdec, qdec, rc
        cdef PyObject *o
        cdef PyObject *ps
        cdef PyObject *qs
        cdef PyObject **items
        cdef Level *lv
        if not PyList_CheckExact(levels):
            levels = list(levels)
            count = PyList_GET_SIZE(levels)
        if offset + count > self.scratch_cap:
            cap = max(256, 2 * (offset + count))
            p = <Level *>realloc(self.scratch, cap * sizeof(Level))
            if p == NULL:
                raise MemoryError()
            self.scratch = p
            self.scratch_cap = cap
        items = OBI_LIST_ITEMS(<PyObject *>levels)
        # levels are read by borrowed pointers: no reference count is written
        for k in range(count):
            o = items[k]
            if obi_pair_items(o) == NULL:
                lvl = <object>o
                if not isinstance(lvl, (list, tuple)):      # a dict or a str has a len() too
                    raise TypeError(f"book level {lvl!r:.60} is not a [price, quantity] pair")
                if len(lvl) < 2:
                    raise ValueError(f"book level {lvl!r:.60} needs a price and a quantity")
                return self._parse_generic(levels, offset)
            ps = obi_pair_items(o)[0]
            qs = obi_pair_items(o)[1]
            sp = obi_ascii(ps, &np)
            if sp == NULL:
                sp = _text_ptr(<object>ps, &np)
            sq = obi_ascii(qs, &nq)
            if sq == NULL:
                sq = _text_ptr(<object>qs, &nq)
            lv = &self.scratch[offset + k]
            if plain_fixed(sp, np, 0, self.digits, &price, &pdec) != np:
                rc = parse_fixed_c(sp, np, self.digits, False, &price, &pdec)
                if rc != FIXED_OK:
                    raise fixed_error(rc, <object>ps, self.digits, "price: ")
            if price == 0:
                raise ValueError(f"price: zero price {<object>ps!r} in a book level")
            if plain_fixed(sq, nq, 0, self.qty_digits, &qty, &qdec) != nq:
                rc = parse_fixed_c(sq, nq, self.qty_digits, False, &qty, &qdec)
                if rc != FIXED_OK:
                    raise fixed_error(rc, <object>qs, self.qty_digits, "quantity: ")
            if pdec > 255 or qdec > 255:
                raise ValueError(f"book level {<object>o!r:.60}: more than 255 decimals")
            lv.key = price
            lv.qty = qty
            lv.pdec = <uint8_t>pdec
            lv.qdec = <uint8_t>qdec
        return count

    # ------------------------------------------------------------ Python API
    def apply_snapshot(self, bids, asks) -> None:
        """Replace the whole book with these levels (decimal strings as received)."""
        _prefetch_levels(bids, asks)
        cdef Py_ssize_t nb = self._parse(bids, 0)
        cdef Py_ssize_t na = self._parse(asks, nb)
        self._replace_side(self.bids, 0, nb)
        self._replace_side(self.asks, nb, na)
        self.levels_applied += nb + na
        self.check_crossed()
        if self.scratch_cap > 4096:   # a big snapshot's parse buffer is not kept around
            free(self.scratch)
            self.scratch = NULL
            self.scratch_cap = 0

    cdef Py_ssize_t _parse_generic(self, object levels, Py_ssize_t offset) except -1:
        """Levels of other sequence types: normalised to tuples, then the fast path."""
        cdef list norm = []
        for lvl in levels:
            if not isinstance(lvl, (list, tuple)):      # a dict or a str has a len() too
                raise TypeError(f"book level {lvl!r:.60} is not a [price, quantity] pair")
            if len(lvl) < 2:
                raise ValueError(f"book level {lvl!r:.60} needs a price and a quantity")
            norm.append((lvl[0], lvl[1]))
        return self._parse(norm, offset)

    cdef int _replace_side(self, BookSide side, Py_ssize_t off, Py_ssize_t n) except -1:
        cdef Level *src = self.scratch + off
        cdef Py_ssize_t i
        cdef bint ordered = True
        for i in range(n):
            if src[i].qty == 0 or (i and src[i].key * side.sign >= src[i - 1].key * side.sign):
                ordered = False
                break
        side.clear()
        if ordered:
            for i in range(n):
                src[i].key = src[i].key * side.sign
            if side.load_sorted_best_first(src, n) < 0:
                raise MemoryError()
            return 0
        for i in range(n):
            if side.set_level(src[i].key, src[i].qty, src[i].pdec, src[i].qdec) < 0:
                raise MemoryError()
        return 0

    def apply(self, bids, asks, bint pack=False):
        """Apply absolute quantities: 0 deletes (absent is fine), a known price is replaced,
        an unknown one inserted in order. With ``pack``, also return the levels as a ring
        payload: (packed int64 (price, qty) pairs, bids then asks; n_bids; n_asks; the most
        price decimals; the most quantity decimals)."""
        _prefetch_levels(bids, asks)
        cdef Py_ssize_t nb = self._parse(bids, 0)
        cdef Py_ssize_t na = self._parse(asks, nb)
        packed = pack_levels(self.scratch, nb, na) if pack else None
        if self.apply_levels(0, self.scratch, nb) < 0 or self.apply_levels(1, self.scratch + nb, na) < 0:
            raise MemoryError()
        self.check_crossed()
        return packed

    def packed(self, Py_ssize_t depth=-1) -> tuple:
        """The book as a ring payload: (packed int64 (price, qty) pairs, bids best first then
        asks best first; n_bids; n_asks; the most price decimals; the most quantity decimals)."""
        cdef Py_ssize_t nb = self.bids.live if depth < 0 else min(depth, self.bids.live)
        cdef Py_ssize_t na = self.asks.live if depth < 0 else min(depth, self.asks.live)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 * (nb + na))
        cdef char *p = out
        cdef Py_ssize_t i, j = 0
        cdef int pd = 0, qd = 0
        cdef Level *lv
        cdef int64_t price
        cdef BookSide s = self.bids
        for i in range(nb + na):
            if i == 0 or i == nb:
                s = self.bids if i < nb else self.asks
                j = s.n - 1
            j = s.live_at_or_below(j)
            lv = &s.lv[j]
            j -= 1
            price = lv.key * s.sign
            memcpy(p + 16 * i, &price, 8)
            memcpy(p + 16 * i + 8, &lv.qty, 8)
            pd = max(pd, lv.pdec)
            qd = max(qd, lv.qdec)
        return out, nb, na, pd, qd

    def best_bid(self):
        """(price, qty) original strings of the best bid, or None."""
        if self.bids.n == 0:
            return None
        return _level_strings(self.bids, &self.bids.lv[self.bids.n - 1])

    def best_ask(self):
        if self.asks.n == 0:
            return None
        return _level_strings(self.asks, &self.asks.lv[self.asks.n - 1])

    def top(self, Py_ssize_t n) -> tuple:
        """(bids high->low, asks low->high), each the best ``n`` levels as original strings."""
        return self.bids.levels(n), self.asks.levels(n)

    def obi(self, Py_ssize_t n=20) -> float:
        """(bid qty - ask qty) / (bid qty + ask qty) over the best ``n`` levels per side, exact
        sums, one correctly rounded division at the end; 0.0 for an empty book."""
        cdef obi_int128 b, a
        self._depth_sums(n, &b, &a)
        if a + b == 0:
            return 0.0
        if a + b < (<obi_int128>1 << 53):
            # both operands exact in a double: one IEEE division is correctly rounded
            return <double>(b - a) / <double>(b + a)
        pb, pa = _int128_to_py(b), _int128_to_py(a)
        return (pb - pa) / (pb + pa)

    def apply_packed(self, bids, asks, int pdec=8, int qdec=8) -> None:
        """Apply levels given as packed little-endian int64 (price, qty) pairs in ``digits``
        fixed point (the ring records' layout), with the decimals to show them with."""
        self._apply_packed(bids, asks, pdec, qdec, False)

    def apply_snapshot_packed(self, bids, asks, int pdec=8, int qdec=8) -> None:
        """Replace the book with packed int64 (price, qty) pairs, best first."""
        self._apply_packed(bids, asks, pdec, qdec, True)

    cdef int _apply_packed(self, object bids, object asks, int pdec, int qdec,
                           bint snapshot) except -1:
        cdef Py_buffer bb, ab
        PyObject_GetBuffer(bids, &bb, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(asks, &ab, PyBUF_SIMPLE)
            try:
                return self._apply_packed_raw(<const char *>bb.buf, bb.len, <const char *>ab.buf,
                                              ab.len, pdec, qdec, snapshot)
            finally:
                PyBuffer_Release(&ab)
        finally:
            PyBuffer_Release(&bb)

    cdef int _apply_packed_raw(self, const char *bp, Py_ssize_t blen, const char *ap,
                               Py_ssize_t alen, int pdec, int qdec, bint snapshot) except -1:
        """Cython entry point for ring payloads: packed little-endian int64 (price, qty)."""
        cdef Py_ssize_t nb = blen // 16, na = alen // 16, i
        if blen % 16 or alen % 16:
            raise ValueError("packed levels must be whole (price, qty) int64 pairs")
        if pdec < 0 or pdec > 255 or qdec < 0 or qdec > 255:
            raise ValueError("decimals must be in [0, 255]")
        if nb + na > self.scratch_cap:
            p = <Level *>realloc(self.scratch, max(256, 2 * (nb + na)) * sizeof(Level))
            if p == NULL:
                raise MemoryError()
            self.scratch = p
            self.scratch_cap = max(256, 2 * (nb + na))
        for i in range(nb + na):
            # memcpy: a buffer slice need not be 8-byte aligned
            if i < nb:
                memcpy(&self.scratch[i].key, bp + 16 * i, 8)
                memcpy(&self.scratch[i].qty, bp + 16 * i + 8, 8)
            else:
                memcpy(&self.scratch[i].key, ap + 16 * (i - nb), 8)
                memcpy(&self.scratch[i].qty, ap + 16 * (i - nb) + 8, 8)
            if self.scratch[i].key <= 0 or self.scratch[i].qty < 0:
                raise ValueError(f"packed level {i}: price {self.scratch[i].key} and quantity "
                                 f"{self.scratch[i].qty} must be > 0 and >= 0")
            self.scratch[i].pdec = <uint8_t>pdec
            self.scratch[i].qdec = <uint8_t>qdec
        if snapshot:
            self._replace_side(self.bids, 0, nb)
            self._replace_side(self.asks, nb, na)
            self.levels_applied += nb + na
        elif self.apply_levels(0, self.scratch, nb) < 0 or self.apply_levels(1, self.scratch + nb, na) < 0:
            raise MemoryError()
        self.check_crossed()
        return 0

    def apply_record(self, payload, bint snapshot):
        """Apply a BOOK_SNAPSHOT (``snapshot``) or BOOK_DELTA ring record whole (the layout of
        obitui.core.records: the little-endian book header of shm.h, then packed (price, qty)
        pairs), the engine's one call per record: the header is checked as ``decode_book``
        checks it and the levels as ``apply_packed`` does (ValueError naming the problem, the
        book unchanged). A snapshot replaces the book and makes it valid; a delta to an invalid
        book is not applied (-1: waiting for a snapshot). Then ``update_id`` is the record's last
        id, ``shown_pdec`` / ``shown_qdec`` the most decimals since the snapshot, and the
        record's receive time (ns) is returned."""
        cdef Py_buffer view
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            return self.apply_raw(<const char *>view.buf, view.len, snapshot)
        finally:
            PyBuffer_Release(&view)

    cdef int64_t apply_raw(self, const char *p, Py_ssize_t n, bint snapshot) except? -2:
        """``apply_record`` on a record's bytes in place (the engine reads them in its ring)."""
        cdef obi_book_header h
        cdef Py_ssize_t hlen = sizeof(obi_book_header), nb, na
        if n < hlen:
            raise ValueError(f"book record of {n} bytes is shorter than its header")
        memcpy(&h, p, hlen)      # a record need not be aligned for the header's fields
        nb = h.n_bids
        na = h.n_asks
        if n != hlen + 16 * (nb + na):
            raise ValueError(f"book record of {n} bytes does not hold {nb}+{na} levels")
        if not snapshot and not self.valid:
            return -1
        self._apply_packed_raw(p + hlen, 16 * nb, p + hlen + 16 * nb, 16 * na, h.pdec, h.qdec, snapshot)
        if snapshot:
            self.valid = True
            self.shown_pdec = h.pdec
            self.shown_qdec = h.qdec
        else:
            self.shown_pdec = max(self.shown_pdec, h.pdec)
            self.shown_qdec = max(self.shown_qdec, h.qdec)
        self.update_id = h.last_id
        return h.recv_ns

    def mid_fixed(self):
        """(best bid + best ask) as a fixed-point int with ``digits`` decimals times 2
        (exact: no halving), or None if a side is empty."""
        if self.bids.n == 0 or self.asks.n == 0:
            return None
        return self.bids.best_price() + self.asks.best_price()

    def reset(self) -> None:
        """Drop every level (the book becomes invalid until the next snapshot)."""
        self.clear()
        self.valid = False

    def __len__(self) -> int:
        return self.bids.live + self.asks.live

    @property
    def nbytes(self) -> int:
        return self.bids.nbytes + self.asks.nbytes + self.scratch_cap * sizeof(Level)

    def __repr__(self) -> str:
        return (f"<OrderBook bids={self.bids.live} asks={self.asks.live} best={self.best_bid()}/"
                f"{self.best_ask()} update_id={self.update_id} crossed={self.crossed}>")


def level_checksum(OrderBook book, Py_ssize_t depth=25) -> int:
    """CRC32 (IEEE, as zlib; signed 32-bit) of the best ``depth`` bids and asks (at most 50 a
    side) interleaved as bid price:bid qty:ask price:ask qty:... over the strings as received
    (a side with fewer levels just stops contributing); 0 for an empty book."""
    return book.checksum_c(depth)


def crc32_signed(data: bytes) -> int:
    """CRC32 of ``data`` as a signed 32-bit integer (for tests against zlib)."""
    return <int32_t>crc32_c(data, len(data))

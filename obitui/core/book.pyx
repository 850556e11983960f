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
Bitget's checksum is computed over. A crossed book is reported (flag + counter), never repaired.
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
from libc.string cimport memmove, memcpy, memcmp, memset
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from obitui.core.fixed cimport parse_fixed_c, format_fixed_c, fixed_error, FIXED_OK

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


cdef inline const char *_frame_text(object text, Py_ssize_t *n) except? NULL:
    """A frame's bytes, from str (its UTF-8 form, cached by CPython) or bytes; NULL for any
    other type (the caller declines the frame)."""
    if isinstance(text, str):
        return PyUnicode_AsUTF8AndSize(text, n)
    if PyBytes_CheckExact(text):
        n[0] = PyBytes_GET_SIZE(text)
        return PyBytes_AS_STRING(text)
    return NULL


cdef inline Py_ssize_t _ws(const char *s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and (s[i] == 32 or s[i] == 9 or s[i] == 10 or s[i] == 13):
        i += 1
    return i


cdef uint64_t _LIM10 = <uint64_t>0x7FFFFFFFFFFFFFFF // 10
cdef uint64_t _LIM_LAST = <uint64_t>0x7FFFFFFFFFFFFFFF % 10
cdef uint64_t[19] _POW10
_POW10[0] = 1
for _k in range(1, 19):
    _POW10[_k] = _POW10[_k - 1] * 10


cdef uint64_t _LIM_SWAR = (<uint64_t>0x7FFFFFFFFFFFFFFF - 99999999) // 100000000
cdef bint _LITTLE_ENDIAN
cdef uint16_t _endian_probe = 1
_LITTLE_ENDIAN = (<uint8_t *>&_endian_probe)[0] == 1


cdef inline bint _eight_digits(uint64_t w) noexcept nogil:
    """Eight ASCII digits in one word (SWAR)."""
    return ((w & <uint64_t>0xF0F0F0F0F0F0F0F0) == <uint64_t>0x3030303030303030 and
            ((w + <uint64_t>0x0606060606060606) & <uint64_t>0xF0F0F0F0F0F0F0F0) == <uint64_t>0x3030303030303030)


cdef inline uint64_t _special_byte(uint64_t w) noexcept nogil:
    """Non-zero when a byte of ``w`` is '"', a backslash or below 0x20 (SWAR, any byte order)."""
    cdef uint64_t ones = <uint64_t>0x0101010101010101, high = <uint64_t>0x8080808080808080
    cdef uint64_t q = w ^ <uint64_t>0x2222222222222222, b = w ^ <uint64_t>0x5C5C5C5C5C5C5C5C
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - <uint64_t>0x2020202020202020) & ~w)) & high


cdef inline uint64_t _eight_value(uint64_t w) noexcept nogil:
    """The value of eight ASCII digits loaded little-endian (the first digit in the low byte)."""
    w -= <uint64_t>0x3030303030303030
    w = (w * 10 + (w >> 8)) & <uint64_t>0x00FF00FF00FF00FF
    w = (w * 100 + (w >> 16)) & <uint64_t>0x0000FFFF0000FFFF
    return (w * 10000 + (w >> 32)) & <uint64_t>0xFFFFFFFF


cdef inline Py_ssize_t _plain_fixed(const char *s, Py_ssize_t n, Py_ssize_t i, int digits,
                                    int64_t *out, int *decimals) noexcept nogil:
    """An unsigned decimal at s[i], by parse_fixed's rules (digits, '.', digits; zeros only
    beyond ``digits``; int64 range; at most 128 characters): the index after it, or -1 (then
    parse_fixed or the orjson path judges and names the error). Runs of eight kept decimals
    are read a word at a time."""
    cdef uint64_t acc = 0, d, w
    cdef int kept = 0
    cdef Py_ssize_t start = i, fstart
    while i < n and 48 <= s[i] <= 57:
        d = s[i] - 48
        if acc >= _LIM10 and (acc > _LIM10 or d > _LIM_LAST):
            return -1
        acc = acc * 10 + d
        i += 1
    if i == start:
        return -1
    fstart = i
    if i < n and s[i] == 46:                     # '.'
        i += 1
        fstart = i
        if _LITTLE_ENDIAN:
            while kept + 8 <= digits and n - i >= 8 and acc <= _LIM_SWAR:
                memcpy(&w, s + i, 8)
                if not _eight_digits(w):
                    break
                acc = acc * 100000000 + _eight_value(w)
                kept += 8
                i += 8
        while i < n and 48 <= s[i] <= 57:
            d = s[i] - 48
            if kept < digits:
                if acc >= _LIM10 and (acc > _LIM10 or d > _LIM_LAST):
                    return -1
                acc = acc * 10 + d
                kept += 1
            elif d != 0:
                return -1
            i += 1
        if i == fstart:
            return -1
    if i - start > 128:                          # parse_fixed's longest text
        return -1
    if kept < digits:
        d = _POW10[digits - kept]
        if acc > <uint64_t>0x7FFFFFFFFFFFFFFF // d:
            return -1
        acc *= d
    out[0] = <int64_t>acc
    decimals[0] = <int>(i - fstart)
    return i


cdef inline Py_ssize_t _quoted_fixed(const char *s, Py_ssize_t n, Py_ssize_t i, int digits,
                                     int64_t *out, int *decimals) noexcept nogil:
    """s[i] opens a string holding an unsigned decimal (``_plain_fixed``), parsed in the same
    pass as the scan: the index after the closing quote, or -1."""
    if i >= n or s[i] != 34:
        return -1
    i = _plain_fixed(s, n, i + 1, digits, out, decimals)
    if i < 0 or i >= n or s[i] != 34:
        return -1
    return i + 1


cdef inline Py_ssize_t _json_uint(const char *s, Py_ssize_t n, Py_ssize_t i, int64_t *out) noexcept nogil:
    """A JSON non-negative integer of at most 18 digits at s[i] (no leading zero, not a
    float): the index after it, or -1."""
    cdef int64_t v = 0
    cdef Py_ssize_t j = i
    cdef uint64_t w
    if _LITTLE_ENDIAN and n - i >= 8:
        memcpy(&w, s + i, 8)
        if _eight_digits(w):
            v = <int64_t>_eight_value(w)
            j = i + 8
    while j < n and 48 <= s[j] <= 57:
        if j - i >= 18:
            return -1
        v = v * 10 + (s[j] - 48)
        j += 1
    if j == i or (s[i] == 48 and j - i > 1):
        return -1
    if j < n and (s[j] == 46 or s[j] == 101 or s[j] == 69):   # a float: not ours
        return -1
    out[0] = v
    return j


cdef inline bint _lit(const char *s, Py_ssize_t n, Py_ssize_t *i, const char *lit,
                      Py_ssize_t k) noexcept nogil:
    """s[i:] starts with the k bytes of ``lit``: move i past them."""
    if n - i[0] >= k and memcmp(s + i[0], lit, k) == 0:
        i[0] += k
        return True
    return False


cdef inline int _next_or_end(const char *s, Py_ssize_t n, Py_ssize_t *i, char closer) noexcept nogil:
    """At s[i]: ',' -> 1 and i moves past it (and blanks); ``closer`` -> 0 and i moves past
    it; anything else -> -1 with i = -1."""
    cdef Py_ssize_t j = i[0]
    if j < n and s[j] == 44:
        i[0] = _ws(s, n, j + 1)
        return 1
    if j < n and s[j] == closer:
        i[0] = j + 1
        return 0
    i[0] = -1
    return -1


cdef inline Py_ssize_t _string(const char *s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """s[i] must open a string without escapes; the index after its closing quote, or -1."""
    cdef uint64_t w
    if i >= n or s[i] != 34:
        return -1
    i += 1
    # eight plain bytes at a time (none a quote, a backslash or a control character)
    while n - i >= 8:
        memcpy(&w, s + i, 8)
        if _special_byte(w):
            break
        i += 8
    while i < n:
        if s[i] == 34:
            return i + 1
        if s[i] == 92 or <unsigned char>s[i] < 32:    # an escape or a control character
            return -1
        i += 1
    return -1



cdef inline int _apply_to(BookSide s, const Level *levels, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s.set_level(levels[i].key, levels[i].qty, levels[i].pdec, levels[i].qdec) < 0:
            return -1
    return 0


cdef enum:
    RECORD_HEADER = 48      # obitui.core.records.BOOK_HEADER.size
    TEXT_CAP = 320          # a level's number as text: sign, 19 digits, '.', up to 255 decimals


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
        self._scanned = -1
        self._scanned_bids = 0
        self._frame_ok = False
        self._frame_payload = None
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
            if _plain_fixed(sp, np, 0, self.digits, &price, &pdec) != np:
                rc = parse_fixed_c(sp, np, self.digits, False, &price, &pdec)
                if rc != FIXED_OK:
                    raise fixed_error(rc, <object>ps, self.digits, "price: ")
            if price == 0:
                raise ValueError(f"price: zero price {<object>ps!r} in a book level")
            if _plain_fixed(sq, nq, 0, self.qty_digits, &qty, &qdec) != nq:
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

    # ------------------------------------------------------------ raw Binance frames
    # A scanner for the plain shape of a Binance depthUpdate frame (raw or combined stream),
    # straight from the frame text into the scratch levels: no Python object per level. It
    # reads only what it understands (keys without escapes, strings without escapes, integers,
    # true/false/null, the b/a level arrays, one nested "data" object) and gives up (-1) on
    # anything else, so the caller's orjson path judges (and names) every unusual frame.
    # Every read is bounds-checked against the frame length.

    cdef int _grow_scratch(self, Py_ssize_t need) noexcept nogil:
        cdef Py_ssize_t cap
        cdef Level *p
        if need <= self.scratch_cap:
            return 0
        cap = max(256, 2 * need)
        p = <Level *>realloc(self.scratch, cap * sizeof(Level))
        if p == NULL:
            return -1
        self.scratch = p
        self.scratch_cap = cap
        return 0

    cdef int _scan_levels(self, const char *s, Py_ssize_t n, Py_ssize_t *pos,
                          Py_ssize_t *count) noexcept nogil:
        """[["p","q"],...] at s[pos]: appended to scratch[count...]; 0 or -1."""
        cdef Py_ssize_t i = pos[0]
        cdef int64_t price, qty
        cdef int pdec, qdec
        i = _ws(s, n, i)
        if i >= n or s[i] != 91:                 # '['
            return -1
        i = _ws(s, n, i + 1)
        if i < n and s[i] == 93:                 # ']'
            pos[0] = i + 1
            return 0
        while True:
            if i >= n or s[i] != 91:
                return -1
            i = _ws(s, n, i + 1)
            i = _quoted_fixed(s, n, i, self.digits, &price, &pdec)
            if i < 0 or price == 0:
                return -1
            i = _ws(s, n, i)
            if i >= n or s[i] != 44:             # ','
                return -1
            i = _quoted_fixed(s, n, _ws(s, n, i + 1), self.qty_digits, &qty, &qdec)
            if i < 0:
                return -1
            i = _ws(s, n, i)
            if i >= n or s[i] != 93:
                return -1
            if pdec > 255 or qdec > 255 or self._grow_scratch(count[0] + 1) < 0:
                return -1
            self.scratch[count[0]].key = price
            self.scratch[count[0]].qty = qty
            self.scratch[count[0]].pdec = <uint8_t>pdec
            self.scratch[count[0]].qdec = <uint8_t>qdec
            count[0] += 1
            i = _ws(s, n, i + 1)
            if _next_or_end(s, n, &i, 93) == 0:
                pos[0] = i
                return 0
            if i < 0:
                return -1

    cdef int _scan_object(self, const char *s, Py_ssize_t n, Py_ssize_t *pos, int depth,
                          int64_t *ids, Py_ssize_t *nb, Py_ssize_t *na) noexcept nogil:
        """An object at s[pos]; ids = [U, u, E, pu, is a depthUpdate, inside "data"]; bids
        then asks into scratch."""
        cdef Py_ssize_t i = _ws(s, n, pos[0]), k0, k1, v1
        cdef Py_ssize_t klen
        cdef int64_t v
        cdef Py_ssize_t count
        if i >= n or s[i] != 123:                # '{'
            return -1
        i = _ws(s, n, i + 1)
        if i < n and s[i] == 125:
            pos[0] = i + 1
            return 0
        while True:
            k1 = _string(s, n, i)
            if k1 < 0:
                return -1
            k0 = i + 1
            klen = k1 - 1 - k0
            i = _ws(s, n, k1)
            if i >= n or s[i] != 58:             # ':'
                return -1
            i = _ws(s, n, i + 1)
            if i >= n:
                return -1
            if klen == 4 and s[k0] == 100 and s[k0 + 1] == 97 and s[k0 + 2] == 116 and s[k0 + 3] == 97:
                # "data": the combined stream's payload
                if depth > 0 or s[i] != 123 or ids[5]:
                    return -1
                # only the payload counts (orjson's reader takes msg["data"] whole)
                ids[0] = ids[1] = ids[3] = -1
                ids[2] = ids[4] = 0
                ids[5] = 1
                nb[0] = na[0] = -1
                pos[0] = i
                if self._scan_object(s, n, pos, 1, ids, nb, na) < 0:
                    return -1
                i = pos[0]
            elif depth == 0 and ids[5] and (klen == 1 and (s[k0] == 98 or s[k0] == 97 or s[k0] == 85 or
                                                             s[k0] == 117 or s[k0] == 69 or s[k0] == 101)
                                             or (klen == 2 and s[k0] == 112 and s[k0 + 1] == 117)):
                return -1                        # a payload key beside "data": ambiguous
            elif klen == 1 and (s[k0] == 98 or s[k0] == 97):       # "b" / "a"
                if s[k0] == 98:
                    if nb[0] >= 0:
                        return -1
                    count = 0
                    pos[0] = i
                    if self._scan_levels(s, n, pos, &count) < 0:
                        return -1
                    nb[0] = count
                else:
                    if nb[0] < 0 or na[0] >= 0:  # asks after bids only (Binance's order)
                        return -1
                    count = nb[0]
                    pos[0] = i
                    if self._scan_levels(s, n, pos, &count) < 0:
                        return -1
                    na[0] = count - nb[0]
                i = pos[0]
            elif s[i] == 34:                     # a string value
                v1 = _string(s, n, i)
                if v1 < 0:
                    return -1
                if klen == 1 and s[k0] == 101:   # "e" (the last one counts, as in orjson)
                    ids[4] = 1 if v1 - i - 2 == 11 and memcmp(s + i + 1, b"depthUpdate", 11) == 0 else 0
                i = v1
            elif klen == 1 and s[k0] == 101:     # "e" that is not a string
                return -1
            elif 48 <= s[i] <= 57:               # a non-negative integer
                v = 0
                v1 = i
                while v1 < n and 48 <= s[v1] <= 57:
                    if v1 - i >= 18:
                        return -1
                    v = v * 10 + (s[v1] - 48)
                    v1 += 1
                if v1 < n and (s[v1] == 46 or s[v1] == 101 or s[v1] == 69):   # a float: not ours
                    return -1
                if s[i] == 48 and v1 - i > 1:     # a leading zero is not JSON
                    return -1
                if klen == 1 and s[k0] == 85:
                    ids[0] = v
                elif klen == 1 and s[k0] == 117:
                    ids[1] = v
                elif klen == 1 and s[k0] == 69:
                    ids[2] = v if v <= <int64_t>9223372036854 else <int64_t>0   # as parse_depth_event
                elif klen == 2 and s[k0] == 112 and s[k0 + 1] == 117:
                    ids[3] = v
                i = v1
            elif n - i >= 4 and (memcmp(s + i, b"true", 4) == 0 or memcmp(s + i, b"null", 4) == 0):
                i += 4
            elif n - i >= 5 and memcmp(s + i, b"false", 5) == 0:
                i += 5
            else:
                return -1
            i = _ws(s, n, i)
            if _next_or_end(s, n, &i, 125) == 0:
                pos[0] = i
                return 0
            if i < 0:
                return -1

    cdef int _scan_compact_levels(self, const char *s, Py_ssize_t n, Py_ssize_t *pos,
                                  Py_ssize_t *count) noexcept nogil:
        """The levels of a compact frame (no blanks), just after their '[': appended to
        scratch[count...]; 0 or -1 (the general scanner then reads the frame)."""
        cdef Py_ssize_t i = pos[0]
        cdef int64_t price, qty
        cdef int pdec, qdec
        cdef Level *lv
        if i < n and s[i] == 93:                 # ']'
            pos[0] = i + 1
            return 0
        while True:
            if i >= n or s[i] != 91:             # '['
                return -1
            i = _quoted_fixed(s, n, i + 1, self.digits, &price, &pdec)
            if i < 0 or price == 0 or i >= n or s[i] != 44:
                return -1
            i = _quoted_fixed(s, n, i + 1, self.qty_digits, &qty, &qdec)
            if i < 0 or i >= n or s[i] != 93:
                return -1
            if pdec > 255 or qdec > 255 or self._grow_scratch(count[0] + 1) < 0:
                return -1
            lv = &self.scratch[count[0]]
            lv.key = price
            lv.qty = qty
            lv.pdec = <uint8_t>pdec
            lv.qdec = <uint8_t>qdec
            count[0] += 1
            i += 1
            if i < n and s[i] == 44:
                i += 1
            elif i < n and s[i] == 93:
                pos[0] = i + 1
                return 0
            else:
                return -1

    cdef int _scan_canonical(self, const char *s, Py_ssize_t n, int64_t *ids, Py_ssize_t *nb,
                             Py_ssize_t *na) noexcept nogil:
        """The exact layout Binance sends, byte for byte: [{"stream":"..","data":] {"e":
        "depthUpdate","E":..,["T":..,]"s":"..","U":..,"u":..,["pu":..,]"b":[..],"a":[..]} [}]
        with no blanks. Read with fixed-string compares; 0, or -1 at the first byte that
        differs (the general scanner then reads the frame). Nothing can repeat or hide in a
        text of this exact form, so it means what orjson would make of it."""
        cdef Py_ssize_t i = 0, count = 0
        cdef bint wrapped = False
        cdef int64_t v
        if _lit(s, n, &i, b'{"stream":', 10):
            i = _string(s, n, i)
            if i < 0 or not _lit(s, n, &i, b',"data":', 8):
                return -1
            wrapped = True
        if not _lit(s, n, &i, b'{"e":"depthUpdate","E":', 23):
            return -1
        i = _json_uint(s, n, i, &v)
        if i < 0:
            return -1
        ids[2] = v if v <= <int64_t>9223372036854 else <int64_t>0   # as parse_depth_event
        if _lit(s, n, &i, b',"T":', 5):
            i = _json_uint(s, n, i, &v)
            if i < 0:
                return -1
        if not _lit(s, n, &i, b',"s":', 5):
            return -1
        i = _string(s, n, i)
        if i < 0 or not _lit(s, n, &i, b',"U":', 5):
            return -1
        i = _json_uint(s, n, i, &ids[0])
        if i < 0 or not _lit(s, n, &i, b',"u":', 5):
            return -1
        i = _json_uint(s, n, i, &ids[1])
        if i < 0:
            return -1
        if _lit(s, n, &i, b',"pu":', 6):
            i = _json_uint(s, n, i, &ids[3])
            if i < 0:
                return -1
        if not _lit(s, n, &i, b',"b":[', 6) or self._scan_compact_levels(s, n, &i, &count) < 0:
            return -1
        nb[0] = count
        if not _lit(s, n, &i, b',"a":[', 6) or self._scan_compact_levels(s, n, &i, &count) < 0:
            return -1
        na[0] = count - nb[0]
        if not _lit(s, n, &i, b'}', 1) or (wrapped and not _lit(s, n, &i, b'}', 1)) or i != n:
            return -1
        ids[4] = 1
        return 0

    cdef int _scan_frame(self, const char *s, Py_ssize_t n, int64_t *ids, Py_ssize_t *nb,
                         Py_ssize_t *na) noexcept nogil:
        """ids = [U, u, E, pu]; 0 when the frame is a plain depthUpdate (levels in scratch)."""
        cdef int64_t more[6]
        cdef Py_ssize_t pos = 0
        ids[0] = ids[1] = ids[3] = -1
        ids[2] = ids[4] = 0
        self.scan_layout = 0
        if self._scan_canonical(s, n, ids, nb, na) == 0:
            if ids[0] > ids[1]:
                return -1
            self.scan_layout = 1
            return 0
        # any other layout: the general scanner (key order, blanks, extra keys)
        more[0] = more[1] = more[3] = -1
        more[2] = more[4] = more[5] = 0
        nb[0] = na[0] = -1
        if self._scan_object(s, n, &pos, 0, more, nb, na) < 0:
            return -1
        if (_ws(s, n, pos) != n or not more[4] or more[0] < 0 or more[1] < 0 or more[0] > more[1]
                or nb[0] < 0 or na[0] < 0):
            return -1
        self.scan_layout = 2
        ids[0] = more[0]
        ids[1] = more[1]
        ids[2] = more[2]
        ids[3] = more[3]
        return 0

    def scan_binance_depth(self, text):
        """Read a Binance depthUpdate frame (str or bytes, raw or combined stream) without
        building Python objects: returns (U, u, E, pu, n_bids, n_asks) with the levels parsed
        and held for ``apply_scanned``, or None when the frame is not that plain shape (take the
        orjson path then: it accepts or rejects the frame and says why). ``pu`` is -1 when
        absent."""
        cdef Py_ssize_t n, nb = 0, na = 0
        cdef const char *s
        cdef int64_t ids[5]
        s = _frame_text(text, &n)
        if s == NULL:
            return None
        if self._scan_frame(s, n, ids, &nb, &na) < 0:
            return None
        self._scanned = nb + na
        self._scanned_bids = nb
        return ids[0], ids[1], ids[2], ids[3], nb, na

    def apply_scanned(self, bint pack=True):
        """Apply the levels of the last ``scan_binance_depth`` (like ``apply``)."""
        cdef Py_ssize_t nb = self._scanned_bids, n = self._scanned
        if n < 0:
            raise ValueError("nothing scanned")
        self._scanned = -1
        packed = self._pack_scratch(n) if pack else None
        if self.apply_levels(0, self.scratch, nb) < 0 or self.apply_levels(1, self.scratch + nb, n - nb) < 0:
            raise MemoryError()
        self.check_crossed()
        if pack:
            return packed + (nb, n - nb, self._max_dec(n, 0), self._max_dec(n, 1))
        return None

    def apply_depth_frame(self, text, bint futures=False, bint awaiting_first=False, bint pack=True):
        """The synced Binance depth feed's hot path in one call: scan the frame's text (as
        ``scan_binance_depth``) and apply it when it is the next event for this book, by the
        sync rules of docs/PROTOCOLS.md against ``update_id`` (the last applied u): spot
        U <= update_id + 1 <= u; USD-M futures pu == update_id, or right after a snapshot
        (``awaiting_first``) U <= update_id <= u. Applied: ``update_id`` becomes u.

        Returns None when the frame is not the plain shape (take the orjson path; nothing is
        kept), True when applied, False when it is not the next event (left untouched: the
        caller's sync rules say whether it is old or a gap). After True or False,
        ``frame_ids`` is the frame's (U, u, E, pu) and ``frame_payload`` the ring payload of
        ``apply(..., pack=True)`` when applied with ``pack``, else None. (Nothing is built for
        the caller that it does not ask for.)"""
        cdef Py_ssize_t n, nb = 0, na = 0
        cdef const char *s
        cdef int64_t *ids = self._frame_ids
        cdef bint nxt
        cdef int64_t bid = <int64_t>self.update_id
        self._frame_payload = None
        self._frame_ok = False
        s = _frame_text(text, &n)
        if s == NULL:
            return None
        if self._scan_frame(s, n, ids, &nb, &na) < 0:
            return None
        self._frame_ok = True
        self._scanned = -1
        if self.update_id > <uint64_t>0x7FFFFFFFFFFFFFFE:
            nxt = False                          # beyond any scanned id: the rules decide
        elif futures and not awaiting_first:
            nxt = ids[3] == bid
        elif futures:
            nxt = ids[0] <= bid <= ids[1]
        else:
            nxt = ids[0] <= bid + 1 <= ids[1]
        if not nxt:
            return False
        if pack:
            self._frame_payload = self._pack_scratch(nb + na) + (
                nb, na, self._max_dec(nb + na, 0), self._max_dec(nb + na, 1))
        if self.apply_levels(0, self.scratch, nb) < 0 or self.apply_levels(1, self.scratch + nb, na) < 0:
            raise MemoryError()
        self.check_crossed()
        self.update_id = <uint64_t>ids[1]
        return True

    @property
    def frame_ids(self):
        """(U, u, E, pu) of the last frame ``apply_depth_frame`` read (pu -1 when absent), or
        None if that call declined its frame."""
        if not self._frame_ok:
            return None
        return self._frame_ids[0], self._frame_ids[1], self._frame_ids[2], self._frame_ids[3]

    @property
    def frame_payload(self):
        """The ring payload of the last frame ``apply_depth_frame`` applied with ``pack``."""
        return self._frame_payload

    def apply(self, bids, asks, bint pack=False):
        """Apply absolute quantities: 0 deletes (absent is fine), a known price is replaced,
        an unknown one inserted in order. With ``pack``, also return the levels as a ring
        payload: (packed int64 (price, qty) pairs, bids then asks; n_bids; n_asks; the most
        price decimals; the most quantity decimals)."""
        _prefetch_levels(bids, asks)
        cdef Py_ssize_t nb = self._parse(bids, 0)
        cdef Py_ssize_t na = self._parse(asks, nb)
        packed = self._pack_scratch(nb + na) if pack else None
        if self.apply_levels(0, self.scratch, nb) < 0 or self.apply_levels(1, self.scratch + nb, na) < 0:
            raise MemoryError()
        self.check_crossed()
        if pack:
            return packed + (nb, na, self._max_dec(nb + na, 0), self._max_dec(nb + na, 1))
        return None

    cdef tuple _pack_scratch(self, Py_ssize_t n):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 * n)
        cdef char *p = out
        cdef Py_ssize_t i
        for i in range(n):
            memcpy(p + 16 * i, &self.scratch[i].key, 8)
            memcpy(p + 16 * i + 8, &self.scratch[i].qty, 8)
        return (out,)

    cdef int _max_dec(self, Py_ssize_t n, int which):
        cdef int m = 0
        cdef Py_ssize_t i
        for i in range(n):
            m = max(m, self.scratch[i].pdec if which == 0 else self.scratch[i].qdec)
        return m

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
        obitui.core.records: a 48-byte little-endian header, then packed (price, qty) pairs),
        the engine's one call per record: the header is checked as ``decode_book`` checks it
        and the levels as ``apply_packed`` does (ValueError naming the problem, the book
        unchanged). A snapshot replaces the book and makes it valid; a delta to an invalid book
        is not applied (-1: waiting for a snapshot). Then ``update_id`` is the record's last id,
        ``shown_pdec`` / ``shown_qdec`` the most decimals since the snapshot, and the record's
        receive time (ns) is returned."""
        cdef Py_buffer view
        cdef const char *p
        cdef Py_ssize_t n
        cdef uint8_t pdec, qdec
        cdef uint32_t nb, na
        cdef int64_t recv_ns
        cdef uint64_t last_id
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            p = <const char *>view.buf
            n = view.len
            if n < RECORD_HEADER:
                raise ValueError(f"book record of {n} bytes is shorter than its header")
            pdec = <uint8_t>p[2]
            qdec = <uint8_t>p[3]
            memcpy(&nb, p + 4, 4)
            memcpy(&na, p + 8, 4)
            memcpy(&recv_ns, p + 24, 8)
            memcpy(&last_id, p + 40, 8)
            if n != RECORD_HEADER + 16 * (<Py_ssize_t>nb + <Py_ssize_t>na):
                raise ValueError(f"book record of {n} bytes does not hold {nb}+{na} levels")
            if not snapshot and not self.valid:
                return -1
            self._apply_packed_raw(p + RECORD_HEADER, 16 * nb, p + RECORD_HEADER + 16 * nb, 16 * na,
                                   pdec, qdec, snapshot)
        finally:
            PyBuffer_Release(&view)
        if snapshot:
            self.valid = True
            self.shown_pdec = pdec
            self.shown_qdec = qdec
        else:
            self.shown_pdec = max(self.shown_pdec, pdec)
            self.shown_qdec = max(self.shown_qdec, qdec)
        self.update_id = last_id
        return recv_ns

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


def bitget_checksum(OrderBook book, Py_ssize_t depth=25) -> int:
    """Bitget's book checksum: CRC32 (signed 32-bit) of the best ``depth`` bids and asks
    interleaved as bid price:bid size:ask price:ask size..., over the original strings."""
    return book.checksum_c(depth)


def crc32_signed(data: bytes) -> int:
    """CRC32 of ``data`` as a signed 32-bit integer (for tests against zlib)."""
    return <int32_t>crc32_c(data, len(data))

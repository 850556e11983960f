# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Binance depthUpdate frames read straight from their text into levels for an OrderBook, with
no Python object per level: the synced depth feed's hot path.

``DepthScanner`` reads the plain shape of a depthUpdate frame (combined-stream wrapper or raw
event). Binance's own byte layout is matched first, by fixed-string compares; any other layout
(blanks, another key order, extra keys) goes to a general scanner that reads only what it
understands (keys and strings without escapes, integers, true/false/null, the b/a level arrays,
one nested "data" object) and declines anything else, so that the caller's orjson path judges
(and names) every unusual frame. Every read is bounds-checked against the frame length.

A scan only reads: its levels wait in the scanner until ``apply``, which the caller runs once
its sync rule (DepthSync.continuity in sync.py, the one copy of it) says the event is the next.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcmp, memcpy

from obitui.core.book cimport Level, OrderBook, pack_levels
from obitui.core.fixed cimport json_uint, quoted_fixed, special_byte


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
        if special_byte(w):
            break
        i += 8
    while i < n:
        if s[i] == 34:
            return i + 1
        if s[i] == 92 or <unsigned char>s[i] < 32:    # an escape or a control character
            return -1
        i += 1
    return -1


@cython.final
cdef class DepthScanner:
    """Scan state for one OrderBook: ``scan(text)`` reads a frame, ``apply()`` applies what it
    read to the book (see the module doc)."""

    cdef readonly OrderBook book
    cdef Level *lv                # the last scan's levels: bids, then asks (``key`` holds the price)
    cdef Py_ssize_t cap
    cdef Py_ssize_t pending       # levels of the last scan waiting for apply(); -1: none
    cdef Py_ssize_t pending_bids
    cdef int digits               # the book's scales
    cdef int qdigits
    cdef readonly int layout      # the last scan: 1 Binance's exact layout, 2 another one, 0 declined
    cdef object last_ids

    def __cinit__(self, OrderBook book not None):
        self.book = book
        self.lv = NULL
        self.cap = 0
        self.pending = -1
        self.pending_bids = 0
        self.digits = book.digits
        self.qdigits = book.qty_digits
        self.layout = 0
        self.last_ids = None

    def __dealloc__(self):
        free(self.lv)

    cdef int _grow(self, Py_ssize_t need) noexcept nogil:
        """Room for ``need`` levels in lv: 0, or -1 when out of memory (the frame is declined)."""
        cdef Py_ssize_t cap
        cdef Level *p
        if need <= self.cap:
            return 0
        cap = max(256, 2 * need)
        p = <Level *>realloc(self.lv, cap * sizeof(Level))
        if p == NULL:
            return -1
        self.lv = p
        self.cap = cap
        return 0

    cdef int _levels(self, const char *s, Py_ssize_t n, Py_ssize_t *pos,
                     Py_ssize_t *count) noexcept nogil:
        """[["p","q"],...] at s[pos]: appended to lv[count...]; 0 or -1."""
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
            i = quoted_fixed(s, n, i, self.digits, &price, &pdec)
            if i < 0 or price == 0:
                return -1
            i = _ws(s, n, i)
            if i >= n or s[i] != 44:             # ','
                return -1
            i = quoted_fixed(s, n, _ws(s, n, i + 1), self.qdigits, &qty, &qdec)
            if i < 0:
                return -1
            i = _ws(s, n, i)
            if i >= n or s[i] != 93:
                return -1
            if pdec > 255 or qdec > 255 or self._grow(count[0] + 1) < 0:
                return -1
            self.lv[count[0]].key = price
            self.lv[count[0]].qty = qty
            self.lv[count[0]].pdec = <uint8_t>pdec
            self.lv[count[0]].qdec = <uint8_t>qdec
            count[0] += 1
            i = _ws(s, n, i + 1)
            if _next_or_end(s, n, &i, 93) == 0:
                pos[0] = i
                return 0
            if i < 0:
                return -1

    cdef int _object(self, const char *s, Py_ssize_t n, Py_ssize_t *pos, int depth,
                     int64_t *ids, Py_ssize_t *nb, Py_ssize_t *na) noexcept nogil:
        """An object at s[pos]; ids = [U, u, E, pu, is a depthUpdate, inside "data"]; bids
        then asks into lv."""
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
                if self._object(s, n, pos, 1, ids, nb, na) < 0:
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
                    if self._levels(s, n, pos, &count) < 0:
                        return -1
                    nb[0] = count
                else:
                    if nb[0] < 0 or na[0] >= 0:  # asks after bids only (Binance's order)
                        return -1
                    count = nb[0]
                    pos[0] = i
                    if self._levels(s, n, pos, &count) < 0:
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

    cdef int _compact_levels(self, const char *s, Py_ssize_t n, Py_ssize_t *pos,
                             Py_ssize_t *count) noexcept nogil:
        """The levels of a compact frame (no blanks), just after their '[': appended to
        lv[count...]; 0 or -1 (the general scanner then reads the frame)."""
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
            i = quoted_fixed(s, n, i + 1, self.digits, &price, &pdec)
            if i < 0 or price == 0 or i >= n or s[i] != 44:
                return -1
            i = quoted_fixed(s, n, i + 1, self.qdigits, &qty, &qdec)
            if i < 0 or i >= n or s[i] != 93:
                return -1
            if pdec > 255 or qdec > 255 or self._grow(count[0] + 1) < 0:
                return -1
            lv = &self.lv[count[0]]
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

    cdef int _canonical(self, const char *s, Py_ssize_t n, int64_t *ids, Py_ssize_t *nb,
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
        i = json_uint(s, n, i, &v)
        if i < 0:
            return -1
        ids[2] = v if v <= <int64_t>9223372036854 else <int64_t>0   # as parse_depth_event
        if _lit(s, n, &i, b',"T":', 5):
            i = json_uint(s, n, i, &v)
            if i < 0:
                return -1
        if not _lit(s, n, &i, b',"s":', 5):
            return -1
        i = _string(s, n, i)
        if i < 0 or not _lit(s, n, &i, b',"U":', 5):
            return -1
        i = json_uint(s, n, i, &ids[0])
        if i < 0 or not _lit(s, n, &i, b',"u":', 5):
            return -1
        i = json_uint(s, n, i, &ids[1])
        if i < 0:
            return -1
        if _lit(s, n, &i, b',"pu":', 6):
            i = json_uint(s, n, i, &ids[3])
            if i < 0:
                return -1
        if not _lit(s, n, &i, b',"b":[', 6) or self._compact_levels(s, n, &i, &count) < 0:
            return -1
        nb[0] = count
        if not _lit(s, n, &i, b',"a":[', 6) or self._compact_levels(s, n, &i, &count) < 0:
            return -1
        na[0] = count - nb[0]
        if not _lit(s, n, &i, b'}', 1) or (wrapped and not _lit(s, n, &i, b'}', 1)) or i != n:
            return -1
        ids[4] = 1
        return 0

    cdef int _frame(self, const char *s, Py_ssize_t n, int64_t *ids, Py_ssize_t *nb,
                    Py_ssize_t *na) noexcept nogil:
        """ids = [U, u, E, pu, (work)]; 0 when the frame is a plain depthUpdate (its levels in
        lv, bids then asks), -1 when declined."""
        cdef int64_t more[6]
        cdef Py_ssize_t pos = 0
        ids[0] = ids[1] = ids[3] = -1
        ids[2] = ids[4] = 0
        self.layout = 0
        if self._canonical(s, n, ids, nb, na) == 0:
            if ids[0] > ids[1]:
                return -1
            self.layout = 1
            return 0
        # any other layout: the general scanner (key order, blanks, extra keys)
        more[0] = more[1] = more[3] = -1
        more[2] = more[4] = more[5] = 0
        nb[0] = na[0] = -1
        if self._object(s, n, &pos, 0, more, nb, na) < 0:
            return -1
        if (_ws(s, n, pos) != n or not more[4] or more[0] < 0 or more[1] < 0 or more[0] > more[1]
                or nb[0] < 0 or na[0] < 0):
            return -1
        self.layout = 2
        ids[0] = more[0]
        ids[1] = more[1]
        ids[2] = more[2]
        ids[3] = more[3]
        return 0

    def scan(self, text):
        """Read a depthUpdate frame (str or bytes) without touching the book: (U, u, E, pu,
        n_bids, n_asks) with ``pu`` -1 when absent, its levels held for ``apply``; or None when
        the frame is not a shape this scanner reads (take the orjson path then: it accepts or
        rejects the frame and says why). Either way, the previous scan's levels are dropped."""
        cdef Py_ssize_t n, nb = 0, na = 0
        cdef const char *s
        cdef int64_t ids[5]
        self.pending = -1
        self.last_ids = None
        self.layout = 0
        s = _frame_text(text, &n)
        if s == NULL:
            return None
        if self._frame(s, n, ids, &nb, &na) < 0:
            return None
        self.pending = nb + na
        self.pending_bids = nb
        self.last_ids = (ids[0], ids[1], ids[2], ids[3], nb, na)
        return self.last_ids

    @property
    def ids(self):
        """The last ``scan``'s result: (U, u, E, pu, n_bids, n_asks), or None if it declined."""
        return self.last_ids

    def apply(self, bint pack=True):
        """Apply the levels of the last ``scan`` to the book, as ``OrderBook.apply`` does (and
        with ``pack``, return the same ring payload); ValueError when no scanned frame is
        pending (none yet, declined, or already applied). The caller sets ``update_id``."""
        cdef Py_ssize_t n = self.pending, nb = self.pending_bids
        cdef OrderBook book = self.book
        if n < 0:
            raise ValueError("no scanned frame to apply")
        self.pending = -1
        packed = pack_levels(self.lv, nb, n - nb) if pack else None
        if book.apply_levels(0, self.lv, nb) < 0 or book.apply_levels(1, self.lv + nb, n - nb) < 0:
            raise MemoryError()
        book.check_crossed()
        return packed

# Cython-level API of the order book (engine and feeds apply whole frames without Python objects).
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from cpython.object cimport PyObject

cdef enum:
    PRICE_CACHE_BITS = 7
    PRICE_CACHE = 128

cdef struct Level:
    int64_t key      # price * side sign: ascending in the array, best level at the end
    int64_t qty
    uint8_t pdec     # decimals of the price as received
    uint8_t qdec     # decimals of the quantity as received

cdef extern from *:
    """
    typedef __int128 obi_int128;
    """
    ctypedef long long obi_int128

@cython.final
cdef class BookSide:
    cdef Level *lv        # keys ascending, the best level at lv[n - 1] (always a live one)
    cdef Py_ssize_t n     # array length, tombstones included
    cdef Py_ssize_t live  # levels with a quantity: len(side)
    cdef Py_ssize_t dead  # tombstones (qty == 0): deep deletes that moved nothing
    cdef Py_ssize_t cap
    cdef int64_t sign
    cdef int digits       # decimals of the fixed-point prices
    cdef int qdigits      # decimals of the fixed-point quantities
    cdef public Py_ssize_t tomb_depth
    cdef PyObject *pcache_str[PRICE_CACHE]    # price strings handed out: owned references
    cdef int64_t pcache_key[PRICE_CACHE]
    cdef uint8_t pcache_dec[PRICE_CACHE]
    cdef int reserve(self, Py_ssize_t want) noexcept nogil
    cdef Py_ssize_t lower_bound(self, int64_t key) noexcept nogil
    cdef int set_level(self, int64_t price, int64_t qty, uint8_t pdec, uint8_t qdec) noexcept nogil
    cdef void compact(self) noexcept nogil
    cdef int load_sorted_best_first(self, const Level *src, Py_ssize_t n) noexcept nogil
    cdef void clear(self) noexcept nogil
    cdef int64_t best_price(self) noexcept nogil
    cdef Py_ssize_t live_at_or_below(self, Py_ssize_t j) noexcept nogil

cdef class OrderBook:
    cdef readonly BookSide bids
    cdef readonly BookSide asks
    cdef readonly int digits
    cdef readonly int qty_digits
    cdef public uint64_t update_id
    cdef public bint valid
    cdef readonly bint crossed
    cdef readonly uint64_t crossed_count
    cdef readonly uint64_t levels_applied
    cdef Level *scratch             # levels parsed by the list paths, applied after the whole call parsed
    cdef Py_ssize_t scratch_cap
    cdef readonly int shown_pdec    # the most decimals of the records applied since the last snapshot
    cdef readonly int shown_qdec
    # apply parsed levels (``key`` holding the price) to side 0 (bids) or 1 (asks): 0, or -1
    # when out of memory; ``levels_applied`` counts them. check_crossed() after a whole frame.
    cdef int apply_levels(self, int side, const Level *levels, Py_ssize_t n) noexcept nogil
    cdef void clear(self) noexcept nogil
    cdef void check_crossed(self) noexcept nogil
    cdef double obi_c(self, Py_ssize_t n) noexcept nogil
    cdef void _depth_sums(self, Py_ssize_t n, obi_int128 *b, obi_int128 *a) noexcept nogil
    cdef int32_t checksum_c(self, Py_ssize_t depth) noexcept nogil
    cdef Py_ssize_t top_into(self, int side, Py_ssize_t n, int64_t *prices, int64_t *qtys) noexcept nogil
    cdef Py_ssize_t _parse(self, object levels, Py_ssize_t offset) except -1
    cdef Py_ssize_t _parse_generic(self, object levels, Py_ssize_t offset) except -1
    cdef int _replace_side(self, BookSide side, Py_ssize_t off, Py_ssize_t n) except -1
    cdef int _apply_packed(self, object bids, object asks, int pdec, int qdec, bint snapshot) except -1
    cdef int _apply_packed_raw(self, const char *bp, Py_ssize_t blen, const char *ap, Py_ssize_t alen, int pdec, int qdec, bint snapshot) except -1
    # a BOOK_SNAPSHOT/BOOK_DELTA record's bytes, as apply_record: its recv ns, -1 (a delta to an
    # invalid book: not applied), or ValueError naming what is wrong (the book unchanged)
    cdef int64_t apply_raw(self, const char *p, Py_ssize_t n, bint snapshot) except? -2

# nb bids then na asks (``key`` holding the price) as a ring payload, as apply(..., pack=True)
# returns it: (packed int64 (price, qty) pairs, n_bids, n_asks, max price decimals, max qty decimals)
cdef tuple pack_levels(const Level *levels, Py_ssize_t nb, Py_ssize_t na)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: language = c++
"""Structure benchmark for the order book: the sorted-array book of obitui.core.book against
a std::map book, both fed the same pre-parsed int64 level stream without the GIL, and the cost
of a top-20 + OBI(20) view on each."""
from libc.stdint cimport int64_t, uint64_t
from libcpp.map cimport map as cmap
from cython.operator cimport dereference as deref, preincrement as inc

from obitui.core.book cimport OrderBook, Level
from obitui.core.shm cimport obi_monotonic_ns


cdef class MapBook:
    """Bids keyed by -price (so begin() is the best bid), asks by price."""
    cdef cmap[int64_t, int64_t] bids
    cdef cmap[int64_t, int64_t] asks

    cdef void set_level(self, int side, int64_t price, int64_t qty) noexcept nogil:
        if side == 0:
            if qty == 0:
                self.bids.erase(-price)
            else:
                self.bids[-price] = qty
        else:
            if qty == 0:
                self.asks.erase(price)
            else:
                self.asks[price] = qty

    def __len__(self) -> int:
        return self.bids.size() + self.asks.size()

    def top(self, int n) -> tuple:
        out_b, out_a = [], []
        it = self.bids.begin()
        while it != self.bids.end() and len(out_b) < n:
            out_b.append((-deref(it).first, deref(it).second))
            inc(it)
        it = self.asks.begin()
        while it != self.asks.end() and len(out_a) < n:
            out_a.append((deref(it).first, deref(it).second))
            inc(it)
        return out_b, out_a


def apply_stream_array(OrderBook book, const int64_t[::1] side, const int64_t[::1] price,
                       const int64_t[::1] qty) -> int:
    """Apply the stream level by level through the book's Cython entry point; ns elapsed."""
    cdef Level lv
    cdef Py_ssize_t i, n = side.shape[0]
    cdef uint64_t t0, t1
    lv.pdec = 8
    lv.qdec = 8
    with nogil:
        t0 = obi_monotonic_ns()
        for i in range(n):
            lv.key = price[i]
            lv.qty = qty[i]
            book.apply_levels(<int>side[i], &lv, 1)
        t1 = obi_monotonic_ns()
    return t1 - t0


def apply_stream_map(MapBook book, const int64_t[::1] side, const int64_t[::1] price,
                     const int64_t[::1] qty) -> int:
    cdef Py_ssize_t i, n = side.shape[0]
    cdef uint64_t t0, t1
    with nogil:
        t0 = obi_monotonic_ns()
        for i in range(n):
            book.set_level(<int>side[i], price[i], qty[i])
        t1 = obi_monotonic_ns()
    return t1 - t0


def top_obi_array(OrderBook book, int iterations, int depth) -> float:
    """ns per (top-``depth`` copy of both sides + OBI(``depth``))."""
    cdef int64_t bp[64]
    cdef int64_t bq[64]
    cdef int64_t ap[64]
    cdef int64_t aq[64]
    cdef int it
    cdef double acc = 0
    cdef uint64_t t0, t1
    depth = min(depth, 64)
    with nogil:
        t0 = obi_monotonic_ns()
        for it in range(iterations):
            book.top_into(0, depth, bp, bq)
            book.top_into(1, depth, ap, aq)
            acc += book.obi_c(depth) + <double>(bq[0] + aq[0])
        t1 = obi_monotonic_ns()
    if acc == 12345.678:  # keep the loop from being optimised away
        print(acc)
    return (t1 - t0) / <double>iterations


def top_obi_map(MapBook book, int iterations, int depth) -> float:
    cdef int64_t bp[64]
    cdef int64_t bq[64]
    cdef int64_t ap[64]
    cdef int64_t aq[64]
    cdef int it, k
    cdef double acc = 0
    cdef int64_t sb, sa
    cdef uint64_t t0, t1
    cdef cmap[int64_t, int64_t].iterator i
    depth = min(depth, 64)
    with nogil:
        t0 = obi_monotonic_ns()
        for it in range(iterations):
            sb = 0
            sa = 0
            i = book.bids.begin()
            k = 0
            while i != book.bids.end() and k < depth:
                bp[k] = -deref(i).first
                bq[k] = deref(i).second
                sb += bq[k]
                inc(i)
                k += 1
            i = book.asks.begin()
            k = 0
            while i != book.asks.end() and k < depth:
                ap[k] = deref(i).first
                aq[k] = deref(i).second
                sa += aq[k]
                inc(i)
                k += 1
            acc += (<double>(sb - sa) / <double>(sb + sa) if sb + sa else 0.0) + <double>(bq[0] + aq[0])
        t1 = obi_monotonic_ns()
    if acc == 12345.678:
        print(acc)
    return (t1 - t0) / <double>iterations

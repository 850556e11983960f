# cython: boundscheck=False, wraparound=False
"""The NATS publisher's book levels as JSON text in one call (docs/NATS.md, **contract**: each
price and quantity is the exact decimal string ``obitui.widgets.format.fmt_fixed`` writes, the
levels' text of ``obitui.headless.book_json``). The publisher writes ~40 levels a book, 300
books 8 times a second: one C loop here instead of 80 Python calls and 40 lists a book."""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from obitui.core.fixed cimport format_fixed_c

from obitui.widgets.format import fmt_fixed

cdef enum:
    CAP = 160             # one number's text: a sign, 19 integer digits, '.', at most 128 decimals


cdef inline bint _plain(int digits, int decimals) noexcept nogil:
    """``format_fixed`` takes these scales without raising for any int64 but INT64_MIN."""
    return 0 <= digits <= 18 and 0 <= decimals <= 128


cdef Py_ssize_t _number(char *out, object value, int digits, int decimals) except -2:
    """``"text"`` of one value at ``out`` (at most CAP + 2 bytes): its length. What
    ``fmt_fixed`` writes: ``decimals`` decimals, or all ``digits`` when fewer would cut a digit;
    anything unusual (a scale out of range, INT64_MIN) goes through ``fmt_fixed`` itself, its
    text or its error alike."""
    cdef int64_t v
    cdef Py_ssize_t n = -1, i
    cdef bytes text
    if type(value) is int and -0x7FFFFFFFFFFFFFFF <= value <= 0x7FFFFFFFFFFFFFFF and _plain(digits, decimals):
        v = value
        n = format_fixed_c(v, digits, decimals, out + 1, CAP)
        if n < 0:
            n = format_fixed_c(v, digits, digits, out + 1, CAP)
    if n < 0:
        text = fmt_fixed(value, digits, decimals).encode("ascii")
        n = len(text)
        if n > CAP:
            raise ValueError(f"a level of {n} characters")
        for i in range(n):
            out[1 + i] = text[i]
    out[0] = 34
    out[n + 1] = 34
    return n + 2


@cython.boundscheck(True)        # levels[i]: a list shortened under us is an IndexError, not a read past it
def levels_json(list levels, Py_ssize_t count, int digits, int decimals, int qdigits, int qdecimals) -> bytes:
    """The first ``count`` ``(price, qty)`` pairs of ``levels`` as the JSON text
    ``[["price","qty"],...]``: prices written by ``fmt_fixed(price, digits, decimals)``,
    quantities by ``fmt_fixed(qty, qdigits, qdecimals)``. A level that is not a pair is refused
    as the Python stand-in refuses it (TypeError, or ValueError for another length), never read
    past its end."""
    cdef Py_ssize_t n = min(count, len(levels)) if count > 0 else 0
    cdef Py_ssize_t size = 2 + n * (2 * (CAP + 2) + 4)
    cdef char *buf = <char *>malloc(size)
    cdef Py_ssize_t pos = 0, i
    cdef object pair, price, qty
    if buf == NULL:
        raise MemoryError()
    try:
        buf[pos] = 91                               # [
        pos += 1
        for i in range(n):
            pair = levels[i]
            price, qty = pair                       # checked unpacking: exactly two items
            if i:
                buf[pos] = 44                       # ,
                pos += 1
            buf[pos] = 91
            pos += 1
            pos += _number(buf + pos, price, digits, decimals)
            buf[pos] = 44
            pos += 1
            pos += _number(buf + pos, qty, qdigits, qdecimals)
            buf[pos] = 93                           # ]
            pos += 1
        buf[pos] = 93
        pos += 1
        return PyBytes_FromStringAndSize(buf, pos)
    finally:
        free(buf)

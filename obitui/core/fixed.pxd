# Exact decimal <-> int64 fixed point, callable without the GIL; and the word-at-a-time (SWAR)
# readers of decimal text that the book and the frame scanners share (inline in every module
# that cimports them).
cimport cython
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cdef enum FixedError:
    FIXED_OK = 0
    FIXED_EMPTY = 1
    FIXED_SIGN = 2
    FIXED_EXPONENT = 3
    FIXED_CHAR = 4
    FIXED_OVERFLOW = 5
    FIXED_PRECISION = 6
    FIXED_FORM = 7
    FIXED_TOO_LONG = 8
    FIXED_DIGITS = 9

cdef int parse_fixed_c(const char *s, Py_ssize_t n, int digits, bint allow_sign,
                       int64_t *out, int *decimals) noexcept nogil
cdef Py_ssize_t format_fixed_c(int64_t value, int digits, int decimals, char *out,
                               Py_ssize_t cap) noexcept nogil
cdef str fixed_error_message(int code, object text, int digits)
cdef object fixed_error(int code, object text, int digits, str prefix=*)

cdef extern from *:
    """
    #include <stdint.h>
    /* Compile-time byte order: the SWAR readers load eight bytes as one little-endian word. */
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define OBI_LITTLE_ENDIAN 1
    #else
    #define OBI_LITTLE_ENDIAN 0
    #endif
    /* acc * 10 + d > INT64_MAX, without a division per digit: acc >= LIM10 and (acc > LIM10 or d > LAST) */
    #define OBI_FIXED_LIM10 ((uint64_t)INT64_MAX / 10)
    #define OBI_FIXED_LIM_LAST ((uint64_t)INT64_MAX % 10)
    /* the largest acc for which acc * 10**8 + (eight digits) stays within int64 */
    #define OBI_FIXED_LIM_SWAR (((uint64_t)INT64_MAX - 99999999u) / 100000000u)
    static inline uint64_t obi_pow10(int k) {
        static const uint64_t t[19] = {
            1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
            100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
            10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
            100000000000000000ull, 1000000000000000000ull};
        return t[k];
    }
    """
    const bint OBI_LITTLE_ENDIAN
    const uint64_t OBI_FIXED_LIM10
    const uint64_t OBI_FIXED_LIM_LAST
    const uint64_t OBI_FIXED_LIM_SWAR
    uint64_t obi_pow10(int k) noexcept nogil      # 10**k, k in [0, 18]


cdef inline bint eight_digits(uint64_t w) noexcept nogil:
    """Eight ASCII digits in one word (SWAR)."""
    return ((w & <uint64_t>0xF0F0F0F0F0F0F0F0) == <uint64_t>0x3030303030303030 and
            ((w + <uint64_t>0x0606060606060606) & <uint64_t>0xF0F0F0F0F0F0F0F0) == <uint64_t>0x3030303030303030)


cdef inline uint64_t special_byte(uint64_t w) noexcept nogil:
    """Non-zero when a byte of ``w`` is '"', a backslash or below 0x20 (SWAR, any byte order)."""
    cdef uint64_t ones = <uint64_t>0x0101010101010101, high = <uint64_t>0x8080808080808080
    cdef uint64_t q = w ^ <uint64_t>0x2222222222222222, b = w ^ <uint64_t>0x5C5C5C5C5C5C5C5C
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - <uint64_t>0x2020202020202020) & ~w)) & high


cdef inline uint64_t eight_value(uint64_t w) noexcept nogil:
    """The value of eight ASCII digits loaded little-endian (the first digit in the low byte)."""
    w -= <uint64_t>0x3030303030303030
    w = (w * 10 + (w >> 8)) & <uint64_t>0x00FF00FF00FF00FF
    w = (w * 100 + (w >> 16)) & <uint64_t>0x0000FFFF0000FFFF
    return (w * 10000 + (w >> 32)) & <uint64_t>0xFFFFFFFF


@cython.cdivision(True)
cdef inline Py_ssize_t plain_fixed(const char *s, Py_ssize_t n, Py_ssize_t i, int digits,
                                   int64_t *out, int *decimals) noexcept nogil:
    """An unsigned decimal at s[i], by parse_fixed's rules (digits, '.', digits; zeros only
    beyond ``digits``; int64 range; at most 128 characters): the index after it, or -1 (then
    parse_fixed or the caller's slow path judges and names the error). ``digits`` must be in
    [0, 18]. Runs of eight kept decimals are read a word at a time."""
    cdef uint64_t acc = 0, d, w
    cdef int kept = 0
    cdef Py_ssize_t start = i, fstart
    while i < n and 48 <= s[i] <= 57:
        d = s[i] - 48
        if acc >= OBI_FIXED_LIM10 and (acc > OBI_FIXED_LIM10 or d > OBI_FIXED_LIM_LAST):
            return -1
        acc = acc * 10 + d
        i += 1
    if i == start:
        return -1
    fstart = i
    if i < n and s[i] == 46:                     # '.'
        i += 1
        fstart = i
        if OBI_LITTLE_ENDIAN:
            while kept + 8 <= digits and n - i >= 8 and acc <= OBI_FIXED_LIM_SWAR:
                memcpy(&w, s + i, 8)
                if not eight_digits(w):
                    break
                acc = acc * 100000000 + eight_value(w)
                kept += 8
                i += 8
        while i < n and 48 <= s[i] <= 57:
            d = s[i] - 48
            if kept < digits:
                if acc >= OBI_FIXED_LIM10 and (acc > OBI_FIXED_LIM10 or d > OBI_FIXED_LIM_LAST):
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
        d = obi_pow10(digits - kept)
        if acc > <uint64_t>0x7FFFFFFFFFFFFFFF // d:
            return -1
        acc *= d
    out[0] = <int64_t>acc
    decimals[0] = <int>(i - fstart)
    return i


cdef inline Py_ssize_t quoted_fixed(const char *s, Py_ssize_t n, Py_ssize_t i, int digits,
                                    int64_t *out, int *decimals) noexcept nogil:
    """s[i] opens a JSON string holding an unsigned decimal (``plain_fixed``), parsed in the
    same pass as the scan: the index after the closing quote, or -1."""
    if i >= n or s[i] != 34:
        return -1
    i = plain_fixed(s, n, i + 1, digits, out, decimals)
    if i < 0 or i >= n or s[i] != 34:
        return -1
    return i + 1


cdef inline Py_ssize_t json_uint(const char *s, Py_ssize_t n, Py_ssize_t i, int64_t *out) noexcept nogil:
    """A JSON non-negative integer of at most 18 digits at s[i] (no leading zero, not a
    float): the index after it, or -1."""
    cdef int64_t v = 0
    cdef Py_ssize_t j = i
    cdef uint64_t w
    if OBI_LITTLE_ENDIAN and n - i >= 8:
        memcpy(&w, s + i, 8)
        if eight_digits(w):
            v = <int64_t>eight_value(w)
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

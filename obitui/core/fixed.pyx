# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Exact decimal strings <-> int64 fixed point.

``parse_fixed("27000.01000000", 8) == 2700001000000``. No float is ever involved. The number of
decimals as written is kept by callers (``parse_fixed_decimals``) so that ``format_fixed``
rebuilds the exchange's original string exactly, as checksums over the received strings need.
The word-at-a-time readers of decimal text (``plain_fixed`` and its kin) are inline in fixed.pxd.
"""
from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from libc.string cimport memcpy, memset

cdef enum:
    C_MAX_TEXT = 128

MAX_DIGITS = 18
MAX_TEXT = C_MAX_TEXT


cdef int parse_fixed_c(const char *s, Py_ssize_t n, int digits, bint allow_sign,
                       int64_t *out, int *decimals) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef uint64_t acc = 0
    cdef uint64_t limit = <uint64_t>INT64_MAX
    cdef int int_digits = 0, frac_digits = 0, kept = 0
    cdef unsigned char c
    cdef uint64_t d
    if digits < 0 or digits > 18:
        return FIXED_DIGITS
    if n == 0:
        return FIXED_EMPTY
    if n > C_MAX_TEXT:
        return FIXED_TOO_LONG
    c = s[0]
    if c == c'-' or c == c'+':
        if not allow_sign:
            return FIXED_SIGN
        neg = c == c'-'
        i = 1
        if i == n:
            return FIXED_FORM
    # integer part
    while i < n:
        c = s[i]
        if c >= c'0' and c <= c'9':
            d = c - c'0'
            if acc >= OBI_FIXED_LIM10 and (acc > OBI_FIXED_LIM10 or d > OBI_FIXED_LIM_LAST):
                return FIXED_OVERFLOW
            acc = acc * 10 + d
            int_digits += 1
            i += 1
        else:
            break
    if i < n:
        c = s[i]
        if c == c'.':
            i += 1
            if int_digits == 0 or i == n:
                return FIXED_FORM        # ".5" and "5." are not exchange numbers
            while i < n:
                c = s[i]
                if c < c'0' or c > c'9':
                    break
                d = c - c'0'
                if frac_digits < digits:
                    if acc >= OBI_FIXED_LIM10 and (acc > OBI_FIXED_LIM10 or d > OBI_FIXED_LIM_LAST):
                        return FIXED_OVERFLOW
                    acc = acc * 10 + d
                    kept += 1
                elif d != 0:
                    return FIXED_PRECISION
                frac_digits += 1
                i += 1
            if i < n:
                c = s[i]
        if i < n:
            if c == c'e' or c == c'E':
                return FIXED_EXPONENT
            if c == c'-' or c == c'+':
                return FIXED_SIGN
            if c == c'.':
                return FIXED_FORM
            return FIXED_CHAR
    if int_digits == 0:
        return FIXED_FORM
    # scale up to `digits` fractional digits
    if kept < digits:
        d = obi_pow10(digits - kept)
        if acc > limit // d:
            return FIXED_OVERFLOW
        acc *= d
    out[0] = -<int64_t>acc if neg else <int64_t>acc
    decimals[0] = frac_digits
    return FIXED_OK


cdef char[200] DIGIT_PAIRS
for _i in range(100):
    DIGIT_PAIRS[2 * _i] = 48 + _i // 10
    DIGIT_PAIRS[2 * _i + 1] = 48 + _i % 10


cdef inline uint64_t _eight_ascii(uint64_t x) noexcept nogil:
    """The eight ASCII digits of x < 10**8, zero-padded, as one little-endian word (the first
    digit in the low byte): split into 4+4, 2+2+2+2, then 1+1 per byte with multiplications."""
    cdef uint64_t v, hi
    v = (x // 10000) | ((x % 10000) << 32)
    hi = ((v * 5243) >> 19) & <uint64_t>0x0000007F0000007F           # lane / 100
    v = hi | ((v - hi * 100) << 16)
    hi = ((v * 103) >> 10) & <uint64_t>0x000F000F000F000F            # lane / 10
    v = hi | ((v - hi * 10) << 8)
    return v | <uint64_t>0x3030303030303030


cdef Py_ssize_t format_fixed_c(int64_t value, int digits, int decimals, char *out,
                               Py_ssize_t cap) noexcept nogil:
    """Write the decimal text of ``value`` (``digits`` fractional digits) with exactly
    ``decimals`` decimals; -1 if non-zero digits would be cut or ``cap`` is too small.
    (Divisions by constants only, two digits a step: the book rebuilds the exchange's strings
    with this for every level it shows and for every checksum.)"""
    cdef uint64_t mag, ip, fp, q
    cdef bint neg = value < 0
    cdef char fbuf[24]
    cdef int k, j, shown, nd
    cdef Py_ssize_t n = 0
    if digits < 0 or digits > 18 or decimals < 0:
        return -1
    mag = (<uint64_t>0 - <uint64_t>value) if neg else <uint64_t>value
    if digits == 8:
        ip = mag // 100000000
        fp = mag % 100000000
    else:
        ip = mag // obi_pow10(digits)
        fp = mag % obi_pow10(digits)
    # all ``digits`` fractional digits, zero-padded, into fbuf[0:digits]
    j = digits
    if digits == 8 and OBI_LITTLE_ENDIAN:
        q = _eight_ascii(fp)
        memcpy(fbuf, &q, 8)
        j = 0
    while j >= 2:
        q = fp // 100
        memcpy(fbuf + j - 2, &DIGIT_PAIRS[2 * (fp - q * 100)], 2)
        fp = q
        j -= 2
    if j == 1:
        fbuf[0] = <char>(48 + fp)
    shown = decimals if decimals < digits else digits
    for j in range(shown, digits):             # digits that the decimals would cut must be 0
        if fbuf[j] != 48:
            return -1
    # integer part: its length first, then written in place from its last digit
    nd = 1
    while nd < 19 and ip >= obi_pow10(nd):
        nd += 1
    if neg + nd + (1 + decimals if decimals else 0) > cap:
        return -1
    if neg:
        out[0] = c'-'
        n = 1
    n += nd
    k = <int>n
    while ip >= 100:
        q = ip // 100
        k -= 2
        memcpy(out + k, &DIGIT_PAIRS[2 * (ip - q * 100)], 2)
        ip = q
    if ip >= 10:
        memcpy(out + k - 2, &DIGIT_PAIRS[2 * ip], 2)
    else:
        out[k - 1] = <char>(48 + ip)
    if decimals == 0:
        return n
    out[n] = c'.'
    n += 1
    if shown == 8:
        memcpy(out + n, fbuf, 8)
    else:
        for j in range(shown):
            out[n + j] = fbuf[j]
    n += shown
    for j in range(decimals - shown):
        out[n + j] = c'0'
    return n + decimals - shown


class FixedRangeError(ValueError):
    """A well-formed decimal that does not fit the fixed-point scale: beyond int64 at these
    decimals, or non-zero digits beyond them. The scale (per symbol, from the venue's tick and
    step sizes) is wrong for it, or the value is absurd: never wrapped, never rounded."""


cdef object fixed_error(int code, object text, int digits, str prefix=""):
    """The exception for a parse_fixed_c error code: FixedRangeError for a value that does not
    fit the scale, ValueError for anything that is not a decimal."""
    msg = prefix + fixed_error_message(code, text, digits)
    if code == FIXED_OVERFLOW or code == FIXED_PRECISION:
        return FixedRangeError(msg)
    return ValueError(msg)


cdef str fixed_error_message(int code, object text, int digits):
    why = {
        FIXED_EMPTY: "empty string",
        FIXED_SIGN: "sign not allowed here",
        FIXED_EXPONENT: "exponent notation not allowed",
        FIXED_CHAR: "not a decimal number",
        FIXED_OVERFLOW: "too large for int64 fixed point",
        FIXED_PRECISION: f"non-zero digits beyond {digits} decimals",
        FIXED_FORM: "malformed decimal",
        FIXED_TOO_LONG: f"longer than {MAX_TEXT} characters",
        FIXED_DIGITS: f"digits must be in [0, {MAX_DIGITS}], got {digits}",
    }.get(code, f"error {code}")
    return f"invalid fixed-point number {text!r}: {why}"


cdef inline bytes _as_bytes(object text):
    if isinstance(text, bytes):
        return <bytes>text
    if isinstance(text, str):
        try:
            return (<str>text).encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"invalid fixed-point number {text!r}: not a decimal number") from None
    if isinstance(text, (bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"parse_fixed needs str or bytes, not {type(text).__name__}")


def parse_fixed_decimals(text, int digits=8, *, bint signed=False) -> tuple:
    """Return (value, decimals as written) of a decimal string; ValueError naming the input."""
    cdef bytes b = _as_bytes(text)
    cdef int64_t value = 0
    cdef int decimals = 0
    cdef int rc = parse_fixed_c(b, len(b), digits, signed, &value, &decimals)
    if rc != FIXED_OK:
        raise fixed_error(rc, text, digits)
    return value, decimals


def parse_fixed(text, int digits=8, *, bint signed=False) -> int:
    """Parse a decimal string exactly into an int with ``digits`` fractional digits.

    Rejects (ValueError naming the input): empty strings, a sign unless ``signed``, exponents,
    anything but ``digits[.digits]``; and (FixedRangeError, a ValueError) values beyond int64
    and non-zero digits beyond ``digits`` (trailing zeros beyond are fine).
    """
    cdef bytes b = _as_bytes(text)
    cdef int64_t value = 0
    cdef int decimals = 0
    cdef int rc = parse_fixed_c(b, len(b), digits, signed, &value, &decimals)
    if rc != FIXED_OK:
        raise fixed_error(rc, text, digits)
    return value


def format_fixed(value, int digits, int decimals) -> str:
    """Format an int of ``digits`` fractional digits with exactly ``decimals`` decimals.

    ``format_fixed(50000000, 8, 4) == "0.5000"``. ValueError if that would drop non-zero
    digits or the value is outside int64.
    """
    if not isinstance(value, int):
        raise TypeError(f"format_fixed needs an int value, not {type(value).__name__}")
    if value > INT64_MAX or value < -INT64_MAX:
        raise ValueError(f"format_fixed: value {value} outside int64")
    if digits < 0 or digits > MAX_DIGITS:
        raise ValueError(f"format_fixed: digits must be in [0, {MAX_DIGITS}], got {digits}")
    if decimals < 0 or decimals > MAX_TEXT:
        raise ValueError(f"format_fixed: decimals must be in [0, {MAX_TEXT}], got {decimals}")
    cdef char buf[256]
    cdef Py_ssize_t n = format_fixed_c(<int64_t>value, digits, decimals, buf, 256)
    if n < 0:
        raise ValueError(
            f"format_fixed: {value} with {digits} digits has non-zero digits beyond "
            f"{decimals} decimals")
    return buf[:n].decode("ascii")


def decimals_of(text) -> int:
    """Number of decimals as written (``"0.5000"`` -> 4); ValueError if not a valid number."""
    cdef bytes b = _as_bytes(text)
    dot = b.find(b".")
    digits = 0 if dot < 0 else min(MAX_DIGITS, len(b) - dot - 1)
    return parse_fixed_decimals(b, digits, signed=True)[1]

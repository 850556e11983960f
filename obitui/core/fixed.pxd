# Exact decimal <-> int64 fixed point, callable without the GIL.
from libc.stdint cimport int64_t

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

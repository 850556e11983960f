# cython: language_level=3
"""POSIX shared-memory segments in /dev/shm, opened and mapped directly.

Not ``multiprocessing.shared_memory``: in Python 3.11 its resource tracker unlinks a segment
when any attaching process exits. Segments are created 0600 with O_EXCL|O_NOFOLLOW, and an
attach refuses symlinks, non-regular files, files of another user and group/world access.
"""
import os
import re
import stat as _stat

from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

# OBITUI_SHM_DIR: another tmpfs directory (hosts whose shared memory is mounted elsewhere; tests)
SHM_DIR = os.environ.get("OBITUI_SHM_DIR") or "/dev/shm"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}\Z")


class ShmError(OSError):
    """A shared-memory segment could not be created, attached or used."""


def shm_path(name: str) -> str:
    """Return the /dev/shm path of segment ``name`` (a leading '/' is allowed, as in shm_open)."""
    if not isinstance(name, str):
        raise ShmError(f"segment name must be a str, not {type(name).__name__}")
    bare = name[1:] if name.startswith("/") else name
    if not _NAME_RE.match(bare) or bare in (".", ".."):
        raise ShmError(f"invalid segment name {name!r}: use 1-200 of [A-Za-z0-9._-]")
    return os.path.join(SHM_DIR, bare)


def segment_owner(name: str) -> tuple[int, int]:
    """Return (uid, size) of an existing segment without following symlinks."""
    st = os.lstat(shm_path(name))
    return st.st_uid, st.st_size


from obitui.core.shm cimport (
    obi_load_acquire_u64, obi_load_relaxed_u64, obi_store_release_u64, obi_store_relaxed_u64,
    obi_fence_seq_cst, obi_load_acquire_u32, obi_store_release_u32,
)
from libc.stdint cimport uint32_t

cdef extern from *:
    """
    static inline uint32_t __atomic_add_fetch_u32(uint32_t *p, uint32_t v) {
        return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
    }
    """
    uint32_t __atomic_add_fetch_u32(uint32_t *p, uint32_t v) nogil

cdef extern from *:
    """
    static inline int obi_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    """
    int obi_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) nogil


cdef class Segment:
    """One mapped segment. ``created`` is True on the side that made (and should unlink) it."""

    def __cinit__(self):
        self.base = NULL
        self.size = 0

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL

    cdef void _map(self, int fd, size_t size) except *:
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise ShmError(f"mmap of {self.path} ({size} bytes) failed")
        self.base = <char *>p
        self.size = size

    @staticmethod
    def create(str name, size_t size):
        """Create and map a new zero-filled segment; fails if the name exists."""
        cdef Segment seg = Segment.__new__(Segment)
        seg.name = name
        seg.path = shm_path(name)
        seg.created = True
        if size == 0:
            raise ShmError("segment size must be > 0")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(seg.path, flags, 0o600)
        except FileExistsError:
            raise ShmError(f"segment {seg.path} already exists") from None
        except OSError as exc:
            raise ShmError(f"cannot create segment {seg.path}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            # Reserve the pages now: a full /dev/shm fails here with ENOSPC instead of a
            # SIGBUS at the first write into a sparse file.
            os.posix_fallocate(fd, 0, size)
            seg._map(fd, size)
        except OSError as exc:
            os.close(fd)
            os.unlink(seg.path)
            raise ShmError(f"cannot size segment {seg.path} to {size} bytes: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            os.unlink(seg.path)
            raise
        os.close(fd)
        return seg

    @staticmethod
    def attach(str name, size_t min_size=1):
        """Map an existing segment after checking it is ours, private and large enough."""
        cdef Segment seg = Segment.__new__(Segment)
        seg.name = name
        seg.path = shm_path(name)
        seg.created = False
        try:
            fd = os.open(seg.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ShmError(f"segment {seg.path} does not exist") from None
        except OSError as exc:
            if os.path.islink(seg.path):
                raise ShmError(f"segment {seg.path} is a symlink: refused") from None
            raise ShmError(f"cannot open segment {seg.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode):
                raise ShmError(f"segment {seg.path} is not a regular file: refused")
            if st.st_uid != os.geteuid():
                raise ShmError(
                    f"segment {seg.path} is owned by uid {st.st_uid}, not by this user "
                    f"(uid {os.geteuid()}): refused")
            if st.st_mode & 0o077:
                raise ShmError(
                    f"segment {seg.path} has mode {st.st_mode & 0o777:o}, expected 600: refused")
            if <size_t>st.st_size < min_size:
                raise ShmError(
                    f"segment {seg.path} is {st.st_size} bytes, smaller than its header "
                    f"({min_size} bytes): refused")
            seg._map(fd, st.st_size)
        finally:
            os.close(fd)
        return seg

    def view(self) -> memoryview:
        """A writable memoryview of the whole mapping (valid until close)."""
        if self.base == NULL:
            raise ShmError(f"segment {self.path} is closed")
        return PyMemoryView_FromMemory(self.base, self.size, PyBUF_WRITE)

    cdef inline int _check(self, size_t offset, size_t n) except -1:
        if self.base == NULL:
            raise ShmError(f"segment {self.path} is closed")
        if offset + n > self.size or offset & 7:
            raise ShmError(f"access of {n} bytes at offset {offset} outside {self.path} "
                           f"({self.size} bytes) or misaligned")
        return 0

    def load_u64(self, size_t offset) -> int:
        """Acquire-load of the u64 at ``offset`` (a word another process writes)."""
        self._check(offset, 8)
        return obi_load_acquire_u64(<uint64_t *>(self.base + offset))

    def store_u64(self, size_t offset, uint64_t value) -> None:
        """Release-store of the u64 at ``offset``."""
        self._check(offset, 8)
        obi_store_release_u64(<uint64_t *>(self.base + offset), value)

    def write_begin(self, size_t offset) -> None:
        """Seqlock writer: make the sequence word at ``offset`` odd before changing the slot."""
        self._check(offset, 8)
        cdef uint64_t *seq = <uint64_t *>(self.base + offset)
        obi_store_relaxed_u64(seq, obi_load_relaxed_u64(seq) | 1)
        obi_fence_seq_cst()   # the odd sequence is visible before any field changes

    def write_end(self, size_t offset) -> None:
        """Seqlock writer: publish the slot (sequence even and larger)."""
        self._check(offset, 8)
        cdef uint64_t *seq = <uint64_t *>(self.base + offset)
        obi_store_release_u64(seq, (obi_load_relaxed_u64(seq) | 1) + 1)

    def read_consistent(self, size_t offset, size_t size, int retries=1000):
        """Seqlock reader: a copy of ``size`` bytes at ``offset`` (which starts with the
        sequence word) taken while no write was in progress; None if the writer was always
        mid-write. Never blocks the writer."""
        self._check(offset, size)
        cdef uint64_t *seq = <uint64_t *>(self.base + offset)
        cdef uint64_t s1, s2
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef char *dst = out
        cdef int i
        for i in range(retries):
            s1 = obi_load_acquire_u64(seq)
            if s1 & 1:
                continue
            memcpy(dst, self.base + offset, size)
            obi_fence_seq_cst()   # the copy completes before the sequence is read again
            s2 = obi_load_relaxed_u64(seq)
            if s1 == s2:
                return out
        return None

    def futex_wait(self, size_t offset, unsigned int expected, double timeout_s) -> None:
        """Sleep until the u32 at ``offset`` is woken or changes from ``expected``, or
        ``timeout_s`` passes (shared futex: works across processes on MAP_SHARED memory)."""
        self._check(offset & ~(<size_t>7), 8)
        cdef timespec ts
        ts.tv_sec = <long>timeout_s
        ts.tv_nsec = <long>((timeout_s - <long>timeout_s) * 1e9)
        cdef unsigned int *addr = <unsigned int *>(self.base + offset)
        with nogil:
            syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, NULL, 0)

    def futex_wake(self, size_t offset, int n=1) -> None:
        """Wake up to ``n`` waiters of the futex word at ``offset``."""
        self._check(offset & ~(<size_t>7), 8)
        cdef unsigned int *addr = <unsigned int *>(self.base + offset)
        syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0)

    def wake_if_sleeping(self, size_t sleeping_offset, size_t wake_offset) -> bool:
        """Producer side of the block wait strategy, called after a push: a full fence (the
        push's tail store is visible before the flag is read), then, only if the consumer
        flagged that it sleeps, bump the wake word and wake it. The busy path is one fence
        and one load, no syscall."""
        self._check(sleeping_offset & ~(<size_t>7), 8)
        self._check(wake_offset & ~(<size_t>7), 8)
        obi_fence_seq_cst()
        if obi_load_acquire_u32(<uint32_t *>(self.base + sleeping_offset)) == 0:
            return False
        __atomic_add_fetch_u32(<uint32_t *>(self.base + wake_offset), 1)
        syscall(SYS_futex, <uint32_t *>(self.base + wake_offset), FUTEX_WAKE, 1, NULL, NULL, 0)
        return True

    def load_u32(self, size_t offset) -> int:
        self._check(offset & ~(<size_t>7), 8)
        return obi_load_acquire_u32(<uint32_t *>(self.base + offset))

    def store_u32(self, size_t offset, uint32_t value) -> None:
        self._check(offset & ~(<size_t>7), 8)
        obi_store_release_u32(<uint32_t *>(self.base + offset), value)
        obi_fence_seq_cst()

    def add_u32(self, size_t offset, uint32_t value) -> int:
        """Atomic fetch-add on the u32 at ``offset``; returns the new value."""
        self._check(offset & ~(<size_t>7), 8)
        return __atomic_add_fetch_u32(<uint32_t *>(self.base + offset), value)

    def cas_u64(self, size_t offset, uint64_t expected, uint64_t desired) -> bool:
        """Atomic compare-and-swap of the u64 at ``offset``: True when it held ``expected``
        and now holds ``desired`` (a word several processes update)."""
        self._check(offset, 8)
        return obi_cas_u64(<uint64_t *>(self.base + offset), expected, desired) != 0

    def close(self) -> None:
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL

    @property
    def closed(self) -> bool:
        return self.base == NULL

    @staticmethod
    def unlink(str name) -> bool:
        """Remove a segment by name; False if it was already gone."""
        try:
            os.unlink(shm_path(name))
        except FileNotFoundError:
            return False
        return True


# ---------------------------------------------------------------- record layouts
cdef extern from *:
    """
    static const obi_field obi_rec_header_fields[] = {
        OBI_FIELD(obi_rec_header, length), OBI_FIELD(obi_rec_header, type),
        OBI_FIELD(obi_rec_header, flags), OBI_FIELD(obi_rec_header, seq), {0},
    };
    static const obi_field obi_book_header_fields[] = {
        OBI_FIELD(obi_book_header, book_id), OBI_FIELD(obi_book_header, pdec),
        OBI_FIELD(obi_book_header, qdec), OBI_FIELD(obi_book_header, n_bids),
        OBI_FIELD(obi_book_header, n_asks), OBI_FIELD(obi_book_header, reserved),
        OBI_FIELD(obi_book_header, exch_ns), OBI_FIELD(obi_book_header, recv_ns),
        OBI_FIELD(obi_book_header, first_id), OBI_FIELD(obi_book_header, last_id), {0},
    };
    static const obi_field obi_trade_record_fields[] = {
        OBI_FIELD(obi_trade_record, book_id), OBI_FIELD(obi_trade_record, side),
        OBI_FIELD(obi_trade_record, flags), OBI_FIELD(obi_trade_record, reserved),
        OBI_FIELD(obi_trade_record, exch_ns), OBI_FIELD(obi_trade_record, recv_ns),
        OBI_FIELD(obi_trade_record, trade_id), OBI_FIELD(obi_trade_record, price),
        OBI_FIELD(obi_trade_record, qty), {0},
    };
    static const obi_field obi_ticker_record_fields[] = {
        OBI_FIELD(obi_ticker_record, book_id), OBI_FIELD(obi_ticker_record, flags),
        OBI_FIELD(obi_ticker_record, reserved), OBI_FIELD(obi_ticker_record, exch_ns),
        OBI_FIELD(obi_ticker_record, recv_ns), OBI_FIELD(obi_ticker_record, last),
        OBI_FIELD(obi_ticker_record, bid), OBI_FIELD(obi_ticker_record, bid_qty),
        OBI_FIELD(obi_ticker_record, ask), OBI_FIELD(obi_ticker_record, ask_qty), {0},
    };
    static const obi_field obi_day_record_fields[] = {
        OBI_FIELD(obi_day_record, book_id), OBI_FIELD(obi_day_record, flags),
        OBI_FIELD(obi_day_record, reserved), OBI_FIELD(obi_day_record, exch_ns),
        OBI_FIELD(obi_day_record, open), OBI_FIELD(obi_day_record, high),
        OBI_FIELD(obi_day_record, low), OBI_FIELD(obi_day_record, volume), {0},
    };
    static const obi_field obi_invalid_header_fields[] = {
        OBI_FIELD(obi_invalid_header, book_id), OBI_FIELD(obi_invalid_header, flags),
        OBI_FIELD(obi_invalid_header, reserved), OBI_FIELD(obi_invalid_header, ts_ns), {0},
    };
    """
    const obi_field obi_rec_header_fields[]
    const obi_field obi_book_header_fields[]
    const obi_field obi_trade_record_fields[]
    const obi_field obi_ticker_record_fields[]
    const obi_field obi_day_record_fields[]
    const obi_field obi_invalid_header_fields[]

# struct module codes of the C integer fields, by (size, signed)
_CODES = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
          (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


cdef tuple _layout(size_t size, const obi_field *fields):
    """(size, fields) of a C layout; ``fields`` ends with an entry without a name."""
    out = []
    while fields.name != NULL:
        out.append((fields.name.decode("ascii"), fields.offset,
                    _CODES[fields.size, bool(fields.is_signed)]))
        fields += 1
    return size, out


# The C layouts of shm.h as (size, [(field, offset, struct code), ...]) in field order, from
# sizeof/offsetof and the C field types: records.py builds its struct formats from these.
RECORD_LAYOUTS = {
    "ring_record": _layout(sizeof(obi_rec_header), obi_rec_header_fields),
    "book": _layout(sizeof(obi_book_header), obi_book_header_fields),
    "trade": _layout(sizeof(obi_trade_record), obi_trade_record_fields),
    "ticker": _layout(sizeof(obi_ticker_record), obi_ticker_record_fields),
    "day": _layout(sizeof(obi_day_record), obi_day_record_fields),
    "invalid": _layout(sizeof(obi_invalid_header), obi_invalid_header_fields),
}

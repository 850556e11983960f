# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Lock-free single-producer/single-consumer ring of variable-length records in /dev/shm.

Layout and memory orders: shm.h. Records are 8-byte aligned: a 16-byte header
{u32 length, u16 type, u16 flags, u64 seq} and the payload. A record that would cross the
end of the buffer is preceded by a PADDING record that fills the rest of it. The producer
owns ``tail``, the consumer ``head``; each caches the other's index and re-reads it only when
the ring looks full (producer) or empty (consumer). A full ring never overwrites unread data:
the push fails and the drop is counted. Every push attempt takes the next ``seq``, so a
consumer sees a gap in ``seq`` where records were dropped.
"""
import contextlib
import os

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport (
    PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact,
)
from libc.string cimport memcpy
from libc.stdint cimport uint16_t, uint32_t, uint64_t, int64_t
from obitui.core.shm cimport (
    Segment, obi_ring_header, obi_rec_header, OBI_RING_HEADER_SIZE, OBI_RING_VERSION,
    OBI_RING_MAGIC, OBI_REC_HDR, OBI_REC_PADDING, obi_load_acquire_u64, obi_load_relaxed_u64,
    obi_store_release_u64, obi_store_relaxed_u64, obi_monotonic_ns, obi_realtime_ns,
    obi_load_acquire_u32, obi_store_release_u32, obi_fence_seq_cst, FUTEX_WAIT, SYS_futex, timespec,
    syscall,
)
from obitui.core.shm import ShmError

HEADER_SIZE = OBI_RING_HEADER_SIZE
RECORD_HEADER_SIZE = OBI_REC_HDR
PADDING_KIND = OBI_REC_PADDING
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 40


class RingError(ShmError):
    """The ring cannot be created/attached, or its shared memory holds something invalid."""


@contextlib.contextmanager
def owned_ring(str name, uint64_t capacity):
    """Create a ring and guarantee its segment is unlinked when the block exits, however."""
    ring = Ring.create(name, capacity)
    try:
        yield ring
    finally:
        ring.close()
        Ring.unlink(name)


def sleep_until_records(Segment seg, size_t sleeping_offset, size_t wake_offset, list rings,
                        double timeout_s) -> bool:
    """The consumer's side of the block wait strategy, in one call: flag that the consumer
    sleeps (the u32 at ``sleeping_offset``), read the wake word (``wake_offset``), and, unless
    a ring of ``rings`` already holds records (a push that raced the flag), wait on the wake
    word until a producer bumps it (``Segment.wake_if_sleeping``) or ``timeout_s`` passes;
    then clear the flag. Returns True when records were there before sleeping (no sleep). A
    ring found corrupt is never read again, so its bytes do not count as records.
    The flag store and the rings' tail loads are ordered by a full fence, as the producer's
    tail store and flag load are: one of the two sides always sees the other."""
    return sleep_on(seg, sleeping_offset, wake_offset, rings, timeout_s)


cdef bint sleep_on(Segment seg, size_t sleeping_offset, size_t wake_offset, list rings,
                   double timeout_s) except -1:
    seg._check(sleeping_offset & ~(<size_t>7), 8)
    seg._check(wake_offset & ~(<size_t>7), 8)
    cdef uint32_t *sleeping = <uint32_t *>(seg.base + sleeping_offset)
    cdef uint32_t *wake = <uint32_t *>(seg.base + wake_offset)
    cdef Ring r
    cdef timespec ts
    cdef uint32_t word
    cdef bint ready = False
    obi_store_release_u32(sleeping, 1)
    obi_fence_seq_cst()
    word = obi_load_acquire_u32(wake)
    for r in rings:
        if (r.hdr != NULL and r.corrupt_reason is None
                and obi_load_acquire_u64(&r.hdr.tail) != obi_load_acquire_u64(&r.hdr.head)):
            ready = True
            break
    if not ready:
        ts.tv_sec = <long>timeout_s
        ts.tv_nsec = <long>((timeout_s - <long>timeout_s) * 1e9)
        with nogil:
            syscall(SYS_futex, wake, FUTEX_WAIT, word, &ts, NULL, 0)
    obi_store_release_u32(sleeping, 0)
    obi_fence_seq_cst()
    return ready


cdef inline uint64_t align8(uint64_t n) noexcept nogil:
    return (n + 7) & ~(<uint64_t>7)


cdef class Ring:
    """Use ``Ring.create`` (producer) or ``Ring.attach`` (consumer or monitor)."""

    def __cinit__(self):
        self.hdr = NULL
        self.data = NULL
        self.corrupt_reason = None

    @staticmethod
    def create(str name, uint64_t capacity):
        """Create segment ``name`` holding a ring of ``capacity`` bytes (a power of two) and
        return its producer side."""
        if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or (capacity & (capacity - 1)):
            raise RingError(
                f"ring capacity must be a power of two in [{MIN_CAPACITY}, 2**40], got {capacity}")
        cdef Ring r = Ring.__new__(Ring)
        try:
            r.seg = Segment.create(name, OBI_RING_HEADER_SIZE + capacity)
        except RingError:
            raise
        except ShmError as exc:
            raise RingError(str(exc)) from None
        cdef obi_ring_header *h = <obi_ring_header *>r.seg.base
        h.version = OBI_RING_VERSION
        h.header_size = OBI_RING_HEADER_SIZE
        h.total_size = OBI_RING_HEADER_SIZE + capacity
        h.capacity = capacity
        h.creator_pid = os.getpid()
        h.created_ns = obi_realtime_ns()
        h.creator_uid = os.geteuid()
        h.producer_pid = os.getpid()
        h.producer_heartbeat_ns = obi_monotonic_ns()
        # The magic goes last, with release order: whoever reads it sees a complete header.
        obi_store_release_u64(&h.magic, OBI_RING_MAGIC)
        r._bind(ROLE_PRODUCER)
        return r

    @staticmethod
    def attach(str name, str role="consumer"):
        """Attach to an existing ring. ``role``: "consumer" (default, the one reader),
        "producer" (a restarted writer continuing the ring) or "monitor" (counters only)."""
        cdef RingRole want
        if role == "consumer":
            want = ROLE_CONSUMER
        elif role == "producer":
            want = ROLE_PRODUCER
        elif role == "monitor":
            want = ROLE_MONITOR
        else:
            raise ValueError(f"role must be consumer, producer or monitor, not {role!r}")
        cdef Ring r = Ring.__new__(Ring)
        try:
            r.seg = Segment.attach(name, OBI_RING_HEADER_SIZE)
        except RingError:
            raise
        except ShmError as exc:
            raise RingError(str(exc)) from None
        try:
            r._validate_header()
        except BaseException:
            r.seg.close()
            raise
        r._bind(want)
        if want == ROLE_CONSUMER:
            r.hdr.consumer_pid = os.getpid()
            r.hdr.consumer_heartbeat_ns = obi_monotonic_ns()
        elif want == ROLE_PRODUCER:
            r.hdr.producer_pid = os.getpid()
            r.hdr.producer_heartbeat_ns = obi_monotonic_ns()
        return r

    def _validate_header(self) -> None:
        cdef obi_ring_header *h = <obi_ring_header *>self.seg.base
        path = self.seg.path
        cdef uint64_t magic = obi_load_acquire_u64(&h.magic)
        if magic != OBI_RING_MAGIC:
            raise RingError(f"{path}: not an obitui ring (magic {magic:#018x})")
        if h.version != OBI_RING_VERSION:
            raise RingError(
                f"{path}: ring layout version {h.version}, this build reads {OBI_RING_VERSION}")
        if h.header_size != OBI_RING_HEADER_SIZE:
            raise RingError(f"{path}: header size {h.header_size}, expected {OBI_RING_HEADER_SIZE}")
        cdef uint64_t cap = h.capacity
        if cap < MIN_CAPACITY or cap > MAX_CAPACITY or (cap & (cap - 1)):
            raise RingError(f"{path}: invalid capacity {cap}")
        if h.total_size != OBI_RING_HEADER_SIZE + cap or self.seg.size != h.total_size:
            raise RingError(
                f"{path}: segment is {self.seg.size} bytes, header says {h.total_size} "
                f"(capacity {cap}): refused")
        if h.creator_uid != os.geteuid():
            raise RingError(f"{path}: created by uid {h.creator_uid}, not this user: refused")
        cdef uint64_t head = obi_load_acquire_u64(&h.head)
        cdef uint64_t tail = obi_load_acquire_u64(&h.tail)
        if tail < head or tail - head > cap or (head & 7) or (tail & 7):
            raise RingError(f"{path}: corrupt indices head={head} tail={tail} capacity={cap}")

    def _bind(self, int role) -> None:
        self._role = <RingRole>role
        self.hdr = <obi_ring_header *>self.seg.base
        self.data = self.seg.base + OBI_RING_HEADER_SIZE
        self.capacity = self.hdr.capacity
        self.mask = self.capacity - 1
        # An empty ring always accepts a record of up to half its capacity, padding included.
        self.max_record = self.capacity // 2
        self.tail_local = obi_load_acquire_u64(&self.hdr.tail)
        self.head_local = obi_load_acquire_u64(&self.hdr.head)
        self.head_cache = self.head_local
        self.tail_cache = self.tail_local
        self.seq_local = self.hdr.seq
        self.pushed_local = self.hdr.pushed
        self.pushed_bytes_local = self.hdr.pushed_bytes
        self.drops_local = self.hdr.drops
        self.high_water_local = self.hdr.high_water
        self.popped_local = self.hdr.popped
        self.popped_bytes_local = self.hdr.popped_bytes
        self.last_seq_local = self.hdr.last_seq
        self.lost_local = self.hdr.lost

    cdef int _check_open(self, RingRole want) except -1:
        if self.hdr == NULL:
            raise RingError("ring is closed")
        if self.corrupt_reason is not None and want != ROLE_ANY:
            raise RingError(self.corrupt_reason)
        if want != ROLE_ANY and self._role != want:
            raise RingError(
                "push needs the producer side" if want == ROLE_PRODUCER
                else "pop needs the consumer side")
        return 0

    # ---------------------------------------------------------------- producer (hot path)
    cdef int try_push_raw(self, const char *payload, uint32_t n, uint16_t kind,
                      uint16_t flags) noexcept nogil:
        """1: pushed; 0: no room (nothing counted, no seq taken); -1: too big or bad kind."""
        cdef uint64_t rec_len = OBI_REC_HDR + <uint64_t>n
        cdef uint64_t alen = align8(rec_len)
        if alen > self.max_record or kind == OBI_REC_PADDING:
            return -1
        cdef uint64_t pos = self.tail_local & self.mask
        cdef uint64_t contiguous = self.capacity - pos
        cdef uint64_t need = alen if alen <= contiguous else contiguous + alen
        if self.tail_local + need - self.head_cache > self.capacity:
            self.head_cache = obi_load_acquire_u64(&self.hdr.head)
            if self.tail_local + need - self.head_cache > self.capacity:
                return 0
        cdef obi_rec_header *rh
        if alen > contiguous:
            rh = <obi_rec_header *>(self.data + pos)
            rh.length = <uint32_t>contiguous
            rh.type = OBI_REC_PADDING
            rh.flags = 0
            self.tail_local += contiguous
            pos = 0
        self.seq_local += 1
        rh = <obi_rec_header *>(self.data + pos)
        rh.length = <uint32_t>rec_len
        rh.type = kind
        rh.flags = flags
        rh.seq = self.seq_local
        memcpy(self.data + pos + OBI_REC_HDR, payload, n)
        self.tail_local += alen
        self.pushed_local += 1
        self.pushed_bytes_local += n
        cdef uint64_t used = self.tail_local - self.head_cache
        if used > self.high_water_local:
            self.high_water_local = used
            obi_store_relaxed_u64(&self.hdr.high_water, used)
        obi_store_relaxed_u64(&self.hdr.seq, self.seq_local)
        obi_store_relaxed_u64(&self.hdr.pushed, self.pushed_local)
        obi_store_relaxed_u64(&self.hdr.pushed_bytes, self.pushed_bytes_local)
        # Publish: everything written above becomes visible before the new tail.
        obi_store_release_u64(&self.hdr.tail, self.tail_local)
        return 1

    cdef int push_raw(self, const char *payload, uint32_t n, uint16_t kind,
                      uint16_t flags) noexcept nogil:
        """1: pushed; 0: full, the drop counted and its seq consumed (the consumer will see
        the gap); -1: too big or bad kind."""
        cdef int rc = self.try_push_raw(payload, n, kind, flags)
        if rc == 0:
            self.seq_local += 1
            self.drops_local += 1
            obi_store_relaxed_u64(&self.hdr.seq, self.seq_local)
            obi_store_relaxed_u64(&self.hdr.drops, self.drops_local)
        return rc

    # ---------------------------------------------------------------- consumer (hot path)
    cdef int read_next(self, obi_rec_header **rec) noexcept nogil:
        """1: *rec is the next record (valid until commit); 0: empty; -1: corrupt."""
        cdef uint64_t pos, avail, length, alen
        cdef obi_rec_header *rh
        while True:
            if self.head_local == self.tail_cache:
                self.tail_cache = obi_load_acquire_u64(&self.hdr.tail)
                if self.tail_cache == self.head_local:
                    return 0
                if (self.tail_cache < self.head_local
                        or self.tail_cache - self.head_local > self.capacity
                        or (self.tail_cache & 7)):
                    return -1
            pos = self.head_local & self.mask
            avail = self.tail_cache - self.head_local
            rh = <obi_rec_header *>(self.data + pos)
            length = rh.length
            if rh.type == OBI_REC_PADDING:
                if length != self.capacity - pos or length > avail:
                    return -1
                self.head_local += length
                continue
            alen = align8(length)
            if length < OBI_REC_HDR or alen > avail or alen > self.capacity - pos:
                return -1
            self.head_local += alen
            self.popped_local += 1
            self.popped_bytes_local += length - OBI_REC_HDR
            if rh.seq > self.last_seq_local + 1:
                self.lost_local += rh.seq - self.last_seq_local - 1
            self.last_seq_local = rh.seq
            self.read_length = <uint32_t>length
            rec[0] = rh
            return 1

    cdef void commit(self) noexcept nogil:
        obi_store_relaxed_u64(&self.hdr.popped, self.popped_local)
        obi_store_relaxed_u64(&self.hdr.popped_bytes, self.popped_bytes_local)
        obi_store_relaxed_u64(&self.hdr.last_seq, self.last_seq_local)
        obi_store_relaxed_u64(&self.hdr.lost, self.lost_local)
        # Release: our reads of the records happen before the producer may reuse the space.
        obi_store_release_u64(&self.hdr.head, self.head_local)

    cdef int raise_corrupt(self) except -1:
        cdef uint64_t pos = self.head_local & self.mask
        cdef obi_rec_header *rh = <obi_rec_header *>(self.data + pos)
        self.corrupt_reason = (
            f"{self.seg.path}: corrupt record at offset {pos} (head={self.head_local}, "
            f"tail={self.tail_cache}, capacity={self.capacity}, length field={rh.length}, "
            f"type={rh.type})")
        self.hdr.corrupt += 1
        raise RingError(self.corrupt_reason)

    # ---------------------------------------------------------------- Python API
    cdef int _push_py(self, object payload, int kind, int flags, bint count_drop) except -2:
        """Shared body of push/try_push: bytes take a direct fast path, other buffers
        (bytearray, memoryview) go through the buffer protocol."""
        self._check_open(ROLE_PRODUCER)
        if kind < 0 or kind >= OBI_REC_PADDING:
            raise ValueError(f"kind must be in [0, {OBI_REC_PADDING - 1}], got {kind}")
        if flags < 0 or flags > 0xFFFF:
            raise ValueError(f"flags must be in [0, 65535], got {flags}")
        cdef Py_buffer buf
        cdef const char *p
        cdef Py_ssize_t n
        cdef bint release = False
        if PyBytes_CheckExact(payload):
            p = PyBytes_AS_STRING(payload)
            n = PyBytes_GET_SIZE(payload)
        else:
            PyObject_GetBuffer(payload, &buf, PyBUF_SIMPLE)
            release = True
            p = <const char *>buf.buf
            n = buf.len
        cdef int rc
        try:
            if <uint64_t>n + OBI_REC_HDR > self.max_record:
                raise ValueError(
                    f"record of {n} bytes exceeds the ring's maximum "
                    f"{self.max_record - OBI_REC_HDR} (half its capacity, less the header)")
            if count_drop:
                rc = self.push_raw(p, <uint32_t>n, <uint16_t>kind, <uint16_t>flags)
            else:
                rc = self.try_push_raw(p, <uint32_t>n, <uint16_t>kind, <uint16_t>flags)
        finally:
            if release:
                PyBuffer_Release(&buf)
        return rc

    def push(self, payload, int kind=0, int flags=0) -> bool:
        """Append one record; False when the ring is full (the drop is counted and its seq
        is consumed, so the consumer sees the gap). Never blocks."""
        return self._push_py(payload, kind, flags, True) == 1

    def try_push(self, payload, int kind=0, int flags=0) -> bool:
        """Like ``push`` but a full ring counts nothing and takes no seq: for a producer that
        waits and retries (benchmarks, replays). Feeds use ``push``."""
        return self._push_py(payload, kind, flags, False) == 1

    def pop(self):
        """Return (kind, seq, payload) of the oldest record, or None when empty."""
        self._check_open(ROLE_CONSUMER)
        cdef obi_rec_header *rh
        cdef int rc = self.read_next(&rh)
        if rc == 0:
            return None
        if rc < 0:
            self.raise_corrupt()
        out = (rh.type, rh.seq, PyBytes_FromStringAndSize(<char *>rh + OBI_REC_HDR,
                                                          self.read_length - OBI_REC_HDR))
        self.commit()
        return out

    def pop_batch(self, Py_ssize_t max_records) -> list:
        """Pop up to ``max_records`` records, publishing the new head once."""
        self._check_open(ROLE_CONSUMER)
        cdef list out = []
        cdef obi_rec_header *rh
        cdef int rc
        cdef Py_ssize_t i
        for i in range(max_records):
            rc = self.read_next(&rh)
            if rc == 0:
                break
            if rc < 0:
                self.commit()
                self.raise_corrupt()
            out.append((rh.type, rh.seq, PyBytes_FromStringAndSize(
                <char *>rh + OBI_REC_HDR, self.read_length - OBI_REC_HDR)))
        self.commit()
        return out

    def used_bytes(self) -> int:
        """Bytes between head and tail (records, headers and padding): the fill level."""
        self._check_open(ROLE_ANY)
        cdef uint64_t head = obi_load_acquire_u64(&self.hdr.head)
        cdef uint64_t tail = obi_load_acquire_u64(&self.hdr.tail)
        return tail - head if tail >= head else 0

    def fill(self) -> float:
        """used_bytes() / capacity, in [0, 1]."""
        return min(1.0, self.used_bytes() / self.capacity)

    def heartbeat(self) -> None:
        """Publish this side's liveness (monotonic ns)."""
        self._check_open(ROLE_ANY)
        if self._role == ROLE_PRODUCER:
            obi_store_relaxed_u64(&self.hdr.producer_heartbeat_ns, obi_monotonic_ns())
        elif self._role == ROLE_CONSUMER:
            obi_store_relaxed_u64(&self.hdr.consumer_heartbeat_ns, obi_monotonic_ns())

    @property
    def name(self) -> str:
        return self.seg.name

    @property
    def role(self) -> str:
        return {ROLE_PRODUCER: "producer", ROLE_CONSUMER: "consumer",
                ROLE_MONITOR: "monitor"}[self._role]

    @property
    def max_payload(self) -> int:
        return self.max_record - OBI_REC_HDR

    @property
    def drops(self) -> int:
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.drops)

    @property
    def seq(self) -> int:
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.seq)

    @property
    def pushed(self) -> int:
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.pushed)

    @property
    def popped(self) -> int:
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.popped)

    @property
    def last_seq(self) -> int:
        """Seq of the last record the consumer popped (kept across consumer restarts)."""
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.last_seq)

    @property
    def lost(self) -> int:
        """Seqs the consumer never saw (records dropped by the producer, as the consumer
        counts them): ``lost == drops`` once the ring is drained."""
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.lost)

    @property
    def high_water(self) -> int:
        self._check_open(ROLE_ANY)
        return obi_load_relaxed_u64(&self.hdr.high_water)

    def stats(self) -> dict:
        """All counters and liveness words as one dict (read with relaxed loads)."""
        self._check_open(ROLE_ANY)
        h = self.hdr
        return {
            "name": self.seg.name, "capacity": self.capacity,
            "head": obi_load_acquire_u64(&h.head), "tail": obi_load_acquire_u64(&h.tail),
            "seq": h.seq, "pushed": h.pushed, "pushed_bytes": h.pushed_bytes,
            "drops": h.drops, "high_water": h.high_water, "popped": h.popped,
            "popped_bytes": h.popped_bytes, "corrupt": h.corrupt,
            "last_seq": h.last_seq, "lost": h.lost,
            "creator_pid": h.creator_pid, "created_ns": h.created_ns,
            "producer_pid": h.producer_pid, "producer_heartbeat_ns": h.producer_heartbeat_ns,
            "consumer_pid": h.consumer_pid, "consumer_heartbeat_ns": h.consumer_heartbeat_ns,
        }

    def close(self) -> None:
        """Unmap the segment (idempotent). The segment stays until ``Ring.unlink``."""
        if self.hdr != NULL:
            if self._role == ROLE_CONSUMER:
                self.commit()
            self.hdr = NULL
            self.data = NULL
            self.seg.close()

    @property
    def closed(self) -> bool:
        return self.hdr == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def unlink(str name) -> bool:
        """Remove the segment; False if it did not exist."""
        try:
            return Segment.unlink(name)
        except ShmError as exc:
            raise RingError(str(exc)) from None

    def __repr__(self) -> str:
        if self.hdr == NULL:
            return "<Ring closed>"
        return (f"<Ring {self.seg.name} {self.role} capacity={self.capacity} "
                f"used={self.used_bytes()} seq={self.seq} drops={self.drops}>")

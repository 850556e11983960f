# Cython-level API of the SPSC ring: no Python object per record.
#
# Producer:  rc = ring.push_raw(ptr, n, kind, flags)   # 1 pushed, 0 full (drop counted), -1 too big
# Consumer:  while ring.read_next(&rec) == 1: ... use rec (header), ring.read_length (its length
#            as checked: the field itself may change) and <char*>rec + OBI_REC_HDR ...
#            ring.commit()                               # publish the new head once per batch
#            read_next returns -1 on a corrupt record: call ring.raise_corrupt().
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from obitui.core.shm cimport Segment, obi_ring_header, obi_rec_header

cdef enum RingRole:
    ROLE_ANY = 0
    ROLE_PRODUCER = 1
    ROLE_CONSUMER = 2
    ROLE_MONITOR = 3

cdef class Ring:
    cdef Segment seg
    cdef obi_ring_header *hdr
    cdef char *data
    cdef readonly uint64_t capacity
    cdef uint64_t mask
    cdef uint64_t max_record
    cdef RingRole _role
    # producer-local state (one writer)
    cdef uint64_t tail_local
    cdef uint64_t head_cache
    cdef uint64_t seq_local
    cdef uint64_t pushed_local
    cdef uint64_t pushed_bytes_local
    cdef uint64_t drops_local
    cdef uint64_t high_water_local
    # consumer-local state (one writer)
    cdef uint64_t head_local
    cdef uint64_t tail_cache
    cdef uint64_t popped_local
    cdef uint64_t popped_bytes_local
    cdef uint64_t last_seq_local
    cdef uint64_t lost_local
    cdef uint32_t read_length       # the length field read_next checked, for the record it returned
    cdef str corrupt_reason

    cdef int try_push_raw(self, const char *payload, uint32_t n, uint16_t kind, uint16_t flags) noexcept nogil
    cdef int push_raw(self, const char *payload, uint32_t n, uint16_t kind, uint16_t flags) noexcept nogil
    cdef int read_next(self, obi_rec_header **rec) noexcept nogil
    cdef void commit(self) noexcept nogil
    cdef int raise_corrupt(self) except -1
    cdef int _check_open(self, RingRole want) except -1
    cdef int _push_py(self, object payload, int kind, int flags, bint count_drop) except -2


# the consumer's side of the block wait (ring.sleep_until_records, which says how): True when
# records were there before sleeping
cdef bint sleep_on(Segment seg, size_t sleeping_offset, size_t wake_offset, list rings,
                   double timeout_s) except -1

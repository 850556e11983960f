# Declarations of shm.h (layouts and memory orders) and the Segment class.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

# the futex system call (the engine's wait: shm.pyx, ring.pyx)
cdef extern from "<linux/futex.h>":
    enum: FUTEX_WAIT
    enum: FUTEX_WAKE

cdef extern from "<sys/syscall.h>":
    enum: SYS_futex

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "shm.h" nogil:
    enum: OBI_CACHE_LINE
    enum: OBI_RING_HEADER_SIZE
    enum: OBI_RING_VERSION
    enum: OBI_REC_HDR
    enum: OBI_REC_PADDING
    const uint64_t OBI_RING_MAGIC

    uint64_t obi_load_acquire_u64(const uint64_t *p)
    uint64_t obi_load_relaxed_u64(const uint64_t *p)
    void obi_store_release_u64(uint64_t *p, uint64_t v)
    void obi_store_relaxed_u64(uint64_t *p, uint64_t v)
    uint32_t obi_load_acquire_u32(const uint32_t *p)
    void obi_store_release_u32(uint32_t *p, uint32_t v)
    void obi_fence_seq_cst()
    void obi_cpu_relax()
    uint64_t obi_monotonic_ns()
    uint64_t obi_realtime_ns()

    ctypedef struct obi_ring_header:
        uint64_t magic
        uint32_t version
        uint32_t header_size
        uint64_t total_size
        uint64_t capacity
        int64_t creator_pid
        uint64_t created_ns
        uint32_t creator_uid
        uint64_t tail
        int64_t producer_pid
        uint64_t producer_heartbeat_ns
        uint64_t head
        int64_t consumer_pid
        uint64_t consumer_heartbeat_ns
        uint64_t seq
        uint64_t pushed
        uint64_t drops
        uint64_t pushed_bytes
        uint64_t high_water
        uint64_t popped
        uint64_t popped_bytes
        uint64_t corrupt
        uint64_t last_seq
        uint64_t lost
        uint32_t consumer_sleeping
        uint32_t wake_seq

    ctypedef struct obi_rec_header:
        uint32_t length
        uint16_t type
        uint16_t flags
        uint64_t seq

    ctypedef struct obi_book_header:
        uint16_t book_id
        uint8_t pdec
        uint8_t qdec
        uint32_t n_bids
        uint32_t n_asks
        uint32_t reserved
        int64_t exch_ns
        int64_t recv_ns
        uint64_t first_id
        uint64_t last_id

    ctypedef struct obi_trade_record:
        uint16_t book_id
        uint8_t side
        uint8_t flags
        uint32_t reserved
        int64_t exch_ns
        int64_t recv_ns
        uint64_t trade_id
        int64_t price
        int64_t qty

    ctypedef struct obi_ticker_record:
        uint16_t book_id
        uint16_t flags
        uint32_t reserved
        int64_t exch_ns
        int64_t recv_ns
        int64_t last
        int64_t bid
        int64_t bid_qty
        int64_t ask
        int64_t ask_qty

    ctypedef struct obi_day_record:
        uint16_t book_id
        uint16_t flags
        uint32_t reserved
        int64_t exch_ns
        int64_t open
        int64_t high
        int64_t low
        int64_t volume

    ctypedef struct obi_invalid_header:
        uint16_t book_id
        uint16_t flags
        uint32_t reserved
        int64_t ts_ns

    ctypedef struct obi_field:
        const char *name
        size_t offset
        size_t size
        int is_signed


cdef class Segment:
    cdef readonly str name
    cdef readonly str path
    cdef readonly size_t size
    cdef readonly bint created
    cdef char *base
    cdef void _map(self, int fd, size_t size) except *
    cdef int _check(self, size_t offset, size_t n) except -1

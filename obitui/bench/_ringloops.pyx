# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Benchmark loops over the ring's Cython-level API (no Python object per record).

Each payload starts with u64 index and u64 monotonic send time; the consumer checks the
index sequence and the ring seq, so a benchmark that loses or corrupts data reports it.
"""
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memset
from obitui.core.ring cimport Ring
from obitui.core.shm cimport obi_rec_header, obi_monotonic_ns, obi_cpu_relax, OBI_REC_HDR


def produce(Ring ring, uint64_t count, uint32_t size, uint64_t gap_ns=0) -> int:
    """Push ``count`` records of ``size`` bytes, spinning while full (no drops); with
    ``gap_ns`` wait that long between records (paced, for one-way latency). Returns spins."""
    if size < 16 or size > 4096:
        raise ValueError("size must be in [16, 4096]")
    cdef char buf[4096]
    memset(buf, 0x5A, size)
    cdef uint64_t i, t, spins = 0
    cdef int rc
    with nogil:
        for i in range(count):
            # throughput runs (no gap) carry no timestamp: clock_gettime would cost more
            # than the push itself, and the baselines' throughput loops do not stamp either
            t = obi_monotonic_ns() if gap_ns else 0
            (<uint64_t *>buf)[0] = i
            (<uint64_t *>buf)[1] = t
            while True:
                rc = ring.try_push_raw(buf, size, 1, 0)
                if rc == 1:
                    break
                if rc < 0:
                    break
                spins += 1
                obi_cpu_relax()
            if gap_ns:
                while obi_monotonic_ns() - t < gap_ns:
                    obi_cpu_relax()
    return spins


cdef enum:
    EMPTY_PAUSES = 16


def consume(Ring ring, uint64_t count, uint64_t[::1] latencies=None) -> tuple:
    """Spin-pop ``count`` records, committing the head once per batch of what is available.
    Returns (errors, elapsed_ns from the first record to the last). With ``latencies``,
    stores receive time - send time for each record."""
    cdef uint64_t got = 0, errors = 0, first = 0, now
    cdef obi_rec_header *rh
    cdef int rc
    cdef bint want_lat = latencies is not None
    cdef uint64_t *lat = &latencies[0] if want_lat else NULL
    cdef uint64_t nlat = latencies.shape[0] if want_lat else 0
    cdef uint64_t prev_seq = 0
    cdef const uint64_t *p
    cdef int k
    with nogil:
        while got < count:
            rc = ring.read_next(&rh)
            if rc == 0:
                ring.commit()
                # caught up: let the producer write a few records before touching its tail
                # line again (re-reading it at once makes the line bounce on every record)
                for k in range(EMPTY_PAUSES):
                    obi_cpu_relax()
                continue
            if rc < 0:
                errors += 1
                break
            if got == 0:
                first = obi_monotonic_ns()
                prev_seq = rh.seq - 1
            p = <const uint64_t *>(<char *>rh + OBI_REC_HDR)
            if want_lat and got < nlat:
                now = obi_monotonic_ns()
                lat[got] = now - p[1]
            if p[0] != got or rh.seq != prev_seq + 1:
                errors += 1
            prev_seq = rh.seq
            got += 1
        ring.commit()
        now = obi_monotonic_ns()
    return errors, now - first


def ping(Ring out, Ring back, uint64_t count, uint64_t[::1] rtts) -> int:
    """Round trips: push a timestamped record on ``out``, spin until it comes back on
    ``back``; rtts[i] = now - send time. Returns errors."""
    cdef char buf[16]
    cdef uint64_t i, t, errors = 0
    cdef obi_rec_header *rh
    cdef int rc
    with nogil:
        for i in range(count):
            t = obi_monotonic_ns()
            (<uint64_t *>buf)[0] = i
            (<uint64_t *>buf)[1] = t
            while out.try_push_raw(buf, 16, 1, 0) != 1:
                obi_cpu_relax()
            while True:
                rc = back.read_next(&rh)
                if rc != 0:
                    break
                obi_cpu_relax()
            if rc < 0 or (<uint64_t *>(<char *>rh + OBI_REC_HDR))[0] != i:
                errors += 1
            back.commit()
            if i < <uint64_t>rtts.shape[0]:
                rtts[i] = obi_monotonic_ns() - t
    return errors


def pong(Ring inn, Ring out, uint64_t count) -> int:
    """Echo ``count`` records from ``inn`` to ``out``, spinning. Returns errors."""
    cdef uint64_t i, errors = 0
    cdef obi_rec_header *rh
    cdef int rc
    with nogil:
        for i in range(count):
            while True:
                rc = inn.read_next(&rh)
                if rc != 0:
                    break
                obi_cpu_relax()
            if rc < 0:
                errors += 1
                break
            while out.try_push_raw(<char *>rh + OBI_REC_HDR, rh.length - OBI_REC_HDR, 1, 0) != 1:
                obi_cpu_relax()
            inn.commit()
    return errors


# ------------------------------------------------------------------ integrity loops
cdef inline uint64_t _xorshift(uint64_t *s) noexcept nogil:
    cdef uint64_t x = s[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    s[0] = x
    return x


cdef inline void _fill(char *buf, uint32_t n, uint64_t index) noexcept nogil:
    cdef uint32_t j
    cdef uint64_t s = index * 0x9E3779B97F4A7C15ULL + 1
    for j in range(n):
        if (j & 7) == 0:
            _xorshift(&s)
        buf[j] = <char>(s >> ((j & 7) * 8))


def produce_random(Ring ring, uint64_t count, uint64_t seed, uint32_t max_size) -> int:
    """Push ``count`` records of pseudo-random sizes in [0, max_size] and contents derived
    from their index, waiting while full. Returns the number of full-ring waits."""
    cdef char buf[65536]
    cdef uint64_t s = seed * 2654435761 + 88172645463325252
    cdef uint64_t i, waits = 0
    cdef uint32_t n
    if max_size > 65536 or max_size + 16 > ring.max_record:
        raise ValueError("max_size too large for this ring")
    with nogil:
        for i in range(count):
            n = <uint32_t>(_xorshift(&s) % (max_size + 1))
            _fill(buf, n, i)
            while ring.try_push_raw(buf, n, <uint16_t>(i & 0x7FFF), <uint16_t>(n & 0xFFFF)) != 1:
                waits += 1
                obi_cpu_relax()
    return waits


def consume_random(Ring ring, uint64_t count, uint64_t seed, uint32_t max_size,
                   double timeout_s=60.0) -> tuple:
    """Pop and verify what ``produce_random`` pushed: sizes, bytes, kinds, flags, and seq
    +1 per record. Returns (records verified, first error or None)."""
    cdef char buf[65536]
    cdef uint64_t s = seed * 2654435761 + 88172645463325252
    cdef uint64_t i = 0, prev_seq = 0, deadline = obi_monotonic_ns() + <uint64_t>(timeout_s * 1e9)
    cdef uint32_t n
    cdef obi_rec_header *rh
    cdef int rc = 0, err = 0
    cdef const char *p
    with nogil:
        while i < count:
            rc = ring.read_next(&rh)
            if rc == 0:
                ring.commit()
                if obi_monotonic_ns() > deadline:
                    err = 5
                    break
                obi_cpu_relax()
                continue
            if rc < 0:
                err = 1
                break
            n = <uint32_t>(_xorshift(&s) % (max_size + 1))
            _fill(buf, n, i)
            p = <const char *>rh + OBI_REC_HDR
            if rh.length != n + OBI_REC_HDR or rh.type != (i & 0x7FFF) or rh.flags != (n & 0xFFFF):
                err = 2
                break
            if i > 0 and rh.seq != prev_seq + 1:
                err = 3
                break
            if memcmp(p, buf, n) != 0:
                err = 4
                break
            prev_seq = rh.seq
            i += 1
        ring.commit()
    if err == 0:
        return i, None
    return i, {1: "corrupt record", 2: "wrong length/kind/flags", 3: "seq gap",
               4: "payload bytes differ", 5: "timeout"}[err]

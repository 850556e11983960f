/* Shared-memory layouts and cross-process memory orders (ring, stats block).
 * Every word shared between processes is read and written through the helpers below,
 * so the ordering of each access is explicit in one place (GCC/Clang __atomic builtins). */
#ifndef OBITUI_SHM_H
#define OBITUI_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define OBI_CACHE_LINE 64

#ifdef __cplusplus
#define OBI_STATIC_ASSERT static_assert
#else
#define OBI_STATIC_ASSERT _Static_assert
#endif

static inline uint64_t obi_load_acquire_u64(const volatile uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint64_t obi_load_relaxed_u64(const volatile uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void obi_store_release_u64(volatile uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void obi_store_relaxed_u64(volatile uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline uint32_t obi_load_acquire_u32(const volatile uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void obi_store_release_u32(volatile uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void obi_fence_seq_cst(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
static inline void obi_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
static inline uint64_t obi_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint64_t obi_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- SPSC ring segment -------------------------------------------------------
 * [RingHeader: 512 bytes][data: capacity bytes, a power of two]
 * Each cache line has exactly one writer. tail/head are monotonically increasing byte
 * counters; position = counter & (capacity - 1). */

#define OBI_RING_MAGIC 0x31474E495249424Full   /* b"OBIRING1" read as a little-endian u64 */
#define OBI_RING_VERSION 2u
#define OBI_RING_HEADER_SIZE 512u
#define OBI_REC_HDR 16u
#define OBI_REC_PADDING 0xFFFFu

typedef struct {
    /* line 0: immutable after create (writer: creator, before anyone attaches) */
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t capacity;
    int64_t creator_pid;
    uint64_t created_ns;      /* CLOCK_REALTIME */
    uint32_t creator_uid;
    uint32_t _pad0;
    uint64_t _pad0b;
    /* line 1: producer index (writer: producer) */
    volatile uint64_t tail;
    volatile int64_t producer_pid;
    volatile uint64_t producer_heartbeat_ns;   /* CLOCK_MONOTONIC */
    uint8_t _pad1[40];
    /* line 2: consumer index (writer: consumer) */
    volatile uint64_t head;
    volatile int64_t consumer_pid;
    volatile uint64_t consumer_heartbeat_ns;
    uint8_t _pad2[40];
    /* line 3: producer counters (writer: producer) */
    volatile uint64_t seq;           /* last seq assigned; every push attempt takes one */
    volatile uint64_t pushed;        /* records written */
    volatile uint64_t drops;         /* records refused because the ring was full */
    volatile uint64_t pushed_bytes;
    volatile uint64_t high_water;    /* highest tail - head seen by the producer, bytes */
    uint8_t _pad3[24];
    /* line 4: consumer counters (writer: consumer) */
    volatile uint64_t popped;
    volatile uint64_t popped_bytes;
    volatile uint64_t corrupt;       /* corrupt records detected by the consumer */
    volatile uint64_t last_seq;      /* seq of the last record popped (a restarted consumer resumes here) */
    volatile uint64_t lost;          /* seqs the consumer never saw: the drops, as it counts them */
    uint8_t _pad4[24];
    /* line 5: wake-up word for a sleeping consumer (futex; used by the engine's block strategy) */
    volatile uint32_t consumer_sleeping;
    volatile uint32_t wake_seq;
    uint8_t _pad5[56];
    uint8_t _reserved[OBI_RING_HEADER_SIZE - 6 * OBI_CACHE_LINE];
} obi_ring_header;

typedef struct {
    uint32_t length;   /* header + payload bytes (unaligned); for PADDING: bytes to the end */
    uint16_t type;     /* record kind; OBI_REC_PADDING marks the skip to the end of the buffer */
    uint16_t flags;
    uint64_t seq;      /* absent (not written) in a PADDING record shorter than 16 bytes */
} obi_rec_header;

/* ---- Record payloads (obitui/core/records.py) --------------------------------
 * Little-endian, fixed width, natural alignment with no implicit padding (every offset is
 * asserted below): records.py builds its struct formats from these layouts (shm.pyx
 * RECORD_LAYOUTS), so a capture or a ring written by an earlier build reads the same.
 * Prices and quantities are int64 fixed point at the book's decimals. */

typedef struct {               /* BOOK_SNAPSHOT / BOOK_DELTA: then n_bids + n_asks packed */
    uint16_t book_id;          /* (int64 price, int64 qty) pairs, bids then asks, best first */
    uint8_t pdec;              /* the most decimals of the prices as received */
    uint8_t qdec;              /* the most decimals of the quantities as received */
    uint32_t n_bids;
    uint32_t n_asks;
    uint32_t reserved;         /* 0 */
    int64_t exch_ns;
    int64_t recv_ns;
    uint64_t first_id;
    uint64_t last_id;
} obi_book_header;

typedef struct {               /* TRADE */
    uint16_t book_id;
    uint8_t side;              /* 1: the aggressor bought, 2: sold */
    uint8_t flags;             /* 0 */
    uint32_t reserved;         /* 0 */
    int64_t exch_ns;
    int64_t recv_ns;
    uint64_t trade_id;
    int64_t price;
    int64_t qty;
} obi_trade_record;

typedef struct {               /* TICKER */
    uint16_t book_id;
    uint16_t flags;            /* 0 */
    uint32_t reserved;         /* 0 */
    int64_t exch_ns;
    int64_t recv_ns;
    int64_t last;
    int64_t bid;
    int64_t bid_qty;
    int64_t ask;
    int64_t ask_qty;
} obi_ticker_record;

typedef struct {               /* TICKER_DAY: the venue's rolling 24 h figures */
    uint16_t book_id;
    uint16_t flags;            /* 0 */
    uint32_t reserved;         /* 0 */
    int64_t exch_ns;
    int64_t open;              /* price 24 h ago (price scale; 0: not given) */
    int64_t high;
    int64_t low;
    int64_t volume;            /* base volume (quantity scale) */
} obi_day_record;

typedef struct {               /* BOOK_INVALID: then the reason, UTF-8 */
    uint16_t book_id;
    uint16_t flags;            /* 0 */
    uint32_t reserved;         /* 0 */
    int64_t ts_ns;
} obi_invalid_header;

OBI_STATIC_ASSERT(sizeof(obi_ring_header) == OBI_RING_HEADER_SIZE, "ring header size");
OBI_STATIC_ASSERT(offsetof(obi_ring_header, tail) == 64, "tail on line 1");
OBI_STATIC_ASSERT(offsetof(obi_ring_header, head) == 128, "head on line 2");
OBI_STATIC_ASSERT(offsetof(obi_ring_header, seq) == 192, "producer counters on line 3");
OBI_STATIC_ASSERT(offsetof(obi_ring_header, popped) == 256, "consumer counters on line 4");
OBI_STATIC_ASSERT(offsetof(obi_ring_header, consumer_sleeping) == 320, "wake word on line 5");
OBI_STATIC_ASSERT(sizeof(obi_rec_header) == OBI_REC_HDR, "record header size");
OBI_STATIC_ASSERT(offsetof(obi_rec_header, length) == 0, "record length");
OBI_STATIC_ASSERT(offsetof(obi_rec_header, type) == 4, "record type");
OBI_STATIC_ASSERT(offsetof(obi_rec_header, flags) == 6, "record flags");
OBI_STATIC_ASSERT(offsetof(obi_rec_header, seq) == 8, "record seq");

OBI_STATIC_ASSERT(sizeof(obi_book_header) == 48, "book header size");
OBI_STATIC_ASSERT(offsetof(obi_book_header, book_id) == 0, "book book_id");
OBI_STATIC_ASSERT(offsetof(obi_book_header, pdec) == 2, "book pdec");
OBI_STATIC_ASSERT(offsetof(obi_book_header, qdec) == 3, "book qdec");
OBI_STATIC_ASSERT(offsetof(obi_book_header, n_bids) == 4, "book n_bids");
OBI_STATIC_ASSERT(offsetof(obi_book_header, n_asks) == 8, "book n_asks");
OBI_STATIC_ASSERT(offsetof(obi_book_header, reserved) == 12, "book reserved");
OBI_STATIC_ASSERT(offsetof(obi_book_header, exch_ns) == 16, "book exch_ns");
OBI_STATIC_ASSERT(offsetof(obi_book_header, recv_ns) == 24, "book recv_ns");
OBI_STATIC_ASSERT(offsetof(obi_book_header, first_id) == 32, "book first_id");
OBI_STATIC_ASSERT(offsetof(obi_book_header, last_id) == 40, "book last_id");

OBI_STATIC_ASSERT(sizeof(obi_trade_record) == 48, "trade size");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, book_id) == 0, "trade book_id");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, side) == 2, "trade side");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, flags) == 3, "trade flags");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, reserved) == 4, "trade reserved");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, exch_ns) == 8, "trade exch_ns");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, recv_ns) == 16, "trade recv_ns");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, trade_id) == 24, "trade trade_id");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, price) == 32, "trade price");
OBI_STATIC_ASSERT(offsetof(obi_trade_record, qty) == 40, "trade qty");

OBI_STATIC_ASSERT(sizeof(obi_day_record) == 48, "day size");
OBI_STATIC_ASSERT(offsetof(obi_day_record, exch_ns) == 8, "day exch_ns");
OBI_STATIC_ASSERT(offsetof(obi_day_record, open) == 16, "day open");
OBI_STATIC_ASSERT(offsetof(obi_day_record, volume) == 40, "day volume");
OBI_STATIC_ASSERT(sizeof(obi_ticker_record) == 64, "ticker size");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, book_id) == 0, "ticker book_id");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, flags) == 2, "ticker flags");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, reserved) == 4, "ticker reserved");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, exch_ns) == 8, "ticker exch_ns");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, recv_ns) == 16, "ticker recv_ns");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, last) == 24, "ticker last");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, bid) == 32, "ticker bid");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, bid_qty) == 40, "ticker bid_qty");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, ask) == 48, "ticker ask");
OBI_STATIC_ASSERT(offsetof(obi_ticker_record, ask_qty) == 56, "ticker ask_qty");

OBI_STATIC_ASSERT(sizeof(obi_invalid_header) == 16, "invalid header size");
OBI_STATIC_ASSERT(offsetof(obi_invalid_header, book_id) == 0, "invalid book_id");
OBI_STATIC_ASSERT(offsetof(obi_invalid_header, flags) == 2, "invalid flags");
OBI_STATIC_ASSERT(offsetof(obi_invalid_header, reserved) == 4, "invalid reserved");
OBI_STATIC_ASSERT(offsetof(obi_invalid_header, ts_ns) == 8, "invalid ts_ns");

/* A field of a record layout, for exposing the layouts to Python (shm.pyx RECORD_LAYOUTS). */
typedef struct {
    const char *name;
    size_t offset;
    size_t size;
    int is_signed;
} obi_field;

/* signed: the field's type holds -1 (its all-ones value is below 1) */
#define OBI_FIELD(T, f) \
    { #f, offsetof(T, f), sizeof(((T *)0)->f), (__typeof__(((T *)0)->f))-1 < 1 }

#endif

# cython: boundscheck=False, wraparound=False
"""The NATS publisher's book and trade messages (docs/NATS.md, **contract**), written from a
BookSlot's bytes in one call: each price and quantity the exact decimal string
``obitui.widgets.format.fmt_fixed`` writes, each message the bytes ``orjson.dumps`` gives for
``obitui.headless.book_json`` (and the publisher's fields after it). The publisher writes 300
books 8 times a second: one C pass over a slot here, where Python read the slot into a
BookView, built a dict and formatted ~40 levels a book."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport INT64_MIN, int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy

from obitui.core.fixed cimport format_fixed_c
from obitui.core.slot cimport (
    ASKS_OFF, LEVELS_OFF, MARKET_OFF, REASON_SIZE, SLOT_END, TAPE_N, TAPE_OFF, TOP_N, BookFixed, MarketSection,
    TapeEntry, check_layout,
)

import orjson

from obitui.core import stats as _stats

from obitui.widgets.format import decimals_needed, fmt_fixed

cdef object _dumps = orjson.dumps

cdef extern from *:
    bint add_ovf_i64 "__builtin_add_overflow"(int64_t a, int64_t b, int64_t *out) nogil
    bint sub_ovf_i64 "__builtin_sub_overflow"(int64_t a, int64_t b, int64_t *out) nogil
    bint mul_ovf_i64 "__builtin_mul_overflow"(int64_t a, int64_t b, int64_t *out) nogil
    bint add_ovf_u64 "__builtin_add_overflow"(uint64_t a, uint64_t b, uint64_t *out) nogil

cdef enum:
    CAP = 160             # one number's text: a sign, 19 integer digits, '.', at most 128 decimals


# ---------------------------------------------------------------- a book's messages from its slot
check_layout(_stats)       # the BookSlot's layout (obitui/core/slot.pxd) is obitui.core.stats's
SLOT_BYTES = SLOT_END       # what ``BookMessages.messages`` reads of a slot

cdef enum:
    NUM = CAP + 2       # one number's text in quotes
    FLOAT_MAX = 64      # one float's JSON text (orjson writes at most ~24 characters)


cdef inline int64_t _i64(const unsigned char *p) noexcept nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline Py_ssize_t _put(char *out, const char *text, Py_ssize_t n) noexcept nogil:
    memcpy(out, text, n)
    return n


cdef inline Py_ssize_t _put_bytes(char *out, bytes text) except -1:
    cdef Py_ssize_t n = len(text)
    memcpy(out, <const char *>text, n)
    return n


cdef Py_ssize_t _num_py(char *out, object value, object digits, object decimals) except -1:
    """``"text"`` of ``fmt_fixed(value, digits, decimals)`` itself (its text or its error)."""
    cdef bytes text = fmt_fixed(value, digits, decimals).encode("ascii")
    cdef Py_ssize_t n = len(text)
    if n > CAP:
        raise ValueError(f"a number of {n} characters")
    out[0] = 34
    memcpy(out + 1, <const char *>text, n)
    out[n + 1] = 34
    return n + 2


cdef Py_ssize_t _num64(char *out, int64_t value, int64_t digits, int64_t decimals) except -1:
    """``"text"`` of ``fmt_fixed(value, digits, decimals)`` at ``out`` (at most NUM bytes)."""
    cdef Py_ssize_t n = -1
    if value != INT64_MIN and 0 <= digits <= 18 and 0 <= decimals <= 128:
        n = format_fixed_c(value, <int>digits, <int>decimals, out + 1, CAP)
        if n < 0:
            n = format_fixed_c(value, <int>digits, <int>digits, out + 1, CAP)
    if n < 0:
        return _num_py(out, value, digits, decimals)
    out[0] = 34
    out[n + 1] = 34
    return n + 2


cdef Py_ssize_t _float(char *out, double value, int ndigits) except -1:
    """orjson's text of ``round(value, ndigits)`` (what book_json's floats become)."""
    cdef bytes text = _dumps(round(value, ndigits))
    if len(text) > FLOAT_MAX:
        raise ValueError(f"a float of {len(text)} characters")
    return _put_bytes(out, text)


cdef Py_ssize_t _uint(char *out, uint64_t v) noexcept nogil:
    """The decimal text of ``v``."""
    cdef char tmp[24]
    cdef int n = 0, i
    if v == 0:
        out[0] = 48
        return 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n


cdef bytes _json_text(const unsigned char *p, Py_ssize_t size):
    """A fixed text field (NUL-terminated, as stats._s reads it) as a JSON string."""
    cdef Py_ssize_t n = 0
    while n < size and p[n]:
        n += 1
    return _dumps((<const char *>p)[:n].decode("utf-8", "replace"))


def _market_json(digits, qdigits, pdec, qdec, side, price, qty, lt_ns, ticker_ns, last, bid, ask, day_ns,
                 day_open, high, low, volume):
    """book_json's ``last_trade`` and ``ticker`` as JSON text (they change far less often
    than the book: written here, in Python, when they change; Python ints, so that
    ``last - day_open`` is exact as in book_json)."""
    lt = None
    if side:
        lt = {"price": fmt_fixed(price, digits, pdec), "qty": fmt_fixed(qty, qdigits, qdec),
              "side": "buy" if side == 1 else "sell", "ts": round(lt_ns / 1e9, 3)}
    tk = None
    if ticker_ns:
        tk = {"last": fmt_fixed(last, digits, pdec), "bid": fmt_fixed(bid, digits, pdec),
              "ask": fmt_fixed(ask, digits, pdec), "ts": round(ticker_ns / 1e9, 3)}
        if day_ns:
            tk.update({"open_24h": fmt_fixed(day_open, digits, pdec) if day_open else None,
                       "high_24h": fmt_fixed(high, digits, pdec), "low_24h": fmt_fixed(low, digits, pdec),
                       "volume_24h": fmt_fixed(volume, qdigits, qdec),
                       "change_24h_pct": round(100.0 * (last - day_open) / day_open, 4) if day_open > 0 else None})
    return _dumps(lt), _dumps(tk)


cdef class BookMessages:
    """One book's NATS messages (docs/NATS.md, **contract**), written from its BookSlot's bytes
    (a seqlock copy: ``StatsBlock.seg.read_consistent``) in one call, with no BookView: the
    book message is the bytes of ``orjson.dumps`` of ``headless.book_json`` plus v, host, key,
    label and ts; the trade message holds the trades since the last one. A slot whose figures
    are what they were at the last message (the same update id, validity, trades, ticker, 24 h
    figures, flow and reason) gives no book message."""
    cdef readonly str key
    cdef readonly object trade_error   # why the last call's trades were left out (None: they were not)
    cdef bytes tail, trade_head       # ',"v":1,"host":H,"key":K,"label":' and '{"v":1,"host":H,"key":K'
    cdef int64_t digits, qdigits, levels
    cdef bint have_sig, have_trades, have_market
    cdef uint64_t s_update_id, s_trades, trades_seen
    cdef int64_t s_ticker_ns, s_day_ns, s_buy, s_sell
    cdef bint s_valid, s_crossed
    cdef unsigned char s_reason[REASON_SIZE]
    cdef unsigned char label_raw[16]
    cdef unsigned char reason_raw[REASON_SIZE]
    cdef bytes label_json, reason_json
    cdef int64_t m_key[15]              # what the last trade's and the ticker's text were made of
    cdef bytes last_trade_json, ticker_json
    cdef char *buf
    cdef Py_ssize_t cap

    def __cinit__(self, str host not None, str key not None, int digits, int qdigits, int levels, int schema):
        self.key = key
        self.tail = b',"v":%d,"host":%b,"key":%b,"label":' % (schema, _dumps(host), _dumps(key))
        self.trade_head = b'{"v":%d,"host":%b,"key":%b' % (schema, _dumps(host), _dumps(key))
        self.digits, self.qdigits = digits, qdigits
        self.levels = max(0, min(levels, TOP_N))
        self.have_sig = self.have_trades = self.have_market = False
        self.trade_error = None
        self.buf = NULL
        self.cap = 0

    def __dealloc__(self):
        free(self.buf)

    cdef char *_reserve(self, Py_ssize_t n) except NULL:
        """The buffer, at least ``n`` bytes long."""
        cdef char *grown
        if n > self.cap:
            grown = <char *>realloc(self.buf, n)
            if grown == NULL:
                raise MemoryError()
            self.buf, self.cap = grown, n
        return self.buf

    def forget(self) -> None:
        """The next slot gives its book message whatever it holds (a console asked for every
        book, a connection came back). Trades already sent are not sent again."""
        self.have_sig = False

    def messages(self, const unsigned char[::1] raw not None):
        """(book message or None, trade message or None) of the slot's bytes ``raw`` (its
        first 3968 at least); None when the slot names no market yet."""
        if raw.shape[0] < SLOT_END:
            raise ValueError(f"a book slot of {raw.shape[0]} bytes")
        cdef const unsigned char *p = &raw[0]
        cdef BookFixed f
        cdef MarketSection m
        memcpy(&f, p, sizeof(f))                     # copies: a buffer may start anywhere
        memcpy(&m, p + MARKET_OFF, sizeof(m))
        self.trade_error = None
        if f.exchange[0] == 0:
            return None
        cdef uint64_t update_id = f.update_id, trades = m.trades
        cdef bint valid = f.valid != 0, crossed = f.crossed != 0
        cdef int64_t ticker_ns = m.ticker[0], day_ns = m.day[0], buy = f.buy_qty, sell = f.sell_qty
        if (self.have_sig and update_id == self.s_update_id and valid == self.s_valid
                and crossed == self.s_crossed and trades == self.s_trades and ticker_ns == self.s_ticker_ns
                and day_ns == self.s_day_ns and buy == self.s_buy and sell == self.s_sell
                and memcmp(f.reason, self.s_reason, REASON_SIZE) == 0):
            return None, None
        cdef bytes book = self._book(&f, &m, p)
        self.have_sig = True
        self.s_update_id, self.s_valid, self.s_crossed, self.s_trades = update_id, valid, crossed, trades
        self.s_ticker_ns, self.s_day_ns, self.s_buy, self.s_sell = ticker_ns, day_ns, buy, sell
        memcpy(self.s_reason, f.reason, REASON_SIZE)
        # the book goes whatever its trades: trades that no message can carry (a tape entry at
        # an int64 edge) are left out, the error kept in ``trade_error`` for the caller to
        # count; they are not tried again (the old publisher's way too)
        cdef bytes trade = None
        if self.have_trades and trades > self.trades_seen:
            try:
                trade = self._trades(&f, &m, p, trades - self.trades_seen)
            except Exception as exc:
                self.trade_error = exc
        self.have_trades = True
        self.trades_seen = trades
        return book, trade

    cdef bytes _book(self, const BookFixed *f, const MarketSection *m, const unsigned char *p):
        """The book message; ``p``: the slot's bytes (its levels)."""
        cdef int64_t pdec = f.pdec, qdec = f.qdec
        cdef uint64_t nb = min(<uint64_t>f.n_bids, <uint64_t>TOP_N)
        cdef uint64_t na = min(<uint64_t>f.n_asks, <uint64_t>TOP_N)
        cdef int64_t bid0 = _i64(p + LEVELS_OFF), ask0 = _i64(p + ASKS_OFF)
        cdef int64_t buy = f.buy_qty, sell = f.sell_qty, flow
        cdef uint64_t count
        cdef bint valid = f.valid != 0
        cdef Py_ssize_t pos = 0
        if self.reason_json is None or memcmp(f.reason, self.reason_raw, REASON_SIZE) != 0:
            self.reason_json = _json_text(<const unsigned char *>f.reason, REASON_SIZE)
            memcpy(self.reason_raw, f.reason, REASON_SIZE)
        if self.label_json is None or memcmp(f.label, self.label_raw, 16) != 0:
            self.label_json = _json_text(<const unsigned char *>f.label, 16)
            memcpy(self.label_raw, f.label, 16)
        self._market(f, m)
        # every part at its longest: the levels, mid, flow, 3 floats, the texts, the words
        cdef char *b = self._reserve(
            512 + 2 * self.levels * (2 * NUM + 4) + 2 * NUM + 3 * FLOAT_MAX + len(self.tail)
            + len(self.reason_json) + len(self.label_json) + len(self.last_trade_json) + len(self.ticker_json))
        pos += _put(b + pos, b'{"valid":', 9)
        pos += _put(b + pos, b"true", 4) if valid else _put(b + pos, b"false", 5)
        pos += _put(b + pos, b',"update_id":', 13)
        pos += _uint(b + pos, f.update_id)
        pos += _put(b + pos, b',"obi":', 7)
        pos += _float(b + pos, f.obi, 6)
        pos += _put(b + pos, b',"crossed":', 11)
        pos += _put(b + pos, b"true", 4) if f.crossed else _put(b + pos, b"false", 5)
        pos += _put(b + pos, b',"bids":', 8)
        pos += self._levels(b + pos, p + LEVELS_OFF, min(nb, <uint64_t>self.levels), pdec, qdec)
        pos += _put(b + pos, b',"asks":', 8)
        pos += self._levels(b + pos, p + ASKS_OFF, min(na, <uint64_t>self.levels), pdec, qdec)
        if valid:
            pos += _put(b + pos, b',"state":"synced","reason":', 27)
        else:
            pos += _put(b + pos, b',"state":"invalid","reason":', 28)
        pos += _put_bytes(b + pos, self.reason_json)
        pos += _put(b + pos, b',"mid":', 7)
        if nb and na:
            pos += self._mid(b + pos, bid0, ask0, pdec)
            pos += _put(b + pos, b',"spread_bps":', 14)
            if <object>bid0 + <object>ask0 > 0:      # BookView.spread_bps, in Python's arithmetic
                pos += _float(b + pos, 20000.0 * (<object>ask0 - <object>bid0) / (<object>bid0 + <object>ask0), 4)
            else:
                pos += _put(b + pos, b"null", 4)
        else:
            pos += _put(b + pos, b'null,"spread_bps":null', 22)
        pos += _put(b + pos, b',"flow_1s":', 11)
        if not sub_ovf_i64(buy, sell, &flow):
            pos += _num64(b + pos, flow, self.qdigits, qdec)
        else:
            pos += _num_py(b + pos, <object>buy - <object>sell, self.qdigits, qdec)
        pos += _put(b + pos, b',"trades_1s":', 13)
        if add_ovf_u64(f.buy_count, f.sell_count, &count):
            raise ValueError("trades_1s: an integer beyond 64 bits")   # what orjson says of it too
        pos += _uint(b + pos, count)
        pos += _put(b + pos, b',"last_trade":', 14)
        pos += _put_bytes(b + pos, self.last_trade_json)
        pos += _put(b + pos, b',"ticker":', 10)
        pos += _put_bytes(b + pos, self.ticker_json)
        pos += _put_bytes(b + pos, self.tail)
        pos += _put_bytes(b + pos, self.label_json)
        pos += _put(b + pos, b',"ts":', 6)
        pos += _float(b + pos, <double>f.published_ns / 1e9, 6)
        b[pos] = 125                                  # }
        return PyBytes_FromStringAndSize(b, pos + 1)

    cdef Py_ssize_t _levels(self, char *out, const unsigned char *lv, uint64_t n, int64_t pdec,
                            int64_t qdec) except -1:
        cdef Py_ssize_t pos = 1
        cdef uint64_t i
        out[0] = 91                                   # [
        for i in range(n):
            if i:
                out[pos] = 44                         # ,
                pos += 1
            out[pos] = 91
            pos += 1
            pos += _num64(out + pos, _i64(lv + 16 * i), self.digits, pdec)
            out[pos] = 44
            pos += 1
            pos += _num64(out + pos, _i64(lv + 16 * i + 8), self.qdigits, qdec)
            out[pos] = 93                             # ]
            pos += 1
        out[pos] = 93
        return pos + 1

    cdef Py_ssize_t _mid(self, char *out, int64_t bid, int64_t ask, int64_t pdec) except -1:
        """(bid + ask) / 2 exactly, as book_json writes it: one more decimal than the prices'."""
        cdef int64_t twice, v, t, need
        cdef int64_t d = self.digits + 1
        if not add_ovf_i64(bid, ask, &twice) and not mul_ovf_i64(twice, 5, &v) and 0 <= d <= 18:
            need, t = d, v
            while need > 0 and t % 10 == 0:           # decimals_needed
                t //= 10
                need -= 1
            return _num64(out, v, d, max(pdec, need))
        big = (<object>bid + <object>ask) * 5
        return _num_py(out, big, d, max(pdec, decimals_needed(big, d)))

    cdef int _market(self, const BookFixed *f, const MarketSection *m) except -1:
        """The last trade's and the ticker's text, made again only when their figures change."""
        cdef int64_t k[15]
        k[0], k[1], k[2], k[3], k[4], k[5] = f.pdec, f.qdec, f.trade_side, f.trade_price, f.trade_qty, f.trade_ns
        # the ticker's exch ns, last, bid, ask (not the sizes), the 24 h figures
        k[6], k[7], k[8], k[9] = m.ticker[0], m.ticker[1], m.ticker[2], m.ticker[4]
        memcpy(&k[10], m.day, sizeof(m.day))
        if self.have_market and memcmp(k, self.m_key, sizeof(k)) == 0:
            return 0
        self.last_trade_json, self.ticker_json = _market_json(
            self.digits, self.qdigits, f.pdec, f.qdec, f.trade_side, f.trade_price, f.trade_qty, f.trade_ns,
            k[6], k[7], k[8], k[9], k[10], k[11], k[12], k[13], k[14])
        memcpy(self.m_key, k, sizeof(k))
        self.have_market = True
        return 0

    cdef bytes _trades(self, const BookFixed *f, const MarketSection *m, const unsigned char *p, uint64_t new):
        """The trade message of the ``new`` newest trades of the tape (``p``: the slot's
        bytes), oldest first, and how many of them were past the tape (``missed``); None with
        an empty tape."""
        cdef TapeEntry tape[TAPE_N]
        cdef uint64_t n = 0, limit = min(m.trades, <uint64_t>TAPE_N)
        memcpy(tape, p + TAPE_OFF, sizeof(tape))
        while n < limit and tape[n].side:                # a side: an entry
            n += 1
        if n == 0:
            return None
        cdef uint64_t take = min(new, n)
        cdef Py_ssize_t pos = 0
        cdef int64_t i
        cdef char *b = self._reserve(64 + len(self.trade_head) + TAPE_N * (2 * NUM + 48 + FLOAT_MAX))
        pos += _put_bytes(b + pos, self.trade_head)
        pos += _put(b + pos, b',"trades":[', 11)
        for i in range(<int64_t>take - 1, -1, -1):
            pos += _put(b + pos, b'{"price":', 9)
            pos += _num64(b + pos, tape[i].price, self.digits, f.pdec)
            pos += _put(b + pos, b',"qty":', 7)
            pos += _num64(b + pos, tape[i].qty, self.qdigits, f.qdec)
            if tape[i].side == 1:
                pos += _put(b + pos, b',"side":"buy","ts":', 19)
            else:
                pos += _put(b + pos, b',"side":"sell","ts":', 20)
            pos += _float(b + pos, <double>tape[i].ts / 1e9, 6)
            b[pos] = 125
            pos += 1
            if i:
                b[pos] = 44
                pos += 1
        pos += _put(b + pos, b'],"missed":', 11)
        pos += _uint(b + pos, new - take)
        b[pos] = 125
        return PyBytes_FromStringAndSize(b, pos + 1)

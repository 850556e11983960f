"""Subjects and messages on NATS (**contract**, docs/NATS.md).

Every message is one JSON object (orjson) with ``"v": SCHEMA`` and ``"host"``. Subjects:

- ``obitui.<host>.<venue>.<SYMBOL>.book``: one market's book, when it changed (at most the
  publish rate): the headless JSON of the book (exact decimal strings) plus key, label,
  update id and its time;
- ``obitui.<host>.<venue>.<SYMBOL>.trade``: the trades of that market since the last message;
- ``obitui.<host>.feeds``: every feed's state and counters (the headless JSON's ``feeds``) and
  the engine's;
- ``obitui.<host>.heartbeat``: once a second, whatever else happens;
- ``obitui.<host>.control``: request/reply to the owning supervisor's fleet (``r``/``s``);
- ``obitui.<host>.resend``: a console that just attached asks for everything again.

JetStream (optional, ``--publish-jetstream MAX_AGE``): the stream ``books_stream(host)``
(``OBITUI_<host>_BOOKS``) over ``books_stream_subjects(host)`` (``obitui.<host>.*.*.book``),
keeping the last ``JS_MSGS_PER_BOOK`` message(s) of each book for at most MAX_AGE seconds.

``<host>`` is one subject token: the publisher's ``--publish-host`` or the machine's host name,
with every character other than letters, digits, ``-`` and ``_`` written as ``_``."""
from __future__ import annotations

import re
import socket

SCHEMA = 1
PREFIX = "obitui"
HEARTBEAT_S = 1.0          # a heartbeat this often
STALE_HOST_S = 3.0         # a host whose last message is older than this is stale

_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def token(text: str) -> str:
    """``text`` as one NATS subject token (no dots, spaces or wildcards)."""
    return _TOKEN.sub("_", text) or "_"


def default_host() -> str:
    return token(socket.gethostname().split(".")[0])


def book_subject(host: str, venue: str, symbol: str) -> str:
    return f"{PREFIX}.{host}.{token(venue)}.{token(symbol)}.book"


def trade_subject(host: str, venue: str, symbol: str) -> str:
    return f"{PREFIX}.{host}.{token(venue)}.{token(symbol)}.trade"


def feeds_subject(host: str) -> str:
    return f"{PREFIX}.{host}.feeds"


def heartbeat_subject(host: str) -> str:
    return f"{PREFIX}.{host}.heartbeat"


def control_subject(host: str) -> str:
    return f"{PREFIX}.{host}.control"


def resend_subject(host: str) -> str:
    """A console that just attached asks the host's publisher to send every book and the feeds
    again (a quiet book is otherwise only published when it changes)."""
    return f"{PREFIX}.{host}.resend"


def books_stream(host: str) -> str:
    """The JetStream stream of ``host``'s book messages (``--publish-jetstream``): a stream
    name is one token with no dots or wildcards, which ``host`` (a subject token) already is."""
    return f"OBITUI_{host}_BOOKS"


def books_stream_subjects(host: str) -> str:
    """What that stream captures: every book subject of ``host``."""
    return f"{PREFIX}.{host}.*.*.book"


JS_MSGS_PER_BOOK = 1       # the stream keeps each book's last message (its latest snapshot)

ALL = f"{PREFIX}.>"          # everything of every host (an attached console subscribes to it)


def url_problem(flag: str, value: str) -> str | None:
    """What is wrong with a ``--publish``/``--attach``/``--nats-url`` value (comma-separated
    nats:// or tls:// URLs), or None. Never echoes a URL whole: what precedes an '@' may be a
    user, a password or a token, and credentials in a URL are refused (they would show in the
    process list and the shell history)."""
    parts = [u.partition("://") for u in value.split(",")]
    shown = ",".join(f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else scheme.rsplit("@", 1)[-1]
                     for scheme, sep, rest in parts)
    if any("@" in u for u in value.split(",")):
        return (f"{flag}: no credentials in a URL (they would show in the process list and the "
                f"shell history); give them by OBITUI_NATS_USER and OBITUI_NATS_PASSWORD, OBITUI_NATS_TOKEN "
                f"or --nats-creds FILE (URL without them: {shown!r})")
    if not all(u.strip().split("://", 1)[0] in ("nats", "tls") and "://" in u for u in value.split(",")):
        return f"{flag}: nats://host:port or tls://host:port URLs, got {shown!r}"
    return None

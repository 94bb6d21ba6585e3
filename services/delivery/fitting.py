"""Fitting text into a channel's limits.

A platform refuses a whole message when one field is over its limit (Slack answers
``invalid_blocks``, Discord a 400), and the wire contract allows longer text than some fields
hold (a 4,000-character summary, a 3,000-character Slack section). So every text an adapter
places is fitted here: shortened, visibly (``…``), with a pointer to the full request where the
field can hold one.

Lengths are counted in UTF-16 code units, which is never less than the characters (code points)
either platform may count: an emoji costs two. The cut never splits a character.
"""

from __future__ import annotations

ELLIPSIS = "…"


def units(text: str) -> int:
    """The length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space: for a title or a mail
    header, where a newline would be an injection."""
    return " ".join(text.split())


def fit(text: str, limit: int, more: str = "") -> str:
    """``text`` if it fits in ``limit`` units; else its start, ``…`` and ``more`` (e.g. a link to
    the full request), all within ``limit``. ``more`` is left out where it would take over half
    the room."""
    if units(text) <= limit:
        return text
    tail = ELLIPSIS + more
    if units(tail) * 2 > limit:
        tail = ELLIPSIS
    room = max(limit - units(tail), 0)
    # A cut through a surrogate pair leaves half a character, which the decoder drops.
    start = text.encode("utf-16-le")[: room * 2].decode("utf-16-le", errors="ignore")
    return start.rstrip() + tail

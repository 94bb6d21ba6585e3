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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ELLIPSIS = "…"


def as_is(text: str) -> str:
    return text


def units(text: str) -> int:
    """The length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space: for a title or a mail
    header, where a newline would be an injection."""
    return " ".join(text.split())


def fit(text: str, limit: int, more: str = "", escape: Callable[[str], str] = as_is) -> str:
    """``escape(text)`` if it fits in ``limit`` units; else the escaped start of ``text``, ``…``
    and ``more`` (e.g. a link to the full request, already in the platform's markup), all within
    ``limit``. ``more`` is left out where it would take over half the room. The cut is made in
    ``text`` before escaping, so it never splits an escape (``&amp;``)."""
    whole = escape(text)
    if units(whole) <= limit:
        return whole
    tail = ELLIPSIS + more
    if units(tail) * 2 > limit:
        tail = ELLIPSIS
    room = max(limit - units(tail), 0)
    start = cut(text, room)
    while units(escape(start)) > room:  # escaping grew it: cut by what it is over
        start = cut(start, max(units(start) - (units(escape(start)) - room), 0))
    return escape(start) + tail


def cut(text: str, room: int) -> str:
    """The start of ``text`` within ``room`` units, without trailing space. A cut through a
    surrogate pair leaves half a character, which the decoder drops."""
    return text.encode("utf-16-le")[: room * 2].decode("utf-16-le", errors="ignore").rstrip()

"""Atlas' free text (an endpoint's or endpoint service's errorMessage) made fit to be a
Prometheus label value, and from there an Alertmanager annotation, a Slack message or a
page: one line, printable, and short.

Atlas writes that text, not the operator: it may hold anything JSON can carry (newlines,
terminal escapes, bidirectional overrides, lone surrogates) and be of any length. Every
distinct value is a new series in Prometheus, so the length is capped too.
"""

from __future__ import annotations

import re
import unicodedata

LABEL_TEXT_MAX_CHARS = 256
"""Characters kept of a message, the ellipsis included: enough for Atlas' messages seen so
far (one or two sentences), bounded for a label value and a pager's screen."""
ELLIPSIS = "…"
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn"})
"""Control, format (zero-width, bidi overrides), private-use and unassigned characters."""


def label_text(text: str, max_chars: int = LABEL_TEXT_MAX_CHARS) -> str:
    """``text`` on one line: lone surrogates (invalid UTF-8 from a JSON ``\\ud800``) become
    U+FFFD, whitespace runs (newlines and tabs included) one space, control and invisible
    format characters are dropped, and what is longer than ``max_chars`` ends in an ellipsis.
    """
    # Only the head can survive the cap; a megabyte of message costs no more than its head.
    head = _SURROGATE.sub(_REPLACEMENT, text[: max_chars * 4])
    kept = "".join(
        " " if char.isspace() else char
        for char in head
        if char.isspace() or unicodedata.category(char) not in _DROPPED_CATEGORIES
    )
    line = " ".join(kept.split())
    if len(line) <= max_chars and len(head) == len(text):
        return line
    return line[: max_chars - len(ELLIPSIS)].rstrip() + ELLIPSIS

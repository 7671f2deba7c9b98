"""Atlas' free text as a label value: one printable line, bounded."""

from __future__ import annotations

import pytest

from monitor.free_text import ELLIPSIS, LABEL_TEXT_MAX_CHARS, label_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Subnet subnet-0a1b was deleted.", "Subnet subnet-0a1b was deleted."),
        ("  two\nlines\r\n\tand a tab  ", "two lines and a tab"),
        ("bell\x07 escape\x1b[0m del\x7f c1\x85end", "bell escape[0m del c1 end"),
        ("zero\u200bwidth bidi\u202eoverride", "zerowidth bidioverride"),
        ("line\u2028separator", "line separator"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        (
            'quotes " and \\ stay: the exposition escapes them',
            'quotes " and \\ stay: the exposition escapes them',
        ),
        (
            "Überprüfung fehlgeschlagen: 接続が拒否されました",
            "Überprüfung fehlgeschlagen: 接続が拒否されました",
        ),
        ("", ""),
        ("\n\t \x00", ""),
    ],
)
def test_label_text_is_one_printable_line(text: str, expected: str) -> None:
    assert label_text(text) == expected


def test_text_at_the_limit_is_kept_whole() -> None:
    text = "a" * LABEL_TEXT_MAX_CHARS

    assert label_text(text) == text


def test_longer_text_is_cut_with_an_ellipsis_at_the_limit() -> None:
    cut = label_text("abcd " * 100)
    exact = label_text("abcdef" * 100)

    # 51 words fill the limit but one character; the space before the cut goes too.
    assert cut == "abcd " * 50 + "abcd" + ELLIPSIS
    assert exact == ("abcdef" * 100)[: LABEL_TEXT_MAX_CHARS - 1] + ELLIPSIS
    assert len(exact) == LABEL_TEXT_MAX_CHARS


def test_a_huge_message_costs_only_its_head() -> None:
    cut = label_text("x" * 10_000_000, max_chars=10)

    assert cut == "x" * 9 + ELLIPSIS


def test_a_short_line_after_a_long_invisible_head_still_says_it_was_cut() -> None:
    cut = label_text("\x00" * 2000 + "tail", max_chars=10)

    assert cut == ELLIPSIS

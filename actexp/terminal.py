"""Text read from files, made safe to print on a terminal.

A run's name, status, error or override comes from its summary.json, config.yaml or ledger, which
anyone may have written. Control characters in them would reach the terminal raw: an OSC sequence
sets the window title, `ESC[2J` clears the screen, a newline forges a row of a table. `printable`
shows each of them as its escape (`\\x1b`, `\\n`), so the text stays readable and nothing in it acts.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, plus the format characters that reorder or hide text (bidi
# overrides and isolates, zero-width joiners): Unicode categories Cc and Cf.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def printable(text) -> str:
    """`text` (anything: str() of it) with every control or invisible format character written as
    its Python escape, e.g. `\\x1b[2J`; other text unchanged."""
    text = str(text)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def printable_lines(text) -> str:
    """`printable` for text whose own line breaks are meant (a table cell of two lines): each line
    made printable, the breaks kept."""
    return "\n".join(map(printable, str(text).split("\n")))


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in "\n\t\r":
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


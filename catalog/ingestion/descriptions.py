"""Study and series descriptions as the catalogue shows them: the de-identified text
(deid/clean.py already took the names, dates and numbers out), fitted to the column on a
word boundary, without the connector a removed name leaves behind ("CT CHEST W/O CONTRAST
for" once "for Dr. Avery Quinn" lost its name).

Only ever removes characters from the cleaned text, so nothing the cleaning removed can
come back."""
from __future__ import annotations

LIMIT = 200
ELLIPSIS = "…"

# Words that only lead into what followed them; at the end of a description they dangle.
_CONNECTORS = frozenset("""
a an and at by for from in into of on or per re regarding the to via vs with w/ wrt & + -
""".split())
_EDGE = " \t,;:-/&+(=#@"


def display_description(text: object, limit: int = LIMIT) -> str:
    words = str(text or "").split()
    shortened = len(" ".join(words)) > limit
    if shortened:
        kept, size = [], 0
        for word in words:
            size += len(word) + (1 if kept else 0)
            if size > limit - len(ELLIPSIS):
                break
            kept.append(word)
        # One word longer than the column: cut inside it rather than show nothing.
        words = kept or [words[0][:limit - len(ELLIPSIS)]]
    while True:
        before = len(words)
        words = _without_dangling_end(words)
        joined = " ".join(words)
        # A bracket opened and never closed lost its contents: drop it with what follows.
        if joined.count("(") > joined.count(")"):
            words = joined[:joined.rfind("(")].split()
        if len(words) == before:
            break
    joined = " ".join(words)
    return joined + ELLIPSIS if shortened and joined else joined


def _without_dangling_end(words: list[str]) -> list[str]:
    words = list(words)
    while words:
        last = words[-1]
        if last.lower() in _CONNECTORS or last.strip(_EDGE).lower() in _CONNECTORS | {""}:
            words.pop()
            continue
        words[-1] = last.rstrip(_EDGE)
        break
    return words

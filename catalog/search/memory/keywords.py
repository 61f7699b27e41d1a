"""Keyword matches from the worker's inverted index instead of a full-text index scan.

A common word matches hundreds of thousands of studies; PostgreSQL's GIN index finds
them quickly but then visits every matching row of the table for its id (0.2-0.4 s at a
million studies, the first time a keyword is searched). The worker therefore also keeps,
per dataset and lexeme, the sorted ids of the studies whose search vector holds it
(catalog_keywordpostings, rebuilt with those vectors). A query is turned into lexemes
by PostgreSQL itself (websearch_to_tsquery: the same stemming and stop words as the
search vectors), and its AND / OR / AND NOT are done here on id arrays.
Phrases (quoted words, hyphenated words) need word positions: those queries return None
and the caller asks PostgreSQL.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from django.db import connection

_EMPTY = np.zeros(0, dtype=np.int64)
_TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'|(&|\||!|\(|\))|(\S))")


class Unsupported(Exception):
    """The query holds something only PostgreSQL evaluates (phrases, prefixes, weights)."""


# A parsed tsquery: a lexeme (str), ("not", node), ("and", [nodes]) or ("or", [nodes]).
Node = str | tuple


def parse_tsquery(text: str) -> Node | None:
    """The tree of a tsquery's text form (``'chest' & !'contrast'``); None when empty
    (only stop words). Raises Unsupported on phrase operators, prefixes and weights."""
    tokens: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(text):
        lexeme, operator, other = match.groups()
        if other is not None:  # "<->", "<2>", ":*", ":AB"
            raise Unsupported(f"tsquery syntax {other!r}")
        tokens.append(("lexeme", lexeme.replace("''", "'")) if lexeme is not None else ("op", operator))
    if not tokens:
        return None
    parser = _Parser(tokens)
    node = parser.disjunction()
    if parser.at < len(tokens):
        raise Unsupported("unbalanced tsquery")
    return node


class _Parser:
    """PostgreSQL's precedence: ! binds tighter than &, which binds tighter than |."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.at = tokens, 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def disjunction(self) -> Node:
        return self._chain("|", "or", self.conjunction)

    def conjunction(self) -> Node:
        return self._chain("&", "and", self.factor)

    def _chain(self, operator: str, kind: str, part: Callable[[], Node]) -> Node:
        """``part`` (operator ``part``)*: one node, or (kind, [nodes])."""
        parts = [part()]
        while self._peek() == ("op", operator):
            self.at += 1
            parts.append(part())
        return parts[0] if len(parts) == 1 else (kind, parts)

    def factor(self) -> Node:
        token = self._peek()
        if token is None:
            raise Unsupported("tsquery ends early")
        self.at += 1
        if token == ("op", "!"):
            return ("not", self.factor())
        if token == ("op", "("):
            node = self.disjunction()
            if self._peek() != ("op", ")"):
                raise Unsupported("unbalanced tsquery")
            self.at += 1
            return node
        if token[0] == "lexeme":
            return token[1]
        raise Unsupported(f"tsquery syntax {token[1]!r}")


def lexemes_of(node: Node) -> set[str]:
    if isinstance(node, str):
        return {node}
    if node[0] == "not":
        return lexemes_of(node[1])
    return set().union(*(lexemes_of(part) for part in node[1]))


def evaluate(node: Node, postings: dict[str, np.ndarray]) -> np.ndarray:
    """Sorted unique study ids matching ``node``; a negation only as a part of an AND
    with something positive (a lone NOT would match every study without the word,
    including those without any search vector, which PostgreSQL never matches)."""
    if isinstance(node, str):
        return postings.get(node, _EMPTY)
    kind, parts = node
    if kind == "or":
        return np.unique(np.concatenate([evaluate(part, postings) for part in parts]))
    if kind == "and":
        positive = [part for part in parts if not _is_not(part)]
        if not positive:
            raise Unsupported("negation alone")
        ids = evaluate(positive[0], postings)
        for part in positive[1:]:
            ids = np.intersect1d(ids, evaluate(part, postings), assume_unique=True)
        for part in parts:
            if _is_not(part):
                ids = np.setdiff1d(ids, evaluate(part[1], postings), assume_unique=True)
        return ids
    raise Unsupported("negation alone")


def _is_not(node: Node) -> bool:
    return isinstance(node, tuple) and node[0] == "not"


def matching_ids(q: str) -> np.ndarray | None:
    """Ids (sorted, unique) of the studies whose search vector matches the keywords, from
    the postings; None when the query needs PostgreSQL's own evaluation."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT websearch_to_tsquery('english', %s)::text", [q])
        text = cursor.fetchone()[0]
        try:
            node = parse_tsquery(text)
        except Unsupported:
            return None
        if node is None:
            return _EMPTY  # only stop words: PostgreSQL matches nothing either
        cursor.execute("SELECT lexeme, study_ids FROM catalog_keywordpostings "
                       "WHERE lexeme = ANY(%s)", [sorted(lexemes_of(node))])
        found: dict[str, list[np.ndarray]] = {}
        for lexeme, blob in cursor.fetchall():
            found.setdefault(lexeme, []).append(np.frombuffer(blob, dtype=">i8"))
    # Each dataset's ids are sorted; together they need one sort (ids are unique).
    postings = {lexeme: np.sort(np.concatenate(parts)).astype(np.int64) for lexeme, parts in found.items()}
    try:
        return evaluate(node, postings)
    except Unsupported:
        return None


def postings_refresh(*, dataset_id: int) -> None:
    """Rebuild one dataset's postings from its studies' search vectors; called wherever
    those vectors are rebuilt (catalog/search/vectors.py), in the same transaction."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM catalog_keywordpostings WHERE dataset_id = %s", [dataset_id])
        cursor.execute(
            "INSERT INTO catalog_keywordpostings (dataset_id, lexeme, study_ids) "
            "SELECT %s, lexeme, string_agg(int8send(id), ''::bytea ORDER BY id) FROM ("
            "  SELECT id, unnest(tsvector_to_array(search_vector)) AS lexeme FROM catalog_study"
            "  WHERE dataset_id = %s AND instance_count > 0 AND search_vector IS NOT NULL"
            ") AS words GROUP BY lexeme",
            [dataset_id, dataset_id])

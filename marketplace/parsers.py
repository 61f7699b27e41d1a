"""The API's JSON parser: a cap on body size and nesting depth, and text PostgreSQL can store.

DRF's JSONParser reads the whole stream (DATA_UPLOAD_MAX_MEMORY_SIZE does not apply to
it), lets 100,000 nested "[" raise RecursionError (a 500), and accepts NaN and Infinity
(Python's json module does). Every refusal is a 400 in the API's error envelope naming the
field, e.g. ``criteria.q[0]: contains a NUL byte``.
"""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from marketplace.input_guard import InvalidInputError, printable_name, text_problem


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def check_json(data: Any, *, max_depth: int) -> None:
    """Walk parsed JSON without recursion: depth, and every key and string storable."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise InvalidInputError(path or "body", f"JSON is nested too deep (at most {max_depth} levels).")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and text_problem(key):
                    raise InvalidInputError(printable_name(_path(path, key)), f"the key {text_problem(key)}")
                stack.append((child, _path(path, key), depth + 1))
        elif isinstance(value, str) and text_problem(value):
            raise InvalidInputError(printable_name(path or "body"), text_problem(value) or "")


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:  # noqa: ANN001
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise InvalidInputError("body", f"the request body is too large (at most {limit:,} bytes).")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("body", "the request body is not UTF-8 text.") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise InvalidInputError("body", f"JSON is nested too deep (at most {settings.API_MAX_JSON_DEPTH} "
                                            "levels).") from None
        except ValueError as exc:
            raise InvalidInputError("body", f"not valid JSON: {str(exc)[:120]}") from None
        check_json(data, max_depth=settings.API_MAX_JSON_DEPTH)
        return data

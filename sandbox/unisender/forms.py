"""PHP-style bracketed form parsing, as Unisender's PHP backend reads request arguments."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse_php_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`a[0][1]=x&b[]=y&c[k]=z` -> {"a": {"0": {"1": "x"}}, "b": {"0": "y"}, "c": {"k": "z"}}."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            out[key] = value
            continue
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = out
        for part in parts[:-1]:
            name = str(_next_index(node)) if part == "" else part
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last = parts[-1]
        node[str(_next_index(node)) if last == "" else last] = value
    return out


def _next_index(node: dict[str, Any]) -> int:
    # PHP appends `[]` at one past the largest integer key.
    numeric = [int(k) for k in node if k.isdigit()]
    return max(numeric) + 1 if numeric else 0


def as_list(value: Any) -> list[Any]:
    """A bracketed array as a list ordered by its integer keys; a scalar becomes [scalar]."""
    if value is None:
        return []
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        return [value[k] for k in keys]
    if isinstance(value, list):
        return value
    return [value]


def split_ids(value: Any) -> list[int] | None:
    """A comma-separated id string -> ints; None when absent; ValueError on junk."""
    if value is None:
        return None
    if isinstance(value, dict):
        raise ValueError("list ids must be a comma-separated string")
    text = str(value).strip()
    if not text:
        return []
    return [int(part) for part in text.split(",") if part.strip()]

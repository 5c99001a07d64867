"""One error base for everything a user can cause, and one way to word it.

Every error Personae raises for bad input, a missing file, an unreachable
server or a damaged store derives from :class:`PersonaeError`; its message is a
single line naming the file (or endpoint), the field and what was expected.
``run.py`` prints it and exits 2. Anything else is a bug: one line plus the path
of a saved traceback.
"""
from __future__ import annotations

from typing import Any, Sequence


class PersonaeError(Exception):
    """A user-facing error whose message is already one line."""

    def __str__(self) -> str:  # never let a multi-line message reach the console
        text = super().__str__().strip()
        return text.splitlines()[0] if text else type(self).__name__


# pydantic's union-member markers in an error location (e.g. 'list[str]'), not fields
_UNION_MARKERS = {"int", "str", "float", "bool", "function-after", "function-before", "function-wrap"}


def field_path(loc: Sequence[Any], skip: Sequence[str] = ()) -> str:
    """``('population', 'conditions', 2)`` -> ``population.conditions[2]``;
    ``skip`` names more union-member markers (model class names) to leave out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in _UNION_MARKERS or str(part) in skip or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "top level"


def explain(err: dict) -> str:
    """What was expected, in words, from one pydantic error dict."""
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "literal_error":
        return msg.replace("Input should be", "expected")
    got = err.get("input")
    got = f", got {got!r}" if got is not None and not isinstance(got, (dict, list)) else ""
    return msg.replace("Input should be", "expected").replace("Value error, ", "") + got


def validation_line(label: str, exc, skip: Sequence[str] = ()) -> str:
    """One line for a pydantic ``ValidationError``: ``file: field: what was expected (+N more)``."""
    errors = exc.errors()
    err = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{label}: {field_path(err['loc'], skip)}: {explain(err)}{more}"

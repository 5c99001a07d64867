"""One error base for everything a user can cause, and one way to word it.

Every error Personae raises for bad input, a missing file, an unreachable
server or a damaged store derives from :class:`PersonaeError`; its message is a
single line naming the file (or endpoint), the field and what was expected.
``run.py`` prints it and exits 2. Anything else is a bug: one line plus the path
of a saved traceback.
"""
from __future__ import annotations

import difflib
import typing
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ValidationError


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


def one_line(text: str) -> str:
    """Every run of white space, line breaks included, as one space."""
    return " ".join(str(text).split())


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[QuestionSpec]`` or ``BinsSpec | int | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(model: type[BaseModel] | None, loc: Sequence) -> list[str]:
    """Field names accepted where an unknown field was found (for the error message)."""
    for part in loc[:-1]:
        if isinstance(part, str) and model is not None and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return [f.alias or name for name, f in model.model_fields.items()] if model is not None else []


def _unknown_field(model: type[BaseModel], loc: Sequence, top_level: str) -> str:
    """``unknown field (did you mean X?; allowed: ...)``, with ``top_level`` added for a top-level field."""
    allowed = _allowed_fields(model, loc)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    what = "unknown field" + (f" (did you mean {close[0]}?" if close else " (") + (f" allowed: {', '.join(allowed)})" if allowed else ")")
    what = what.replace(" ()", "").replace("? allowed", "?; allowed")
    if len(loc) == 1 and top_level:
        what += f"; {top_level}"
    return what


def _typo_pairs(errors: list[dict]) -> dict[int, int]:
    """Unknown field -> the missing required field it most likely misspells (same parent):
    ``option:`` for ``options:`` is one mistake, reported as one."""
    missing = {i: e["loc"] for i, e in enumerate(errors) if e["type"] == "missing"}
    pairs: dict[int, int] = {}
    for i, e in enumerate(errors):
        if e["type"] != "extra_forbidden" or not isinstance(e["loc"][-1], str):
            continue
        for j, loc in missing.items():
            if j not in pairs.values() and loc[:-1] == e["loc"][:-1] and difflib.get_close_matches(e["loc"][-1], [str(loc[-1])], cutoff=0.6):
                pairs[i] = j
                break
    return pairs


def validation_line(
    label: str,
    exc: ValidationError,
    skip: Sequence[str] = (),
    *,
    model: type[BaseModel] | None = None,
    hint: Callable[[dict], str | None] | None = None,
    top_level: str = "",
) -> str:
    """One line for a pydantic ``ValidationError``: ``file: field: what was expected`` and how many more problems.

    ``skip`` names more union-member markers (model class names) to leave out
    of the field path; ``hint(err)`` may word an error that is neither a
    missing nor an unknown field (None: the default wording).

    Without ``model`` (scenario files): the first error in words
    (:func:`explain`), then ``(+N more)`` counting pydantic's errors.

    With ``model``, the model validated (study files): a misspelt field and
    the required field it misspells are one problem, reported first; an
    unknown field names the closest allowed field and lists them all
    (``top_level`` is added when the field is a top-level one); other errors
    keep pydantic's message and the value got; further problems are counted by
    field, ``(and N more problems)``; white space runs become one space.
    """
    errors = exc.errors()
    pairs = _typo_pairs(errors) if model is not None else {}
    # A misspelt field is the cause of its "required field is missing": report the typo first.
    first = errors[min(pairs)] if pairs else errors[0]
    where = field_path(first["loc"], skip)
    if model is not None and first["type"] == "extra_forbidden":
        what = _unknown_field(model, first["loc"], top_level)
    elif first["type"] in ("missing", "extra_forbidden"):
        what = explain(first)
    else:
        what = (hint(first) if hint is not None else None) or (
            explain(first) if model is None else f"{first['msg']} (got {repr(first.get('input'))[:60]})"
        )
    if model is None:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{label}: {where}: {what}{more}"
    # Count problems by field, not by pydantic error: a union (int | str | bool) reports one per member.
    fields = {field_path(e["loc"], skip) for i, e in enumerate(errors) if i not in pairs.values()}
    n_more = len(fields - {where})
    more = f" (and {n_more} more problem{'s' if n_more > 1 else ''})" if n_more else ""
    return one_line(f"{label}: {where}: {what}{more}")


def error_line(exc: BaseException) -> str:
    """One line for any exception (the page's message, a failed run's record):
    Personae's own errors are already one line naming the file and field;
    anything else is reduced to its first line, with its type where the text
    alone would not say what went wrong."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    if isinstance(exc, PersonaeError):
        return first or type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, FileNotFoundError)) and first:
        return first.strip("'\"")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

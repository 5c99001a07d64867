"""Shared parts of the higher-order-binding scenarios (Kang et al. 2025):
partisan personas, per-party ratings, and every gap beside its comparators.

Personas are matched to real partisans of a human study (their demographics
and party); each agent speaks for one partisan, so "own party" and "other
party" in an item are that partisan's. Every gap table row (condition x
party) holds the personas' value, the matched human respondents' value
computed the same way on the study's microdata where the study holds the
items (else "not in this study"), and the published value of another
instrument, labelled with it (analysis.partisan).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import estimators
from analysis.distributions import wasserstein, weighted_distribution
from analysis.partisan import (
    NOT_IN_STUDY,
    OTHER,
    PARTIES,
    GapEstimate,
    gap_estimate,
    party_rows,
    positions_of,
    published,
    split_half_wd,
)
from core.seeds import derive_seed
from scenarios.config import ConfigError

from .base import SurveyModel
from .contract import ScenarioReport

__all__ = ["PARTIES", "OTHER", "PartisanModel", "HumanSide"]


@dataclass(frozen=True)
class HumanSide:
    """The matched humans' two rating sets for a gap and how they were measured."""

    a: np.ndarray
    b: np.ndarray
    wa: np.ndarray
    wb: np.ndarray
    paired: bool
    instrument: str


class PartisanModel(SurveyModel):
    gap_kind = ""  # key of analysis.partisan.PUBLISHED_INSTRUMENT
    # item id -> party of the respondent -> the study's question id, for items
    # whose human counterpart depends on the respondent's party (e.g. feel_own).
    human_questions: dict[str, dict[str, str]] = {}

    def select_humans(self, study):
        if "party" not in [t.name for t in study.traits]:
            raise ConfigError(f"human.study: '{study.name}' has no 'party' trait; partisan scenarios need one")
        # Kept before human.sample: the individual-level demographic-cell baseline reads every partisan.
        self.reference_study = study.subset(study.group_mask("party", list(PARTIES)))
        return self.reference_study

    def individual_answers(self, study, items: list, which: str = "responses") -> np.ndarray | None:
        """``[study.n, Q]``: each partisan's own answer to each item -- the study's
        question of that id, or the one ``human_questions`` names for the
        respondent's party (``which``: ``responses`` or ``retest``); NaN where the
        study holds none with the item's options. None when it holds none at all."""
        table = study.responses if which == "responses" else study.retest
        if table is None or not study.is_individual:
            return None
        options = study.trait("party").options
        codes = study.demographics["party"].to_numpy(np.int64)
        out = np.full((study.n, len(items)), np.nan)
        for j, item in enumerate(items):
            for party in PARTIES:
                qid = item.id if item.id in study.question_ids else self.human_questions.get(item.id, {}).get(party)
                if qid is None or qid not in table.columns or party not in options or study.question(qid).n_options != len(item.options):
                    continue
                rows = codes == options.index(party)
                out[rows, j] = table[qid].to_numpy(float)[rows]
        return out if np.isfinite(out).any() else None

    @property
    def estimator(self) -> estimators.Estimator:
        return estimators.Estimator.of(self.cfg.analysis)

    # ------------------------------------------------------------ personas
    def persona_distribution(self, agent, qid: str) -> np.ndarray | None:
        """The agent's answer distribution as the estimator reads it: exact
        option probabilities, or the frequencies of N seeded sampled answers."""
        ans = agent.answers.get(qid)
        if ans is None:
            return None
        p = np.asarray(ans.probs, dtype=float)
        est = self.estimator
        if not est.samples:
            return p / p.sum() if p.sum() > 0 else p
        return estimators.sample_frequencies(p, est.samples, np.array(derive_seed(self.cfg.seed, "answers", agent.persona_id, qid)))

    def ratings(self, p_i: int, item_ids: list[str], party: str, *, favourable_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per agent of population ``p_i`` whose party is ``party``: its mean
        position (1..K, higher = more favourable when ``favourable_first``) over
        ``item_ids`` under the estimator, and its human's survey weight."""
        (vals,), weights = self.paired_ratings(p_i, [item_ids], party, favourable_first=favourable_first)
        return vals, weights

    def paired_ratings(self, p_i: int, item_sets: list[list[str]], party: str, *, favourable_first: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`ratings` over several item sets for the same agents: only the
        agents rated on every set (a within-persona gap pairs them), one array
        per set, and their humans' survey weights."""
        sets: list[list[float]] = [[] for _ in item_sets]
        weights = []
        for a in self.agents_of(p_i):
            if a.party != party:
                continue
            means = [self._mean_position(a, ids, favourable_first) for ids in item_sets]
            if all(m is not None for m in means):
                for out, m in zip(sets, means):
                    out.append(m)
                weights.append(self.study.weights[a.human] if self.study is not None and a.human is not None else 1.0)
        return [np.asarray(v, dtype=float) for v in sets], np.asarray(weights, dtype=float)

    def _mean_position(self, agent, item_ids: list[str], favourable_first: bool) -> float | None:
        pos = []
        for qid in item_ids:
            p = self.persona_distribution(agent, qid)
            if p is not None:
                pos.append(float(p @ positions_of(np.arange(len(p)), len(p), favourable_first=favourable_first)))
        return float(np.mean(pos)) if pos else None

    # ------------------------------------------------------------ matched humans
    def human_question(self, item_id: str, party: str) -> str | None:
        """The study's question holding the human answer to ``item_id`` for a ``party`` respondent."""
        if self.study is None or not self.study.is_individual:
            return None
        qid = item_id if item_id in self.study.question_ids else self.human_questions.get(item_id, {}).get(party)
        return qid if qid in self.study.question_ids else None

    def holds(self, item_ids: list[str], party: str) -> bool:
        return bool(item_ids) and all(self.human_question(q, party) for q in item_ids)

    def human_ratings(self, item_ids: list[str], party: str, *, favourable_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The matched ``party`` respondents' mean positions over ``item_ids`` (NaN
        where they answered none) and their survey weights."""
        rows = party_rows(self.study, party)
        cols = []
        for qid in item_ids:
            hq = self.human_question(qid, party)
            k = self.study.question(hq).n_options
            cols.append(positions_of(self.study.responses[hq].to_numpy(float)[rows], k, favourable_first=favourable_first))
        with np.errstate(all="ignore"):
            m = np.nanmean(np.array(cols), axis=0) if cols else np.full(len(rows), np.nan)
        return m, self.study.weights[rows]

    def human_gap(self, party: str) -> HumanSide | None:
        """The matched humans' rating sets of this scenario's gap, or None when the study holds no such items."""
        return None

    # ------------------------------------------------------------ tables
    def gap_row(self, label: str, party: str, a, wa, b, wb, *, paired: bool, extra: dict | None = None, kind: str | None = None, human_side=None) -> dict:
        """One row of a gap table. ``kind``: the published gap shown beside it
        (default this scenario's; "" for none); ``human_side(party)``: the matched
        humans' rating sets (default :meth:`human_gap`)."""
        persona = gap_estimate(a, b, wa, wb, paired=paired, n_boot=500, seed=self.cfg.seed)
        human = self._human_gap_estimate(party, human_side or self.human_gap)
        pub = published(self.gap_kind if kind is None else kind, party)
        row = {
            "condition": label,
            "party": party,
            "persona_delta": persona.delta,
            "persona_ci_low": persona.low,
            "persona_ci_high": persona.high,
            "persona_d": persona.d,
            "personas_a": persona.n_a,
            "personas_b": persona.n_b,
            "matched_human_delta": human[0].delta if human else np.nan,
            "matched_human_ci_low": human[0].low if human else np.nan,
            "matched_human_ci_high": human[0].high if human else np.nan,
            "matched_human_d": human[0].d if human else np.nan,
            "matched_human_split_half": human[0].lower_bound if human else np.nan,
            "matched_human_n": (human[0].n_a if human else 0),
            "matched_human_instrument": human[1] if human else NOT_IN_STUDY,
            "published_delta": pub.delta if pub else np.nan,
            "published_d": pub.d if pub else np.nan,
            "published_instrument": pub.instrument if pub else "none",
        }
        row.update(extra or {})
        return row

    def _human_gap_estimate(self, party: str, human_side) -> tuple[GapEstimate, str] | None:
        cache = self.__dict__.setdefault("_human_gaps", {})
        key = (human_side.__name__, party)
        if key not in cache:
            side = human_side(party) if self.study is not None else None
            cache[key] = (
                None
                if side is None
                else (gap_estimate(side.a, side.b, side.wa, side.wb, paired=side.paired, n_boot=500, seed=self.cfg.seed, lower_bound=True), side.instrument)
            )
        return cache[key]

    def party_wd_rows(self, item_ids: list[str]) -> list[dict]:
        """Per condition and party, WD between the personas' and the matched
        humans' answer distributions on the items the study holds (survey
        weights; estimator's positions), with the humans' split-half bound."""
        rows = []
        est = self.estimator
        for party in PARTIES:
            held = [q for q in item_ids if self.human_question(q, party)]
            if not held:
                continue
            prows = party_rows(self.study, party)
            humans = {}
            for qid in held:
                hq = self.human_question(qid, party)
                k = self.study.question(hq).n_options
                x = self.study.responses[hq].to_numpy(float)[prows]
                w = self.study.weights[prows]
                humans[qid] = (weighted_distribution(x, k, w), split_half_wd(x, k, w, normalize=est.normalize, seed=self.cfg.seed), hq)
            for p_i, population in enumerate(self.populations):
                agents = [a for a in self.agents_of(p_i) if a.party == party]
                for qid in held:
                    dists = [(self.persona_distribution(a, qid), a) for a in agents]
                    dists = [(d, a) for d, a in dists if d is not None]
                    if not dists:
                        continue
                    w = np.array([self.study.weights[a.human] for _, a in dists])
                    persona = np.average(np.array([d for d, _ in dists]), axis=0, weights=w)
                    human, lb, hq = humans[qid]
                    rows.append(
                        {
                            "condition": population.label,
                            "party": party,
                            "item": qid,
                            "human_question": hq,
                            "personas": len(dists),
                            "matched_humans": int(np.isfinite(self.study.responses[hq].to_numpy(float)[prows]).sum()),
                            "wd": wasserstein(human, persona, normalize=est.normalize),
                            "human_split_half_wd": lb,
                            "persona_mean": float(persona @ np.arange(1, len(persona) + 1)),
                            "human_mean": float(np.nansum(human * np.arange(1, len(human) + 1))),
                        }
                    )
        return rows

    def distribution_panels(self) -> list[tuple]:
        """Per party and item: each condition's mean persona distribution (that
        party's personas, weighted by their humans) and the matched humans' one
        when the study holds the item."""
        panels = []
        for party in PARTIES:
            prows = party_rows(self.study, party) if self.study is not None else np.zeros(0, dtype=np.int64)
            for item in self.item_list:
                persona = {}
                for p_i, population in enumerate(self.populations):
                    agents = [a for a in self.agents_of(p_i) if a.party == party]
                    dists = [(self.persona_distribution(a, item.id), a) for a in agents]
                    dists = [(d, a) for d, a in dists if d is not None]
                    if dists:
                        w = np.array([self.study.weights[a.human] if self.study is not None and a.human is not None else 1.0 for _, a in dists])
                        persona[population.label] = np.average(np.array([d for d, _ in dists]), axis=0, weights=w)
                hq = self.human_question(item.id, party)
                human = None
                if hq is not None:
                    human = weighted_distribution(self.study.responses[hq].to_numpy(float)[prows], len(item.options), self.study.weights[prows])
                if persona:
                    panels.append((party, item.id, item.options, persona, human))
        return panels

    def partisan_plots(self, name: str, table: pd.DataFrame, gap_label: str) -> dict:
        from analysis.partisan_plots import plot_gaps, plot_party_distributions

        plots = {}
        if len(table):
            plots[f"plots/{name}_gaps"] = plot_gaps(table, f"{self.cfg.name}: {name.replace('_', ' ')} gap per party", gap_label)
        panels = self.distribution_panels()
        if panels:
            plots[f"plots/{name}_distributions"] = plot_party_distributions(panels, f"{self.cfg.name}: personas vs matched humans per party")
        return plots

    def header_notes(self) -> list[str]:
        est = self.estimator
        notes = [
            f"persona ratings: each persona's mean position under the {est.answers}; gaps: mean of group a minus mean of "
            "group b with a 95% percentile bootstrap CI (500 resamples) and Cohen's d (pooled SD); survey weights of the "
            "humans the personas stand for.",
            "matched_human_*: the same gap computed on the real respondents the personas were matched to, with its CI and "
            "its split-half lower bound (mean |gap(half 1) - gap(half 2)| over 100 random splits); 'not in this study' when "
            "the study holds no such items. published_*: a value from another instrument, named in published_instrument; "
            "it is not computed here.",
        ]
        if self.study is not None and self.study.partisans:
            notes.append(f"partisans: {self.study.partisans}.")
        return notes

    def partisan_report(self, tables: dict[str, pd.DataFrame], notes: list[str], plots: dict | None = None) -> ScenarioReport:
        from .binding import add_diagnostics
        from .survey import add_individual_level

        report = ScenarioReport(
            tables=tables,
            notes=self.header_notes() + notes,
            estimator=self.estimator.describe() + (f"; {self.study.partisans}" if self.study is not None and self.study.partisans else ""),
            plots=plots or {},
        )
        add_individual_level(self, report)
        return add_diagnostics(self, report)

    def gap_table(self, rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    @staticmethod
    def with_wd(table: pd.DataFrame, wd_rows: list[dict], items: list[str]) -> pd.DataFrame:
        """The talk's per-party WD columns: mean WD over ``items`` per condition and
        party (and the humans' split-half WD); NaN unless the study holds every one
        of the items for that party."""
        wd = pd.DataFrame([r for r in wd_rows if r["item"] in items])
        if not wd.empty:
            wd = wd.groupby(["condition", "party"], sort=False).filter(lambda g: set(g["item"]) == set(items))
        if wd.empty:
            return table.assign(wd=np.nan, wd_human_split_half=np.nan)
        mean = wd.groupby(["condition", "party"], sort=False)[["wd", "human_split_half_wd"]].mean().reset_index()
        return table.merge(mean.rename(columns={"human_split_half_wd": "wd_human_split_half"}), on=["condition", "party"], how="left")

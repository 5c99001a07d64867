"""The consensus report's tables on deliberation and how to read them.

The tables of the main debate (agreement per round, positions before and after,
the mediator's fallbacks per phase) from finished episodes, and the notes the
report prints under them; the representativity tables are
:meth:`mechanisms.representatives_phase.RepresentativesPhase.tables`.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .episode import EpisodeResult

CONSENSUS_NOTE = (
    "consensus: agreement of each participant with each round's statement on a 7-point Likert scale, read as an "
    "option distribution and reduced to its expected value (1-7); min = the worst-off participant."
)
POSITIONS_NOTE = (
    "positions: each participant's agreement (1-7, expected value) with the question's affirming statement before "
    "deliberation and after it (recalling their opinion and the group's final statement); change = after - before; "
    "disagreement = mean |p_i - p_j| over pairs of participants."
)
PAPERS_ACTS = " (the paper's setting)"  # beside the acts when representatives only critique
SELF_RATING_SOURCE = "payoffs = the original personas' self-ratings, 1-7"
MODEL_SOURCE = (
    "payoffs = the trained payoff model's scores ({model}) of the final statement for each original "
    "participant (their opinion in that rollout), 1-7; self_rating_gap = the same gap from the originals' own ratings"
)
REPRESENTATIVITY_NOTE = (
    "representativity: representatives act in: {acts}{papers}. d_i = E[final payoff of participant i with representatives] "
    "- E[... of the originals] ({source}), expectations over {rollouts} seeded rollouts; signed_gap = mean d_i, payoff_gap = "
    "mean |d_i| (eq. 21) over the substituted participants of all groups; ci = 95% expanded-percentile bootstrap resampling "
    "groups (the column interval says when a single group forces rollouts instead); null = each original re-played as its "
    "own representative under other seeds: null_gap is the estimator's noise floor (|d_i| > 0 from rollout noise alone), "
    "excess_over_null = payoff_gap - null_gap with its own cluster-bootstrap interval; one = each participant substituted "
    "alone, all = everyone; win_rate = the judge's preference for the representatives' final statement over the originals' "
    "(eq. 22; 0.5 = indistinguishable), averaged per group, then over groups. representativity_by_group: the same per group, "
    "ci over its rollouts."
)
RANKERS = {
    "words": "an assistant ranks the candidates for each participant from their words only (question, opinion, statement under "
             "revision, critique; the Habermas Machine's ranking model), no backstory or record in the prompt",
    "persona": "each participant ranks as itself, its backstory (or a stand-in's record, if ranking is represented) in the prompt",
}
# Counts of mediation_fallbacks, in the mediation table's column order.
FALLBACKS = ("mediations", "statement_fallbacks", "ranking_fallbacks")
# The mediator's settings beside the counts.
SETTINGS = ("name", "num_candidates", "ranking", "ranker", "retries", "cot_retries")


def representativity_note(acts: Sequence[str], payoff: str, payoff_model: str | None, rollouts: int) -> str:
    """How to read the representativity tables (``payoff``: "self_rating" or "model")."""
    source = MODEL_SOURCE.format(model=payoff_model) if payoff == "model" else SELF_RATING_SOURCE
    return REPRESENTATIVITY_NOTE.format(acts=", ".join(acts), papers=PAPERS_ACTS if list(acts) == ["critique"] else "", source=source,
                                        rollouts=rollouts)


def ranking_note(mediator: str, ranker: str, ranking: str, candidates: int, retries: int) -> str:
    """Which ranker ran, and the mediator's retry settings."""
    if mediator != "habermas":
        return f"ranking: the {mediator} mediator ranks no candidates."
    text = f"ranking: ranker = {ranker}: {RANKERS[ranker]}"
    text += f"; {ranking} ranking of {candidates} candidates; an unusable candidate is generated again up to {retries} times"
    if ranking == "cot":
        text += f", an unparsed chain-of-thought ranking is asked again up to {retries} times, then replaced by ratings"
    return text + " (mediation: the fallbacks counted per phase)."


def mediation_fallbacks(results: Sequence[EpisodeResult]) -> dict[str, int]:
    """Counts over episodes' mediations: statements that are no ranked candidate
    (every candidate unusable after the retries) and participants' CoT rankings
    replaced by ratings (unparsed after the retries)."""
    meds = [m for res in results for m in res.mediations]
    return {"mediations": len(meds), "statement_fallbacks": sum(bool(m.fallback) for m in meds),
            "ranking_fallbacks": sum(len(m.ranking_fallbacks) for m in meds)}


def consensus_table(results: Sequence[EpisodeResult]) -> pd.DataFrame:
    """Per group (``results[g]``, its main episode) and round: mean and minimum agreement with the statement."""
    rows = []
    for g, res in enumerate(results):
        for r, statement in enumerate(res.statements):
            rows.append({"group": g, "question": res.question.question, "round": r, "mean_agreement": float(res.payoff.mean[r]),
                         "min_agreement": float(res.payoff.min[r]), "statement": statement.replace("\n", " ")})
    return pd.DataFrame(rows)


def positions_table(results: Sequence[EpisodeResult]) -> pd.DataFrame:
    """Per group's participant: position before and after deliberation, its change and the group's disagreement."""
    rows = []
    for g, res in enumerate(results):
        summary = res.positions_json()
        for i, pid in enumerate(res.participant_ids):
            rows.append({
                "group": g, "participant": pid, "before": res.positions[i],
                "after": res.positions_after[i] if res.positions_after else None,
                "change": summary["change"][i] if "change" in summary else None,
                "disagreement_before": summary["disagreement_before"],
                "disagreement_after": summary.get("disagreement_after"),
            })
    return pd.DataFrame(rows)


def mediation_table(phases: dict[str, dict[str, int]], mediator: dict) -> pd.DataFrame:
    """Per phase of the run, the mediator's fallbacks (:func:`mediation_fallbacks`
    counts) with its settings (``mediator``: its ``describe()``)."""
    settings = {k: mediator.get(k) for k in SETTINGS}
    return pd.DataFrame([{"phase": ph, **counts, **settings} for ph, counts in phases.items()])

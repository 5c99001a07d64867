"""The representatives phase of a consensus run, as steps.

After the main debate, digital representatives stand in for participants: per
group, per conditioning set (prompted, fine-tuned, and the null row: each
original re-played as its own representative under other seeds), one
participant at a time and all of them, over ``rollouts`` seeded rollouts
(rollout 0 of the originals is the main episode itself). :class:`RepresentativesPhase`

* plans them as steps: one per (rollout, set), each playing every group's
  substituted episodes of that set (and, in a rollout's first step, the
  originals' rollout) -- the plan is known before any record exists;
* plays a step's episodes together, their engine calls merged into large
  batches (:mod:`mechanisms.lockstep`), in chunks of about ``chunk``
  participants, each chunk judged (the consensus autorater, eq. 22) and, with a
  payoff model, scored before the next one is built; returns the step's events;
* assembles the representativity tables from the outcomes: eq. 21's signed
  and absolute payoff gaps and eq. 22's win rate, pooled over groups with
  cluster-bootstrap intervals beside the null row
  (:func:`mechanisms.value_equivalence.pooled_table`), and per group.

Every request goes through the caller's (store-cached) engines with seeds fixed
by (seed, rollout, question, act, slot), so a step played again after a kill
repeats no finished call and a replay makes none.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from agents.llm.base import Engine
from core.canonical import dumps
from core.seeds import derive_seed

from .autorater import ConsensusPair, consensus_win_rate
from .consensus_report import FALLBACKS, mediation_fallbacks
from .episode import Episode, EpisodeConfig, EpisodeResult
from .groups import Group, utterance_events
from .lockstep import run_together
from .mediators import Mediator
from .representatives import ParticipantRecord, Substitution, bootstrap_seed, expected_payoff_gap, report_from_rollouts, rollout_config, substitutions
from .value_equivalence import NULL_SET, PayoffSample, pooled_table

# How the report names each payoff source (as mechanisms.finetuned_representatives.evaluation does).
PAYOFF_SOURCES = {"self_rating": "self-rating", "model": "payoff model"}
# The pooled table's columns repeated from the self-ratings when payoffs come from a payoff model.
SELF_RATING_COLUMNS = ("signed_gap", "signed_ci_low", "signed_ci_high", "payoff_gap", "ci_low", "ci_high", "null_gap")


def finetuned_label(subset: str) -> str:
    return f"{subset or 'none'} (fine-tuned)"


@dataclass(frozen=True)
class RepEpisode:
    """One episode of the phase: group ``group``'s rollout ``rollout``, with the
    participants in ``slots`` played by representatives of set ``subset`` (its
    row label) one at a time (``mode`` "one") or all together ("all"); ``subset``
    None: the originals themselves."""

    group: int
    rollout: int
    subset: str | None = None
    mode: str = "originals"
    slots: tuple[int, ...] = ()

    @classmethod
    def of(cls, group: int, rollout: int, sub: Substitution) -> RepEpisode:
        return cls(group, rollout, sub.subset, sub.mode, tuple(sub.slots))

    def to_json(self) -> dict:
        return {"group": self.group, "rollout": self.rollout, "subset": None if self.subset is None else self.subset or "none",
                "mode": self.mode, "substituted": list(self.slots)}


@dataclass
class RepOutcome:
    """What the report needs of an episode of the phase (the rest is in the step log)."""

    statement: str  # the final statement
    opinions: tuple[str, ...]
    self_ratings: np.ndarray  # the originals' agreement with the final statement (1-7)
    model_scores: np.ndarray | None = None  # the payoff model's scores of it per original (1-7)
    win: float | None = None  # the judge's preference for it over the originals' statement of the same rollout (eq. 22)
    fallbacks: dict[str, int] | None = None  # mediation_fallbacks of the episode

    @classmethod
    def of(cls, res: EpisodeResult) -> RepOutcome:
        return cls(res.final_statement, tuple(res.opinions), res.final_payoffs.copy(), fallbacks=mediation_fallbacks([res]))

    def to_json(self) -> dict:
        # Exact values and the opinions: a resumed run restores its finished steps from them.
        return {"statement": self.statement, "opinions": list(self.opinions), "self_ratings": self.self_ratings.tolist(),
                "model_scores": None if self.model_scores is None else self.model_scores.tolist(), "win": self.win,
                "fallbacks": self.fallbacks}

    @classmethod
    def from_json(cls, d: dict) -> RepOutcome | None:
        """The outcome as logged; None for logs written before they held the
        opinions and exact payoffs (rounded to 6 places)."""
        if "opinions" not in d:
            return None
        scores = d["model_scores"]
        return cls(d["statement"], tuple(d["opinions"]), np.asarray(d["self_ratings"], dtype=float),
                   None if scores is None else np.asarray(scores, dtype=float), d["win"], d["fallbacks"])


@dataclass(frozen=True)
class PlanStep:
    """One step of the phase: its name, what it plays, and the episodes."""

    id: str
    text: str
    episodes: tuple[RepEpisode, ...]


@dataclass(frozen=True)
class Played:
    """One substitution of a group so far: ``rollouts`` finished, the latest
    final ``statement``, and the payoff ``gap`` over the substituted (eq. 21)."""

    subset: str
    mode: str
    slots: tuple[int, ...]
    rollouts: int
    statement: str
    gap: float


class RepresentativesPhase:
    """The phase's plan, play and tables (see the module docstring).

    ``sets``: prompted conditioning sets; ``finetuned``: set -> the engine of its
    adapter; ``mediator``: a fresh mediator per episode; ``judge``: the
    consensus autorater's engine; ``payoff``: "self_rating" or "model" (then
    ``payoff_model`` scores each final statement); ``chunk``: participants per
    merged chunk; ``progress(task, done, total)``: episodes done, time left."""

    def __init__(self, engine: Engine, groups: Sequence[Group], config: EpisodeConfig, mediator: Callable[[], Mediator], *,
                 sets: Sequence[str] = (), finetuned: dict[str, Engine] | None = None, null_row: bool = True, rollouts: int = 1,
                 judge: Engine | None = None, payoff: str = "self_rating", payoff_model=None, chunk: int = 256,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.engine, self.groups, self.config, self.mediator = engine, list(groups), config, mediator
        self.prompted, self.finetuned, self.rollouts = list(sets), dict(finetuned or {}), rollouts
        self.evaluated = bool(self.prompted or self.finetuned)
        self.null_row = null_row and self.evaluated
        self.judge, self.payoff, self.payoff_model, self.chunk, self.progress = judge, payoff, payoff_model, chunk, progress
        # Row labels of the sets played: prompted, fine-tuned, then the null row.
        self.sets = [*self.prompted, *(finetuned_label(s) for s in self.finetuned), *([NULL_SET] if self.null_row else [])]
        self.plan = self._plan()
        self.records: dict[str, ParticipantRecord] | None = None
        self.substitutions: dict[int, list[Substitution]] = {}  # per group, once the records are in (prepare)
        self._stand_ins: dict[tuple, dict] = {}  # (group, set, mode, slots) -> slot -> representative
        self.outcomes: dict[RepEpisode, RepOutcome] = {}
        self.done = 0  # episodes played
        self._clock: tuple[float, int] | None = None  # (start, episodes done then) in this process, for the time left

    # ------------------------------------------------------------ plan
    def _shapes(self, group: Group) -> list[tuple[str, str, tuple[int, ...]]]:
        """(set, mode, substituted slots) of a group's substitutions, in the
        order :meth:`prepare` builds them: each slot alone, then all, per set."""
        n = len(group.participants)
        order = [*self.prompted, *([NULL_SET] if self.null_row else []), *(finetuned_label(s) for s in self.finetuned)]
        return [(s, m, slots) for s in order for m, slots in [*(("one", (i,)) for i in range(n)), ("all", tuple(range(n)))]]

    def _plan(self) -> list[PlanStep]:
        """Per rollout, per set: every group's substituted episodes (one slot at a
        time, all), plus -- in the rollout's first step -- the originals' own
        rollout (rollout 0 is the main episode)."""
        plan = []
        for r in range(self.rollouts):
            for k, subset in enumerate(self.sets):
                eps = [RepEpisode(g.index, r) for g in self.groups] if r and not k else []
                eps += [RepEpisode(g.index, r, s, m, slots) for g in self.groups for s, m, slots in self._shapes(g) if s == subset]
                name = subset or "none"
                about = "the originals as their own representatives (null row)" if subset == NULL_SET else f"representatives conditioned on {name}"
                plan.append(PlanStep(f"representatives r{r + 1} {name}", f"rollout {r + 1}/{self.rollouts}, {about}: {len(eps)} episodes", tuple(eps)))
        return plan

    @property
    def episodes(self) -> int:
        """Episodes the phase plays: per group, the extra baseline rollouts and,
        per set, (one slot at a time + all) x rollouts."""
        return sum(len(step.episodes) for step in self.plan)

    def prepare(self, records: dict[str, ParticipantRecord]) -> None:
        """The representatives, from the participants' records (once the history
        episodes and the survey are done); they see the records minus the
        question they stand in on."""
        self.records = records
        for g in self.groups:
            parts = list(g.participants)
            recs = [records[p.id] for p in parts]
            subs = substitutions(g.question, recs, self.prompted, null=parts if self.null_row else None)
            for subset, eng in self.finetuned.items():
                subs += [replace(s, subset=finetuned_label(subset)) for s in substitutions(g.question, recs, [subset], rep_engine=eng, tag="ft")]
            if [(s.subset, s.mode, tuple(s.slots)) for s in subs] != self._shapes(g):
                raise RuntimeError(f"representatives of group {g.index}: built substitutions differ from the plan")
            self.substitutions[g.index] = subs
            self._stand_ins.update({(g.index, s.subset, s.mode, tuple(s.slots)): s.stand_ins for s in subs})

    # ------------------------------------------------------------ play
    def play(self, k: int, originals: Sequence[EpisodeResult]) -> list[dict]:
        """Step ``k`` of the plan: its episodes together (one merged engine batch
        per act), then the judge (eq. 22) and the payoff model on their final
        statements; ``originals``: every group's main episode (rollout 0 of the
        originals). Returns the step's events."""
        if self.records is None:
            raise RuntimeError("representatives: prepare() the records first")
        eps = self.plan[k].episodes
        if self._clock is None:
            self._clock = (time.perf_counter(), self.done)
            self._report_progress()
        # The originals' rollout 0 is the main episode: recorded (and scored) first,
        # as the baseline the chunks' substituted episodes are judged against.
        base = {RepEpisode(g.index, 0): RepOutcome.of(res) for g, res in zip(self.groups, originals) if RepEpisode(g.index, 0) not in self.outcomes}
        if base:
            self._finish(base)
        base_events = [{"kind": "representatives", "agent": "", "payload": {**e.to_json(), **out.to_json()}} for e, out in base.items()]
        # Episodes in chunks of about `chunk` participants: each chunk is played
        # (engine calls merged), judged and scored, its answers committed by the
        # engine cache, before the next chunk's prompts are built.
        step = max(1, self.chunk // len(self.groups[0].participants))
        events = []
        for start in range(0, len(eps), step):
            part = eps[start : start + step]
            # A fine-tuned stand-in speaks through its own engine: such episodes run one
            # by one in this thread (the merged batches serve one engine from worker threads).
            alone = [e for e in part if any(p.engine is not None for p in (self._stand_ins_of(e) or {}).values())]
            merged = [e for e in part if e not in alone]
            results: dict[RepEpisode, EpisodeResult] = dict(zip(merged, run_together(self.engine, [self._episode(e) for e in merged])))
            results.update({e: self._episode(e)(self.engine) for e in alone})
            results = {e: results[e] for e in part}
            fresh = {e: RepOutcome.of(res) for e, res in results.items()}
            self._finish(fresh)
            self.done += len(part)
            self._report_progress()
            for e, res in results.items():
                events += utterance_events(res.log, e.to_json())
            events += [{"kind": "representatives", "agent": "", "payload": {**e.to_json(), **out.to_json()}} for e, out in fresh.items()]
        return events + base_events

    def restore(self, k: int, logged: Sequence[dict]) -> bool:
        """Step ``k``'s outcomes from its logged "representatives" events (a
        resumed run: the step is not played again, so none of its stored answers
        is read); False, with nothing changed, unless every episode of the step
        is logged with its exact outcome."""
        eps = self.plan[k].episodes
        known = {dumps(e.to_json()): e for e in [*eps, *(RepEpisode(g.index, 0) for g in self.groups)]}
        found: dict[RepEpisode, RepOutcome] = {}
        for ev in logged:
            e = known.get(dumps({f: ev["payload"].get(f) for f in ("group", "rollout", "subset", "mode", "substituted")}))
            out = RepOutcome.from_json(ev["payload"])
            if e is None or out is None:
                return False
            found[e] = out
        if not found or any(e not in found for e in eps):
            return False
        self.outcomes.update(found)
        self.done += len(eps)
        return True

    def _stand_ins_of(self, e: RepEpisode) -> dict | None:
        """Who stands in for whom in episode ``e`` (None: the originals)."""
        return None if e.subset is None else self._stand_ins[(e.group, e.subset, e.mode, e.slots)]

    def _episode(self, e: RepEpisode) -> Callable[[Engine], EpisodeResult]:
        g, stand_ins = self.groups[e.group], self._stand_ins_of(e)
        config = rollout_config(self.config, e.rollout)
        return lambda engine: Episode(engine, g.question, list(g.participants), self.mediator(), config, stand_ins).run()

    def _finish(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """Record outcomes, judge (eq. 22) and, with a payoff model, score them."""
        self.outcomes.update(fresh)
        self._judge(fresh)
        if self.payoff_model is not None:
            self._score(fresh)

    def _report_progress(self) -> None:
        if not self.progress:
            return
        task = "representatives: episodes"
        start, before = self._clock
        if self.done > before:
            left = (time.perf_counter() - start) / (self.done - before) * (self.episodes - self.done)
            task += f" (~{int(left) // 60}m{int(left) % 60:02d}s left)"
        self.progress(task, self.done, self.episodes)

    def _baseline(self, e: RepEpisode) -> RepOutcome:
        return self.outcomes[RepEpisode(e.group, e.rollout)]

    def _judge(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """Consensus autorater (eq. 22), one batch: each substituted episode's
        final statement against the originals' in the same rollout."""
        subs = [e for e in fresh if e.subset is not None]
        pairs = [ConsensusPair(self.groups[e.group].question.question, self._baseline(e).opinions, fresh[e].statement, self._baseline(e).statement)
                 for e in subs]
        for e, p in zip(subs, consensus_win_rate(self.judge, pairs).per_pair if pairs else []):
            fresh[e].win = p

    def _score(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """The payoff model's score of each final statement per original
        participant (their opinion in that rollout, as at training), one batch."""
        from .payoff_model import PayoffItem

        items = []
        for e in fresh:
            g, base = self.groups[e.group], self._baseline(e)
            q = g.question.question
            items += [PayoffItem(q, fresh[e].statement, self.payoff_model.participant(base.opinions[i], self.records[p.id], q))
                      for i, p in enumerate(g.participants)]
        scores, k = self.payoff_model.score(items), 0
        for out in fresh.values():
            n = len(out.self_ratings)
            out.model_scores, k = np.asarray(scores[k : k + n], dtype=float), k + n

    # ------------------------------------------------------------ views
    def _payoffs(self, out: RepOutcome, source: str | None = None) -> np.ndarray:
        return out.model_scores if (source or self.payoff) == "model" else out.self_ratings

    def rollouts_of(self, g: int, sub: Substitution, source: str | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(finished rollouts, originals' payoffs [r, i], payoffs with representatives [r, i])."""
        rs = [r for r in range(self.rollouts) if RepEpisode.of(g, r, sub) in self.outcomes]
        base = np.array([self._payoffs(self.outcomes[RepEpisode(g, r)], source) for r in rs], dtype=float)
        with_reps = np.array([self._payoffs(self.outcomes[RepEpisode.of(g, r, sub)], source) for r in rs], dtype=float)
        return rs, base, with_reps

    def played(self, g: int) -> list[Played]:
        """Group g's substitutions played so far, their latest final statement
        and payoff gap over the rollouts so far."""
        out = []
        for sub in self.substitutions.get(g, []):
            rs, base, with_reps = self.rollouts_of(g, sub)
            if rs:
                gap = float(expected_payoff_gap(with_reps[:, sub.slots], base[:, sub.slots]))
                out.append(Played(sub.subset or "none", sub.mode, tuple(sub.slots), len(rs), self.outcomes[RepEpisode.of(g, rs[-1], sub)].statement, gap))
        return out

    def fallbacks(self) -> dict[str, int]:
        """The mediator's fallbacks over the phase's own episodes (the main episode excluded)."""
        rep = [out.fallbacks for e, out in self.outcomes.items() if out.fallbacks and not (e.subset is None and e.rollout == 0)]
        return {k: sum(f[k] for f in rep) for k in FALLBACKS}

    # ------------------------------------------------------------ tables
    def tables(self, ranker: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(pooled, by group). Pooled: per set (and the null row) and mode, eq.
        21's signed and absolute gap over every group's substituted participants
        with cluster-bootstrap intervals (groups resampled), the null row's gap
        beside it and the excess over it, and eq. 22's win rate the same way
        (:func:`mechanisms.value_equivalence.pooled_table`); ``ranker``: its
        column. By group: the same gaps per group, intervals over its rollouts."""
        sources = [self.payoff] + (["self_rating"] if self.payoff == "model" else [])
        rows, samples = [], {src: [] for src in sources}
        for g in self.groups:
            for subset in self.sets:
                for mode in ("one", "all"):
                    subs = [s for s in self.substitutions[g.index] if s.subset == subset and s.mode == mode]
                    reports = [self._report(g, subset, mode, subs, source, samples[source]) for source in sources]
                    rep = reports[0]
                    row = {"group": g.index, "subset": subset or "none", "mode": mode, "signed_gap": rep.signed_gap, "payoff_gap": rep.gap,
                           "ci_low": rep.ci_low, "ci_high": rep.ci_high, "rollouts": rep.rollouts, "win_rate": rep.win_rate,
                           "n_substituted": len(rep.per_slot), "payoff_source": rep.payoff_source}
                    if len(reports) > 1:
                        row.update(self_rating_gap=reports[1].gap, self_rating_signed_gap=reports[1].signed_gap)
                    rows.append(row)
        seed = derive_seed(self.config.seed, "representativity", "pooled")
        pooled = pd.DataFrame([r.to_json() for r in pooled_table(samples[self.payoff], seed)])
        pooled["payoff_source"] = PAYOFF_SOURCES[self.payoff]
        pooled["ranker"] = ranker
        if self.payoff == "model":
            other = pd.DataFrame([r.to_json() for r in pooled_table(samples["self_rating"], seed)])
            for col in SELF_RATING_COLUMNS:
                pooled[f"self_rating_{col}"] = other[col].to_numpy()
        return pooled, pd.DataFrame(rows)

    def _report(self, g: Group, subset: str, mode: str, subs: list[Substitution], source: str, samples: list[PayoffSample]):
        """One group's (set, mode) report from one payoff source; adds its pooled samples to ``samples``."""
        runs, wins = {}, []
        for sub in subs:
            _, base, with_reps = self.rollouts_of(g.index, sub, source)
            runs[sub.key] = (sub.slots, with_reps)
            won = tuple(w for w in (self.outcomes[RepEpisode.of(g.index, r, sub)].win for r in range(self.rollouts)) if w is not None)
            wins += won
            samples.append(PayoffSample(g.label, subset or "none", mode, with_reps[:, sub.slots], base[:, sub.slots], won))
        seed = bootstrap_seed(self.config, g.question, subset, mode)
        return report_from_rollouts(subset, mode, base, runs, seed, self.config.represented_acts, PAYOFF_SOURCES[source],
                                    float(np.mean(wins)) if wins else float("nan"))

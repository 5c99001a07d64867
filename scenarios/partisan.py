"""Shared parts of the higher-order-binding scenarios (Kang et al. 2025):
partisan personas, per-party ratings, gaps with bootstrap intervals next to the
published human values.

Personas are matched to real ANES partisans (their demographics and party);
each agent speaks for one partisan, so "own party" and "other party" in an
item are that partisan's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.metrics import HUMAN_GAP_REFERENCE, Gap, bootstrap_ci, mean_gap

from .base import SurveyModel

PARTIES = ("Democrat", "Republican")


class PartisanModel(SurveyModel):
    gap_kind = ""  # key of HUMAN_GAP_REFERENCE

    def select_humans(self, study):
        if "party" not in [t.name for t in study.traits]:
            raise ValueError(f"human.study: '{study.name}' has no 'party' trait; partisan scenarios need one")
        return study.subset(study.group_mask("party", list(PARTIES)))

    # ------------------------------------------------------------ helpers
    def ratings(self, p_i: int, item_ids: list[str], party: str, *, favourable_first: bool = False) -> np.ndarray:
        """Mean position (1..K) over ``item_ids`` of each agent of population
        ``p_i`` whose party is ``party``, from its sampled answers (individual
        level, as the paper uses). ``favourable_first``: option 0 is the most
        favourable, so positions are reversed to make higher = more favourable."""
        rows = []
        for a in self.agents_of(p_i):
            if a.party != party:
                continue
            vals = []
            for qid in item_ids:
                ans = a.answers.get(qid)
                if ans is None:
                    continue
                k = len(ans["probs"])
                pos = ans["sampled"] + 1
                vals.append(k + 1 - pos if favourable_first else pos)
            if vals:
                rows.append(np.mean(vals))
        return np.asarray(rows, dtype=float)

    def weights_of(self, p_i: int, party: str) -> np.ndarray:
        if self.study is None:
            return None
        return np.array([self.study.weights[a.human] for a in self.agents_of(p_i) if a.party == party])

    def gap_row(self, label: str, party: str, a: np.ndarray, b: np.ndarray, extra: dict | None = None) -> dict:
        gap: Gap = mean_gap(a, b)
        ci = bootstrap_ci(lambda x, y: mean_gap(x, y).delta, a, b, n=500, seed=self.cfg.seed) if len(a) > 1 and len(b) > 1 else None
        ref = HUMAN_GAP_REFERENCE.get(self.gap_kind, {}).get(party)
        row = {
            "condition": label,
            "party": party,
            "delta": gap.delta,
            "delta_low": ci.low if ci else float("nan"),
            "delta_high": ci.high if ci else float("nan"),
            "cohens_d": gap.d,
            "n_a": gap.n_a,
            "n_b": gap.n_b,
            "human_delta": ref.delta if ref else float("nan"),
            "human_d": ref.d if ref else float("nan"),
        }
        row.update(extra or {})
        return row

    def gap_table(self, rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(rows)

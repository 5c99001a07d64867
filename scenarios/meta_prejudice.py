"""Meta-prejudice (Moore-Berg et al. 2020) as in the higher-order-binding talk:
feeling thermometers toward the other party and the meta-perception "how warm or
cold do you think [other party] feel towards [your party]?", five bins.

* Self-ratings are compared with the real ANES partisans each agent stands for
  (their thermometer toward the other / own party, binned into five equal
  bins): Wasserstein distance per party.
* The meta-perception gap per party -- how warm the other side really is
  (the other party's personas' own rating) minus how warm partisans believe it
  is -- with Cohen's d and a bootstrap interval, beside the published human
  values (Democrat 1.091 / d 0.761; Republican 1.182 / d 0.768).
"""
from __future__ import annotations

import numpy as np

from analysis.metrics import meta_perception_gap, wasserstein, weighted_distribution

from .base import Item
from .partisan import PARTIES, PartisanModel

SCALE = ("Very cold", "Cold", "Neutral", "Warm", "Very warm")
THERM = {"Democrat": "therm_dem", "Republican": "therm_gop"}
OTHER = {"Democrat": "Republican", "Republican": "Democrat"}


class MetaPrejudiceModel(PartisanModel):
    title = "Meta-prejudice: feeling thermometers and meta-perceptions"
    gap_kind = "meta_perception"

    def items(self) -> list[Item]:
        return [
            Item("feel_other", "How warm or cold do you feel towards {other}?", SCALE, group="self"),
            Item("feel_own", "How warm or cold do you feel towards {own}?", SCALE, group="self"),
            Item("meta_other", "How warm or cold do you think {other} feel towards {own}?", SCALE, group="meta"),
        ]

    def human_answers(self, agent, item_id: str):
        """The real respondent's binned thermometer for a self-rating item."""
        if self.study is None or agent.human is None:
            return None
        target = OTHER[agent.party] if item_id == "feel_other" else agent.party
        val = self.study.responses[THERM[target]].iloc[agent.human]
        return None if np.isnan(val) else int(val)

    def evaluate(self) -> dict:
        gaps, fidelity = [], []
        for p_i, population in enumerate(self.populations):
            for party in PARTIES:
                other = OTHER[party]
                believed = self.ratings(p_i, ["meta_other"], party)
                actual = self.ratings(p_i, ["feel_other"], other)
                gaps.append(self.gap_row(population.label, party, actual, believed))
            for item_id in ("feel_other", "feel_own"):
                for party in PARTIES:
                    agents = [a for a in self.agents_of(p_i) if a.party == party and item_id in a.answers]
                    if not agents:
                        continue
                    w = np.array([self.study.weights[a.human] for a in agents])
                    persona = np.average(np.array([a.answers[item_id]["probs"] for a in agents]), axis=0, weights=w)
                    humans = np.array([self.human_answers(a, item_id) for a in agents], dtype=float)
                    human = weighted_distribution(humans, len(SCALE), w)
                    fidelity.append(
                        {
                            "condition": population.label,
                            "item": item_id,
                            "party": party,
                            "n": len(agents),
                            "wd": wasserstein(human, persona),
                            "persona_mean": float(persona @ np.arange(1, 6)),
                            "human_mean": float(np.nansum(human * np.arange(1, 6))),
                        }
                    )
        notes = [
            "meta_perception: delta = mean warmth the other party's personas report toward this party minus the warmth this "
            "party's personas believe the other party feels (positions 1-5, sampled answers); human_delta / human_d: "
            "published human values (Kang et al. 2025).",
            "self_ratings_vs_anes: WD on [0,1]-normalised positions between personas' thermometer answers and the binned "
            "ANES thermometers of the partisans they stand for (survey weights, five equal bins of 0-100).",
        ]
        return {
            "evaluations": [],
            "tables": {"meta_perception": self.gap_table(gaps), "self_ratings_vs_anes": self.gap_table(fidelity)},
            "notes": notes,
        }

    def human_distributions(self) -> dict:
        """The represented ANES partisans' binned thermometers for the self-rating
        items (each toward the other / own party), for the live console."""
        out = {}
        agents = [a for a in self.agents_of(0)] if self.populations else []
        for item_id in ("feel_other", "feel_own"):
            vals = np.array([self.human_answers(a, item_id) for a in agents], dtype=float)
            w = np.array([self.study.weights[a.human] for a in agents]) if agents else None
            if len(vals):
                out[item_id] = weighted_distribution(vals, len(SCALE), w).tolist()
        return out

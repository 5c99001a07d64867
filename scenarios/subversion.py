"""The subversion dilemma (Braley et al. 2023) as in the higher-order-binding
talk: "Would YOU support ..." (self) and "Would MOST [other party] support ..."
(outgroup perception), Never / Probably not / Probably / Definitely.

Subversion gap of Democrats: how Democrats perceive Republicans' willingness
minus how Republicans rate their own willingness (and the mirror), on positions
rescaled to [0, 1], with Cohen's d, beside the published human values
(Democrat 0.445 / d 1.887; Republican 0.398 / d 1.951)."""
from __future__ import annotations

import numpy as np

from .base import Item
from .partisan import PARTIES, PartisanModel

SCALE = ("Never", "Probably not", "Probably", "Definitely")
# {target} is the party the action is aimed at; {beneficiary} the one it helps.
ACTIONS = {
    "courts": "ignoring controversial court rulings by {target_adj} judges",
    "journalists": "freezing the social media accounts of {target_adj} journalists",
    "elections": "laws that would make it easier for {beneficiary} (and harder for {target}) to get elected",
    "violence": "using violence to block major laws proposed by {target}",
    "results": "not accepting the results of an election won by {target}",
}
ADJ = {"Democrats": "Democratic", "Republicans": "Republican"}


class SubversionItem(Item):
    def render(self, agent):
        from agents.questions import Question

        from .base import party_names

        own, other = party_names(agent)
        action = ACTIONS[self.id.split("_", 1)[1]]
        if self.group == "self":  # would YOU support acting against the other party
            text = "Would YOU support " + action.format(target=other, target_adj=ADJ.get(other, other), beneficiary=own) + "?"
        else:  # would MOST of the other party support acting against yours
            text = f"Would MOST {other.upper()} support " + action.format(target=own, target_adj=ADJ.get(own, own), beneficiary=other) + "?"
        return Question.make(self.id, text, self.options)


class SubversionModel(PartisanModel):
    title = "Subversion dilemma: own vs perceived willingness"
    gap_kind = "subversion"

    def items(self) -> list[Item]:
        return [SubversionItem(f"{g}_{k}", "", SCALE, group=g) for g in ("self", "outgroup") for k in ACTIONS]

    def evaluate(self) -> dict:
        rows = []
        k = len(SCALE)
        for p_i, population in enumerate(self.populations):
            self_ids = [i.id for i in self.item_list if i.group == "self"]
            out_ids = [i.id for i in self.item_list if i.group == "outgroup"]
            for party in PARTIES:
                other = "Republican" if party == "Democrat" else "Democrat"
                perceived = (self.ratings(p_i, out_ids, party) - 1) / (k - 1)
                actual = (self.ratings(p_i, self_ids, other) - 1) / (k - 1)
                rows.append(self.gap_row(population.label, party, perceived, actual, {"perceived_mean": float(np.mean(perceived)) if len(perceived) else np.nan, "actual_mean": float(np.mean(actual)) if len(actual) else np.nan}))
        notes = [
            "subversion: delta = this party's personas' perceived willingness of the other party (MOST [other] items) minus the "
            "other party's personas' own willingness (YOU items); positions rescaled to [0, 1], sampled answers averaged over "
            "the five actions; human_delta / human_d: published human values (Kang et al. 2025; Braley et al. 2023)."
        ]
        return {"evaluations": [], "tables": {"subversion": self.gap_table(rows)}, "notes": notes}

"""The subversion dilemma (Braley et al. 2023) as in the higher-order-binding
talk: "Would YOU support ..." (self) and "Would MOST [other party] support ..."
(outgroup perception), Never / Probably not / Probably / Definitely.

Subversion gap of Democrats: how Democrats perceive Republicans' willingness
minus how Republicans rate their own willingness (and the mirror), on positions
rescaled to [0, 1], with Cohen's d, beside the matched respondents' value when
their study holds the items (a Braley et al. 2023 study; ANES does not) and the
published human values (Democrat 0.445 / d 1.887; Republican 0.398 / d 1.951)."""
from __future__ import annotations

import numpy as np

from .base import Item
from .contract import ScenarioReport
from .partisan import OTHER, PARTIES, HumanSide, PartisanModel

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
    scenario = "subversion"
    title = "Subversion dilemma: own vs perceived willingness"
    gap_kind = "subversion"

    def items(self) -> list[Item]:
        return [SubversionItem(f"{g}_{k}", "", SCALE, group=g) for g in ("self", "outgroup") for k in ACTIONS]

    def _ids(self, group: str) -> list[str]:
        return [i.id for i in self.item_list if i.group == group]

    def human_gap(self, party: str) -> HumanSide | None:
        """The matched respondents' perceived and own willingness, when the study
        holds the same items (a Braley et al. 2023 study; ANES holds none)."""
        other = OTHER[party]
        out_ids, self_ids = self._ids("outgroup"), self._ids("self")
        if not (self.holds(out_ids, party) and self.holds(self_ids, other)):
            return None
        k = len(SCALE)
        perceived, wp = self.human_ratings(out_ids, party)
        actual, wa = self.human_ratings(self_ids, other)
        return HumanSide((perceived - 1) / (k - 1), (actual - 1) / (k - 1), wp, wa, False, f"matched {self.study.name} respondents, the same items")

    def evaluate(self) -> ScenarioReport:
        rows = []
        k = len(SCALE)
        for p_i, population in enumerate(self.populations):
            for party in PARTIES:
                other = OTHER[party]
                perceived, wp = self.ratings(p_i, self._ids("outgroup"), party)
                actual, wa = self.ratings(p_i, self._ids("self"), other)
                perceived, actual = (perceived - 1) / (k - 1), (actual - 1) / (k - 1)
                extra = {"persona_perceived_mean": float(np.average(perceived, weights=wp)) if len(perceived) else np.nan,
                         "persona_actual_mean": float(np.average(actual, weights=wa)) if len(actual) else np.nan}
                rows.append(self.gap_row(population.label, party, perceived, wp, actual, wa, paired=False, extra=extra))
        wd = self.party_wd_rows([i.id for i in self.item_list])
        table = self.with_wd(self.gap_table(rows), wd, [i.id for i in self.item_list])
        tables = {"subversion": table}
        if wd:
            tables["subversion_wd"] = self.gap_table(wd)
        notes = [
            "subversion: delta = this party's perceived willingness of the other party (MOST [other] items) minus the "
            "other party's own willingness (YOU items); positions rescaled to [0, 1], averaged over the five actions."
        ]
        return self.partisan_report(tables, notes, self.partisan_plots("subversion", table, "perceived minus actual willingness (0-1)"))

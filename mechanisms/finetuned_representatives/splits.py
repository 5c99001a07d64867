"""Training / validation split without leakage, by participant and by question.

The paper splits "on the basis of both data collection episodes and
participant identity ... each participant and each question only appears in
either the training set or the validation set" (Jarrett et al., §4). Whole
groups (HM ``launch_id``) are drawn, in a seeded order, into validation while
that brings it closer to ``validation`` of the examples; their participants and questions are
then validation-only:

    val  = examples of the drawn groups
    train = examples whose participant AND question never occur in val
    dropped = the rest (a validation participant elsewhere, or a validation
              question debated by another group)

Dropped examples still feed the validation participants' records (their
opinions and critiques on other questions), as in the paper's conditioning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .deliberations import CritiqueExample, DeliberationError


@dataclass
class Split:
    train: list[int]  # indices into the examples
    validation: list[int]
    dropped: list[int]
    train_participants: list[str]
    validation_participants: list[str]
    train_questions: list[str]
    validation_questions: list[str]
    validation_groups: list[str]
    fraction: float
    seed: int

    def check(self) -> None:
        """Raise if any participant or question is on both sides."""
        both_p = set(self.train_participants) & set(self.validation_participants)
        both_q = set(self.train_questions) & set(self.validation_questions)
        if both_p or both_q:
            raise AssertionError(f"leaky split: participants {sorted(both_p)[:3]}, questions {sorted(both_q)[:3]} on both sides")

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> "Split":
        return cls(**d)


def split_examples(examples: list[CritiqueExample], validation: float = 0.25, seed: int = 0, source: str = "data") -> Split:
    if not 0 < validation < 1:
        raise DeliberationError(f"{source}: split.validation = {validation} (expected a fraction between 0 and 1)")
    groups = sorted({e.group for e in examples})
    if len(groups) < 2:
        raise DeliberationError(
            f"{source}: split needs at least 2 groups (launch_id) to keep participants and questions apart; found {len(groups)}"
        )
    order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
    target = validation * len(examples)
    size = {g: sum(e.group == g for e in examples) for g in groups}
    val_groups: list[str] = []
    held = 0
    for g in order[:-1]:  # always leave one group for training
        # take the next group while it brings validation closer to the target
        if val_groups and abs(held + size[g] - target) >= abs(held - target):
            break
        val_groups.append(g)
        held += size[g]
    val = [i for i, e in enumerate(examples) if e.group in val_groups]
    val_p = {examples[i].participant for i in val}
    val_q = {examples[i].question_id for i in val}
    train = [i for i, e in enumerate(examples) if e.participant not in val_p and e.question_id not in val_q and e.group not in val_groups]
    dropped = sorted(set(range(len(examples))) - set(train) - set(val))
    if not train or not val:
        side = "training" if not train else "validation"
        raise DeliberationError(
            f"{source}: the {side} split is empty ({len(examples)} examples, {len(groups)} groups, validation={validation}): "
            "every group shares participants or questions with the validation groups; add groups or lower split.validation"
        )
    split = Split(
        train=train, validation=val, dropped=dropped,
        train_participants=sorted({examples[i].participant for i in train}),
        validation_participants=sorted(val_p),
        train_questions=sorted({examples[i].question_id for i in train}),
        validation_questions=sorted(val_q),
        validation_groups=sorted(val_groups), fraction=validation, seed=seed,
    )
    split.check()
    return split

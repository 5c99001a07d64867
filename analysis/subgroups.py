"""The demographic subgroups an evaluation is broken down by.

:func:`resolve_groups` turns the requested traits (one group per option, or
merged options) into ``(trait, group label, option labels)``; on aggregate
human data, :func:`persona_group_codes` places each persona in a group.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analysis.studies import UnknownName

DEFAULT_SUBGROUP_TRAITS = ("race", "age", "party")


def resolve_groups(study, subgroups) -> list[tuple[str, str, list[str]]]:
    """(trait, group label, option labels) for each requested subgroup."""
    if subgroups is None:
        subgroups = [t for t in DEFAULT_SUBGROUP_TRAITS if any(x.name == t for x in study.traits)]
    if isinstance(subgroups, str):
        subgroups = [subgroups]
    out = []
    items = subgroups.items() if isinstance(subgroups, Mapping) else ((t, None) for t in subgroups)
    for trait, groups in items:
        t = study.trait(trait)
        if groups is None:
            out += [(trait, o, [o]) for o in t.options]
        else:
            for label, options in groups.items():
                opts = [options] if isinstance(options, str) else list(options)
                bad = [o for o in opts if o not in t.options]
                if bad:
                    raise UnknownName(f"subgroup '{label}': trait '{trait}' has no option {bad[0]!r} (options: {list(t.options)})")
                out.append((trait, label, opts))
    return out


def persona_group_codes(study, persona_demographics: Mapping[str, np.ndarray], trait: str) -> np.ndarray:
    """``[V]`` option index of ``trait`` per persona (crossed traits: mixed radix), -1 if unknown."""
    parts = trait.split(" x ")
    missing = [p for p in parts if p not in persona_demographics]
    if missing:
        raise UnknownName(f"persona demographics: no trait '{missing[0]}' (have: {', '.join(persona_demographics)})")
    code, bad = 0, False
    for p in parts:
        c = np.asarray(persona_demographics[p], dtype=np.int64)
        bad = bad | (c < 0)
        code = code * study.trait(p).n_options + np.maximum(c, 0)
    return np.where(bad, -1, code)

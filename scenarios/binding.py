"""Binding diagnostics of a finished survey model (formulas in analysis.diagnostics).

The position-bias probe asks a seeded sample of each condition's personas every
item twice more, options forward and reversed, with the persona's
conditioning text only (no previous answers, so both orders see the same
context). The requests go through the model's store-cached engine: a resumed
run or a replay answers them from the store, with no engine call.
"""
from __future__ import annotations

import numpy as np

from agents.questions import display_order, map_back, option_request
from analysis.diagnostics import INDISTINGUISHABLE_JS, INDISTINGUISHABLE_SHARE, ConditionDiagnostics, diagnose
from core.seeds import derive_seed


def _probe_agents(model, p_i: int, n: int) -> list:
    agents = model.agents_of(p_i)
    if n <= 0 or not agents:
        return []
    rng = np.random.default_rng(derive_seed(model.cfg.seed, "position-bias", p_i))
    idx = np.sort(rng.choice(len(agents), size=min(n, len(agents)), replace=False))
    return [agents[i] for i in idx]


def position_probe(model, p_i: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per item, ``[M, K]`` distributions of ``n`` sampled personas with the
    options shown forward and reversed (both in the original option order)."""
    agents = _probe_agents(model, p_i, n)
    if not agents:
        return [], []
    requests, keys = [], []
    for item in model.item_list:
        if not item.options:
            continue
        for a in agents:
            q = item.render(a)
            for rev in (False, True):
                requests.append(option_request(a.conditioning, q, display_order(len(q.options), rev)))
                keys.append((item.id, rev))
    results = model.engine.option_probs(requests)
    fwd: dict[str, list] = {}
    rvs: dict[str, list] = {}
    for (qid, rev), res in zip(keys, results):
        k = len(res.probs)
        probs = map_back(res.probs, display_order(k, rev))
        (rvs if rev else fwd).setdefault(qid, []).append(probs)
    return [np.array(fwd[q]) for q in fwd], [np.array(rvs[q]) for q in fwd]


def binding_diagnostics(model) -> list[ConditionDiagnostics]:
    """One :class:`ConditionDiagnostics` per population of a survey model."""
    n_probe = model.cfg.analysis.position_bias_personas
    out = []
    for p_i, population in enumerate(model.populations):
        agents = model.agents_of(p_i)
        items, outside = [], []
        for item in model.item_list:
            answers = [a.answers[item.id] for a in agents if item.id in a.answers]
            if answers:
                items.append(np.array([ans.probs for ans in answers]))
                outside.append(np.array([ans.outside_mass for ans in answers]))
        fwd, rvs = position_probe(model, p_i, n_probe)
        out.append(diagnose(population.label, items, outside, fwd, rvs, seed=model.cfg.seed))
    return out


def diagnostics_table(diagnostics: list[ConditionDiagnostics]):
    """The ``binding_diagnostics`` report table, one row per condition."""
    import pandas as pd

    return pd.DataFrame([d.row() for d in diagnostics])


DIAGNOSTICS_NOTE = (
    "binding diagnostics: between_persona_share = share of the answer variance (positions 1..K) that lies between "
    "personas, mean_js_bits = mean Jensen-Shannon divergence between personas' option distributions, position_bias_tv = "
    "mean total-variation distance between a persona's distributions with the options shown forward and reversed "
    "(personas_probed per condition, conditioning text only), outside_mass = probability outside the option letters; "
    f"each averaged over items. 'indistinguishable': between-persona share < {INDISTINGUISHABLE_SHARE} and mean JS < "
    f"{INDISTINGUISHABLE_JS} bits."
)


def add_diagnostics(model, report):
    """Add the binding-diagnostics table, its note and the one-line alerts to a ScenarioReport."""
    diags = binding_diagnostics(model)
    if diags:
        report.tables["binding_diagnostics"] = diagnostics_table(diags)
        report.notes.append(DIAGNOSTICS_NOTE)
        report.alerts.extend(v for d in diags if (v := d.verdict()))
    return report

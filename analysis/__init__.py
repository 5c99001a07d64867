"""Analysis layer: human data, persona-human matching, fidelity metrics and reports.

Typical use::

    from analysis import load_study, match_study, evaluate, human_lower_bound, write_report

    study = load_study("gss_spending")                       # or a YAML path
    result = match_study(study, persona_trait_probs, "greedy")
    lb = human_lower_bound(study)                            # once per study
    ev = evaluate(study, persona_option_probs, result, condition="Anthology", lower_bound=lb)
    write_report([ev, ...], "out/")

Modules: :mod:`~analysis.studies` (study YAML and data),
:mod:`~analysis.matching`, :mod:`~analysis.metrics`,
:mod:`~analysis.lower_bound`, :mod:`~analysis.subgroups` (evaluation, whole
sample and per subgroup), :mod:`~analysis.individual` (each persona against
its own respondent, baselines and the test-retest ceiling), :mod:`~analysis.report`.
"""
from analysis.lower_bound import LowerBound, human_lower_bound
from analysis.matching import MatchingError, MatchResult, match, match_study
from analysis.report import conditions_table, gap_table, print_summary, write_report
from analysis.studies import HumanStudy, StudyError, builtin_studies, load_study
from analysis.subgroups import Evaluation, PersonaAnswers, evaluate

__all__ = [
    "Evaluation",
    "HumanStudy",
    "LowerBound",
    "MatchResult",
    "MatchingError",
    "PersonaAnswers",
    "StudyError",
    "builtin_studies",
    "conditions_table",
    "evaluate",
    "gap_table",
    "human_lower_bound",
    "load_study",
    "match",
    "match_study",
    "print_summary",
    "write_report",
]

"""Analysis layer: human data, persona-human matching, fidelity metrics and reports.

Typical use::

    from analysis import load_study, match_study, evaluate, human_lower_bound, write_report

    study = load_study("gss_spending")                       # or a YAML path
    result = match_study(study, persona_trait_probs, "greedy")
    lb = human_lower_bound(study)                            # once per study
    ev = evaluate(study, persona_option_probs, result, condition="Anthology", lower_bound=lb)
    write_report([ev, ...], "out/")

Modules: :mod:`~analysis.studies` (study YAML and data),
:mod:`~analysis.matching`; the metrics :mod:`~analysis.distributions` (WD),
:mod:`~analysis.correlations` (Frobenius, alpha), :mod:`~analysis.gaps`
(partisan gaps), :mod:`~analysis.bootstrap` (CIs); :mod:`~analysis.lower_bound`;
:mod:`~analysis.evaluation` (whole sample and per subgroup: its input
:mod:`~analysis.persona_answers`, :mod:`~analysis.scoring`,
:mod:`~analysis.subgroups`, its output :mod:`~analysis.evaluation_results`);
:mod:`~analysis.individual` (each persona against its own respondent, the test-retest
ceiling; :mod:`~analysis.individual_scores`, :mod:`~analysis.individual_baselines`,
:mod:`~analysis.individual_report`); :mod:`~analysis.report` (files), with
:mod:`~analysis.report_tables` and :mod:`~analysis.report_plots`.
"""
from analysis.evaluation import evaluate
from analysis.evaluation_results import Evaluation
from analysis.lower_bound import LowerBound, human_lower_bound
from analysis.matching import MatchingError, MatchResult, match, match_study
from analysis.persona_answers import PersonaAnswers
from analysis.report import write_report
from analysis.report_tables import conditions_table, gap_table, print_summary
from analysis.studies import HumanStudy, StudyError, builtin_studies, load_study

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

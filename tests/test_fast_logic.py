"""Logic tests on the fake engine (agents/llm/fake_engine.py): caching, replay,
resuming, and run.py's error lines. What a model answers is not under test
here, so no model is loaded; the real-model versions of these behaviours stay
in test_engine.py, test_store.py and test_scenarios.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agents.llm.base import GenerateRequest, LoglikRequest, OptionRequest
from agents.llm.cache import CachedEngine, ReplayMiss
from agents.llm.factory import EngineConfig, cached_engine
from agents.llm.fake_engine import FakeEngine

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = OptionRequest("I am a teacher from Ohio.\n\n", "Question: Do you vote?\nAnswer:", ("A", "B", "C"))


def test_fake_answers_are_a_function_of_the_request():
    a, b = FakeEngine(), FakeEngine()
    other = OptionRequest("I am a farmer from Iowa.\n\n", OPTIONS.suffix, OPTIONS.options)
    p1, p2, p3 = a.option_probs([OPTIONS, OPTIONS, other])
    assert p1 == b.option_probs([OPTIONS])[0] == p2  # same request, same answer, in any engine
    assert p1.probs != p3.probs  # another backstory, another answer
    assert np.isclose(sum(p1.probs), 1.0) and 0 <= p1.outside_mass < 0.1

    hot = [GenerateRequest("Tell me about yourself.", max_tokens=12, temperature=1.0, seed=s) for s in (1, 1, 2)]
    g1, g2, g3 = a.generate(hot)
    assert g1.text == g2.text != g3.text  # the seed matters at temperature > 0
    assert 1 <= g1.n_tokens <= 12 and len(g1.text.split()) == g1.n_tokens
    cold = [GenerateRequest("Tell me about yourself.", max_tokens=12, temperature=0.0, seed=s) for s in (1, 2)]
    c1, c2 = a.generate(cold)
    assert c1.text == c2.text  # greedy ignores the seed
    stopped = a.generate([GenerateRequest("Tell me about yourself.", max_tokens=40, temperature=1.0, seed=3, stop=(" and",))])[0]
    assert " and" not in stopped.text and stopped.finish_reason == "stop"

    s1, s2 = a.loglikelihood([LoglikRequest("ctx", "a critique"), LoglikRequest("ctx", "a much longer critique than that")])
    assert s1 < 0 and s2 < 0 and s1 != s2


def test_the_cache_answers_repeats_from_the_store_and_replay_never_calls(store):
    reqs = [OptionRequest(f"Persona {i}.\n\n", OPTIONS.suffix, OPTIONS.options) for i in range(5)]
    inner = FakeEngine()
    first = CachedEngine(store, inner.fingerprint(), lambda: inner)
    out = first.option_probs(reqs + reqs[:2])  # repeats inside one batch go to the engine once
    assert (first.misses, inner.stats.requests) == (5, 5)

    again = CachedEngine(store, inner.fingerprint(), lambda: inner)
    assert again.option_probs(reqs) == out[:5] and again.misses == 0 and not again.loaded
    assert inner.stats.requests == 5  # nothing reached the engine the second time

    replay = CachedEngine(store, inner.fingerprint(), None)
    assert replay.option_probs(reqs[::-1]) == out[:5][::-1]
    with pytest.raises(ReplayMiss, match="replay never calls an engine"):
        replay.option_probs([OptionRequest("A persona never asked.\n\n", OPTIONS.suffix, OPTIONS.options)])


def test_the_fake_engine_is_selectable_and_cached_apart_from_real_models(store):
    fake = cached_engine(EngineConfig(kind="fake"), store)
    real = EngineConfig(kind="transformers").fingerprint()
    assert fake.fingerprint()["kind"] == "fake" != real["kind"]  # its answers never stand in for a model's
    assert fake.option_probs([OPTIONS])[0].method == "fake"


def test_one_generation_budget_reaches_every_act_of_an_episode():
    from mechanisms import HabermasMediator, Participant, load_questions, run_episode
    from mechanisms.budget import GenerationBudget
    from mechanisms.episode import EpisodeConfig

    budget = GenerationBudget(opinion=5, critique=3, statement=7)
    people = [Participant(f"p{i}", f"I am participant {i}.") for i in range(3)]
    result = run_episode(FakeEngine(), load_questions(n=1, seed=0)[0], people, HabermasMediator(num_candidates=2, max_tokens=budget.statement),
                         EpisodeConfig(rounds=1, seed=3, budget=budget))
    wanted = {"opinion": budget.opinion, "critique": budget.critique, "candidate": budget.statement, "statement": budget.statement}
    asked = {(r.act, r.max_tokens) for r in result.log if r.kind == "generate" and r.act in wanted}
    assert {act for act, _ in asked} >= {"opinion", "critique", "candidate"} and all(n == wanted[act] for act, n in asked), asked
    assert result.config["budget"] == budget.model_dump()  # logged with the episode, JSON-ready


def _config(tmp_path: Path, *extra: str):
    from scenarios.config import load_config

    return load_config(ROOT / "scenarios/gss_spending.yaml", [
        "engine.kind=fake", f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}",
        "population.size=4", "population.conditions=[anthology, qa]", "population.backstories.max_tokens=12",
        "questionnaire.questions=[natspac, natenvir, natheal]", "human.sample=12", "human.lower_bound_splits=4", *extra,
    ])


def test_a_run_replays_to_the_same_report_and_a_rerun_makes_no_engine_call(tmp_path):
    from simulation.runner import replay, run

    cfg = _config(tmp_path)
    first = run(cfg)
    assert first.engine_calls > 0 and (first.output_dir / "summary.md").exists()
    again = run(cfg)  # the same configuration is the same run: resumed, every answer from the store
    assert again.resumed and again.engine_calls == 0 and again.store_hits > 0
    result, same = replay(first.run_id, cfg.store)
    assert same and result.engine_calls == 0
    assert (result.output_dir / "summary.md").read_bytes() == (first.output_dir / "summary.md").read_bytes()


def test_where_an_engine_is_served_is_not_part_of_the_run_and_a_run_stored_under_its_old_id_resumes_under_it(tmp_path):
    """A rented GPU server comes back at another address, with more replicas or
    other limits: the same run (its id, its step log, its report folder). Another
    model is another run. A run stored when the endpoints were part of its id
    (before 2026-12-06) is found by its configuration and resumed under that id."""
    import sqlite3
    from contextlib import closing

    from scenarios.config import load_config
    from simulation.runner import run

    preset = ROOT / "scenarios/paper/representatives.yaml"
    here = load_config(preset, ["engine.endpoints=[http://127.0.0.1:8000/v1]", "options.judge.endpoints=[http://127.0.0.1:8001/v1]"])
    moved = load_config(preset, ["engine.endpoints=[http://10.0.0.2:8000/v1, http://10.0.0.3:8000/v1]", "engine.concurrency=256",
                                 "engine.timeout=600", "engine.retries=8", "engine.prompts_per_request=64", "engine.api_key_env=KEY",
                                 "options.judge.endpoints=[http://10.0.0.4:9000/v1]"])
    assert here.run_id() == moved.run_id() == load_config(preset).run_id()
    assert here.run_id() not in {load_config(preset, ["engine.model=other"]).run_id(), load_config(preset, ["options.judge.model=other"]).run_id(),
                                 load_config(preset, ["engine.dtype=float32"]).run_id()}

    cfg = _config(tmp_path)
    first = run(cfg)
    old_id = f"{cfg.name}-0123456789"  # as if hashed with its endpoints by an earlier version
    with closing(sqlite3.connect(cfg.store)) as con, con:
        for table in ("runs", "event_blocks"):
            con.execute(f"update {table} set run_id = ? where run_id = ?", [old_id, first.run_id])
    again = run(_config(tmp_path, "engine.endpoints=[http://10.9.9.9:8000/v1]", "engine.concurrency=64"))
    assert again.run_id == old_id and again.resumed and again.engine_calls == 0
    assert (again.output_dir / "summary.md").read_bytes().replace(old_id.encode(), first.run_id.encode()) == (first.output_dir / "summary.md").read_bytes()
    with closing(sqlite3.connect(cfg.store)) as con:
        assert [r[0] for r in con.execute("select run_id from runs")] == [old_id]  # no second run


def test_each_random_draw_has_its_own_stream_and_runs_stored_before_replay_theirs(tmp_path):
    """The human sample and the question order are seeded apart (``draws: 2``);
    a run stored before that (its config has no ``draws``) replays with the old
    scheme, every draw seeded with ``seed``, and reproduces its report."""
    import json
    import sqlite3
    from contextlib import closing

    from core.seeds import derive_seed
    from simulation.runner import replay, run

    cfg = _config(tmp_path)
    assert cfg.draws == 2 and cfg.draw_seed("human sample") == derive_seed(cfg.seed, "human sample") != cfg.draw_seed("question order")
    old = _config(tmp_path, "draws=1")
    assert old.draw_seed("human sample") == old.draw_seed("question order") == old.seed and old.run_id() != cfg.run_id()
    first = run(old)
    with closing(sqlite3.connect(old.store)) as con, con:  # as a store written before `draws` existed
        stored = json.loads(con.execute("select config from runs where run_id = ?", [first.run_id]).fetchone()[0])
        del stored["draws"]
        con.execute("update runs set config = ? where run_id = ?", [json.dumps(stored), first.run_id])
    result, same = replay(first.run_id, old.store)
    assert same and result.engine_calls == 0
    assert (result.output_dir / "summary.md").read_bytes() == (first.output_dir / "summary.md").read_bytes()


def test_run_py_bad_input_is_one_line_exit_2(tmp_path, capsys):
    import run as cli

    missing = tmp_path / "nowhere.yaml"
    assert cli.main([str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: file not found"
    assert cli.main([str(ROOT / "scenarios/gss_spending.yaml"), "--set", "population.size=ten"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "population.size" in err and "'ten'" in err


def test_run_py_turns_a_bug_into_one_line_and_a_saved_traceback(monkeypatch, capsys):
    """A bug cannot be produced by any input (that is what makes it a bug), so this
    fault is injected: a subcommand that raises an unexpected KeyError."""
    import run as cli

    def faulty_subcommand(argv):
        raise KeyError("injected fault")

    monkeypatch.setattr(cli, "cmd_runs", faulty_subcommand)
    assert cli.main(["runs"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: unexpected KeyError: 'injected fault'")
    saved = Path(err.rsplit("traceback saved to ", 1)[1].rstrip(")"))
    try:
        assert "faulty_subcommand" in saved.read_text() and "Traceback" in saved.read_text()
    finally:
        saved.unlink()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# ------------------------------------------------------------------ a new scenario: one module, its YAML, its test
@pytest.mark.fast
def test_a_new_scenario_is_its_module_its_yaml_and_a_test(tmp_path):
    """A toy scenario declared here -- no registry, runner or page edited -- runs from
    its YAML through the runner, and its options model's hinted fields become page
    controls (``options__flips``) that change the run."""
    import pandas as pd
    from pydantic import Field

    from agents.llm.base import OptionRequest
    from core.config import StrictModel
    from scenarios.config import control, load_config
    from scenarios.contract import ScenarioModel, ScenarioReport
    from scenarios.items import Item
    from simulation.runner import run, scenario_class
    from simulation.viz_source import ViewSource, model_params_for, resolve

    class CoinOptions(StrictModel):
        flips: int = Field(2, ge=1, le=5, json_schema_extra=control("Flips", "SliderInt", min=1, max=5, step=1))

    class CoinPoll(ScenarioModel):
        scenario = "toy_coin_poll"
        title = "Heads or tails"
        kind = "deliberation"
        options_model = CoinOptions

        def __init__(self, cfg, engine, store, run_id, *, progress=None):
            super().__init__(cfg, engine, store, run_id, progress=progress)
            self.opts = CoinOptions.model_validate(cfg.options)
            self.populations, self.answers = [], []
            self.item_list = [Item(f"flip{k}", f"Flip {k}: heads or tails?", ("A", "B")) for k in range(self.opts.flips)]

        def step(self):
            item = self.item_list[self.step_index]
            [res] = self.engine.option_probs([OptionRequest(prefix="", suffix=item.text + "\n(A) heads\n(B) tails\nAnswer: (", options=item.options)])
            self.answers.append(res.probs[0])
            self.step_index += 1
            self.running = self.step_index < len(self.item_list)

        def evaluate(self):
            return ScenarioReport(tables={"coin": pd.DataFrame({"item": [i.id for i in self.item_list], "p_heads": self.answers})})

    assert scenario_class("toy_coin_poll") is CoinPoll
    yaml_file = tmp_path / "coin.yaml"
    yaml_file.write_text(f"name: coin\nscenario: toy_coin_poll\nengine: {{kind: fake}}\nstore: {tmp_path / 's.db'}\noutput: {tmp_path / 'runs'}\noptions: {{flips: 3}}\n")
    result = run(load_config(yaml_file))
    table = pd.read_csv(result.output_dir / "coin.csv")
    assert list(table["item"]) == ["flip0", "flip1", "flip2"] and table["p_heads"].between(0, 1).all()
    source = ViewSource(scenario=str(yaml_file))
    assert model_params_for(source, load_config(yaml_file))["options__flips"]["value"] == 3
    cfg, _ = resolve(source, {"options__flips": 1})
    assert cfg.options["flips"] == 1 and len(run(cfg).files) and pd.read_csv(run(cfg).output_dir / "coin.csv").shape[0] == 1


@pytest.mark.fast
def test_within_persona_gaps_pair_each_personas_own_ratings_and_weight():
    """``PartisanModel.paired_ratings`` (hostility delta, thermometer gap): a
    persona rated on one side only is left out, and every kept persona's two
    ratings and its human's weight stay together. Pairing two separate lists by
    position (the bug it fixed) would pair A's own rating with B's other-side
    rating and give A's weight to C."""
    from types import SimpleNamespace

    from scenarios.partisan import PartisanModel

    class Rated(PartisanModel):
        def __init__(self, agents, weights):  # hand-made agents, no run
            self._agents, self.study = agents, SimpleNamespace(weights=weights)

        def agents_of(self, p_i):
            return self._agents

        def persona_distribution(self, agent, qid):
            return agent.answers.get(qid)

    def agent(name, party, human, **answers):  # each answer: one-hot on a 1..5 position
        return SimpleNamespace(persona_id=name, party=party, human=human,
                               answers={q: np.eye(5)[pos - 1] for q, pos in answers.items()})

    agents = [agent("A", "rep", 0, own=5, other=1),
              agent("B", "rep", 1, other=2),            # rated on the other side only
              agent("C", "rep", 2, own=4, other=3),
              agent("D", "dem", 3, own=1, other=5)]     # the other party
    (own, other), weights = Rated(agents, [1.0, 2.0, 3.0, 4.0]).paired_ratings(0, [["own"], ["other"]], "rep")
    assert own.tolist() == [5.0, 4.0] and other.tolist() == [1.0, 3.0] and weights.tolist() == [1.0, 3.0]
    (flipped,), _ = Rated(agents, [1.0] * 4).paired_ratings(0, [["own"]], "rep", favourable_first=True)
    assert flipped.tolist() == [1.0, 2.0]  # positions reversed when option 0 is the most favourable

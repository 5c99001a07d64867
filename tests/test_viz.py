"""The Mesa browser page (SolaraViz), driven in Debian's headless Chromium.

Real servers (``python run.py view ...`` subprocesses on free 127.0.0.1 ports),
the real embedded model and a real store. Kept tiny: 4 ANES partisans, the
``qa`` condition (no backstory generation), three questions. Every request the
browser makes is recorded and must stay on 127.0.0.1 (Solara's front end comes
from solara-assets, with the Vue 2 widget stack).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PageTimeout

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCENARIO = "scenarios/meta_prejudice.yaml"
TINY = [
    "population.size=2",
    "human.sample=4",
    "population.conditions=[qa]",
    "population.backstories.max_tokens=16",
]
PAGE_TIMEOUT = 240_000  # ms: building the model loads ANES; a live step may load the model
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")


# ---------------------------------------------------------------- pure parts (no browser)
def test_view_source_round_trips_through_the_environment():
    from simulation.viz_source import ViewSource

    src = ViewSource(scenario=SCENARIO, overrides=("population.conditions=[qa, bio]", "seed=3"))
    assert ViewSource.from_env(src.to_env()) == src
    rep = ViewSource(replay="run-1", store="x.db")
    assert ViewSource.from_env(rep.to_env()) == rep
    assert ViewSource.from_env({"PERSONAE_SCENARIO": SCENARIO, "PERSONAE_SET": "seed=1\npopulation.size=3\n"}).overrides == ("seed=1", "population.size=3")


def test_controls_come_from_the_schema_and_update_the_config():
    """The page's controls are the configuration fields carrying a control hint
    (every conditioning method of the schema, the scenario's own options), applied
    with model_copy and validated again."""
    from typing import get_args

    from scenarios.config import Condition, ConfigError, load_config
    from simulation.viz_source import ViewSource, model_params_for, resolve

    src = ViewSource(scenario=SCENARIO, overrides=tuple(TINY))
    cfg, run_id = resolve(src, {"population__size": 3, "population__conditions": "bio, qa", "seed": 7})
    assert (cfg.population.size, cfg.population.conditions, cfg.seed) == (3, ["bio", "qa"], 7)
    assert run_id == cfg.run_id() != load_config(SCENARIO, TINY).run_id()
    base = load_config(SCENARIO, TINY)
    params = model_params_for(src, base)
    assert params["source"] is src  # fixed parameter, passed to the model class on Reset
    assert {"population__size", "population__conditions", "seed"} <= set(params)
    assert params["population__conditions"]["value"] == "qa" and set(get_args(Condition)) <= set(params["population__conditions"]["values"])
    assert params["population__size"]["value"] == base.population.size and params["population__size"]["type"] == "SliderInt"
    assert set(model_params_for(ViewSource(replay="r"), cfg)) == {"source"}
    with pytest.raises(ConfigError, match="population.size"):
        resolve(src, {"population__size": 0})

    # a scenario's own options model adds its controls, one level down
    consensus = ViewSource(scenario=str(ROOT / "scenarios" / "consensus.yaml"))
    ccfg = load_config(consensus.scenario)
    cparams = model_params_for(consensus, ccfg)
    assert {"options__groups", "options__rounds", "options__mediator"} <= set(cparams)
    assert set(cparams["options__mediator"]["values"]) == {"habermas", "llm", "opinion"}
    got, _ = resolve(consensus, {"options__rounds": 2, "options__mediator": "llm"})
    assert (got.options["rounds"], got.options["mediator"]) == (2, "llm") and got.options.get("groups") == ccfg.options.get("groups")


def test_a_live_page_names_its_run_as_a_run_does(tmp_path):
    """The page's live run of a configuration stored under an old-style id (when
    the endpoints were part of it) continues that run, as ``run.py`` does."""
    from core.store import Store
    from scenarios.config import load_config
    from simulation.viz_source import ViewSource, resolve

    sets = (*TINY, f"store={tmp_path / 'p.db'}", "engine.endpoints=[http://10.0.0.2:8000/v1]")
    src = ViewSource(scenario=SCENARIO, overrides=sets)
    cfg, run_id = resolve(src)
    assert run_id == cfg.run_id()  # no store yet
    old_id = f"{cfg.name}-0123456789"
    Store(cfg.store).start_run(old_id, cfg.scenario, load_config(SCENARIO, [*TINY, "engine.endpoints=[http://h:1/v1]"]).model_dump(mode="json"), str(tmp_path))
    assert resolve(src)[1] == old_id
    assert resolve(ViewSource(scenario=SCENARIO, overrides=(*sets, "seed=9")))[1] != old_id  # another run


def test_bad_sources_are_one_line_messages(tmp_path):
    from simulation.viz import PersonaeViz
    from simulation.viz_source import ViewSource

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nscenario: meta_prejudice\npopulation:\n  size: ten\n")
    m = PersonaeViz(source=ViewSource(scenario=str(bad)))
    assert m.sim is None and "population.size" in m.error and "\n" not in m.error and not m.running
    m = PersonaeViz(source=ViewSource(replay="nope", store=str(tmp_path / "missing.db")))
    assert "not found" in m.error and not (tmp_path / "missing.db").exists()  # no store created as a side effect


def test_consensus_figure_shows_each_participants_agreement():
    from scenarios.contract import GroupView
    from simulation.viz_figures import consensus_figure, short_names

    agreement = np.array([[5.0, 3.0, 6.25], [6.0, 4.5, 6.4]])
    ids = ("anthology-smollm2-aaa111", "anthology-smollm2-bbb222", "anthology-smollm2-ccc333")
    view = GroupView("group 0", "Should we?", ids, ("draft", "revision"), agreement, "finished")
    ax = consensus_figure(view).axes[0]
    assert np.array_equal(np.asarray(ax.images[0].get_array()), agreement.T)  # rows: participants, columns: rounds
    assert [t.get_text() for t in ax.get_xticklabels()] == ["draft", "rev. 1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == short_names(ids, 18) == ["P1 …aaa111", "P2 …bbb222", "P3 …ccc333"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.1f}" for v in agreement.ravel())


# ---------------------------------------------------------------- servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


class Server:
    def __init__(self, args: list[str], log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self._fh = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "view", *args, "--port", str(self.port)],
            cwd=ROOT,
            env=_env(),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"server not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("viz")


@pytest.fixture(scope="module")
def logging_run(work):
    """The run the replay tests step through, started at once (it generates
    while the engine-free servers come up)."""
    run_set = [*TINY, f"store={work / 'logged.db'}", f"output={work / 'runs'}"]
    proc = subprocess.Popen(
        [sys.executable, "run.py", SCENARIO, *[x for s in run_set for x in ("--set", s)], "--plain"],
        cwd=ROOT,
        env=_env(),
        stdout=open(work / "run.log", "w"),
        stderr=subprocess.STDOUT,
    )
    yield proc, run_set
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def logged_run(logging_run, work) -> str:
    proc, run_set = logging_run
    assert proc.wait(timeout=900) == 0, (work / "run.log").read_text()[-3000:]
    from scenarios.config import load_config

    return load_config(ROOT / SCENARIO, run_set).run_id()


@pytest.fixture(scope="module")
def servers(work, logging_run):
    bad = work / "bad.yaml"
    bad.write_text("name: bad\nscenario: meta_prejudice\npopulation:\n  size: ten\n")
    live_set = [*TINY, f"store={work / 'live.db'}", f"output={work / 'runs'}"]
    made = {
        "live": Server([SCENARIO, *[x for s in live_set for x in ("--set", s)]], work / "live.log"),
        "bad": Server([str(bad)], work / "bad.log"),
        "missing": Server(["--replay", "no-such-run", "--store", str(work / "logged.db")], work / "missing.log"),
    }
    yield made
    for s in made.values():
        s.stop()


@pytest.fixture(scope="module")
def replay_server(servers, logged_run, work):
    s = Server(["--replay", logged_run, "--store", str(work / "logged.db")], work / "replay.log")
    servers["replay"] = s
    s.run_id = logged_run
    return s


# ---------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is not installed (run make browser)", pytrace=False)
    import playwright.sync_api as pw_api
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Session:
    """One browser session (its own context: cookies, solara kernel) that
    records every URL it requests."""

    def __init__(self, browser):
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
        self.requests: list[str] = []
        self.ctx.on("request", lambda r: self.requests.append(r.url))
        self.page = self.ctx.new_page()
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))

    def open(self, url: str, wait: str = ".personae-progress, .personae-error"):
        self.page.goto(url)
        self.page.wait_for_selector(wait, timeout=PAGE_TIMEOUT)
        return self.page

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def wait_text(self, selector: str, needle: str, timeout: int = PAGE_TIMEOUT) -> None:
        try:
            self.page.wait_for_function(
                "([sel, needle]) => { const e = document.querySelector(sel); return e && e.innerText.includes(needle); }",
                arg=[selector, needle],
                timeout=timeout,
            )
        except PageTimeout:
            pytest.fail(f"{selector} never showed {needle!r} in {timeout / 1000:.0f} s; the page said:\n{self.text('body')[-2000:]}", pytrace=False)

    def step_count(self) -> int:
        """Mesa's own step counter ("Step: N"), once the page has drawn it (it
        comes after the status lines)."""
        try:
            self.page.wait_for_function(r"/Step: \d+/.test(document.body.innerText)", timeout=PAGE_TIMEOUT)
        except PageTimeout:
            pytest.fail(f"no step counter; the page said:\n{self.text('body')[-2000:]}", pytrace=False)
        return int(re.search(r"Step: (\d+)", self.text("body")).group(1))

    def step(self, reclick_after: int | None = None) -> None:
        """Press Step. With ``reclick_after`` (ms): wait until Mesa's step
        counter moves on and, if it has not by then, press once more -- a click
        can land where the button was before the page laid itself out again
        (status lines and figures of the last step arriving) and miss it. Only
        for steps far shorter than ``reclick_after`` (replays, ~2-4 s here under
        load); a click that was not lost but slow would step twice, and the page
        would then show a question one ahead of the test's next check."""
        before = self.step_count()
        self.page.get_by_role("button", name="Step").click()
        if reclick_after is None:
            return
        moved = rf"/Step: {before + 1}\b/.test(document.body.innerText)"
        try:
            self.page.wait_for_function(moved, timeout=reclick_after)
        except PageTimeout:
            assert self.step_count() == before
            self.page.get_by_role("button", name="Step").click()
            self.page.wait_for_function(moved, timeout=PAGE_TIMEOUT)
        assert self.step_count() == before + 1

    def assert_offline(self) -> None:
        outside = [u for u in self.requests if not u.startswith(LOCAL)]
        assert self.requests and not outside, f"requests left 127.0.0.1: {outside[:10]}"

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture()
def session(browser):
    opened = []

    def make():
        s = Session(browser)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.browser
def test_bad_scenario_shows_one_line_message(servers, session):
    s = session()
    s.open(servers["bad"].wait_ready())
    msg = s.text(".personae-error").strip()
    assert "bad.yaml: population.size:" in msg and "integer" in msg and "\n" not in msg
    assert "Traceback" not in s.text("body")
    s.assert_offline()


@pytest.mark.browser
def test_missing_run_id_shows_one_line_message(servers, session):
    s = session()
    s.open(servers["missing"].wait_ready())
    msg = s.text(".personae-error").strip()
    assert "no run 'no-such-run'" in msg and "\n" not in msg
    assert "Traceback" not in s.text("body")
    s.assert_offline()


@pytest.mark.browser
def test_live_page_steps_offline_and_screenshot(servers, session, artifacts):
    s = session()
    page = s.open(servers["live"].wait_ready())
    assert "question 0/3" in s.text(".personae-progress")
    assert "not asked yet" in s.text(".personae-dist-values")
    before_png = page.locator(".personae-dist").screenshot()
    before_values = s.text(".personae-dist-values")

    s.step()
    s.wait_text(".personae-progress", "question 1/3")
    s.wait_text(".personae-dist-values", "qa:")
    page.wait_for_timeout(500)  # the new PNG is decoded
    assert "Step: 1" in s.text("body")
    after_values = s.text(".personae-dist-values")
    assert after_values != before_values and "human:" in after_values
    assert page.locator(".personae-dist").screenshot() != before_png  # the plotted bars changed
    assert "running WD: qa" in s.text(".personae-fidelity-text")
    assert "engine calls 4" in s.text(".personae-status")  # 4 personas, one batch, cached in the store

    shot = artifacts / "viz-live.png"
    page.screenshot(path=str(shot), full_page=True)
    w, h = _png_size(shot)
    assert w >= 1000 and h >= 800 and shot.stat().st_size > 60_000  # the rendered page, not a spinner
    for card in (".personae-map", ".personae-dist", ".personae-fidelity"):
        assert page.locator(f"{card} img").count() >= 1
    s.assert_offline()


@pytest.mark.browser
def test_sessions_do_not_share_state(servers, session):
    a, b = session(), session()
    url = servers["live"].wait_ready()
    a.open(url)
    b.open(url)
    a.step()
    a.wait_text(".personae-progress", "question 1/3")
    b.page.wait_for_timeout(1000)
    assert "question 0/3" in b.text(".personae-progress")
    assert "Step: 0" in b.text("body") and "Step: 1" in a.text("body")
    a.assert_offline()
    b.assert_offline()


@pytest.mark.browser
def test_replay_steps_through_the_logged_answers(replay_server, session, artifacts, work):
    from core.store import Store

    s = session()
    s.open(replay_server.wait_ready())
    assert "replay of run" in s.text(".personae-status")
    logged = Store(work / "logged.db").events(replay_server.run_id)
    items = []
    for ev in logged:
        if ev["payload"]["item"] not in items:
            items.append(ev["payload"]["item"])
    for n, item in enumerate(items, start=1):
        s.step(reclick_after=60_000)
        s.wait_text(".personae-progress", f"question {n}/{len(items)}")
        probs = np.mean([ev["payload"]["probs"] for ev in logged if ev["payload"]["item"] == item], axis=0)
        expected = "qa: " + " ".join(f"{p:.3f}" for p in probs)
        s.wait_text(".personae-dist-values", expected, timeout=30_000)
        assert item in s.text(".personae-status")
    status = s.text(".personae-status")
    assert "finished" in status and "engine calls 0" in status  # the log, never the engine
    s.page.screenshot(path=str(artifacts / "viz-replay.png"), full_page=True)
    s.assert_offline()



def test_page_figures_plot_the_logged_run(logged_run, work):
    """The page's model replays the run; at every step the distribution figure's
    bars are the logged answers' means and the humans' distribution, the
    fidelity figure's points the WD between them, and the persona map marks each
    persona with its logged answer."""
    from analysis.distributions import wasserstein
    from core.store import Store
    from simulation import viz_figures as figures
    from simulation.viz import PersonaeViz
    from simulation.viz_source import ViewSource

    logged = Store(work / "logged.db").events(logged_run)
    m = PersonaeViz(source=ViewSource(replay=logged_run, store=str(work / "logged.db")))
    assert m.error is None and m.is_survey
    wds, running = [], []
    while m.running:
        m.step()
        item, dists, human = m.answer_view()
        events = [ev["payload"] for ev in logged if ev["payload"]["item"] == item.id]
        expected = np.mean([p["probs"] for p in events], axis=0)
        bars = {c.get_label(): [p.get_height() for p in c] for c in figures.distribution_figure(item, dists, human, asked=True).axes[0].containers}
        np.testing.assert_allclose(bars["qa"], expected, atol=1e-12)
        if human is not None:
            np.testing.assert_allclose(bars["human"], human)
            assert abs(sum(bars["human"]) - 1) < 1e-9
            wds.append(wasserstein(np.asarray(human), expected, item.positions))
        else:
            assert "human" not in bars
        running.append(np.mean(wds) if wds else np.nan)
        agents = m.sim.agent_list
        fig = figures.persona_figure(agents, [m.sim.population_label(a) for a in agents], item, "answer", "grid", survey=True)
        by_persona = {p["persona_id"]: p["sampled"] for p in events}
        assert sorted(t.get_text() for t in fig.axes[0].texts if len(t.get_text()) == 1) == sorted(chr(65 + by_persona[a.persona_id]) for a in agents)
    assert m.sim.step_index == len({ev["payload"]["item"] for ev in logged}) and wds  # meta_prejudice: two self-ratings have humans
    line = figures.fidelity_figure(m.datacollector.get_model_vars_dataframe(), len(m.sim.item_list)).axes[0].lines[0]
    assert line.get_label() == "qa"
    np.testing.assert_allclose(line.get_ydata(), running)  # after each step: mean WD over the questions with humans so far

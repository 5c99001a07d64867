"""The Personae browser page (a Mesa ``app.py``): SolaraViz on ``PersonaeViz``.

    python run.py view scenarios/meta_prejudice.yaml [--set k=v ...]   # a live run
    python run.py view --replay RUN_ID --store personae.db              # a logged run

(``run.py view`` sets ``PERSONAE_SCENARIO`` / ``PERSONAE_REPLAY`` /
``PERSONAE_STORE`` / ``PERSONAE_SET`` and starts solara offline, see
``simulation.viz_cli``.) The controls are ``PersonaeViz``'s constructor
arguments. Unlike Mesa's examples the model is not built at import: every
browser session builds its own (in a thread, behind a loading line), so two
tabs never share state.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

try:
    import simulation  # noqa: F401
except ModuleNotFoundError:  # `solara run simulation/app.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import solara

from core.errors import error_line
from simulation.viz import BUILD_PROGRESS, PersonaeViz
from simulation.viz_components import Status, components_for
from simulation.viz_source import ViewSource, model_params_for

with warnings.catch_warnings():  # Mesa 3.3's ComponentsView trips solara's rules-of-hooks check
    warnings.filterwarnings("ignore", message=".*found despite early return.*", category=UserWarning)
    from mesa.visualization import SolaraViz

OFFLINE_CDN = "http://127.0.0.1:9/npm/"  # a closed local port: a missing asset fails here, never online

# Keep a plain `solara run` on this machine too: no telemetry, no CDN.
import solara.server.settings

solara.server.settings.telemetry.mixpanel_enable = False
if "SOLARA_ASSETS_CDN" not in os.environ:
    solara.settings.assets.cdn = OFFLINE_CDN

source = ViewSource.from_env()


def build_model(on_progress) -> PersonaeViz:
    BUILD_PROGRESS.callback = on_progress
    try:
        return PersonaeViz(source=source)
    finally:
        BUILD_PROGRESS.callback = None


def Message(text: str, *, error: bool):
    with solara.Column(style={"padding": "24px"}, classes=[] if error else ["personae-loading"]):
        solara.Text(f"Personae · {source.describe()}", style={"font-weight": "bold", "font-size": "1.4em"})
        if error:
            solara.Error(text, classes=["personae-error"])
        else:
            solara.Text(text, classes=["personae-building"])
            solara.ProgressLinear(True)


@solara.component
def Viz(first: PersonaeViz):
    model = solara.use_reactive(first)
    components = solara.use_memo(lambda: components_for(first), [])
    Status(model.value)
    SolaraViz(model, components=components, model_params=model_params_for(source, first.cfg), name=f"Personae · {first.title}")


@solara.component
def Page():
    status = solara.use_reactive("building the model…")
    result = solara.use_thread(lambda: build_model(lambda text: status.set(f"building the model… {text}")), dependencies=[], intrusive_cancel=False)
    if result.state == solara.ResultState.ERROR:
        Message(error_line(result.error), error=True)
    elif result.state != solara.ResultState.FINISHED or result.value is None:
        Message(status.value, error=False)
    elif result.value.sim is None:
        Message(result.value.error or "the model could not be built", error=True)
    else:
        Viz(result.value)


page = Page

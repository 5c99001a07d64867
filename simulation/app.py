"""The Personae browser page as a solara app (Mesa-example style).

    PERSONAE_SCENARIO=scenarios/meta_prejudice.yaml SOLARA_TELEMETRY_MIXPANEL_ENABLE=False \
        solara run simulation/app.py --host 127.0.0.1 --no-open --no-check-version --production
    PERSONAE_REPLAY=RUN_ID PERSONAE_STORE=personae.db solara run simulation/app.py ...

``PERSONAE_SET`` holds ``--set`` overrides (a JSON list, or one ``key=value``
per line). ``python run.py view ...`` sets these variables and starts the
server itself, offline (see ``simulation.viz_cli``). ``page`` is a component:
every browser session builds its own model when it renders.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import simulation.viz  # noqa: F401
except ModuleNotFoundError:  # `solara run simulation/app.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulation.viz import ViewSource, make_page  # noqa: E402

page = make_page(ViewSource.from_env())

"""``python run.py view``: serve the Personae browser page on 127.0.0.1.

    python run.py view scenarios/meta_prejudice.yaml [--set k=v ...] [--port P]
    python run.py view --replay RUN_ID [--store personae.db] [--port P]

The server runs in this process (solara on uvicorn) and never reaches the
network: Solara's front end comes from the ``solara-assets`` package, its CDN
proxy is switched off, and telemetry and the version check are disabled. A
scenario or run that cannot be loaded is reported here *and* shown as one line
in the page.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

# Set before solara is imported: its settings are read at import time.
OFFLINE_ENV = {
    "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",  # no usage pings to mixpanel
    # The page loads Solara's front end from this server (/_solara/cdn, filled
    # from the solara-assets package). An asset missing from that package would
    # be fetched from the CDN by the server: point it at a closed local port.
    "SOLARA_ASSETS_PROXY": "True",
    "SOLARA_ASSETS_CDN": "http://127.0.0.1:9/npm/",  # = simulation.app.OFFLINE_CDN
    "SOLARA_THEME_VARIANT": "light",
    "MPLBACKEND": "Agg",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py view",
        description="Serve the Mesa browser page (SolaraViz) for a live run of a scenario, or for a logged run (--replay).",
    )
    p.add_argument("scenario", nargs="?", help="scenario YAML file (live run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    p.add_argument("--replay", metavar="RUN_ID", help="step through a logged run instead (no engine calls)")
    p.add_argument("--store", default="personae.db", help="store of the replayed run (default personae.db)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    return p


def check(source) -> str | None:
    """The one-line problem with a source, if any (the page shows the same)."""
    from simulation.viz_source import resolve

    try:
        resolve(source)
    except Exception as exc:  # noqa: BLE001 - reported, the page explains it too
        from core.errors import error_line

        return error_line(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.scenario) == bool(args.replay):
        parser().error("give a scenario YAML or --replay RUN_ID (one of them)")
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)

    from simulation.viz_source import ViewSource

    source = ViewSource(scenario=args.scenario, overrides=tuple(args.overrides), replay=args.replay, store=args.store)
    problem = check(source)
    if problem:
        print(f"error: {problem} (the page shows this message)", file=sys.stderr, flush=True)
    os.environ.update(source.to_env())
    if not args.replay:
        os.environ.pop("PERSONAE_REPLAY", None)
    if not args.overrides:
        os.environ.pop("PERSONAE_SET", None)

    port = args.port or free_port(args.host)
    app = Path(__file__).resolve().parent / "app.py"
    url = f"http://{args.host}:{port}/"
    print(f"Personae page ({source.describe()}): {url}  (Ctrl-C to stop)", flush=True)

    import click
    from solara.__main__ import cli

    solara_args = [
        "run",
        str(app),
        "--host",
        args.host,
        "--port",
        str(port),
        "--production",
        "--no-open",
        "--no-check-version",
        "--log-level",
        "warning",
    ]
    try:
        cli.main(args=solara_args, prog_name="solara", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):  # Ctrl-C / SIGINT: a normal stop
        print("page server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

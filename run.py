#!/usr/bin/env python
"""Personae: human studies on LLM virtual personas.

  python run.py scenarios/meta_prejudice.yaml            run a study (resumes if interrupted)
  python run.py scenarios/gss_spending.yaml --set population.size=40 --set seed=1
  python run.py replay RUN_ID                            rebuild a logged run, no LLM calls
  python run.py runs                                     list the runs in the store
  python run.py personas generate --method anthology -n 20 --bank mybank
  python run.py personas survey --bank mybank --study gss_spending
  python run.py personas import backstories.jsonl --bank mine
  python run.py personas export --bank mine out.jsonl
  python run.py view scenarios/meta_prejudice.yaml       the Mesa browser page (live run)
  python run.py view --replay RUN_ID                     the browser page on a logged run
  python run.py represent train mechanisms/finetuned_representatives/demo.yaml   fine-tune a digital representative (resumable)
  python run.py represent eval mechanisms/finetuned_representatives/demo.yaml    vanilla vs fine-tuned report
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub at run time
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning
# made generation ~20x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # deprecation notices of the library are not the user's concern
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Warnings raised inside dependencies (e.g. transformers' `past_key_values`
# FutureWarning on every forward pass) are not the user's to act on: kept off the
# console. Personae's own warnings (a study that loaded but deserves a look) show,
# as one line each.
warnings.filterwarnings("ignore", module=r"(?!(agents|analysis|core|mechanisms|scenarios|simulation)(\.|$))")
warnings.formatwarning = lambda message, category, *_args, **_kw: f"warning: {message}\n"

SUBCOMMANDS = ("replay", "runs", "personas", "view", "represent")


def _scenario_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Run a Personae study from its scenario YAML. Subcommands: " + ", ".join(SUBCOMMANDS) + " (run.py SUBCOMMAND --help).",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", help="scenario YAML file, e.g. scenarios/meta_prejudice.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. --set population.size=20 (repeatable)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    return p


def cmd_scenario(argv: list[str]) -> int:
    args = _scenario_parser().parse_args(argv)
    from scenarios.config import load_config
    from simulation.console import RunConsole
    from simulation.runner import run

    cfg = load_config(args.scenario, args.overrides)
    console = RunConsole(live=False if args.plain else None)
    if cfg.sweep:
        from simulation.sweep import run_sweep

        out = run_sweep(cfg, args.scenario, console=console)
        console.line(f"sweep results written to {out}")
        return 0
    result = run(cfg, console=console, label=args.scenario)
    console.line(
        f"results written to {result.output_dir}/ (summary.md, CSV tables, plots/); "
        f"run id {result.run_id}; {result.engine_calls} engine calls, {result.store_hits} answered from the store"
    )
    console.line(f"replay it with: python run.py replay {result.run_id} --store {cfg.store}")
    return 0


def cmd_replay(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py replay", description="Rebuild a logged run from the store with no LLM calls and rewrite its report.")
    p.add_argument("run_id")
    p.add_argument("--store", default="personae.db", help="SQLite store (default personae.db)")
    p.add_argument("--out", default=None, help="output folder (default: <run folder>/replay)")
    args = p.parse_args(argv)
    from simulation.console import RunConsole
    from simulation.runner import replay

    console = RunConsole(live=False)
    result, same = replay(args.run_id, args.store, console=console, out_dir=args.out)
    console.line(f"replay written to {result.output_dir}/; {result.engine_calls} engine calls; report {'identical to' if same else 'DIFFERS from'} the original")
    return 0 if same else 1


def cmd_runs(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py runs", description="List the runs recorded in the store.")
    p.add_argument("--store", default="personae.db")
    args = p.parse_args(argv)
    from core.store import Store

    for r in Store(args.store, readonly=True).list_runs():  # listing never writes
        why = f"\t{r['message']}" if r.get("message") else ""
        print(f"{r['run_id']}\t{r['scenario']}\t{r['status']}\t{r['output_dir']}{why}")
    return 0


def cmd_personas(argv: list[str]) -> int:
    from simulation.personas_cli import main

    return main(argv)


def cmd_represent(argv: list[str]) -> int:
    from simulation.represent_cli import main

    return main(argv)


def cmd_view(argv: list[str]) -> int:
    from simulation.viz_cli import main

    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from core.errors import PersonaeError

    handlers = {"replay": cmd_replay, "runs": cmd_runs, "personas": cmd_personas, "view": cmd_view, "represent": cmd_represent}
    try:
        if argv and argv[0] in handlers:
            return handlers[argv[0]](argv[1:])
        return cmd_scenario(argv)
    except PersonaeError as exc:  # bad input, a missing file, an unreachable server: already one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished steps are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in a file
        print(f"error: unexpected {type(exc).__name__}: {_first_line(exc)} (a bug; traceback saved to {_save_traceback()})", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _save_traceback() -> str:
    """Write the current exception's traceback to a new file in the temp folder; return its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="personae-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"run.py {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())

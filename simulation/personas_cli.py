"""``python run.py personas generate|survey|import|export|list``."""
from __future__ import annotations

import argparse

from agents import bank as banks
from agents import demographics as demo
from agents.backstories import GenerationParams
from agents.llm.factory import EngineConfig, cached_engine
from core.store import Store
from simulation.console import RunConsole


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="personae.db", help="SQLite store (default personae.db)")
    p.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "openai", "langchain"])
    p.add_argument("--model", default="embedded", help="'embedded', an HF folder, a .gguf file or a served model name")
    p.add_argument("--endpoint", action="append", default=[], help="OpenAI-compatible base URL (repeatable)")


def _engine(args, store):
    return cached_engine(EngineConfig(kind=args.engine, model=args.model, endpoints=args.endpoint), store)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py personas", description="Manage persona banks in the store.")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate backstories into a bank (resumable)")
    g.add_argument("--bank", required=True)
    g.add_argument("--method", choices=list(banks.GENERATED), default="anthology")
    g.add_argument("-n", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-tokens", type=int, default=160)
    g.add_argument("--citizenship-filter", action="store_true")
    g.add_argument("--no-critic", action="store_true")
    g.add_argument("--interview-questions", type=int, default=10)
    g.add_argument("--interview-words", type=int, default=2500, help="interview length budget over all ten questions")
    g.add_argument("--answer-tokens", type=int, nargs="+", default=None, help="explicit per-answer token budgets (the last repeats)")
    g.add_argument("--consistency-rounds", type=int, default=1, help="consistency-critic rounds over each transcript (0 = off)")
    g.add_argument("--chunk", type=int, default=8, help="personas per batch (each finished batch is saved)")
    _engine_args(g)
    s = sub.add_parser("survey", help="demographic survey of a bank against a study's trait questions")
    s.add_argument("--bank", required=True)
    s.add_argument("--study", default=None, help="built-in study or YAML whose demographic questions to ask (default: Pew ATP W92 set)")
    s.add_argument("--method", choices=["probs", "sample"], default="probs")
    _engine_args(s)
    i = sub.add_parser("import", help="import personas from JSONL (all lines or none)")
    i.add_argument("path")
    i.add_argument("--bank", required=True)
    i.add_argument("--store", default="personae.db")
    e = sub.add_parser("export", help="export a bank to JSONL")
    e.add_argument("--bank", required=True)
    e.add_argument("path")
    e.add_argument("--store", default="personae.db")
    ls = sub.add_parser("list", help="list banks")
    ls.add_argument("--store", default="personae.db")
    args = p.parse_args(argv)
    store = Store(args.store)
    console = RunConsole()
    if args.cmd == "generate":
        params = GenerationParams(
            max_tokens=args.max_tokens,
            citizenship_filter=args.citizenship_filter,
            critic=not args.no_critic,
            interview_questions=args.interview_questions,
            interview_words=args.interview_words,
            answer_tokens=tuple(args.answer_tokens) if args.answer_tokens else None,
            consistency_rounds=args.consistency_rounds,
        )
        with console:
            people = banks.generate(_engine(args, store), store, args.bank, args.method, args.n, seed=args.seed, params=params, chunk=args.chunk, progress=lambda d, t: console.progress(f"generate {args.bank}", d, t))
        console.line(f"bank '{args.bank}': {len(people)} usable personas in {args.store}")
    elif args.cmd == "survey":
        people = banks.usable(store, args.bank)
        if not people:
            console.line(f"error: bank '{args.bank}' is empty in {args.store}")
            return 2
        if args.study:
            from analysis.studies import load_spec

            spec, _, _ = load_spec(args.study)
            traits = [demo.TraitQuestion(t.trait, t.question, tuple(t.options)) for t in spec.demographics]
            name = spec.name
        else:
            traits, name = demo.default_traits(), "default"
        with console:
            console.progress(f"survey {args.bank}", 0, len(people))
            out = demo.survey(_engine(args, store), store, people, traits, name, method=args.method)
            console.progress(f"survey {args.bank}", len(out), len(people))
        console.line(f"surveyed {len(out)} personas on {len(traits)} traits ('{name}')")
    elif args.cmd == "import":
        n = banks.import_jsonl(store, args.bank, args.path)
        console.line(f"imported {n} personas into bank '{args.bank}'")
    elif args.cmd == "export":
        n = banks.export_jsonl(store, args.bank, args.path)
        console.line(f"exported {n} personas to {args.path}")
    elif args.cmd == "list":
        for b in store.banks():
            console.line(f"{b}\t{len(banks.usable(store, b))}")
    return 0

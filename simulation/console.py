"""The live console: rich Live on a terminal, plain progress lines otherwise.

On a terminal it shows progress per step, the current question, each
condition's live persona distribution beside the human one, a running metrics
table and the engine's throughput. Without a terminal (CI logs, pipes) rich
would print one final frame, so it prints one readable line per event instead.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from scenarios.contract import ScenarioModel


def _bar(probs, width: int = 20) -> str:
    blocks = " ▏▎▍▌▋▊▉█"
    out = []
    for p in probs:
        n = p * width
        full = int(n)
        out.append("█" * full + (blocks[int((n - full) * 8)] if full < width else ""))
    return " ".join(f"{s:<{width}}"[:width] for s in out)


class RunConsole:
    def __init__(self, *, live: bool | None = None, file=None) -> None:
        self.file = file or sys.stdout
        self.console = Console(file=self.file)
        self.live_mode = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._t0 = time.perf_counter()
        self._task = ""
        self._done = 0
        self._total = 0

    # ------------------------------------------------------------ lifecycle
    def __enter__(self):
        if self.live_mode:
            self._live = Live(Text("starting…"), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False)
        else:
            print(text, file=self.file, flush=True)

    # ------------------------------------------------------------ events
    def progress(self, task: str, done: int, total: int) -> None:
        self._task, self._done, self._total = task, done, total
        if self._live is not None:
            self._live.update(Text(f"{task}: {done}/{total}"))
        else:
            self.line(f"[{self._elapsed()}] {task}: {done}/{total}")

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self._t0)
        return f"{s // 60:02d}:{s % 60:02d}"

    def _throughput(self, engine) -> str:
        hits, misses = engine.hits, engine.misses
        inner = engine._inner  # the loaded engine, None until the first store miss
        if inner is not None and inner.stats.seconds > 0:
            st = inner.stats
            rate = (st.prompt_tokens + st.generated_tokens) / st.seconds
            return f"engine {misses} calls, {hits} from store, {rate:,.0f} tok/s ({st.cached_prompt_tokens:,} prefix tokens reused)"
        return f"engine {misses} calls, {hits} from store"

    def step(self, model: ScenarioModel) -> None:
        """One line (plain) or one frame (live) after a model step, read
        through the scenario contract only."""
        item = model.current_item
        n = len(model.item_list)
        dists = model.live_distributions()
        human = model.human_distribution(item.id)
        fidelity = model.running_fidelity()
        metrics = [(label, f"{wd:.3f} over {len(fidelity.items)} items") for label, wd in fidelity.wd.items()]
        if self._live is None:
            dist = "; ".join(f"{k}: " + " ".join(f"{p:.2f}" for p in v) for k, v in dists.items())
            if human is not None:
                dist += "; human: " + " ".join(f"{p:.2f}" for p in human)
            self.line(f"[{self._elapsed()}] step {model.step_index}/{n} {item.id}: {dist} | {self._throughput(model.engine)}")
            if metrics:
                self.line("    running WD: " + "; ".join(f"{k} {v}" for k, v in metrics))
            return
        table = Table(title=f"{model.title} — step {model.step_index}/{n}: {item.id}", expand=True)
        table.add_column("condition")
        table.add_column("persona distribution")
        table.add_column("human")
        for label, probs in dists.items():
            table.add_row(label, _bar(probs, 8) + "  " + " ".join(f"{p:.2f}" for p in probs), "" if human is None else " ".join(f"{p:.2f}" for p in human))
        parts = [Text(f"{item.generic_text()[:160]}"), Text("options: " + " | ".join(item.options)), table]
        if metrics:
            mt = Table(title="running metrics")
            mt.add_column("condition")
            mt.add_column("mean WD so far")
            for k, v in metrics:
                mt.add_row(k, v)
            if fidelity.lower_bound is not None:
                mt.add_row("human lower bound", f"{fidelity.lower_bound:.3f}")
            parts.append(mt)
        parts.append(Text(self._throughput(model.engine) + f" · elapsed {self._elapsed()}"))
        self._live.update(Panel(Group(*parts)))

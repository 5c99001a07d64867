"""The SQLite store (sqlite-utils, WAL): engine responses, persona banks, runs
and their episode logs.

One file holds everything a study produced, so a run can be resumed, replayed
and audited. Connections are per thread (sqlite3 objects must not cross
threads); WAL lets readers (the browser page, a second terminal) read while a
run writes.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, so equal objects hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._init_schema()

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(self.path)
            db.conn.execute("PRAGMA busy_timeout = 30000")
            self._local.db = db
        return db

    def _init_schema(self) -> None:
        db = self.db
        if db.journal_mode != "wal":
            db.enable_wal()
        db.conn.execute("PRAGMA synchronous = NORMAL")
        if "responses" not in db.table_names():
            db["responses"].create(
                {"key": str, "engine": str, "op": str, "request": str, "response": str, "created": float},
                pk="key",
                if_not_exists=True,
            )
        if "personas" not in db.table_names():
            db["personas"].create(
                {
                    "persona_id": str,
                    "bank": str,
                    "idx": int,
                    "method": str,
                    "conditioning": str,
                    "model": str,
                    "prompts": str,
                    "params": str,
                    "seed": int,
                    "critic": str,
                    "profile": str,
                    "created": float,
                },
                pk="persona_id",
                if_not_exists=True,
            )
            db["personas"].create_index(["bank", "idx"], if_not_exists=True)
        if "demographics" not in db.table_names():
            db["demographics"].create(
                {"persona_id": str, "survey": str, "trait": str, "options": str, "probs": str, "method": str},
                pk=("persona_id", "survey", "trait"),
                if_not_exists=True,
            )
        if "runs" not in db.table_names():
            db["runs"].create(
                {
                    "run_id": str,
                    "scenario": str,
                    "config": str,
                    "status": str,
                    "created": float,
                    "finished": float,
                    "output_dir": str,
                },
                pk="run_id",
                if_not_exists=True,
            )
        if "events" not in db.table_names():
            db["events"].create(
                {"run_id": str, "seq": int, "step": int, "kind": str, "agent": str, "payload": str},
                pk=("run_id", "seq"),
                if_not_exists=True,
            )

    # ------------------------------------------------------------ responses
    def get_responses(self, keys: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, resp in self.db.execute(f"select key, response from responses where key in ({marks})", chunk):
                found[key] = json.loads(resp)
        return found

    def put_responses(self, rows: Iterable[dict]) -> None:
        rows = [
            {**r, "request": dumps(r["request"]), "response": dumps(r["response"]), "created": time.time()}
            for r in rows
        ]
        if rows:
            with self.db.conn:
                self.db["responses"].upsert_all(rows, pk="key", batch_size=500)

    def count_responses(self) -> int:
        return self.db["responses"].count

    # ------------------------------------------------------------ runs and events
    def start_run(self, run_id: str, scenario: str, config: dict, output_dir: str) -> bool:
        """Register a run; return True if it already existed (a resume)."""
        existing = self.db["runs"].count_where("run_id = ?", [run_id])
        if existing:
            self.db["runs"].update(run_id, {"status": "running"})
            return True
        self.db["runs"].insert(
            {
                "run_id": run_id,
                "scenario": scenario,
                "config": dumps(config),
                "status": "running",
                "created": time.time(),
                "finished": None,
                "output_dir": output_dir,
            }
        )
        return False

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        self.db["runs"].update(run_id, {"status": status, "finished": time.time()})

    def get_run(self, run_id: str) -> dict | None:
        rows = list(self.db["runs"].rows_where("run_id = ?", [run_id]))
        if not rows:
            return None
        row = dict(rows[0])
        row["config"] = json.loads(row["config"])
        return row

    def list_runs(self) -> list[dict]:
        return [dict(r) for r in self.db["runs"].rows_where(order_by="created")]

    def log_events(self, run_id: str, step: int, events: list[dict]) -> None:
        """Append a step's events atomically (all or none), replacing any partial
        log of the same step left by a killed run."""
        with self.db.conn:
            self.db.execute("delete from events where run_id = ? and step = ?", [run_id, step])
            start = self.db.execute("select coalesce(max(seq), -1) + 1 from events where run_id = ?", [run_id]).fetchone()[0]
            self.db["events"].insert_all(
                (
                    {
                        "run_id": run_id,
                        "seq": start + i,
                        "step": step,
                        "kind": e["kind"],
                        "agent": str(e.get("agent", "")),
                        "payload": dumps(e.get("payload", {})),
                    }
                    for i, e in enumerate(events)
                ),
                batch_size=500,
            )

    def events(self, run_id: str, step: int | None = None) -> list[dict]:
        where, args = "run_id = ?", [run_id]
        if step is not None:
            where += " and step = ?"
            args.append(step)
        return [
            {**dict(r), "payload": json.loads(r["payload"])}
            for r in self.db["events"].rows_where(where, args, order_by="seq")
        ]

    def logged_steps(self, run_id: str) -> list[int]:
        return [r[0] for r in self.db.execute("select distinct step from events where run_id = ? order by step", [run_id])]

    # ------------------------------------------------------------ personas
    def put_personas(self, rows: list[dict]) -> None:
        def enc(r: dict) -> dict:
            out = dict(r)
            for k in ("prompts", "params", "critic", "profile"):
                out[k] = dumps(out.get(k))
            out.setdefault("created", time.time())
            return out

        with self.db.conn:
            self.db["personas"].upsert_all([enc(r) for r in rows], pk="persona_id")

    def personas(self, bank: str) -> list[dict]:
        out = []
        for r in self.db["personas"].rows_where("bank = ?", [bank], order_by="idx"):
            r = dict(r)
            for k in ("prompts", "params", "critic", "profile"):
                r[k] = json.loads(r[k]) if r[k] is not None else None
            out.append(r)
        return out

    def banks(self) -> list[str]:
        return [r[0] for r in self.db.execute("select distinct bank from personas order by bank")]

    def put_demographics(self, rows: list[dict]) -> None:
        rows = [{**r, "options": dumps(r["options"]), "probs": dumps(r["probs"])} for r in rows]
        with self.db.conn:
            self.db["demographics"].upsert_all(rows, pk=("persona_id", "survey", "trait"))

    def demographics(self, persona_ids: list[str], survey: str) -> dict[str, dict[str, list[float]]]:
        out: dict[str, dict[str, list[float]]] = {}
        for i in range(0, len(persona_ids), 500):
            chunk = persona_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for pid, trait, probs in self.db.execute(
                f"select persona_id, trait, probs from demographics where survey = ? and persona_id in ({marks})",
                [survey, *chunk],
            ):
                out.setdefault(pid, {})[trait] = json.loads(probs)
        return out

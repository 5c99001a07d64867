"""The SQLite store (sqlite-utils, WAL): engine responses, persona banks, runs
and their episode logs, and the leases of requests being computed.

One file holds everything a study produced, so a run can be resumed, replayed
and audited. Connections are per thread (sqlite3 objects must not cross
threads); WAL lets readers (the browser page, a second terminal) read while a
run writes. ``Store(path, readonly=True)`` (``runs``, ``replay``) never writes,
so it also opens a store in a read-only folder or on a read-only disk.

Every SQLite or OS failure surfaces as :class:`StoreError`: one line naming the
file and what is wrong (not a database, read-only, disk full ...).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

import sqlite_utils

from core import answer_codec as codec
from core.canonical import dumps
from core.errors import PersonaeError
from core.persona_record import PERSONA_FIELDS, PERSONA_JSON_FIELDS, PersonaRecord, StoredText, TextCache
from core.texts import QUOTE_MIN, Texts, TextsMissing


class StoreError(PersonaeError, RuntimeError):
    """The store file cannot be opened, read or written; one line naming the path."""


def describe(exc: BaseException) -> str:
    """What went wrong with a file, in a few words (for a one-line message)."""
    if isinstance(exc, sqlite3.DatabaseError):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB":
            return "not a SQLite database (is it the right file?)"
        if name in ("SQLITE_READONLY", "SQLITE_READONLY_DIRECTORY") or "readonly" in str(exc):
            return "read-only: cannot write to it or to its folder"
        if name == "SQLITE_FULL":
            return "disk full"
        if name == "SQLITE_CANTOPEN":
            return "cannot open or create it (is its folder writable?)"
        if name == "SQLITE_CORRUPT":
            return "the file is damaged (database disk image is malformed)"
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "disk full"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "permission denied (read-only)"
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return "a parent of it is a file, not a folder"
        return exc.strerror or str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _owner_dead(owner: str) -> bool:
    """A lease owner ("host:pid:tag") on this machine whose process is gone (killed):
    its requests are free at once, so a resume does not wait for the lease to run out."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


class Store:
    # A lease (a run computing a request) lasts this long unless renewed; its
    # owner renews it while it computes, so it only runs out when the owner died.
    LEASE_SECONDS = 30.0

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._uri: str | None = None
        self._local = threading.local()
        self.texts = Texts(lambda: self.db.conn, compact=lambda: self.compact)
        self.persona_texts = TextCache(self.text)
        # Prompts of the requests this process saved lately (a digest of the prompt ->
        # the stored key), so a step's log names those requests instead of storing
        # their prompts again as texts (log_events); one thread writes (see Texts).
        self._saved_prompts: OrderedDict[bytes, bytes] = OrderedDict()
        with self.errors("open"):
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"store {self.path}: no such file")
                self._uri = self._readonly_uri()
                self.db.execute("select count(*) from sqlite_master").fetchone()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._init_schema()

    @contextlib.contextmanager
    def errors(self, doing: str):
        """Turn a SQLite or OS failure into one StoreError line naming the file."""
        try:
            yield
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"store {self.path}: {describe(exc)} ({doing})") from None

    @contextlib.contextmanager
    def writing_texts(self, doing: str):
        """A transaction that may store texts: if it does not commit, the texts it
        stored are gone, so the ids this process remembers as quotable are forgotten."""
        try:
            with self.errors(doing), self.db.conn:
                yield
        except BaseException:
            self.texts.forget()
            self._saved_prompts.clear()  # rows of a rolled-back transaction are not there to name
            raise

    def _readonly_uri(self) -> str:
        """``mode=ro``; when the folder is read-only too, SQLite cannot create the
        WAL index (-shm) it needs even to read, and ``immutable=1`` (no locking,
        no WAL index) is the only way in: fine, nobody can write there either."""
        base = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        try:
            con = sqlite3.connect(base, uri=True)
            try:
                con.execute("select count(*) from sqlite_master").fetchone()
                return base
            finally:
                con.close()
        except sqlite3.OperationalError:
            return base + "&immutable=1"

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            if self._uri:
                db = sqlite_utils.Database(sqlite3.connect(self._uri, uri=True, check_same_thread=False))
            else:
                db = sqlite_utils.Database(self.path)
            db.conn.execute("PRAGMA busy_timeout = 30000")
            self._local.db = db
        return db

    def _writable(self, doing: str) -> None:
        if self.readonly:
            raise StoreError(f"store {self.path}: opened read-only, cannot {doing}")

    def _init_schema(self) -> None:
        db = self.db
        if db.journal_mode != "wal":
            db.enable_wal()
        db.conn.execute("PRAGMA synchronous = NORMAL")
        # Fail now, not after the first LLM call, when the file or folder is read-only.
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute("ROLLBACK")
        if "responses" not in db.table_names():
            # The compact layout (core.answer_codec); stores made before it keep theirs
            # (one JSON row per request with its whole key) and are written in it.
            db.conn.execute("create table if not exists responses (key blob primary key, op text not null, "
                            "request text not null, response blob not null, created real not null) without rowid")
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
                    # Compact layout: a long persona text is a reference into texts (see put_personas).
                    **({"conditioning_text": int} if self.compact else {}),
                },
                pk="persona_id",
                if_not_exists=True,
            )
            db["personas"].create_index(["bank", "idx"], if_not_exists=True)
        if self.compact and "conditioning_text" not in db["personas"].columns_dict:
            with contextlib.suppress(sqlite3.OperationalError):  # "duplicate column": another process added it first
                db["personas"].add_column("conditioning_text", int)
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
                    "message": str,
                },
                pk="run_id",
                if_not_exists=True,
            )
        if "message" not in db["runs"].columns_dict:  # stores made before runs kept their error
            db["runs"].add_column("message", str)
        if "events" not in db.table_names():
            db["events"].create(
                {"run_id": str, "seq": int, "step": int, "kind": str, "agent": str, "payload": str},
                pk=("run_id", "seq"),
                if_not_exists=True,
            )
        if "event_blocks" not in db.table_names():
            # A step's events in blocks of EVENT_BLOCK, zlib-compressed as one JSON list:
            # one row per event repeated the same keys, options and settings (~540 bytes
            # per consensus utterance, ~80 in a block). Stores made before keep their
            # one-row-per-event table; both are read.
            db.conn.execute("create table if not exists event_blocks (run_id text not null, seq integer not null, "
                            "step integer not null, n integer not null, events blob not null, "
                            "primary key (run_id, seq)) without rowid")
        if "leases" not in db.table_names():
            db["leases"].create({"key": str, "owner": str, "expires": float}, pk="key", if_not_exists=True)
        if "texts" not in db.table_names():
            # Each long prompt prefix (a backstory, a transcript so far) once; a text
            # that extends a stored one holds only its tail (zlib when that is smaller).
            db.conn.execute(f"create table if not exists texts (id integer primary key, sha {'blob' if self.compact else 'text'} "
                            "not null unique, parent integer references texts(id), tail blob not null)")

    # ------------------------------------------------------------ responses
    @property
    def compact(self) -> bool:
        """The store's answers are in the compact layout (``core.answer_codec``);
        False for stores made before it, which keep their layout."""
        value = getattr(self, "_compact", None)
        if value is None:
            with self.errors("reading the layout"):
                cols = {r[1] for r in self.db.execute("pragma table_info(responses)")}
            value = self._compact = bool(cols) and "engine" not in cols
        return value

    def _stored_key(self, key: str):
        return codec.key_blob(key) if self.compact else key

    def _stored_keys(self, keys: list[str]) -> dict:
        """Stored key -> cache key, for a query's answer."""
        return {self._stored_key(k): k for k in keys}

    def get_responses(self, keys: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        texts: dict[int, str] = {}
        for i in range(0, len(keys), 500):
            back = self._stored_keys(keys[i : i + 500])
            marks = ",".join("?" * len(back))
            for key, resp in self.db.execute(f"select key, response from responses where key in ({marks})", list(back)):
                found[back[key]] = self._response_in(codec.unpack(resp), texts) if self.compact else json.loads(resp)
        return found

    def put_responses(self, rows: Iterable[dict]) -> None:
        """Save answers and release their leases, in one transaction.

        A row may name the long text its request extends: ``text_field`` (a
        string field of ``request``) and ``text_len`` (how many of its leading
        characters are that text, e.g. a backstory). Long texts go to the
        ``texts`` table once and the stored request refers to them: in the
        compact layout (:mod:`core.answer_codec`) as ``[field, text id, rest]``,
        the rest of the request a shared text when long; in stores made before
        it as ``{"$text": [part, ...]}`` per field. :meth:`request` joins them
        back. The cache key is computed by the caller from the whole request,
        so it does not depend on how it is stored."""
        rows = list(rows)
        if rows:
            self._writable("save engine answers")
            with self.writing_texts("saving engine answers"):
                ids: dict[str, int] = {}

                def part(text: str, least: int):
                    if len(text) < least:
                        return text
                    if text not in ids:
                        ids[text] = self._put_text(text)
                    return ids[text]

                out = [self._compact_row(r, part) if self.compact else self._legacy_row(r, part) for r in rows]
                if self.compact:
                    self._remember_prompts(rows, out)
                cols = ["key", "op", "request", "response", "created"] if self.compact else ["key", "engine", "op", "request", "response", "created"]
                # An answer saved again keeps its row (and, in the earlier layout, its place in save order).
                self.db.conn.executemany(f"insert into responses({','.join(cols)}) values ({','.join('?' * len(cols))}) "
                                         f"on conflict(key) do update set {', '.join(f'{c} = excluded.{c}' for c in cols[1:])}",
                                         [[o[c] for c in cols] for o in out])
                keys = [r["key"] for r in rows]
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    self.db.execute(f"delete from leases where key in ({','.join('?' * len(chunk))})", chunk)

    # Prompts remembered for the step log: a representatives rollout's 8 steps (~24,000 answers each, whose
    # originals' turns recur in every step of the rollout) at ~46 MB at most, however large the population.
    SAVED_PROMPTS = 1 << 18

    @staticmethod
    def _prompt_digest(prompt: str) -> bytes:
        return hashlib.blake2b(prompt.encode(), digest_size=16).digest()

    @staticmethod
    def _prompt_of(request: dict) -> str | None:
        """The prompt a request sends: ``prompt``, or an option request's prefix + suffix."""
        if isinstance(request.get("prompt"), str):
            return request["prompt"]
        if isinstance(request.get("prefix"), str) and isinstance(request.get("suffix"), str):
            return request["prefix"] + request["suffix"]
        return None

    def _remember_prompts(self, rows: list[dict], out: list[dict]) -> None:
        saved = self._saved_prompts
        for r, o in zip(rows, out):
            prompt = self._prompt_of(r["request"])
            if prompt is not None and len(prompt) >= self.SHARED_MIN:
                saved[self._prompt_digest(prompt)] = o["key"]
        while len(saved) > self.SAVED_PROMPTS:
            saved.popitem(last=False)

    def _legacy_row(self, r: dict, part) -> dict:
        """A row of the layout before the compact one: the request's long strings as references."""
        request = dict(r["request"])
        field, n = r.get("text_field"), int(r.get("text_len") or 0)
        for k, value in request.items():
            if not isinstance(value, str):
                continue
            cut = n if k == field and n >= self.TEXT_MIN else 0
            parts = ([part(value[:cut], 0)] if cut else []) + [part(value[cut:], self.SHARED_MIN)]
            if any(isinstance(x, int) for x in parts):
                request[k] = {"$text": [x for x in parts if x != ""]}
        return {"key": r["key"], "engine": r["engine"], "op": r["op"], "request": dumps(request),
                "response": dumps(r["response"]), "created": time.time()}

    def _compact_row(self, r: dict, part) -> dict:
        """A row of the compact layout: ``[field, head, rest(, own)]`` (the persona's
        text as a text id, the rest of the request a shared text when long, the
        seed inline), the response packed (an option distribution) or JSON with a
        long generated text as a reference to it, stored once and quotable."""
        rest = dict(r["request"])
        field, n = r.get("text_field"), int(r.get("text_len") or 0)
        head = None
        if field and n >= self.SHARED_MIN and isinstance(rest.get(field), str):
            whole = rest[field]
            head = part(whole[:n], 0)
            rest[field] = whole[n:]
            if not rest[field]:
                del rest[field]
        if r["op"] == "generate" and len(rest.get(field or "prompt", "")) >= QUOTE_MIN:
            # The question a generation answers ("Question: ...\nAnswer:") is quoted by the
            # next prompt and the critics' prompts, beside the answer.
            self._put_text(rest[field or "prompt"], quotable=True)
        # A generation's seed differs in every request while the rest (question,
        # settings) repeats across personas: the seed stays inline, the rest is shared.
        own = {k: rest.pop(k) for k in self.OWN_FIELDS if k in rest}
        body = dumps(rest)
        shared = part(body, self.SHARED_MIN) if len(body) >= self.SHARED_MIN else rest
        request = dumps([field if head is not None else None, head, shared] + ([own] if own else []))
        response = r["response"]
        packed = codec.pack_option(response) if r["op"] == "option_probs" and isinstance(response, dict) else None
        if packed is None:
            if isinstance(response, dict) and isinstance(response.get("text"), str) and len(response["text"]) >= QUOTE_MIN:
                # A generated text once, quotable: the next prompt, the critics' prompts
                # and the persona's text refer to it instead of copying it (core.texts).
                response = {**response, "text": {"$text": [self._put_text(response["text"], quotable=True)]}}
            packed = codec.encode_json(response)
        return {"key": codec.key_blob(r["key"]), "op": r["op"], "request": request, "response": packed, "created": time.time()}

    def _response_in(self, response, texts: dict[int, str]):
        """A compact response with a generated text's reference resolved."""
        if isinstance(response, dict) and isinstance(response.get("text"), dict) and "$text" in response["text"]:
            return {**response, "text": self._texts_in(response["text"], texts)}
        return response

    # ------------------------------------------------------------ texts
    # A persona's text (the named prefix) is stored apart from this length on; any
    # other string field of a request (a question suffix, a critic's check) from
    # SHARED_MIN on -- shorter ones stay inline: a reference would save little.
    TEXT_MIN = 256
    SHARED_MIN = 96
    OWN_FIELDS = ("seed",)  # request fields kept inline in the compact layout (see _compact_row)

    def _put_text(self, text: str, *, quotable: bool = False) -> int:
        """The id of ``text`` in ``texts`` (``core.texts``), stored if new, inside the caller's transaction."""
        return self.texts.put(text, quotable=quotable)

    def text(self, text_id: int) -> str:
        """A stored text, its chain of tails joined."""
        try:
            return self.texts.get(text_id)
        except TextsMissing:
            raise StoreError(f"store {self.path}: text {text_id} is missing from the texts table (the store is damaged)") from None

    def _expand(self, request: dict) -> dict:
        out = {}
        for k, v in request.items():
            if isinstance(v, dict) and "$text" in v:
                v = "".join(self.text(x) if isinstance(x, int) else x for x in v["$text"])
            out[k] = v
        return out

    def _request_in(self, stored: str) -> dict:
        """A stored request as the engine received it."""
        value = json.loads(stored)
        if isinstance(value, dict):  # stored before the compact layout
            return self._expand(value)
        field, head, rest, *own = value
        request = json.loads(self.text(rest)) if isinstance(rest, int) else rest
        request.update(*own)
        if head is not None:
            request[field] = self.text(head) + request.get(field, "")
        return request

    def request(self, key: str) -> dict | None:
        """The stored request of ``key`` as the engine received it (texts re-expanded); None if absent."""
        with self.errors("reading a request"):
            row = self.db.execute("select request from responses where key = ?", [self._stored_key(key)]).fetchone()
            return None if row is None else self._request_in(row[0])

    def requests(self, op: str | None = None) -> list[dict]:
        """Every stored request (of ``op``), texts re-expanded, in the order they were saved."""
        where, args = ("where op = ?", [op]) if op else ("", [])
        order = "created, key" if self.compact else "rowid"  # the compact table has no rowid
        with self.errors("reading requests"):
            return [self._request_in(r) for (r,) in self.db.execute(f"select request from responses {where} order by {order}", args)]

    # ------------------------------------------------------------ leases
    # Runs sharing one store claim the requests they are about to compute, so a
    # second run waits for the first's answers instead of computing them again.
    # A lease names its owner (one engine in one process) and runs out unless
    # renewed: a killed run's requests are taken over once its leases expire.

    def claim(self, keys: list[str], owner: str, seconds: float | None = None) -> list[str]:
        """Lease the ``keys`` nobody else holds (or whose lease ran out) to ``owner``;
        return those now held by ``owner``. Keys already answered are not claimed."""
        if not keys:
            return []
        now = time.time()
        expires = now + (seconds or self.LEASE_SECONDS)
        mine: list[str] = []
        with self.errors("claiming requests"):
            con = self.db.conn
            con.execute("BEGIN IMMEDIATE")  # one claimer at a time: no two owners of a key
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    back = self._stored_keys(chunk)
                    done = {back[k] for (k,) in con.execute(f"select key from responses where key in ({','.join('?' * len(back))})", list(back))}
                    held = {k: (o, e) for k, o, e in con.execute(f"select key, owner, expires from leases where key in ({marks})", chunk)}
                    free = [k for k in chunk if k not in done and (k not in held or held[k][0] == owner or held[k][1] < now
                                                                     or _owner_dead(held[k][0]))]
                    con.executemany("insert or replace into leases(key, owner, expires) values (?, ?, ?)",
                                    [(k, owner, expires) for k in free])
                    mine += free
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return mine

    def renew(self, owner: str, seconds: float | None = None) -> None:
        """Extend every lease ``owner`` holds (its computation is still running)."""
        with self.errors("renewing leases"), self.db.conn:
            self.db.execute("update leases set expires = ? where owner = ?", [time.time() + (seconds or self.LEASE_SECONDS), owner])

    def release(self, owner: str) -> None:
        """Drop ``owner``'s leases (it stopped without answering them)."""
        with self.errors("releasing leases"), self.db.conn:
            self.db.execute("delete from leases where owner = ?", [owner])

    def count_responses(self) -> int:
        return self.db["responses"].count

    # ------------------------------------------------------------ runs and events
    def start_run(self, run_id: str, scenario: str, config: dict, output_dir: str) -> bool:
        """Register a run; return True if it already existed (a resume). A resume
        records the configuration and output folder it runs with now (the
        ``output`` may have changed), so replay finds the report it wrote."""
        self._writable("record the run")
        # In the order given, not canonical (sorted): a replay rebuilds the run from it,
        # and a mapping's order is the report's (subgroups {White: .., Other: ..}).
        config = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
        with self.errors("recording the run"), self.db.conn:
            existing = self.db["runs"].count_where("run_id = ?", [run_id])
            if existing:
                self.db["runs"].update(run_id, {"status": "running", "message": None, "finished": None,
                                                "config": config, "output_dir": output_dir})
                return True
            self.db["runs"].insert(
                {
                    "run_id": run_id,
                    "scenario": scenario,
                    "config": config,
                    "status": "running",
                    "created": time.time(),
                    "finished": None,
                    "output_dir": output_dir,
                    "message": None,
                }
            )
        return False

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        self._writable("record the run")
        with self.errors("recording the run"), self.db.conn:
            self.db["runs"].update(run_id, {"status": status, "finished": time.time()})

    def fail_run(self, run_id: str, message: str, status: str = "failed") -> None:
        """Mark a run that stopped on an error (``status`` 'failed') or was
        interrupted, with the one-line reason; its finished steps stay."""
        self._writable("record the run")
        with self.errors("recording the run"), self.db.conn:
            self.db["runs"].update(run_id, {"status": status, "finished": time.time(), "message": message})

    def get_run(self, run_id: str) -> dict | None:
        rows = list(self.db["runs"].rows_where("run_id = ?", [run_id]))
        if not rows:
            return None
        row = dict(rows[0])
        row["config"] = json.loads(row["config"])
        return row

    def list_runs(self) -> list[dict]:
        return [dict(r) for r in self.db["runs"].rows_where(order_by="created")]

    EVENT_BLOCK = 256

    def log_events(self, run_id: str, step: int, events: list[dict]) -> None:
        """Append a step's events atomically (all or none), replacing any partial
        log of the same step left by a killed run."""
        self._writable("log the step")
        with self.writing_texts("logging a step"):
            for table in ("events", "event_blocks"):
                self.db.execute(f"delete from {table} where run_id = ? and step = ?", [run_id, step])
            start = self._next_seq(run_id)
            ids: dict[str, int] = {}
            rows = []
            for b in range(0, len(events), self.EVENT_BLOCK):
                block = [[e["kind"], str(e.get("agent", "")), self._texts_out(self._named_prompt(e.get("payload", {})), ids)]
                         for e in events[b : b + self.EVENT_BLOCK]]
                rows.append((run_id, start + b, step, len(block), zlib.compress(dumps(block).encode(), 6)))
            self.db.conn.executemany("insert into event_blocks(run_id, seq, step, n, events) values (?, ?, ?, ?, ?)", rows)

    def _named_prompt(self, payload: dict) -> dict:
        """``payload`` with its ``prompt`` as ``{"$request": [stored key]}`` when it is
        the prompt of a request this process saved: the request row holds it
        already, and storing it again as a text (prefix search, quotes, zlib) took
        ~50 s of each ~4-minute representatives step at full size, the server idle."""
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or len(prompt) < self.SHARED_MIN or not self._saved_prompts:
            return payload
        key = self._saved_prompts.get(self._prompt_digest(prompt))
        return payload if key is None else {**payload, "prompt": {"$request": [key.hex()]}}

    def _next_seq(self, run_id: str) -> int:
        row = self.db.execute("select max(s) from (select max(seq) + 1 as s from events where run_id = ? union all "
                              "select max(seq + n) from event_blocks where run_id = ?)", [run_id, run_id]).fetchone()
        return row[0] or 0

    def _texts_out(self, value, ids: dict[str, int]):
        """``value`` with every string of SHARED_MIN characters or more replaced by
        ``{"$text": [id]}`` (stored once in ``texts``): an episode log repeats the
        same prompts, opinions and statements in event after event (measured: 4 KB
        per event, 94% of a consensus store). Inside the caller's transaction."""
        if isinstance(value, str) and len(value) >= self.SHARED_MIN:
            if value not in ids:
                ids[value] = self._put_text(value)
            return {"$text": [ids[value]]}
        if isinstance(value, dict):
            return {k: self._texts_out(v, ids) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._texts_out(v, ids) for v in value]
        return value

    def _texts_in(self, value, seen: dict):
        """The inverse of :meth:`_texts_out` and :meth:`_named_prompt` (texts and
        requests read once per call)."""
        if isinstance(value, dict):
            if len(value) == 1 and isinstance(value.get("$request"), list):
                return self._logged_prompt(value["$request"], seen)
            if len(value) == 1 and isinstance(value.get("$text"), list):
                out = []
                for x in value["$text"]:
                    if isinstance(x, int):
                        if x not in seen:
                            seen[x] = self.text(x)
                        out.append(seen[x])
                    else:
                        out.append(x)
                return "".join(out)
            return {k: self._texts_in(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [self._texts_in(v, seen) for v in value]
        return value

    def _logged_prompt(self, ref: list, seen: dict) -> str:
        """The prompt of the stored request a step log names."""
        key = ref[0] if ref and isinstance(ref[0], str) else ""
        if key not in seen:
            row = self.db.execute("select request from responses where key = ?", [bytes.fromhex(key)]).fetchone() \
                if len(key) == 32 and all(c in "0123456789abcdef" for c in key) else None
            prompt = None if row is None else self._prompt_of(self._request_in(row[0]))
            if prompt is None:
                raise StoreError(f"store {self.path}: the step log names request {key or ref!r}, which the store does not hold "
                                 f"(the store is damaged)")
            seen[key] = prompt
        return seen[key]

    def events(self, run_id: str, step: int | None = None, kind: str | None = None) -> list[dict]:
        """A run's logged events (of one step, of one kind), in order: ``run_id``,
        ``seq``, ``step``, ``kind``, ``agent`` and the ``payload`` as logged."""
        where, args = "run_id = ?", [run_id]
        if step is not None:
            where += " and step = ?"
            args.append(step)
        seen: dict = {}
        with self.errors("reading the step log"):
            out = []
            if self._has("events"):
                rows = self.db["events"].rows_where(where + (" and kind = ?" if kind else ""), [*args, kind] if kind else args, order_by="seq")
                out = [{**dict(r), "payload": self._texts_in(json.loads(r["payload"]), seen)} for r in rows]
            if self._has("event_blocks"):
                for seq, at, raw in self.db.execute(f"select seq, step, events from event_blocks where {where} order by seq", args):
                    # Only the kind asked for has its texts read (a consensus step's
                    # utterances quote a prompt each).
                    out += [{"run_id": run_id, "seq": seq + i, "step": at, "kind": k, "agent": agent, "payload": self._texts_in(payload, seen)}
                            for i, (k, agent, payload) in enumerate(self._block(run_id, at, seq, raw)) if kind is None or k == kind]
        return sorted(out, key=lambda e: e["seq"])

    def _block(self, run_id: str, step: int, seq: int, raw: bytes) -> list[list]:
        """One block of a step log, decoded; a block that does not decode (the file
        was damaged) is one StoreError line saying which, not a zlib or JSON trace."""
        try:
            events = json.loads(zlib.decompress(raw))
            if isinstance(events, list) and all(isinstance(e, list) and len(e) == 3 for e in events):
                return events
            why = "not a list of [kind, agent, payload]"
        except (zlib.error, ValueError, TypeError) as exc:
            why = describe(exc)
        raise StoreError(f"store {self.path}: the step log of run {run_id}, step {step}, events from {seq}, is damaged ({why}); "
                         f"run it again in a new store or delete that step's log to play the step again")

    def logged_steps(self, run_id: str) -> list[int]:
        """The steps of ``run_id`` with a logged event."""
        tables = [t for t in ("events", "event_blocks") if self._has(t)]
        with self.errors("reading the step log"):
            query = " union ".join(f"select distinct step from {t} where run_id = ?" for t in tables)
            return [r[0] for r in self.db.execute(f"select step from ({query}) order by step", [run_id] * len(tables))]

    def _has(self, table: str) -> bool:
        """Whether the file has ``table`` (a read-only store made before it may not)."""
        return table in self.db.table_names()

    # ------------------------------------------------------------ personas
    def put_personas(self, rows: Sequence[PersonaRecord]) -> None:
        ids: dict[str, int] = {}

        def enc(r: PersonaRecord) -> dict:
            out = {k: getattr(r, k) for k in PERSONA_FIELDS}
            for k in PERSONA_JSON_FIELDS:
                out[k] = self._json_out(out[k], ids) if self.compact else dumps(out[k])
            if out["created"] is None:
                out["created"] = time.time()
            if self.compact:
                # The persona's text is already in texts (its requests' prefix) or extends
                # one there (an interview's last prompt and answer): refer to it.
                long = len(r.conditioning) >= self.TEXT_MIN
                out["conditioning_text"] = self._put_text(r.conditioning) if long else None
                out["conditioning"] = "" if long else r.conditioning
            return out

        if self.readonly and self._all_present("personas", "persona_id = ?", [(r.persona_id,) for r in rows]):
            return  # a replay re-registering rule-based personas it already has
        self._writable("save personas")
        with self.writing_texts("saving personas"):
            self.db["personas"].upsert_all([enc(r) for r in rows], pk="persona_id")

    def personas(self, bank: str) -> list[PersonaRecord]:
        # A bank's rows repeat the same model, method and settings (and often prompts and
        # profiles): equal fields are read into one shared object, not one per persona,
        # so a 40k-persona bank in memory costs about its texts. Treat the values as read-only.
        out, shared, seen = [], {}, {}
        for r in self.db["personas"].rows_where("bank = ?", [bank], order_by="idx"):
            text_id = r.get("conditioning_text")
            r = {k: r[k] for k in PERSONA_FIELDS}
            if text_id is not None:  # read when a prompt needs it, not held by the population
                r["conditioning"] = StoredText(self.persona_texts, text_id)
            for k in ("bank", "method", "model"):
                r[k] = shared.setdefault(r[k], r[k])
            for k in PERSONA_JSON_FIELDS:
                raw = r[k]
                if raw is None:
                    continue
                if raw not in shared:
                    shared[raw] = self._json_in(raw, seen)
                r[k] = shared[raw]
            out.append(PersonaRecord(**r))
        return out

    def _json_out(self, value, ids: dict[str, int]) -> str | bytes:
        """A persona's JSON field in the compact layout: long strings (the interview's
        questions, prompts) as text references, the rest zlib-compressed when long
        (the critics' verdicts: ~2 KB of numbers and repeated names per persona)."""
        text = dumps(self._texts_out(value, ids))
        if len(text) >= self.TEXT_MIN:
            packed = zlib.compress(text.encode(), 6)
            if len(packed) < len(text):
                return packed
        return text

    def _json_in(self, raw: str | bytes, seen: dict[int, str]):
        if isinstance(raw, bytes):
            raw = zlib.decompress(raw)
        value = json.loads(raw)
        return self._texts_in(value, seen) if self.compact else value

    def persona_indices(self, bank: str) -> set[int]:
        """Indices present in ``bank`` (generated or rejected), without reading their texts."""
        with self.errors("reading personas"):
            return {i for (i,) in self.db.execute("select idx from personas where bank = ?", [bank])}

    def _all_present(self, table: str, where: str, keys: list[tuple]) -> bool:
        return all(self.db.execute(f"select 1 from {table} where {where}", list(k)).fetchone() for k in keys)

    def banks(self) -> list[str]:
        return [r[0] for r in self.db.execute("select distinct bank from personas order by bank")]

    def put_demographics(self, rows: list[dict]) -> None:
        rows = [{**r, "options": dumps(r["options"]), "probs": dumps(r["probs"])} for r in rows]
        where = "persona_id = ? and survey = ? and trait = ?"
        if self.readonly and self._all_present("demographics", where, [(r["persona_id"], r["survey"], r["trait"]) for r in rows]):
            return
        self._writable("save demographics")
        with self.errors("saving demographics"), self.db.conn:
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

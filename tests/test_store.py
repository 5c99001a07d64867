"""Store and disk faults as one line (real files, real folders, a real run), and
runs sharing one store claiming their requests (leases in SQLite).

Read-only folders: the tests run as root on CI, where chmod does not stop a
write. So a read-only folder is made real for an unprivileged user: the command
runs under ``setpriv`` as ``nobody`` (as a normal user, chmod alone does it).
A path whose parent is a regular file fails for root too.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from core.canonical import dumps
from core.store import Store, StoreError
from scenarios.config import load_config
from simulation.runner import RunError, replay, run

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def tiny(store: Path, out: Path, *extra: str) -> list[str]:
    """A gss_spending run with rule-based personas: 2 personas x 2 questions."""
    return [f"store={store}", f"output={out}", "population.size=2", "population.conditions=[qa]",
            "questionnaire.questions=[natspac, natenvir]", "human.sample=4", "human.lower_bound_splits=4", *extra]


def cli(*args: str, unprivileged: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """``run.py`` in a subprocess; ``unprivileged``: as nobody when we are root."""
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    if unprivileged and os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture()
def public():
    """A folder nobody may enter (pytest's tmp_path is private to root); removed after."""
    d = Path(tempfile.mkdtemp(prefix="personae-test-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real finished run (embedded model): its store and config."""
    d = tmp_path_factory.mktemp("finished")
    cfg = load_config(ROOT / "scenarios" / "gss_spending.yaml", tiny(d / "store.db", d / "runs"))
    result = run(cfg)
    assert result.engine_calls > 0
    return cfg, result


def responses(db: Path) -> int:
    with closing(sqlite3.connect(db)) as con:
        return con.execute("select count(*) from responses").fetchone()[0]


# ------------------------------------------------------------------ opening a store


@pytest.mark.fast
def test_a_file_that_is_not_sqlite_is_one_line(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n")
    with pytest.raises(StoreError, match=r"notes\.db: not a SQLite database"):
        Store(junk)
    err = one_line_exit_2(cli("runs", "--store", str(junk)))
    assert str(junk) in err and "not a SQLite database" in err
    assert junk.read_text() == "these are my notes, not a database\n"  # untouched


def test_a_store_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    err = one_line_exit_2(cli("scenarios/gss_spending.yaml", "--set", f"store={tmp_path / 'file' / 'p.db'}",
                              "--set", f"output={tmp_path / 'runs'}"))
    assert "file/p.db" in err and "is a file, not a folder" in err


def test_a_new_store_in_a_read_only_folder_is_one_line(public):
    ro = public / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    err = one_line_exit_2(cli("scenarios/gss_spending.yaml", "--set", f"store={ro / 'p.db'}",
                              "--set", f"output={public / 'runs'}", unprivileged=True))
    assert f"store {ro / 'p.db'}" in err and "is its folder writable" in err
    assert not (ro / "p.db").exists()


def test_a_read_only_store_object_never_writes(finished, tmp_path):
    cfg, result = finished
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(cfg.store)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    before = copy.read_bytes()
    store = Store(copy, readonly=True)
    assert store.get_run(result.run_id)["status"] == "finished"
    with pytest.raises(StoreError, match="opened read-only"):
        store.put_responses([{"key": "k", "engine": "e", "op": "o", "request": {}, "response": {}}])
    with pytest.raises(StoreError, match="no such file"):
        Store(tmp_path / "missing.db", readonly=True)
    assert copy.read_bytes() == before


# ------------------------------------------------------------------ runs and replay on a read-only folder


def test_runs_and_replay_read_a_store_in_a_read_only_folder(finished, public):
    """WAL set-up used to write on every open: listing and replaying failed there."""
    cfg, result = finished
    ro = public / "ro"
    shutil.copytree(Path(cfg.store).parent / "runs", ro / "runs")
    for p in ro.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    db = ro / "store.db"
    with closing(sqlite3.connect(cfg.store)) as src, closing(sqlite3.connect(db)) as dst:
        src.backup(dst)  # a WAL-mode copy, closed cleanly: no -wal/-shm files beside it
        with dst:
            dst.execute("update runs set output_dir = replace(output_dir, ?, ?)", [str(Path(cfg.store).parent), str(ro)])
    assert not (ro / "store.db-wal").exists()
    db.chmod(0o644)
    ro.chmod(0o555)
    before = db.read_bytes()

    listed = cli("runs", "--store", str(db), unprivileged=True)
    assert listed.returncode == 0, listed.stderr
    assert f"{result.run_id}\tgss_spending\tfinished" in listed.stdout

    out = public / "replayed"
    out.mkdir()
    out.chmod(0o777)
    rep = cli("replay", result.run_id, "--store", str(db), "--out", str(out / "r"), unprivileged=True)
    assert rep.returncode == 0, rep.stderr
    assert "0 engine calls; report identical to the original" in rep.stdout
    assert db.read_bytes() == before and not (ro / "store.db-wal").exists()

    # the default replay folder is inside the read-only run folder: one line, exit 2
    err = one_line_exit_2(cli("replay", result.run_id, "--store", str(db), unprivileged=True))
    assert "replay output folder" in err and "cannot write there" in err


# ------------------------------------------------------------------ output folder, failed runs, resume


def test_an_unwritable_output_folder_stops_the_run_before_any_llm_call(tmp_path):
    (tmp_path / "file").write_text("x")
    db = tmp_path / "store.db"
    cfg = load_config(ROOT / "scenarios" / "gss_spending.yaml", tiny(db, tmp_path / "file" / "runs"))
    t0 = time.monotonic()
    with pytest.raises(RunError, match=r"output folder .*file/runs/.*: cannot write there"):
        run(cfg)
    assert time.monotonic() - t0 < 10
    assert responses(db) == 0 and Store(db).list_runs() == []


def test_a_run_that_stops_on_an_error_is_marked_failed_with_its_message(tmp_path):
    """A real outage: the engine's endpoint is a port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "store.db"
    proc = cli("scenarios/gss_spending.yaml", "--plain", *[x for a in tiny(db, tmp_path / "runs", "engine.kind=openai",
               f"engine.endpoints=[http://127.0.0.1:{port}/v1]", "engine.retries=1") for x in ("--set", a)])
    err = one_line_exit_2(proc)
    assert f"http://127.0.0.1:{port}/v1 unreachable after 1 tries (connection refused)" in err
    listed = cli("runs", "--store", str(db))
    assert listed.returncode == 0
    (row,) = listed.stdout.strip().splitlines()
    assert row.split("\t")[2] == "failed" and row.split("\t")[4] == err.removeprefix("error: ")


def test_resuming_with_another_output_folder_updates_the_record(finished, tmp_path):
    cfg, result = finished
    moved = load_config(ROOT / "scenarios" / "gss_spending.yaml", tiny(cfg.store, tmp_path / "elsewhere"))
    again = run(moved)
    assert again.run_id == result.run_id and again.resumed and again.engine_calls == 0
    assert Store(cfg.store).get_run(result.run_id)["output_dir"] == str(tmp_path / "elsewhere" / result.run_id)
    rep, same = replay(result.run_id, str(cfg.store))
    assert rep.output_dir == tmp_path / "elsewhere" / result.run_id / "replay"
    assert same and rep.engine_calls == 0


# ------------------------------------------------------------------ leases: shared stores do no duplicate work


@pytest.mark.fast
def test_leases_give_each_request_one_owner(tmp_path):
    a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    keys = [f"k{i}" for i in range(5)]
    assert a.claim(keys[:3], "A") == keys[:3]
    assert b.claim(keys, "B") == keys[3:]  # A's three are taken
    assert a.claim(keys[:3], "A") == keys[:3]  # an owner keeps its own
    a.put_responses([{"key": "k0", "engine": "e", "op": "o", "request": {}, "response": {"x": 1}}])
    assert b.claim(keys, "B") == keys[3:]  # answered: not claimable; k1, k2 still A's
    assert b.claim(keys[1:3], "B", seconds=5) == []
    a.claim(keys[1:3], "A", seconds=-1)  # A's leases run out (as when A was killed elsewhere)
    assert b.claim(keys[1:3], "B") == keys[1:3]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a killed run on this machine: its leases are free at once
    import socket

    assert a.claim(keys[3:], f"{socket.gethostname()}:{dead.pid}:x") == []  # B holds them, alive
    b.release("B")
    assert a.claim(keys[3:], f"{socket.gethostname()}:{dead.pid}:x") == keys[3:]
    assert b.claim(keys[3:], "B") == keys[3:]


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from agents.llm.base import GenerateRequest
    from agents.llm.cache import CachedEngine
    from agents.llm.transformers_engine import TransformersEngine
    from core.store import Store

    db, me, other, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    model = TransformersEngine.embedded()
    engine = CachedEngine(Store(db), {"kind": "transformers", "model": "embedded-test"}, lambda: model)
    me.touch()
    while not other.exists():  # both loaded: start together, so the batches overlap
        time.sleep(0.05)
    reqs = [GenerateRequest(f"My favourite food number {i} is", max_tokens=12, temperature=1.0, seed=i) for i in range(n)]
    texts = [g.text for g in engine.generate(reqs)]
    print(engine.misses, engine.hits, "|".join(texts))
""")


def test_two_processes_sharing_a_store_compute_each_request_once(tmp_path):
    db, n = tmp_path / "shared.db", 8
    Store(db)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(tmp_path / f"{me}.ready"),
                               str(tmp_path / f"{other}.ready"), str(n)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for me, other in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    (ma, ha, ta), (mb, hb, tb) = [o[0].strip().split(" ", 2) for o in outs]
    # Without leases both would compute all n; with them each request is computed once
    assert int(ma) + int(mb) == n and responses(db) == n, (ma, mb)
    assert int(ha) == n - int(ma) and int(hb) == n - int(mb)
    assert ta == tb  # the waiting run got the other's answers


@pytest.mark.fast
def test_the_episode_log_holds_each_long_text_once_and_reads_back_exactly(tmp_path):
    """An episode log repeats prompts, opinions and statements in event after
    event: each long string goes to the texts table once, short ones stay
    inline, and events() gives back the payloads as logged."""
    store = Store(tmp_path / "s.db")
    prompt = "You are a neutral mediator. " * 40  # ~1 KB, in every event
    events = [{"kind": "generate", "agent": "mediator",
               "payload": {"prompt": prompt, "text": f"candidate {i}", "nested": {"opinions": [prompt, "short"]}, "n": i}}
              for i in range(200)]
    store.log_events("r1", 0, events)
    assert [e["payload"] for e in store.events("r1")] == [e["payload"] for e in events]
    assert store.db.execute("select count(*) from texts").fetchone()[0] == 1
    logged = store.db.execute("select sum(length(events)) from event_blocks").fetchone()[0]
    assert logged < 200 * 200  # references, not 200 copies of the prompt (~1 KB each)


@pytest.mark.fast
def test_a_step_log_names_the_requests_it_just_saved_instead_of_storing_their_prompts_again(tmp_path):
    """An utterance's prompt is the prompt of a request the run has just saved:
    the log names that request (its key) and reads the prompt back from it, so
    logging a step stores no text of its own (at full size that was ~50 s of a
    ~4-minute representatives step, the server idle). A prompt the run did not
    save in this process is stored as a text, as before; a named request the
    store does not hold is one StoreError line."""
    from agents.llm.base import GenerateRequest, OptionRequest
    from agents.llm.cache import CachedEngine
    from agents.llm.fake_engine import FakeEngine

    store = Store(tmp_path / "s.db")
    fake = FakeEngine()
    cached = CachedEngine(store, fake.fingerprint(), lambda: fake)
    context = "Participant statement under revision, with every critique quoted.\n\n" * 12
    gens = [GenerateRequest(prompt=context + f"Candidate {i}:", max_tokens=20, temperature=1.0, seed=i) for i in range(40)]
    opts = [OptionRequest(prefix=context, suffix=f"Rank statement {i}. Answer:", options=["A", "B"]) for i in range(40)]
    texts = [g.text for g in cached.generate(gens)]
    probs = [r.probs for r in cached.option_probs(opts)]
    before = store.db.execute("select count(*) from texts").fetchone()[0]
    unsaved = "A prompt no request of this process sent, long enough to be stored as a text of its own. " * 2
    events = [{"kind": "utterance", "agent": "mediator", "payload": {"prompt": g.prompt, "text": t, "seed": g.seed}}
              for g, t in zip(gens, texts)]
    events += [{"kind": "utterance", "agent": "p1", "payload": {"prompt": o.prompt, "probs": list(p)}} for o, p in zip(opts, probs)]
    events.append({"kind": "utterance", "agent": "p2", "payload": {"prompt": unsaved}})
    store.log_events("r1", 0, events)
    assert store.db.execute("select count(*) from texts").fetchone()[0] == before + 1  # only the unsaved prompt
    blocks = b"".join(zlib.decompress(b) for (b,) in store.db.execute("select events from event_blocks"))
    assert blocks.count(b'"$request"') == 80
    assert [e["payload"] for e in store.events("r1")] == [e["payload"] for e in events]
    assert [e["payload"] for e in Store(tmp_path / "s.db", readonly=True).events("r1")] == [e["payload"] for e in events]
    with store.db.conn:
        store.db.execute("delete from responses where op = 'generate'")
    with pytest.raises(StoreError) as err:
        store.events("r1")
    assert "\n" not in str(err.value) and "names request" in str(err.value) and str(tmp_path / "s.db") in str(err.value)


def _utterances(n: int, step: int) -> list[dict]:
    """Events shaped like a consensus run's utterances (keys, options and settings
    repeated in every one, probabilities at full precision)."""
    rng = np.random.default_rng(step)
    options = ["Strongly agree", "Agree", "Somewhat agree", "Neutral", "Somewhat disagree", "Disagree", "Strongly disagree"]
    return [{"kind": "utterance", "agent": f"anthology-mixtral-8x22b-t1.0-m1500-s0:{i}",
             "payload": {"act": "position", "actor": f"anthology-mixtral-8x22b-t1.0-m1500-s0:{i}", "attempt": 0, "group": i // 5,
                         "kind": "option_probs", "mode": "one", "options": options, "outside_mass": float(rng.random() / 10),
                         "participant": i % 5, "phase": "opinions", "prefix_len": 352, "probs": [float(p) for p in rng.dirichlet(np.ones(7))],
                         "reversed": bool(i % 2), "rollout": 2, "round": step, "subset": "OC", "value": float(rng.random() * 7)}}
            for i in range(n)]


@pytest.mark.fast
def test_a_step_log_is_stored_in_compressed_blocks_and_a_relogged_step_replaces_its_events(tmp_path):
    """A consensus run logs millions of utterances whose keys, options and settings
    repeat: stored in blocks they cost a fraction of their JSON (one row each:
    ~540 bytes), read back exactly and in order; logging a step again (a killed
    run resumed) replaces that step's events and nothing else."""
    store = Store(tmp_path / "s.db")
    steps = {s: _utterances(600, s) for s in range(3)}
    for s, events in steps.items():
        store.log_events("r1", s, events)
    as_json = sum(len(dumps(e["payload"])) for events in steps.values() for e in events)
    stored = store.db.execute("select sum(length(events)) from event_blocks").fetchone()[0]
    assert stored < as_json / 3, (stored, as_json)
    read = store.events("r1")
    assert [(e["step"], e["kind"], e["agent"], e["payload"]) for e in read] == [
        (s, e["kind"], e["agent"], e["payload"]) for s, events in steps.items() for e in events]
    assert [e["seq"] for e in read] == list(range(1800))
    again = _utterances(10, 7)
    store.log_events("r1", 1, again)
    assert [e["payload"] for e in store.events("r1", step=1)] == [e["payload"] for e in again]
    assert [e["payload"] for e in store.events("r1", step=2)] == [e["payload"] for e in steps[2]]
    assert store.logged_steps("r1") == [0, 1, 2] and store.events("r2") == []


@pytest.mark.fast
@pytest.mark.parametrize("damage", [b"not zlib at all", zlib.compress(b'{"kind": "utterance"}'), zlib.compress(b"[[1, 2")],
                         ids=["not-zlib", "not-a-list", "cut-json"])
def test_a_damaged_step_log_block_is_one_line_naming_the_file_run_and_step(tmp_path, damage):
    """A block that no longer decodes (a damaged file) stops the read with one
    StoreError line naming the store, run and step, not a zlib or JSON trace."""
    store = Store(tmp_path / "s.db")
    store.log_events("r1", 0, _utterances(3, 0))
    store.log_events("r1", 4, _utterances(300, 4))
    with store.db.conn:
        store.db.execute("update event_blocks set events = ? where step = 4 and seq = 259", [damage])
    with pytest.raises(StoreError) as err:
        store.events("r1")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "s.db") in message and "run r1, step 4, events from 259" in message
    assert [e["seq"] for e in store.events("r1", step=0)] == [0, 1, 2]  # the rest of the log still reads


@pytest.mark.fast
def test_a_store_logged_one_row_per_event_is_read_and_resumed_in_blocks(tmp_path):
    """Stores made before the blocks hold one JSON row per event in ``events``
    (and no ``event_blocks`` table): a replay reads them read-only, and a resumed
    run appends its steps after them."""
    path = tmp_path / "old.db"
    old = _utterances(5, 0)
    with sqlite3.connect(path) as con:
        con.execute("create table events (run_id text, seq integer, step integer, kind text, agent text, payload text, "
                    "primary key (run_id, seq))")
        con.executemany("insert into events values (?, ?, ?, ?, ?, ?)",
                        [("r1", i, 0, e["kind"], e["agent"], dumps(e["payload"])) for i, e in enumerate(old)])
    ro = Store(path, readonly=True)
    assert [e["payload"] for e in ro.events("r1")] == [e["payload"] for e in old] and ro.logged_steps("r1") == [0]
    store = Store(path)
    new = _utterances(4, 1)
    store.log_events("r1", 1, new)
    read = store.events("r1")
    assert [e["payload"] for e in read] == [e["payload"] for e in old + new]
    assert [e["seq"] for e in read] == list(range(9)) and store.logged_steps("r1") == [0, 1]

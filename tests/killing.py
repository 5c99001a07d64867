"""Kill -9 a real subprocess once it shows some progress: rows in the SQLite
store, or a file on disk (shared by the resume tests)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def count(db: Path, sql: str) -> int:
    """A scalar query on the store, 0 while its tables do not exist yet."""
    try:
        with sqlite3.connect(db) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def kill_on(cmd: list[str], cwd: Path, ready, timeout: float = 900) -> bool:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; return whether
    it was still running then (False: it finished or failed first)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.1)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def kill_when(cmd: list[str], cwd: Path, db: Path, sql: str, at_least: int, timeout: float = 900) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``sql`` on ``db`` reaches ``at_least``;
    return the value after the kill."""
    kill_on(cmd, cwd, lambda: count(db, sql) >= at_least, timeout)
    return count(db, sql)

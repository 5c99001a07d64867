"""Kill -9 a real subprocess once the SQLite store shows some progress (shared
by the resume tests)."""
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


def kill_when(cmd: list[str], cwd: Path, db: Path, sql: str, at_least: int, timeout: float = 900) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``sql`` on ``db`` reaches ``at_least``;
    return the value after the kill."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and count(db, sql) < at_least:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return count(db, sql)

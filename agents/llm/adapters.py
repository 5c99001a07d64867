"""The identity of a LoRA adapter, shared by the engine configuration and the
engines: what a cached answer from an adapter depends on."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def adapter_digest(path: str | os.PathLike) -> str:
    """Content hash of a LoRA adapter folder (or its served name when it is not
    a local folder): retraining at the same path must not reuse cached answers."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    h = hashlib.sha256()
    for f in sorted(p.glob("adapter_*")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"{p.name}@{h.hexdigest()[:16]}"

"""The one canonical JSON: what response keys, fingerprints and exports hash."""
from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, so equal objects hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

"""The one seed derivation."""
from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any labels (run seed, persona, round, act...).

    Seeds depend on labels, not on call order, so resuming a run, or swapping one
    participant for a representative, leaves every other random choice unchanged.
    ``seed = int.from_bytes(sha256("/".join(parts))[:4], "little") & 0x7FFFFFFF``.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def consecutive_seeds(base: int, n: int) -> list[int]:
    """``n`` seeds for ``n`` samples of one prompt: ``base + k`` (mod 2^31).
    Consecutive on purpose: a vLLM server draws them all in one request (``n``
    samples with ``seed``; its k-th sample uses ``seed + k``), so the engine
    sends one request where distinct seeds would cost ``n``."""
    return [(base + k) & 0x7FFFFFFF for k in range(n)]

"""How the compact store layout writes one engine answer (``core.store``).

An interview persona costs ~150 stored requests (ten answers, each checked by the
format critic's six questions in both option orders, plus the consistency critic),
and most of them are option distributions of two numbers. Stored as JSON with a
64-character key and its index, each cost ~350 bytes: ten times the persona's own
transcript. The compact layout keeps per answer only

- the key's first 16 bytes (128 bits of the SHA-256 cache key: a collision among
  10^12 stored answers has probability ~1e-15), as the primary key of a table
  without rowid, so there is no second index;
- the request as references into the ``texts`` table: the persona's text (the
  named prefix), and the rest of the request (options, question, sampling
  settings) as one shared text when it is long -- every persona's copy of the same
  check or question points to the same text;
- an option distribution packed as float64 (exact: a float64 round-trips), a
  generation's text as the tail of the text "prompt + answer" (so the next prompt
  of an interview, which extends it, stores only what it adds).

Written by hand: the format is a few fixed fields, and a general serializer
(msgpack, pickle) would add a dependency or lose the readability of the JSON parts.
"""
from __future__ import annotations

import hashlib
import json
import struct

from core.canonical import dumps

KEY_BYTES = 16
OPTION_TAG = 0  # first byte of a packed option distribution; JSON never starts with a zero byte
DEFAULT_METHOD = "logprobs"


def key_blob(key: str) -> bytes:
    """The stored key of a cache key (a SHA-256 hex digest): its first 16 bytes;
    any other string key is hashed first."""
    if len(key) == 64:
        try:
            return bytes.fromhex(key[: 2 * KEY_BYTES])
        except ValueError:
            pass
    return hashlib.sha256(key.encode()).digest()[:KEY_BYTES]


def pack_option(response: dict) -> bytes | None:
    """``{"probs": [...], "outside_mass": x, "method": m}`` as tag, n, n+1 float64s
    and the method name when it is not "logprobs"; None for any other shape (the
    caller stores it as JSON)."""
    if set(response) != {"probs", "outside_mass", "method"}:
        return None
    probs, outside, method = response["probs"], response["outside_mass"], response["method"]
    if (not isinstance(outside, float) or not isinstance(probs, list) or not all(isinstance(p, float) for p in probs)
            or len(probs) > 255 or not isinstance(method, str) or not method):
        return None
    tail = b"" if method == DEFAULT_METHOD else method.encode()
    return struct.pack(f"<BB{len(probs) + 1}d", OPTION_TAG, len(probs), *probs, outside) + tail


def unpack(blob: bytes | str) -> object:
    """A stored response: a packed option distribution or JSON (text or utf-8 bytes)."""
    if isinstance(blob, bytes) and blob[:1] == bytes([OPTION_TAG]):
        n = blob[1]
        values = struct.unpack_from(f"<{n + 1}d", blob, 2)
        end = 2 + 8 * (n + 1)
        return {"method": blob[end:].decode() or DEFAULT_METHOD, "outside_mass": values[n], "probs": list(values[:n])}
    return json.loads(blob)


def encode_json(value: object) -> bytes:
    return dumps(value).encode()

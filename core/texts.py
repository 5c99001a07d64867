"""The store's ``texts`` table: every long text once (``core.store``).

A persona's backstory or transcript is the prefix of hundreds of requests, a
questionnaire context grows by one answer per question, and a generated answer
is quoted again by the next prompt, by the critics' prompts and by the persona's
text. The table keeps each of them once:

- a text that extends a stored one is that text's id plus the tail (the parent
  is the longest stored text ending at a paragraph break: "\\n\\n" ends every turn,
  answer block and backstory), so a growing context costs its growth;
- in the compact layout a tail may quote generated texts: a generated text is
  stored once, marked as quotable, and a later tail that contains it (a
  transcript, a critic's prompt, the persona's text) holds a reference to it
  instead of a copy;
- tails are zlib-compressed when that is smaller (marked by the blob type).

Quoted texts are found through an index of the generated texts this process
stored recently (bounded); a text quoting one stored by an earlier process
keeps its own copy, which costs bytes, never correctness. The index belongs to
the process, and a failed transaction clears it (:meth:`Texts.forget`): store
writes come from one thread (the run's), which this relies on.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import zlib
from collections import OrderedDict, deque
from typing import Callable

from core.canonical import dumps

PARTS_TAG = b"\x00"  # a tail stored as parts (literals and quotes); zlib output never starts with a zero byte
QUOTE_MIN = 96  # shorter generated texts are not worth a reference
QUOTE_KEY = 32  # quotes are looked up by their first characters
QUOTE_BUDGET = 16 << 20  # characters of recent generated texts kept quotable (~16 MB at most)
QUOTED_CACHE = 4096  # quoted texts kept after reading (the questions every persona's transcript quotes)
QUOTES_PER_KEY = 8  # recent texts kept per first characters: bounds the work per position
# Where a quoted text can start: a text's start, a line's, after ": " (Answer: ..., Statement 2: ...)
# or a quotation mark -- not every word, which would cost a lookup per word of every text. A
# place is a match's end; consuming ": " and '"' instead of looking behind at every character
# finds the same places ~3x faster (every logged prompt of a consensus run is scanned).
QUOTE_AT = re.compile(r'(?:^|: |")(?=\S)', re.MULTILINE)


class TextsMissing(LookupError):
    """A text id the table does not hold (a damaged store)."""


class Texts:
    def __init__(self, conn: Callable[[], sqlite3.Connection], *, compact: Callable[[], bool]) -> None:
        self._conn = conn
        self._compact = compact
        self._quotes: dict[str, deque[tuple[str, int, int]]] = {}  # first QUOTE_KEY chars -> (text, id, start), newest last
        self._recent: OrderedDict[int, tuple[str, str, str]] = OrderedDict()  # id -> (key, quoted, text), oldest first
        self._recent_ids: dict[str, int] = {}  # text -> id of the recent ones: a repeated question costs no lookup
        self._quoted: OrderedDict[int, str] = OrderedDict()  # quoted texts read lately (get)
        self._recent_chars = 0

    # ------------------------------------------------------------ writing
    def sha(self, data: bytes) -> str | bytes:
        """The unique key of a text: 16 digest bytes in the compact layout, the hex digest before it."""
        digest = hashlib.sha256(data)
        return digest.digest()[:16] if self._compact() else digest.hexdigest()

    def put(self, text: str, *, quotable: bool = False) -> int:
        """The id of ``text``, stored if new (inside the caller's transaction).
        ``quotable``: a generated text, stored whole and offered to later texts
        as a quote (compact layout)."""
        if quotable and text in self._recent_ids:
            text_id = self._recent_ids[text]
            self._recent.move_to_end(text_id)  # still in use: evicted last
            return text_id
        data = text.encode()
        sha = self.sha(data)
        con = self._conn()
        row = con.execute("select id from texts where sha = ?", [sha]).fetchone()
        if row:
            text_id = row[0]
        else:
            parent, cut = (None, 0) if quotable else self._longest_stored_prefix(data)
            tail = data[cut:]
            value = self._encode_tail(tail.decode(), quoting=not quotable)
            # Another process may have stored the same text since the lookup: keep its row.
            con.execute("insert into texts(sha, parent, tail) values (?, ?, ?) on conflict(sha) do nothing", [sha, parent, value])
            text_id = con.execute("select id from texts where sha = ?", [sha]).fetchone()[0]
        if quotable and self._compact():
            self._remember(text, text_id)
        return text_id

    def _encode_tail(self, tail: str, *, quoting: bool):
        parts = self._quote(tail) if quoting else [tail]
        if len(parts) > 1:
            return PARTS_TAG + zlib.compress(dumps(parts).encode(), 6)
        raw = tail.encode()
        packed = zlib.compress(raw, 6)
        # zlib output is marked by its type (blob); a plain tail is stored as text.
        return packed if len(packed) < len(raw) else tail

    def _longest_stored_prefix(self, data: bytes) -> tuple[int | None, int]:
        """The stored text that is the longest prefix of ``data`` ending at a
        paragraph break, and its length in bytes ((None, 0) if none). Every
        candidate prefix is hashed in one pass (utf-8 of a prefix cut at an
        ASCII "\\n\\n" is the prefix of the utf-8 bytes)."""
        cuts: dict = {}
        h, pos = hashlib.sha256(), 0
        compact = self._compact()
        while (end := data.find(b"\n\n", pos)) >= 0 and end + 2 < len(data):
            h.update(data[pos : end + 2])
            pos = end + 2
            cuts[h.copy().digest()[:16] if compact else h.copy().hexdigest()] = pos
        parent, cut = None, 0
        shas = list(cuts)
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            for pid, psha in self._conn().execute(f"select id, sha from texts where sha in ({','.join('?' * len(chunk))})", chunk):
                if cuts[psha] > cut:
                    parent, cut = pid, cuts[psha]
        return parent, cut

    # ------------------------------------------------------------ quotes
    def forget(self) -> None:
        """Drop the recent quotable texts (their transaction did not commit)."""
        self._quotes.clear()
        self._recent.clear()
        self._recent_ids.clear()
        self._recent_chars = 0
        self._quoted.clear()  # an id whose row was rolled back may be given to another text

    def _remember(self, text: str, text_id: int) -> None:
        quoted = text.strip()  # answers are quoted without the space a completion starts with
        if len(quoted) < QUOTE_MIN:
            return
        if text_id in self._recent:
            self._recent.move_to_end(text_id)  # still in use: evicted last
            return
        start = text.index(quoted)
        key = quoted[:QUOTE_KEY]
        self._quotes.setdefault(key, deque(maxlen=QUOTES_PER_KEY)).append((quoted, text_id, start))
        self._recent[text_id] = (key, quoted, text)
        self._recent_ids[text] = text_id
        self._recent_chars += len(text) + (len(quoted) if quoted is not text else 0)
        while self._recent_chars > QUOTE_BUDGET:
            old_id, (old_key, old, old_text) = self._recent.popitem(last=False)
            self._recent_chars -= len(old_text) + (len(old) if old is not old_text else 0)
            self._recent_ids.pop(old_text, None)
            kept = [q for q in self._quotes.get(old_key, ()) if q[1] != old_id]
            if kept:
                self._quotes[old_key] = deque(kept, maxlen=QUOTES_PER_KEY)
            else:
                self._quotes.pop(old_key, None)

    def _quote(self, tail: str) -> list:
        """``tail`` as literals and quotes ``[id, start, end]`` (a slice of a stored
        generated text), taking at each place a quote can start (``QUOTE_AT``)
        the longest recent generated text that starts there."""
        if not self._quotes or len(tail) < QUOTE_MIN:
            return [tail]
        parts: list = []
        cursor = 0
        for place in QUOTE_AT.finditer(tail):
            at = place.end()
            if at < cursor:
                continue
            found = self._quotes.get(tail[at : at + QUOTE_KEY])
            best = max((q for q in found or () if tail.startswith(q[0], at)), key=lambda q: len(q[0]), default=None)
            if best is None:
                continue
            quoted, text_id, start = best
            if at > cursor:
                parts.append(tail[cursor:at])
            parts.append([text_id, start, start + len(quoted)])
            cursor = at + len(quoted)
        if cursor < len(tail):
            parts.append(tail[cursor:])
        return parts

    # ------------------------------------------------------------ reading
    def get(self, text_id: int) -> str:
        """A stored text, its chain of tails joined and its quotes filled in."""
        rows = self._conn().execute(
            "with recursive chain(id, parent, tail, depth) as (select id, parent, tail, 0 from texts where id = ? "
            "union all select t.id, t.parent, t.tail, c.depth + 1 from texts t join chain c on t.id = c.parent) "
            "select tail from chain order by depth desc",
            [text_id],
        ).fetchall()
        if not rows:
            raise TextsMissing(text_id)
        tails = [self._parts(t) for (t,) in rows]
        self._fetch_quoted({p[0] for parts in tails for p in parts if not isinstance(p, str)})
        return "".join(p if isinstance(p, str) else self._quoted[p[0]][p[1] : p[2]] for parts in tails for p in parts)

    @staticmethod
    def _parts(tail) -> list:
        if isinstance(tail, str):
            return [tail]
        if tail[:1] == PARTS_TAG:
            return json.loads(zlib.decompress(tail[1:]))
        return [zlib.decompress(tail).decode()]

    def _fetch_quoted(self, ids: set[int]) -> None:
        """Read the quoted texts ``ids`` into a small cache, in one query. A quoted
        text is stored whole (no parent, no quotes) unless it was stored before as
        another text's extension; a committed text never changes, so the cache
        holds until a transaction fails (:meth:`forget`)."""
        missing = [i for i in ids if i not in self._quoted]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            rows = self._conn().execute(f"select id, parent, tail from texts where id in ({','.join('?' * len(chunk))})", chunk)
            for text_id, parent, tail in rows.fetchall():
                whole = parent is None and not (isinstance(tail, bytes) and tail[:1] == PARTS_TAG)
                self._quoted[text_id] = "".join(self._parts(tail)) if whole else self.get(text_id)
        for i in ids:
            if i not in self._quoted:
                raise TextsMissing(i)
            self._quoted.move_to_end(i)
        while len(self._quoted) > QUOTED_CACHE:
            self._quoted.popitem(last=False)

"""In-process engine on transformers (float32 by default on CPU): the embedded default.

Why a hand-written forward/decode loop instead of ``model.generate`` and plain
batched forwards: a persona's conditioning text is a shared prefix of every
question it answers, and in a survey asked "in series" each question's prefix
extends the previous one. We keep the key/value tensors of evaluated prefixes in
an LRU (bounded by tokens) and evaluate only the new tokens, batching rows whose
cached prefixes have different lengths by left-padding the cached keys/values
(masked) and right-padding the new tokens. Questions continuing the same prefix
are packed into one row of independent segments (a block attention mask), so a
persona's prefix is attended once per batch, not once per question. ``generate`` cannot take per-row
caches of different lengths nor per-request seeds, so decoding is written here
too: each row samples with its own ``torch.Generator`` so a request's text
depends on its seed, not on what else was in the batch.

None of this reuse changes a result on CPU in float32: every sum runs in an
order fixed by the request alone (:mod:`packed_attention`), so a request's
probabilities, scores and seeded texts are bit-for-bit the same alone, in any
batch, with or without a cached prefix; a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import packed_attention
from .base import (
    Engine,
    EngineError,
    GenerateRequest,
    Generation,
    LoglikRequest,
    OptionRequest,
    OptionResult,
    letter_variants,
    renormalise,
)


@dataclass
class _Prefix:
    ids: tuple[int, ...]
    kv: list  # per layer (key [heads, n, d], value [heads, n, d])


@dataclass
class _Row:
    base: _Prefix | None  # cached prefix to continue from (None = from scratch)
    base_len: int  # how many of base's tokens to use
    tail: list[int]  # new tokens to evaluate
    segments: tuple[int, ...] = ()  # lengths of independent packed tails; () = one

    @property
    def segment_lengths(self) -> tuple[int, ...]:
        return self.segments or (len(self.tail),)


def _common_prefix_len(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TransformersEngine(Engine):
    kind = "transformers"
    MIN_SHARED_TOKENS = 4

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_tokens: int = 8192,
        max_batch: int = 32,
        pack_tokens: int = 1024,
        cache_tokens: int = 60_000,
        threads: int | None = None,
        name: str | None = None,
        lora: str | None = None,
        share_prefixes: bool = True,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load weights bar clutters run logs
        path = Path(model_path)
        if not path.exists():
            raise EngineError(f"engine transformers: model path '{model_path}' does not exist")
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.device = device
        load_dir = str(path.parent if path.is_file() else path)
        gguf = gguf_file or (path.name if path.is_file() else None)
        try:
            self.tok = AutoTokenizer.from_pretrained(load_dir, gguf_file=gguf)
            self.hf = AutoModelForCausalLM.from_pretrained(load_dir, gguf_file=gguf, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"engine transformers: cannot load model '{model_path}': {first}") from None
        if lora:
            if not Path(lora).exists():
                raise EngineError(f"engine transformers: LoRA adapter '{lora}' does not exist")
            from peft import PeftModel

            # Merged into the weights: same outputs as the adapter, no per-layer
            # LoRA overhead, and the packed-attention path sees a plain model.
            self.hf = PeftModel.from_pretrained(self.hf, lora).merge_and_unload()
        self.hf.to(device).eval()
        self.model = name or self.hf.config.name_or_path or str(model_path)
        self.model_path = str(model_path)
        self.lora = lora
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.pack_tokens = pack_tokens
        self.share_prefixes = share_prefixes
        # The decoder stack and output projection separately, so logits are
        # computed only where needed (see _logprobs); LoRA layers live inside.
        self._decoder = self.hf.get_decoder()
        self.hf.set_attn_implementation(packed_attention.NAME)
        self._head = self.hf.get_output_embeddings()
        if self._packed_attention():
            # Batch-invariant products (see packed_attention): a request's
            # result does not depend on what else is in the batch. The row count
            # from which products are invariant is checked on this machine.
            head_dim = self.hf.config.hidden_size // self.hf.config.num_attention_heads
            linear = [(m.in_features, m.out_features) for m in self.hf.modules() if isinstance(m, torch.nn.Linear)]
            shapes = linear + [(head_dim, packed_attention.BLOCK), (packed_attention.BLOCK, head_dim + 1)]  # attention's products
            policy = packed_attention.invariant_rows(shapes, may_serialise=linear)
            if policy is None:
                warnings.warn(f"engine transformers: no row count in {packed_attention.ROW_CANDIDATES} makes this CPU's matrix "
                              "products batch-invariant; a resumed run may differ from an uninterrupted one in the last digits",
                              stacklevel=2)
                policy = packed_attention.RowPolicy(rows=packed_attention.ROW_CANDIDATES[-1], one_thread=frozenset())
            packed_attention.MIN_ROWS = policy.rows
            self.row_policy = policy
            for module in self.hf.modules():
                if isinstance(module, torch.nn.Linear):
                    packed_attention.pad_rows_linear(module)
                    if (module.in_features, module.out_features) in policy.one_thread:
                        packed_attention.on_one_thread(module)
                for name in ("act_fn", "rotary_emb"):
                    if isinstance(getattr(module, name, None), torch.nn.Module):
                        packed_attention.on_one_thread(getattr(module, name))
        heads = self.hf.config.num_attention_heads
        self._rep = heads // (getattr(self.hf.config, "num_key_value_heads", None) or heads)  # query heads per key head
        self.cache_tokens = cache_tokens
        self._prefixes: OrderedDict[str, _Prefix] = OrderedDict()
        self._cached_token_total = 0
        self._tok_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._variant_ids: dict[str, list[int]] = {}
        self.config = self.hf.config
        self.eos_ids = {i for i in [self.tok.eos_token_id, self.config.eos_token_id] if isinstance(i, int)}

    @classmethod
    def embedded(cls, **kwargs) -> "TransformersEngine":
        from .embedded import EMBEDDED_NAME, hf_folder

        return cls(hf_folder(), name=EMBEDDED_NAME, **kwargs)

    def fingerprint(self) -> dict:
        fp = {"kind": self.kind, "model": self.model, "dtype": str(self.dtype).replace("torch.", "")}
        if self.lora:
            from .adapters import adapter_digest

            fp["lora"] = adapter_digest(self.lora)
        return fp

    # ---------------------------------------------------------------- tokens
    def _encode(self, text: str) -> list[int]:
        ids = self._tok_cache.get(text)
        if ids is None:
            ids = self.tok(text, add_special_tokens=False).input_ids
            self._tok_cache[text] = ids
            if len(self._tok_cache) > 4096:
                self._tok_cache.popitem(last=False)
        else:
            self._tok_cache.move_to_end(text)
        return ids

    def _letter_ids(self, label: str) -> list[int]:
        if label not in self._variant_ids:
            ids = set()
            for v in letter_variants(label):
                enc = self.tok(v, add_special_tokens=False).input_ids
                if len(enc) == 1:
                    ids.add(enc[0])
            if not ids:
                raise EngineError(f"engine transformers: option label '{label}' is not a single token")
            self._variant_ids[label] = sorted(ids)
        return self._variant_ids[label]

    # ---------------------------------------------------------------- prefix cache
    def _remember(self, text: str, prefix: _Prefix) -> None:
        if text in self._prefixes:
            self._prefixes.move_to_end(text)
            return
        self._prefixes[text] = prefix
        self._cached_token_total += len(prefix.ids)
        while self._cached_token_total > self.cache_tokens and len(self._prefixes) > 1:
            _, old = self._prefixes.popitem(last=False)
            self._cached_token_total -= len(old.ids)

    def _best_base(self, text: str, ids: list[int]) -> tuple[_Prefix | None, int]:
        """Longest cached prefix whose tokens start ``ids``."""
        hit = self._prefixes.get(text)
        if hit is not None:
            self._prefixes.move_to_end(text)
            return hit, _common_prefix_len(hit.ids, ids)
        best, best_n = None, 0
        for cached_text, entry in self._prefixes.items():
            if len(entry.ids) > best_n and text.startswith(cached_text):
                n = _common_prefix_len(entry.ids, ids)
                if n > best_n:
                    best, best_n = entry, n
        return best, best_n

    def _ensure_prefixes(self, texts: list[str]) -> None:
        """Evaluate (once) every prefix text not yet cached, batched."""
        todo: dict[str, _Row] = {}
        for text in texts:
            if not text or text in self._prefixes or text in todo:
                continue
            ids = self._encode(text)
            base, n = self._best_base(text, ids)
            if n >= len(ids):  # identical tokens under another text
                self._remember(text, _Prefix(tuple(ids), [(k[:, :n], v[:, :n]) for k, v in base.kv]))
                continue
            todo[text] = _Row(base, n, list(ids[n:]))
        if not todo:
            return
        names = list(todo)
        results = self._run(self._share_common([todo[t] for t in names]), want="kv")
        for text, (_, kv) in zip(names, results):
            self._remember(text, _Prefix(tuple(self._encode(text)), kv))

    def _share_common(self, rows: list[_Row], keep: list[int] | None = None) -> list[_Row]:
        """Evaluate once the tokens that all rows continuing the same base share.

        Declared prefixes stop at the persona's text, but its questions go on
        with the same words ("Please answer the following question ...",
        the chat template's turn markers), and backstory prompts share their
        opening. As in vLLM's automatic prefix caching, the longest common
        token run of a group's tails is evaluated once, in a batched pass, and
        becomes the group's cached base; row i keeps its last ``keep[i]``
        tokens (default 1) in its tail.
        """
        if not self.share_prefixes:
            return rows
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((id(r.base), r.base_len), []).append(i)
        todo: list[tuple[list[int], int]] = []
        for members in groups.values():
            if len(members) < 2:
                continue
            first = rows[members[0]].tail
            n = min(len(rows[i].tail) - (keep[i] if keep else 1) for i in members)
            for i in members[1:]:
                n = min(n, _common_prefix_len(first, rows[i].tail))
            # A few tokens are not worth an extra pass and a copy of the base's keys.
            if n >= self.MIN_SHARED_TOKENS:
                todo.append((members, n))
        if not todo:
            return rows
        heads = [_Row(rows[m[0]].base, rows[m[0]].base_len, rows[m[0]].tail[:n]) for m, n in todo]
        out = list(rows)
        for (members, n), head, (_, kv) in zip(todo, heads, self._run(heads, want="kv")):
            ids = (head.base.ids[: head.base_len] if head.base is not None else ()) + tuple(head.tail)
            shared = _Prefix(tuple(ids), kv)
            for i in members:
                out[i] = _Row(shared, len(ids), rows[i].tail[n:])
        return out

    # ---------------------------------------------------------------- forward
    def _batches(self, rows: list[_Row]):
        """Yield index lists: sorted by length so padding stays small."""
        order = sorted(range(len(rows)), key=lambda i: (rows[i].base_len + len(rows[i].tail)))
        batch, longest = [], 0
        for i in order:
            length = rows[i].base_len + len(rows[i].tail)
            if batch and (max(longest, length) * (len(batch) + 1) > self.batch_tokens or len(batch) >= self.max_batch):
                yield batch
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, length)
        if batch:
            yield batch

    def _pack(self, rows: list[_Row]) -> tuple[list[_Row], list[tuple[int, int]]]:
        """Pack rows continuing the same cached prefix into one row of segments.

        Ten questions to one persona become one row [prefix | q1 | q2 | ... ]
        whose segments see the prefix and themselves only (a block mask), so
        the prefix keys/values are stacked into the batch once per persona,
        not once per question. Packing never changes a result (see
        :mod:`packed_attention`).
        Returns the packed rows and, per input row, (packed row, segment).
        """
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            key = (id(r.base), r.base_len) if r.base is not None else ("alone", i)
            groups.setdefault(key, []).append(i)
        packed: list[_Row] = []
        where: list[tuple[int, int]] = [(0, 0)] * len(rows)
        for members in groups.values():
            current: _Row | None = None
            for i in members:
                r = rows[i]
                if current is None or len(current.tail) + len(r.tail) > self.pack_tokens:
                    current = _Row(r.base, r.base_len, [], ())
                    packed.append(current)
                current.tail.extend(r.tail)
                current.segments = current.segments + (len(r.tail),)
                where[i] = (len(packed) - 1, len(current.segments) - 1)
        return packed, where

    def _forward(self, rows: list[_Row]):
        """One forward over rows = [left-padded cached prefix | right-padded tail].

        A tail may hold several segments (see :meth:`_pack`); each attends to
        the row's cached prefix and causally to itself, with positions counted
        from the prefix's end. Returns (hidden states [B, S, H] after the final
        norm, cache, 2-D key mask [B, N + S], N).
        """
        torch = self.torch
        from transformers import DynamicCache

        B = len(rows)
        N = max(r.base_len for r in rows)
        S = max(len(r.tail) for r in rows)
        pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        input_ids = torch.full((B, S), pad_id, dtype=torch.long)
        key_mask = torch.zeros((B, N + S), dtype=torch.long)
        positions = torch.zeros((B, S), dtype=torch.long)
        segment = torch.full((B, S), -1, dtype=torch.long)  # -1: padding
        for b, r in enumerate(rows):
            input_ids[b, : len(r.tail)] = torch.tensor(r.tail)
            key_mask[b, N - r.base_len : N] = 1
            key_mask[b, N : N + len(r.tail)] = 1
            positions[b] = r.base_len + torch.arange(S)  # padding continues the count
            start = 0
            for k, length in enumerate(r.segment_lengths):
                positions[b, start : start + length] = r.base_len + torch.arange(length)
                segment[b, start : start + length] = k
                start += length
        packed = self._packed_attention()
        if packed:  # the packed layout carries the masking; a 4-D mask is never read
            mask4d = torch.ones((1, 1, 1, 1), dtype=torch.bool).expand(B, 1, S, N + S)
        else:
            q = torch.arange(S)
            own = (segment[:, :, None] == segment[:, None, :]) & (q[:, None] >= q[None, :])
            own |= torch.eye(S, dtype=torch.bool)  # padding queries see themselves (no empty softmax)
            to_prefix = key_mask[:, None, :N].bool().expand(B, S, N)
            mask4d = torch.cat([to_prefix, own], 2)[:, None]  # [B, 1, S, N + S], True = attend
        if N > 0:
            layers = []
            ref = next(r.base for r in rows if r.base is not None)
            for layer in range(len(ref.kv)):
                empty = ref.kv[layer][0].new_zeros((ref.kv[layer][0].shape[0], 0, ref.kv[layer][0].shape[2]))
                ks, vs = [], []
                for r in rows:
                    k, v = (r.base.kv[layer][0][:, : r.base_len], r.base.kv[layer][1][:, : r.base_len]) if r.base is not None and r.base_len else (empty, empty)
                    pad = N - k.shape[1]
                    if pad:
                        z = k.new_zeros((k.shape[0], pad, k.shape[2]))
                        k, v = torch.cat([z, k], 1), torch.cat([z, v], 1)
                    ks.append(k)
                    vs.append(v)
                layers.append((torch.stack(ks), torch.stack(vs)))
            cache = DynamicCache(ddp_cache_data=layers, config=self.config)
        else:
            cache = DynamicCache(config=self.config)
        layout = self._layout(rows, N, S) if packed else None
        with torch.inference_mode():
            out = self._decoder(
                input_ids=input_ids.to(self.device),
                attention_mask=mask4d.to(self.device),
                position_ids=positions.to(self.device),
                past_key_values=cache,
                use_cache=True,
                packed_layout=layout,
            )
        self.stats.prompt_tokens += sum(len(r.tail) for r in rows)
        self.stats.cached_prompt_tokens += sum(r.base_len * len(r.segment_lengths) for r in rows)
        return out.last_hidden_state, out.past_key_values, key_mask, N

    def _packed_attention(self) -> bool:
        """Whether forwards take :mod:`packed_attention` (float32 on CPU:
        batch-invariant) or SDPA."""
        return self.device == "cpu" and self.dtype == self.torch.float32

    def _layout(self, rows: list[_Row], N: int, S: int) -> packed_attention.PackedLayout:
        """Each segment's queries and its keys in position order: the row's
        cached prefix (left-padded to N), then the segment's own tokens."""
        torch = self.torch
        K = N + S
        queries, keys = [], []
        for b, r in enumerate(rows):
            prefix = b * K + N - r.base_len + torch.arange(r.base_len)
            start = 0
            for length in r.segment_lengths:
                own = torch.arange(start, start + length)
                queries.append(b * S + own)
                keys.append(torch.cat([prefix, b * K + N + own]))
                start += length
        return packed_attention.PackedLayout.build(queries, keys, len(rows) * K, self._rep, self.dtype)

    def _logprobs(self, hidden):
        """Log-softmax over the vocabulary for the given hidden states only.

        The output projection is ~20% of a 135M model's work per token; prompts
        need it at one position (options) or at the continuation (scores), so
        it is applied there instead of at every prompt token.
        """
        torch = self.torch
        with torch.inference_mode():
            logits = self._head(hidden).float()
            # Model-specific output transforms that sit after lm_head.
            if getattr(self.config, "final_logit_softcapping", None):
                cap = self.config.final_logit_softcapping
                logits = torch.tanh(logits / cap) * cap
            if getattr(self.config, "logit_scale", None):
                logits = logits * self.config.logit_scale
            if getattr(self.config, "logits_scaling", None):
                logits = logits / self.config.logits_scaling
            return torch.log_softmax(logits, -1)

    def _run(self, rows: list[_Row], want: str):
        """Evaluate rows in token-bounded batches.

        want="last": log-softmax at each row's last tail token; "kv": also the
        row's new prefix key/values; "all": log-probs at every tail position.
        Rows continuing the same cached prefix are packed (except for "kv").
        """
        torch = self.torch
        packed, where = (self._pack(rows) if want != "kv" else (rows, [(i, 0) for i in range(len(rows))]))
        per_packed: list = [None] * len(packed)
        for idx in self._batches(packed):
            batch = [packed[i] for i in idx]
            hidden, cache, _, N = self._forward(batch)
            for j, i in enumerate(idx):
                r = batch[j]
                ends = np.cumsum(r.segment_lengths)
                starts = ends - np.asarray(r.segment_lengths)
                if want == "all":
                    per_packed[i] = [self._logprobs(hidden[j, a:e]) for a, e in zip(starts, ends)]
                    continue
                last = self._logprobs(hidden[j, torch.as_tensor(ends - 1)])
                kv = None
                if want == "kv":
                    t = len(r.tail)
                    kv = [
                        (layer.keys[j, :, N - r.base_len : N + t].clone(), layer.values[j, :, N - r.base_len : N + t].clone())
                        for layer in cache.layers
                    ]
                per_packed[i] = [(last[k], kv) for k in range(len(ends))]
        return [per_packed[p][k] for p, k in where]

    def _rows_for(self, prefixes: list[str], fulls: list[str]) -> list[_Row]:
        self._ensure_prefixes(prefixes)
        rows = []
        for prefix, full in zip(prefixes, fulls):
            ids = self._encode(full)
            base, n = (self._best_base(prefix, ids) if prefix else (None, 0))
            n = min(n, len(ids) - 1)  # at least one token must be evaluated
            rows.append(_Row(base if n > 0 else None, max(n, 0), list(ids[max(n, 0) :])))
        return self._share_common(rows)

    # ---------------------------------------------------------------- operations
    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        if not requests:
            return []
        t0 = time.perf_counter()
        self.stats.record("option_probs", len(requests))
        rows = self._rows_for([r.prefix for r in requests], [r.prompt for r in requests])
        outs = self._run(rows, want="last")
        results = []
        for req, (logp, _) in zip(requests, outs):
            p = logp.exp()
            mass = np.array([float(p[self._letter_ids(lbl)].sum()) for lbl in req.options])
            probs, outside = renormalise(mass)
            results.append(OptionResult(probs=probs, outside_mass=outside, method="logprobs"))
        self.stats.seconds += time.perf_counter() - t0
        return results

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        if not requests:
            return []
        self.stats.record("loglikelihood", len(requests))
        self._ensure_prefixes([r.context for r in requests])
        rows, targets = [], []
        for r in requests:
            ctx = self._encode(r.context)
            cont = self.tok(r.continuation, add_special_tokens=False).input_ids
            if not cont:
                raise EngineError("engine transformers: empty continuation to score")
            base, n = self._best_base(r.context, ctx) if r.context else (None, 0)
            n = min(n, len(ctx))
            # Score the continuation tokens: the row evaluates ctx[n:] + cont and we
            # read the log-prob of each cont token from the position before it.
            tail = list(ctx[n:]) + list(cont)
            if n == len(ctx) and n > 0:  # need the logits of ctx's last token
                n -= 1
                tail = [ctx[-1]] + list(cont)
            rows.append(_Row(base if n > 0 else None, n, tail))
            targets.append(cont)
        # Each row keeps its continuation and the token before it (read below).
        rows = self._share_common(rows, keep=[len(c) + 1 for c in targets])
        outs = self._run(rows, want="all")
        scores = []
        for row, cont, logp in zip(rows, targets, outs):
            start = len(row.tail) - len(cont)
            if start == 0:
                raise EngineError("engine transformers: log-likelihood needs a non-empty context")
            idx = self.torch.arange(start - 1, len(row.tail) - 1)
            scores.append(float(logp[idx, self.torch.tensor(cont)].sum()))
        return scores

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        if not requests:
            return []
        t0 = time.perf_counter()
        self.stats.record("generate", len(requests))
        prefixes = [r.prompt[: r.prefix_len] if r.prefix_len else "" for r in requests]
        rows = self._rows_for(prefixes, [r.prompt for r in requests])
        results: list[Generation | None] = [None] * len(requests)
        for idx in self._batches(rows):
            for i, gen in zip(idx, self._decode([rows[i] for i in idx], [requests[i] for i in idx])):
                results[i] = gen
        self.stats.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _decode(self, rows: list[_Row], reqs: list[GenerateRequest]) -> list[Generation]:
        torch = self.torch
        hidden, cache, mask, N = self._forward(rows)
        B = len(rows)
        last = self._logprobs(torch.stack([hidden[b, len(r.tail) - 1] for b, r in enumerate(rows)]))
        # Right-padded tails leave pad slots between a row's prompt and its first
        # new token; they stay masked, positions continue from the real length.
        next_pos = torch.tensor([r.base_len + len(r.tail) for r in rows])
        gens = [torch.Generator().manual_seed(int(q.seed)) for q in reqs]
        out_ids: list[list[int]] = [[] for _ in range(B)]
        texts = [""] * B
        done = [False] * B
        finish = ["length"] * B
        max_new = max(q.max_tokens for q in reqs)
        step_mask = mask
        for step in range(max_new):
            nxt = []
            for b, q in enumerate(reqs):
                if done[b]:
                    nxt.append(self.tok.pad_token_id or 0)
                    continue
                if q.temperature <= 0:
                    tok_id = int(last[b].argmax())
                else:
                    probs = torch.softmax(last[b] / q.temperature, -1)
                    tok_id = int(torch.multinomial(probs, 1, generator=gens[b]))
                nxt.append(tok_id)
                if tok_id in self.eos_ids:
                    done[b], finish[b] = True, "stop"
                    continue
                out_ids[b].append(tok_id)
                texts[b] = self.tok.decode(out_ids[b], skip_special_tokens=True)
                for s in q.stop:
                    cut = texts[b].find(s)
                    if s and cut >= 0:
                        texts[b] = texts[b][:cut]
                        done[b], finish[b] = True, "stop"
                        break
                if not done[b] and len(out_ids[b]) >= q.max_tokens:
                    done[b] = True
            if all(done):
                break
            # Finished rows feed a masked pad token; their output is already final.
            column = torch.tensor([[0 if d else 1] for d in done], dtype=torch.long)
            step_mask = torch.cat([step_mask, column], 1)
            layout = None
            if self._packed_attention():  # each row's valid cache slots, in position order
                K = step_mask.shape[1]
                keys = [b * K + step_mask[b].nonzero().flatten() for b in range(B)]
                layout = packed_attention.PackedLayout.build([torch.tensor([b]) for b in range(B)], keys, B * K, self._rep, self.dtype)
            with torch.inference_mode():
                out = self.hf(
                    input_ids=torch.tensor(nxt).view(B, 1),
                    attention_mask=step_mask,
                    position_ids=next_pos.view(B, 1),
                    past_key_values=cache,
                    use_cache=True,
                    packed_layout=layout,
                )
            cache = out.past_key_values
            last = out.logits[:, -1].float()
            next_pos = next_pos + 1
        self.stats.generated_tokens += sum(len(o) for o in out_ids)
        return [Generation(text=t, finish_reason=f, n_tokens=len(o)) for t, f, o in zip(texts, finish, out_ids)]

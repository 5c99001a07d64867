"""Batch-invariant kernels for the in-process engine on CPU (float32).

A request's result must be bit-for-bit the same alone, in any batch, in any
order, with or without a cached prefix: a run killed and resumed recomputes
its remaining requests in other batches and must still write the same report.
Float addition is not associative, so every reduction must run in an order
that depends on the request only (the idea of vLLM's batch-invariant mode:
fixed reduction orders, no split depending on the batch). Library kernels do
not promise that: torch's CPU flash attention picks its key-block size from
the padded key length, and MKL's matrix products take other code paths for
few rows. Measured on an AMD EPYC (MKL, AVX2, 2 threads): a row of ``X @ W`` is
the same for every row count >= 12 (and differs for 1-11), whatever the other
rows, so every product here sees at least ``MIN_ROWS`` rows. That threshold is
the maths library's choice and differs between CPUs, so the engine checks it on
the model's own shapes when it starts (:func:`invariant_rows`) rather than
trusting the number measured here. Elementwise
``exp``/``cos``/``silu`` split a tensor across threads, and the last <16
elements of each thread's share take the scalar libm path, which rounds
differently from the vector one: those run on one thread, on tensors whose
rows are multiples of 16 long, so no element ever takes the scalar path.

Attention, per query group (a packed question segment, or one decoding row):

* the group's keys are gathered in absolute position order (cached prefix,
  then its own tokens), zero-padded to a multiple of ``BLOCK``, so key j sits
  at index j whatever the batch;
* scores are one dot product over the head dimension per (query, key); the
  maximum is exact in any order;
* the weighted sum over keys is a product per block of ``BLOCK`` keys (fixed
  K; the softmax denominator rides along as a column of ones), and the blocks
  are added in position order; blocks past a query's end add exact zeros.

Each query thus costs one pass over its whole key range (no causal skipping),
and a group's prefix keys are copied per group; measured by
benchmarks/bench_engine.py.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "personae_packed"
MIN_ROWS = 16  # rows every matrix product sees; set per machine by invariant_rows() at engine start
ROW_CANDIDATES = (16, 32, 64, 128)
PROBE_COLUMNS = 4096  # output columns probed: columns only split work between threads, rows pick the path
BLOCK = 64  # keys per partial sum
CHUNK_ELEMENTS = 1 << 24  # score elements per pass, bounding memory


@dataclass
class PackedLayout:
    """Which queries and keys each group uses (built once per forward).

    q_index [G, L]: flat query rows (row * S + position), padded with the
    group's first query; q_valid [G, L]; k_index [G, T]: flat key rows
    (row * K + slot) in absolute position order, padded with the zero row
    (index B * K); bias [G, 1, 1, L, T]: 0 where query i (absolute position
    first_pos + i) may see key j (j <= first_pos + i), -inf elsewhere.
    """

    q_index: torch.Tensor
    q_valid: torch.Tensor
    k_index: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def build(cls, queries: list[torch.Tensor], keys: list[torch.Tensor], n_key_rows: int, rep: int, dtype) -> "PackedLayout":
        """queries[g]: flat query rows of group g, consecutive positions
        ending the group's sequence; keys[g]: its flat key rows, position 0
        first (the queries' own keys last)."""
        G = len(queries)
        # Enough query rows that the score products see >= MIN_ROWS rows.
        L = max(max(len(q) for q in queries), -(-MIN_ROWS // rep))
        T = -(-max(len(k) for k in keys) // BLOCK) * BLOCK
        q_index = torch.empty((G, L), dtype=torch.long)
        q_valid = torch.zeros((G, L), dtype=torch.bool)
        k_index = torch.full((G, T), n_key_rows, dtype=torch.long)
        first_pos = torch.empty(G, dtype=torch.long)
        for g, (q, k) in enumerate(zip(queries, keys)):
            q_index[g] = q[0]
            q_index[g, : len(q)] = q
            q_valid[g, : len(q)] = True
            k_index[g, : len(k)] = k
            first_pos[g] = len(k) - len(q)
        visible = torch.arange(T)[None, None, :] <= (first_pos[:, None] + torch.arange(L)[None, :])[:, :, None]
        bias = torch.zeros((G, L, T), dtype=dtype).masked_fill_(~visible, float("-inf"))
        return cls(q_index, q_valid, k_index, bias[:, None, None])


def _attend(q, k, v, bias, scaling):
    """q [G, KVH, rep*L, D], k/v [G, KVH, T, D], bias [G, 1, 1, L, T] -> [G, KVH, rep*L, D]."""
    G, KVH, RL, D = q.shape
    T = k.shape[2]
    L = bias.shape[3]
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scaling)
    scores = scores.view(G, KVH, RL // L, L, T).add_(bias).view(G, KVH, RL, T)
    scores.sub_(scores.amax(-1, keepdim=True))
    with _one_thread():
        p = scores.exp_()
    nb = T // BLOCK
    p = p.view(G, KVH, RL, nb, BLOCK).transpose(2, 3).contiguous()
    v1 = torch.cat([v, v.new_ones((G, KVH, T, 1))], -1).view(G, KVH, nb, BLOCK, D + 1)
    part = torch.matmul(p, v1)  # [G, KVH, nb, RL, D + 1]
    acc = part[:, :, 0]
    for b in range(1, nb):  # position order, whatever the batch
        acc = acc + part[:, :, b]
    return acc[..., :D] / acc[..., D:]


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packed_layout: PackedLayout | None = None, **kwargs):
    # float32 on CPU only: that is where the invariance is measured; everything
    # else takes plain SDPA.
    if packed_layout is None or query.device.type != "cpu" or query.dtype != torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    lay = packed_layout
    B, H, S, D = query.shape
    KVH, K = key.shape[1], key.shape[2]
    rep = H // KVH
    scaling = D**-0.5 if scaling is None else scaling
    flat_q = query.transpose(1, 2).reshape(B * S, H, D)
    zero = key.new_zeros((1, KVH, D))
    flat_k = torch.cat([key.transpose(1, 2).reshape(B * K, KVH, D), zero])
    flat_v = torch.cat([value.transpose(1, 2).reshape(B * K, KVH, D), zero])
    G, L = lay.q_index.shape
    T = lay.k_index.shape[1]
    out = query.new_zeros((B * S, H, D))
    step = max(1, CHUNK_ELEMENTS // (H * L * T))
    for a in range(0, G, step):  # groups are independent: chunking changes nothing
        e = min(G, a + step)
        n = e - a
        q = flat_q[lay.q_index[a:e]].permute(0, 2, 1, 3).reshape(n, KVH, rep * L, D)
        k = flat_k[lay.k_index[a:e]].transpose(1, 2).contiguous()
        v = flat_v[lay.k_index[a:e]].transpose(1, 2).contiguous()
        o = _attend(q, k, v, lay.bias[a:e], scaling).reshape(n, H, L, D).transpose(1, 2)
        valid = lay.q_valid[a:e]
        out[lay.q_index[a:e][valid]] = o[valid]
    return out.view(B, S, H, D), None


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def on_one_thread(module: torch.nn.Module) -> None:
    """Run ``module`` (an activation, the rotary embedding) on one thread."""
    inner = module.forward

    def forward(*args, **kwargs):
        with _one_thread():
            return inner(*args, **kwargs)

    module.forward = forward


def _rows_invariant(k: int, n: int, m: int, gen: torch.Generator) -> bool:
    """Whether every row of ``X @ W.T`` (``W`` n x k) has the same bits in any
    product of >= ``m`` rows, at any position among them."""
    w = torch.randn(n, k, generator=gen)
    x = torch.randn(4 * m, k, generator=gen)
    ref = torch.nn.functional.linear(x, w)
    for rows in sorted({m, m + 1, m + 3, m + 7, 2 * m - 1, 2 * m + 5, 3 * m + 1}):
        for start in (0, 1, m - 1):
            if start + rows <= 4 * m and not torch.equal(torch.nn.functional.linear(x[start : start + rows], w), ref[start : start + rows]):
                return False
    return True


@dataclass(frozen=True)
class RowPolicy:
    """How products are made batch-invariant on this machine: every product
    gets at least ``rows`` rows; the ``(in, out)`` shapes in ``one_thread``
    also run on one thread."""

    rows: int
    one_thread: frozenset


@functools.lru_cache(maxsize=None)  # once per process and model shape set
def _invariant_rows(shapes: tuple[tuple[int, int], ...], may_serialise: tuple[tuple[int, int], ...], threads: int) -> RowPolicy | None:
    gen = torch.Generator().manual_seed(0)
    for m in ROW_CANDIDATES:
        serial = []
        for k, n in shapes:
            if _rows_invariant(k, min(n, PROBE_COLUMNS), m, gen):
                continue
            # Some libraries split a long reduction across threads when there
            # are few rows (MKL on AVX-512 Xeons does for k=1536 below 256
            # rows): on one thread the order is fixed again, at a lower cost
            # than padding every product to hundreds of rows.
            if (k, n) in may_serialise:
                with _one_thread():
                    if _rows_invariant(k, min(n, PROBE_COLUMNS), m, gen):
                        serial.append((k, n))
                        continue
            break
        else:
            return RowPolicy(rows=m, one_thread=frozenset(serial))
    return None


def invariant_rows(shapes, may_serialise=()) -> RowPolicy | None:
    """The smallest row count in ``ROW_CANDIDATES`` from which this machine's
    products give every row the same bits whatever the row count and the row's
    position, for every ``(in_features, out_features)`` in ``shapes`` — the
    shapes in ``may_serialise`` (the model's linear layers) may get there on
    one thread; ``None`` if no candidate holds (then results may depend on the
    batch). Checked with the current thread count, which the library may also
    key its path on."""
    return _invariant_rows(tuple(sorted(set(shapes))), tuple(sorted(set(may_serialise))), torch.get_num_threads())


def pad_rows_linear(linear: torch.nn.Linear) -> None:
    """Make ``linear`` compute every row as in a product of >= MIN_ROWS rows."""

    def forward(x):
        width = x.shape[-1]
        flat = x.reshape(-1, width)
        rows = flat.shape[0]
        if rows >= MIN_ROWS:
            return torch.nn.functional.linear(flat.contiguous(), linear.weight, linear.bias).view(*x.shape[:-1], -1)
        padded = torch.cat([flat, flat.new_zeros((MIN_ROWS - rows, width))])
        return torch.nn.functional.linear(padded, linear.weight, linear.bias)[:rows].view(*x.shape[:-1], -1)

    linear.forward = forward


AttentionInterface.register(NAME, packed_attention)
# Without a registered mask builder, transformers passes no mask at all to a
# custom attention (decoding would then attend to padding).
AttentionMaskInterface.register(NAME, sdpa_mask)

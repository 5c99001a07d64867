"""Attention for rows packed as [cached prefix | segment 1 | segment 2 | ...].

Why hand-written: a persona's ten questions continue the same cached
backstory. Dense attention with a block mask computes every query against
every key of the row (prefix + all ten segments), twice the work that is
needed, and on CPU the masked kernel does not skip masked blocks. Here each
query attends in two parts that are merged exactly by their log-sum-exp:

* the prefix keys (shared by all segments of the row; one kernel call, the
  grouped-query heads folded into the query axis so keys are not repeated),
* its own segment's keys, causally (segments gathered into a padded batch).

    softmax over [prefix | own] = (e^{l_A} o_A + e^{l_B} o_B) / (e^{l_A} + e^{l_B})

with o_A, l_A (o_B, l_B) the attention output and log-sum-exp of each part.
Used on CPU through torch's flash kernel, which returns the log-sum-exp;
elsewhere, and whenever no layout is passed (decoding), plain SDPA runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

NAME = "personae_packed"


@dataclass
class PackedLayout:
    """Where the segments of a packed batch sit (built once per forward).

    n_prefix: cached prefix slots per row (left-padded); prefix_bias [B, 1, 1, N]
    additive (0 or -inf) masking the left padding; gather [G, L] flat indices
    (row * S + position) of each segment's tokens, padded with the segment's
    first token; valid [G, L]; local_bias [G, 1, L, L] causal within segment.
    """

    n_prefix: int
    prefix_bias: torch.Tensor | None
    gather: torch.Tensor
    valid: torch.Tensor
    local_bias: torch.Tensor
    all_prefix_full: bool  # every row uses all N prefix slots: no prefix mask

    @classmethod
    def build(cls, base_lens: list[int], segments: list[tuple[int, ...]], S: int, dtype) -> "PackedLayout":
        B, N = len(base_lens), max(base_lens)
        neg = torch.finfo(dtype).min
        prefix_bias = torch.zeros((B, 1, 1, N), dtype=dtype)
        for b, n in enumerate(base_lens):
            prefix_bias[b, ..., : N - n] = neg
        L = max(length for segs in segments for length in segs)
        rows = []
        for b, segs in enumerate(segments):
            start = 0
            for length in segs:
                idx = torch.arange(L).clamp(max=length - 1) + start
                rows.append((b * S + idx, torch.arange(L) < length))
                start += length
        gather = torch.stack([g for g, _ in rows])
        valid = torch.stack([v for _, v in rows])
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        allowed = causal[None] & valid[:, None, :]
        local_bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, neg)[:, None]
        return cls(N, prefix_bias, gather, valid, local_bias, all(n == N for n in base_lens))


def _flash(q, k, v, bias, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias, scale=scale)


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packed_layout: PackedLayout | None = None, **kwargs):
    # float32 on CPU only: the flash kernel's log-sum-exp path is what is verified
    # (bf16 mixes dtypes in the merge); everything else takes plain SDPA.
    if packed_layout is None or query.device.type != "cpu" or query.dtype != torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    lay = packed_layout
    B, H, S, D = query.shape
    KVH = key.shape[1]
    rep = H // KVH
    N = lay.n_prefix
    # Own segment: gather each segment's queries/keys into a padded batch.
    flat_q = query.transpose(1, 2).reshape(B * S, H, D)
    flat_k = key[:, :, N:].transpose(1, 2).reshape(B * S, KVH, D)
    flat_v = value[:, :, N:].transpose(1, 2).reshape(B * S, KVH, D)
    qs = flat_q[lay.gather].transpose(1, 2)  # [G, H, L, D]
    ks = repeat_kv(flat_k[lay.gather].transpose(1, 2), rep)
    vs = repeat_kv(flat_v[lay.gather].transpose(1, 2), rep)
    out_b, lse_b = _flash(qs, ks, vs, lay.local_bias, scaling)
    out = query.new_zeros((B * S, H, D))
    lse = query.new_full((B * S, H), float("-inf"))
    target = lay.gather[lay.valid]
    out[target] = out_b.transpose(1, 2)[lay.valid]
    lse[target] = lse_b.transpose(1, 2)[lay.valid]
    out = out.view(B, S, H, D)
    lse = lse.view(B, S, H)
    if N > 0:
        # Prefix: the mask depends on the key only, so the query heads sharing
        # a key head are stacked along the query axis instead of repeating keys.
        q_fold = query.reshape(B, KVH, rep * S, D)
        out_a, lse_a = _flash(q_fold, key[:, :, :N], value[:, :, :N], None if lay.all_prefix_full else lay.prefix_bias, scaling)
        out_a = out_a.reshape(B, H, S, D).transpose(1, 2)
        lse_a = lse_a.reshape(B, H, S).transpose(1, 2)
        m = torch.maximum(lse_a, lse)
        w_a = torch.exp(lse_a - m).nan_to_num_(0.0)
        w_b = torch.exp(lse - m).nan_to_num_(0.0)
        total = (w_a + w_b).clamp_min_(1e-30)
        out = (out_a.nan_to_num(0.0) * w_a[..., None] + out * w_b[..., None]) / total[..., None]
    return out.contiguous(), None


AttentionInterface.register(NAME, packed_attention)
# Without a registered mask builder, transformers passes no mask at all to a
# custom attention (decoding would then attend to padding).
AttentionMaskInterface.register(NAME, sdpa_mask)

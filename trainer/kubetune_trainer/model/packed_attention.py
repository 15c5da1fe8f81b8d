"""SDPA on packed batches without a dense mask: attention runs row by row, each row with SDPA's
causal kernel, so a pack costs what its rows cost alone (kubetune_trainer.data.packing).

Without flash-attention's varlen kernel, transformers turns a pack's restarting position ids
into a dense tokens x tokens block-diagonal mask, and SDPA with a mask computes every row against
every other row and drops the causal kernel: exact, but about 3x slower than padded batches on
CPU. This attention, registered with transformers as `kubetune_packed_sdpa`, reads the rows'
bounds that the packed collator passes (cu_seq_lens_q, as for flash-attention) and attends within
each row; a batch without them (evaluation, generation: padded, with their masks built as for
sdpa) goes to transformers' own SDPA attention unchanged.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "kubetune_packed_sdpa"


def packed_sdpa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                          dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Attention of one packed row (query, key, value: 1 x heads x tokens x dim) within each
    of its rows; anything else is transformers' SDPA attention."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    edges = bounds.tolist()
    rows = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
        dropout_p=dropout, scale=scaling, is_causal=True) for start, end in zip(edges[:-1], edges[1:])]
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


def use_packed_sdpa(model) -> None:
    """Switches `model` (a transformers model, not a PEFT wrapper) from sdpa to the packed
    attention; its masks stay sdpa's."""
    AttentionInterface.register(NAME, packed_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)

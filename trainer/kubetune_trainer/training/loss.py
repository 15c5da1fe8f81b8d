"""Completion-only cross-entropy without full-vocabulary logits for the whole batch.

A causal LM's forward projects every position onto the vocabulary: batch x length x vocab
floats, most of them for prompt and padding positions whose loss is never used (for
SmolLM2, 4 x 512 x 49152 fp32 logits are 400 MB, twice that with their gradient). Instead the
model runs with its output head swapped for the identity, which yields the final hidden
states; only the positions that predict a completion token go through the head, a chunk at a
time, each chunk recomputed in the backward pass rather than kept. The result equals the
naive loss on the full logits.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kubetune_trainer.data.tokenization import IGNORE_INDEX

# Completion positions projected at once: 256 x 49152 fp32 logits are 50 MB. The backward pass
# starts with a chunk's logits, their softmax and its gradient on top of every saved activation,
# which makes that moment a step's peak: smaller chunks lower it, at no measurable speed cost.
CHUNK_POSITIONS = 256


def transformers_model(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def hidden_state_outputs(model):
    """Within the block, model(...).logits are the final hidden states; yields the real head."""
    inner = transformers_model(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


def _chunk_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum"), (logits.argmax(-1) == targets).sum()


def completion_loss(hidden: torch.Tensor, labels: torch.Tensor, head) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, target count, correct argmax count) over labelled next tokens.

    `hidden` may be longer than `labels`: prompt tuning prepends virtual tokens, whose
    positions predict nothing and are dropped from the front.
    """
    hidden = hidden[:, hidden.size(1) - labels.size(1):]
    hidden, labels = hidden[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    hidden, targets = hidden[mask], labels[mask]
    loss, correct = hidden.new_zeros((), dtype=torch.float32), torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, targets.numel(), CHUNK_POSITIONS):
        h, t = hidden[start:start + CHUNK_POSITIONS], targets[start:start + CHUNK_POSITIONS]
        if torch.is_grad_enabled():
            chunk_loss, chunk_correct = checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            chunk_loss, chunk_correct = _chunk_loss(head, h, t)
        loss, correct = loss + chunk_loss, correct + chunk_correct
    return loss, mask.sum(), correct


def batch_loss(model, inner, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """completion_loss of `model` (maybe DDP-wrapped) on a batch; `inner` is the unwrapped model.

    Batches are right-padded and attention is causal, so no real token attends to the pads
    after it: the padding mask changes nothing the loss reads. Leaving it out lets SDPA use
    its causal kernel instead of materializing a (batch, heads, T, T) mask, which sets the
    peak memory of a step. A packed batch (kubetune_trainer.data.packing) is one row of several
    sequences, told apart by their position ids."""
    with hidden_state_outputs(inner) as head:
        hidden = model(**model_inputs(batch)).logits
    return completion_loss(hidden, batch["labels"], head)


PACKED_KEYS = ("input_ids", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def model_inputs(batch: dict) -> dict:
    """The keyword arguments of the model's forward for a padded or a packed batch."""
    if "position_ids" not in batch:
        return {"input_ids": batch["input_ids"]}
    # No attention mask and no KV cache: then transformers reads the rows from the position ids.
    return {**{k: batch[k] for k in PACKED_KEYS if k in batch}, "use_cache": False}

"""Padding-free packing (training.packing): a batch's rows as one sequence, each row on its own.

The rows that form a batch (kubetune_trainer.data.batching) are concatenated into a single row of
sum(lengths) tokens instead of batch x longest padded ones. Each row keeps position ids that
start at 0, and attention stays within its row:

- with sdpa attention the batch carries the rows' bounds too, and the model's attention is
  switched to kubetune_trainer.model.packed_attention, which attends row by row with SDPA's
  causal kernel: exact, twice the dense mask's speed on CPU, but still slower there than
  length-grouped padded batches, so auto (unset) packs only with flash-attention;
- with eager attention, transformers sees position ids without an attention mask and no KV
  cache, finds the rows from where the positions restart
  (masking_utils.find_packed_sequence_indices) and builds a dense block-diagonal causal mask;
- with flash_attention_2/3 the batch also carries the rows' cumulative lengths (cu_seq_lens_q/k,
  max_length_q/k), so flash-attention's varlen kernel runs on the rows with no mask at all.

A row's first token predicts nothing (its label is dropped), so the last token of one row never
learns the first token of the next. Which rows form each batch, the number of steps, tokens per
step and the loss (mean over the batch's completion tokens) are those of the unpacked run:
only the layout changes, so losses and gradients equal the unpacked ones
(tests/trainer/data/test_packing.py).

Not packable: prompt tuning and prefix tuning (their virtual tokens or key/value prefixes are per
row), and model families whose attention has not been checked to take the packed form.
"""
from __future__ import annotations

import logging

import torch

from kubetune_api.errors import ConfigError
from kubetune_trainer.training.loss import transformers_model
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Tokenized

log = logging.getLogger(__name__)

# Model types whose attention builds its mask with transformers' masking_utils (which reads packed
# position ids) and whose rotary embedding takes per-token position ids: checked by the tests on
# Llama; the others share its attention and mask code.
PACKABLE_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
PACKABLE_ATTENTION = {"sdpa", "eager", "flash_attention_2", "flash_attention_3"}
FLASH_ATTENTION = {"flash_attention_2", "flash_attention_3"}


def unpackable_reason(model) -> str | None:
    """Why `model` (maybe PEFT-wrapped) cannot train packed, or None when it can."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return f"{peft_config.peft_type.value.lower().replace('_', '-')} prepends per-row virtual tokens"
    config = transformers_model(model).config
    if config.model_type not in PACKABLE_MODEL_TYPES:
        return f"model type {config.model_type} is not one packing is known to be exact for"
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in PACKABLE_ATTENTION:
        return f"attention implementation {attention} does not take packed rows"
    return None


def resolve_packing(setting: bool | None, model) -> bool:
    """training.packing: None (auto) packs where exact and faster (flash-attention's varlen kernel)
    and logs why not elsewhere; true where not exact is a ConfigError naming the field; false never packs.

    Without flash-attention a pack is attended row by row (sdpa) or through a dense mask (eager):
    exact, but on CPU slower than length-grouped padded batches (docs/benchmarks.md), so auto
    leaves it off there; true still packs."""
    if setting is False:
        return False
    reason = unpackable_reason(model)
    if reason is None and setting is None and not flash_attention(model):
        attention = getattr(transformers_model(model).config, "_attn_implementation", None)
        log.info("training.packing: off (auto: with %s attention packs are exact but on CPU "
                 "slower than length-grouped padded batches; set it to true to pack anyway)", attention)
        return False
    if reason is None:
        log.info("training.packing: on (each batch's rows packed into one padding-free sequence)")
        return True
    if setting:
        raise ConfigError(f"training.packing: true, but {reason}; leave packing unset (auto) or set it to false")
    log.info("training.packing: off (%s); batches are padded", reason)
    return False


def flash_attention(model) -> bool:
    return getattr(transformers_model(model).config, "_attn_implementation", None) in FLASH_ATTENTION


def prepare_packed_attention(model) -> bool:
    """Readies `model`'s attention for packs; True when the packs must carry their rows' bounds
    (flash-attention's varlen kernel, or sdpa switched to kubetune_trainer.model.packed_attention),
    False for eager attention, which takes the dense block-diagonal mask."""
    if flash_attention(model):
        return True
    inner = transformers_model(model)
    if getattr(inner.config, "_attn_implementation", None) != "sdpa":
        return False
    from kubetune_trainer.model.packed_attention import use_packed_sdpa

    use_packed_sdpa(inner)
    return True


class PackedCollator:
    """A batch of rows as one packed sequence: input_ids, labels and position_ids of shape
    (1, total tokens); `tokens` counts them. With `varlen`, also flash-attention's row bounds."""

    def __init__(self, varlen: bool = False):
        self.varlen = varlen

    def __call__(self, batch: list[Tokenized]) -> dict[str, torch.Tensor]:
        input_ids, labels, positions = [], [], []
        for x in batch:
            n = len(x.input_ids)
            input_ids += x.input_ids
            labels += [IGNORE_INDEX] + list(x.labels[1:])  # the row's first token is predicted by nothing
            positions += range(n)
        out = {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "tokens": torch.tensor(len(input_ids)),
        }
        if self.varlen:
            lengths = torch.tensor([len(x.input_ids) for x in batch], dtype=torch.int32)
            bounds = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
            longest = int(lengths.max())
            out.update(cu_seq_lens_q=bounds, cu_seq_lens_k=bounds.clone(), max_length_q=longest, max_length_k=longest)
        return out


def batch_tokens(batch: dict) -> int:
    """Real (non-padding) tokens in a packed or padded batch."""
    return int(batch["tokens"]) if "tokens" in batch else int(batch["attention_mask"].sum())

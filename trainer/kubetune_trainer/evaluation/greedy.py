"""Greedy decoding for evaluation: the tokens of Hugging Face `generate` (greedy, left padding),
computed with less work.

- Prompts run longest first, so a batch holds prompts of about one length (little padding);
  outputs come back in the caller's order.
- A row leaves the batch as soon as it is done (EOS, a stop string, max new tokens), so no
  forward pass is spent on finished rows, and waiting prompts take the freed places
  (continuous batching): each is prefilled and its cache joins the batch's, left-padded.

Greedy decoding picks each row's argmax independently of the other rows, so the tokens are
those of one-at-a-time `generate` up to float rounding in padded batches (the same caveat as a
plain batched `generate`); tests/eval/test_greedy.py checks them against both.

The key/value cache is a transformers `DynamicCache`: `.layers`, each a `DynamicLayer` whose
`keys` and `values` are (rows, heads, width, head dim) and whose length is read off `keys`
(so rows and columns can be cut and joined in place); the same in transformers 5.0 to 5.25.
transformers 5.24 renamed the cache's keyword and output field from `past_key_values` to
`cache` (the old names still work there, with a deprecation warning, until 5.40): the decoder
reads the field the output has and passes the cache back under the keyword the forward takes.
"""
from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kubetune_trainer.model.placement import input_device

# Waiting prompts join the batch once this share of its rows is free (at least one row): fewer,
# larger prefills than refilling each freed row at once, and a batch that stays mostly full.
REFILL_SHARE = 0.25

# Keys of a model's generation_config.json that do not change greedy tokens. Any other key
# (repetition_penalty, suppress_tokens, ...) would add logits processors to `generate`: such
# models keep the `generate` path, which applies them.
NEUTRAL_GENERATION_KEYS = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache",
                           "transformers_version", "_from_model_config", "output_attentions", "output_hidden_states",
                           "max_length", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams",
                           "cache_implementation"}


def supports_fast_greedy(model) -> bool:
    """Whether `decode` gives `generate`'s greedy tokens for this model: a decoder-only model with
    full attention in every layer (a plain growing cache) and no extra logits processing."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "sliding_window", None):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    defaults = getattr(model, "generation_config", None)
    extra = set(defaults.to_diff_dict()) - NEUTRAL_GENERATION_KEYS if defaults is not None else set()
    return not extra and getattr(defaults, "num_beams", 1) in (None, 1)


# The cache's name, newest first: keyword of the forward and field of its output.
CACHE_NAMES = ("cache", "past_key_values")


def cache_keyword(model) -> str:
    """The keyword under which `model`'s forward takes the cache (a PEFT model passes it on to
    its base model's): `cache` from transformers 5.24 on, `past_key_values` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    accepted = inspect.signature(base.forward).parameters  # through decorators (functools.wraps)
    return next((name for name in CACHE_NAMES if name in accepted), "past_key_values")


def output_cache(out):
    """The cache a forward with use_cache=True returned, under whichever name its output has."""
    for name in CACHE_NAMES:
        cache = out.get(name)  # ModelOutput is a dict of its non-None fields
        if cache is not None:
            return cache
    raise ValueError(f"{type(out).__name__} carries no cache (fields: {', '.join(out.keys())})")


@dataclass
class Batch:
    """The rows in flight: prompt index, attention mask (left-padded), cache and last token."""
    rows: list[int]
    mask: torch.Tensor  # (rows, width), 1 on real tokens
    cache: object  # transformers DynamicCache, one layer per decoder layer
    last: torch.Tensor  # (rows, 1)


def _prefill(model, prompts: list[list[int]], rows: list[int], pad_id: int) -> Batch:
    width, device = max(map(len, prompts)), input_device(model)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate() derives them
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    # The next tokens stay beside the mask (a sharded model's logits come off its last GPU).
    return Batch(rows, mask, output_cache(out), out.logits[:, -1].float().argmax(-1, keepdim=True).to(device))


def _step(model, batch: Batch, keyword: str) -> None:
    batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
    positions = batch.mask.sum(-1, keepdim=True) - 1
    out = model(input_ids=batch.last, attention_mask=batch.mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{keyword: batch.cache})
    batch.last = out.logits[:, -1].float().argmax(-1, keepdim=True).to(batch.mask.device)


def _keep(batch: Batch, keep: list[int]) -> None:
    """Only rows `keep` (positions in the batch) stay; columns padded in every row go."""
    batch.rows = [batch.rows[k] for k in keep]
    if not keep:
        return
    index = torch.tensor(keep, device=batch.mask.device)
    batch.mask, batch.last = batch.mask[index], batch.last[index]
    start = int(batch.mask.any(0).nonzero()[0])
    batch.mask = batch.mask[:, start:]
    for layer in batch.cache.layers:  # a sharded model's layers (and their caches) sit on several GPUs
        at = index.to(layer.keys.device)
        layer.keys, layer.values = layer.keys[at, :, start:], layer.values[at, :, start:]


def _join(batch: Batch, new: Batch) -> None:
    """`new`'s rows join `batch`; the narrower side is padded on the left."""
    width = max(batch.mask.shape[1], new.mask.shape[1])
    pad = lambda t, dim: F.pad(t, (0, 0) * (t.dim() - 1 - dim) + (width - t.shape[dim], 0))  # noqa: E731
    batch.rows += new.rows
    batch.mask = torch.cat([pad(batch.mask, 1), pad(new.mask, 1)])
    batch.last = torch.cat([batch.last, new.last])
    for mine, theirs in zip(batch.cache.layers, new.cache.layers):
        mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
        mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])


def _record(batch: Batch, outputs: list[list[int]], done: Callable[[list[int]], bool]) -> None:
    """Appends each row's new token to its output; finished rows leave the batch."""
    keep = []
    for k, (row, token) in enumerate(zip(batch.rows, batch.last[:, 0].tolist())):
        outputs[row].append(token)
        if not done(outputs[row]):
            keep.append(k)
    if len(keep) < len(batch.rows):
        _keep(batch, keep)


@torch.inference_mode()
def decode(model, prompts: list[list[int]], batch_size: int, done: Callable[[list[int]], bool],
           pad_id: int) -> list[list[int]]:
    """Greedy continuations of token-id `prompts`, in their order, each ending at the token for
    which `done(tokens so far)` is first true (it must be true at the maximum length)."""
    waiting = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))  # longest first, stable
    outputs: list[list[int]] = [[] for _ in prompts]
    batch: Batch | None = None
    refill = max(1, int(batch_size * REFILL_SHARE))
    keyword = cache_keyword(model)
    while waiting or batch:
        free = batch_size - (len(batch.rows) if batch else 0)
        if waiting and (free >= refill or batch is None):
            rows = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            new = _prefill(model, [prompts[i] for i in rows], rows, pad_id)
            _record(new, outputs, done)
            if new.rows:
                batch = new if batch is None else (_join(batch, new) or batch)
        else:
            _step(model, batch, keyword)
            _record(batch, outputs, done)
        if batch is not None and not batch.rows:
            batch = None
    return outputs

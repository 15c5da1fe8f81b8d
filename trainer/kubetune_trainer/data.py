"""Dataset rows to tokenized train/validation/test splits and padded batches.

Loss is on the completion only: prompt tokens get the label IGNORE_INDEX. Too-long rows lose
the start of their prompt, so the model still sees the end of the prompt and the whole answer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from kubetune_trainer.config import DatasetSpec
from kubetune_trainer.rows import Example, ExampleMaker, read_rows, split_sizes

IGNORE_INDEX = -100  # the label cross-entropy skips

T = TypeVar("T")


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens, else equal to input_ids
    truncated: bool = False


@dataclass
class PreparedData:
    splits: dict[str, list[Tokenized]] = field(default_factory=dict)

    def counts(self) -> dict:
        return {
            "rows": sum(len(items) for items in self.splits.values()),
            **{name: len(items) for name, items in self.splits.items()},
            "truncated": {name: sum(x.truncated for x in items) for name, items in self.splits.items()},
        }


def split_examples(items: list[T], spec: DatasetSpec, seed: int) -> dict[str, list[T]]:
    """A seeded shuffle cut by the spec's ratios: the same data and seed give the same splits."""
    n_train, n_val, _ = split_sizes(len(items), spec)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, len(items))}
    return {name: [items[i] for i in order[start:end]] for name, (start, end) in bounds.items()}


def join_and_truncate(prompt: list[int], completion: list[int], max_length: int, bos_id: int | None) -> Tokenized:
    """Concatenates prompt and completion (which ends with eos) into at most max_length tokens."""
    truncated = len(prompt) + len(completion) > max_length
    if truncated:
        if len(completion) >= max_length:
            prompt, completion = [], completion[:max_length]
        else:
            keep = max_length - len(completion)
            # Cut the prompt's start but keep a leading BOS: models were trained to see it first.
            if bos_id is not None and prompt[0] == bos_id:
                prompt = [bos_id] + prompt[len(prompt) - keep + 1:]
            else:
                prompt = prompt[len(prompt) - keep:]
    return Tokenized(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion, truncated)


def tokenize(tokenizer, examples: list[Example], max_length: int) -> list[Tokenized]:
    if not examples:
        return []
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [
        join_and_truncate(p, c + [eos], max_length, tokenizer.bos_token_id) for p, c in zip(prompts, completions)
    ]


def load_splits(spec: DatasetSpec, seed: int) -> dict[str, list[Example]]:
    """Reads and renders every row (failing fast, before any model loads) and splits them."""
    make = ExampleMaker(spec)
    return split_examples([make(row) for row in read_rows(spec.path)], spec, seed)


def tokenize_splits(splits: dict[str, list[Example]], tokenizer, max_length: int) -> PreparedData:
    return PreparedData({name: tokenize(tokenizer, items, max_length) for name, items in splits.items()})


class Collator:
    """Right-pads a batch; padding is masked from attention and loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[Tokenized]) -> dict[str, torch.Tensor]:
        width = max(len(x.input_ids) for x in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            n = len(x.input_ids)
            input_ids[i, :n] = torch.tensor(x.input_ids)
            labels[i, :n] = torch.tensor(x.labels)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

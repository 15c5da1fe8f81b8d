"""Examples to token ids with completion-only labels, and padded batches.

Loss is on the completion only: prompt tokens get the label IGNORE_INDEX; chat rows
(dataset.conversations) are labelled on their trained assistant turns by `chat_masks`. Rows longer
than dataset.maxLength follow dataset.lengthPolicy: truncate (the start of the prompt is cut, so
the model still sees the end of the prompt and the whole answer; a conversation keeps its leading
whole turns up to the end of the last trained assistant turn that fits, or else its first
maxLength tokens, and is dropped when no trained token is left) or drop (the row is skipped);
both are counted per split and per task.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import torch

from kubetune_api.errors import DataError
from kubetune_trainer.data.chat import chat_prompts
from kubetune_trainer.data.rows import Example

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label cross-entropy skips
MAX_NAMED_ROWS = 10  # dropped/truncated rows named in the summary, per split


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens, else equal to input_ids
    truncated: bool = False
    task: Optional[str] = None
    prompt_length: Optional[int] = None  # chat rows: tokens before the last assistant turn (predictions' prompt)


@dataclass
class PreparedData:
    splits: dict[str, list[Tokenized]] = field(default_factory=dict)
    retention: list[Tokenized] = field(default_factory=list)
    # split -> task (None for the single-task dataset) -> rows dropped as too long
    dropped: dict[str, Counter] = field(default_factory=dict)
    dropped_rows: dict[str, list[str]] = field(default_factory=dict)  # the first few, 'file line N'
    truncated_rows: dict[str, list[str]] = field(default_factory=dict)
    length_policy: str = "truncate"

    def tasks(self) -> list[str]:
        """The mixture's task names, in spec order (empty for a single-task dataset)."""
        names: dict[str, None] = {}
        # Held-out splits list the tasks in spec order; the training mixture is shuffled.
        for split in ("validation", "test", *self.splits):
            for x in self.splits.get(split, []):
                if x.task is not None:
                    names.setdefault(x.task)
        return list(names)

    def by_task(self, split: str) -> dict[str, list[Tokenized]]:
        out: dict[str, list[Tokenized]] = {name: [] for name in self.tasks()}
        for x in self.splits.get(split, []):
            if x.task is not None:
                out[x.task].append(x)
        return out

    def _shows_dropped(self) -> bool:
        """Policy drop, or conversations that lost every trained token to truncation."""
        return self.length_policy == "drop" or any(sum(c.values()) for c in self.dropped.values())

    def counts(self) -> dict:
        counts = {
            "rows": sum(len(items) for items in self.splits.values()),
            **{name: len(items) for name, items in self.splits.items()},
            "truncated": {name: sum(x.truncated for x in items) for name, items in self.splits.items()},
        }
        if self._shows_dropped():
            counts["lengthPolicy"] = self.length_policy
            counts["dropped"] = {name: sum(self.dropped.get(name, Counter()).values()) for name in self.splits}
        named = {"droppedRows": self.dropped_rows, "truncatedRows": self.truncated_rows}
        for key, rows in named.items():
            if any(rows.values()):
                counts[key] = {name: list(r) for name, r in rows.items() if r}
        if self.retention:
            counts["retention"] = len(self.retention)
            counts["truncated"]["retention"] = sum(x.truncated for x in self.retention)
            if "dropped" in counts:
                counts["dropped"]["retention"] = sum(self.dropped.get("retention", Counter()).values())
        tasks = self.tasks()
        if tasks:
            counts["tasks"] = {
                task: {
                    **{split: sum(x.task == task for x in self.splits.get(split, [])) for split in self.splits},
                    "truncated": {split: sum(x.truncated and x.task == task for x in self.splits.get(split, [])) for split in self.splits},
                    **({"dropped": {split: self.dropped.get(split, Counter())[task] for split in self.splits}}
                       if self._shows_dropped() else {}),
                }
                for task in tasks
            }
        return counts


def join_and_truncate(prompt: list[int], completion: list[int], max_length: int, bos_id: int | None) -> Tokenized:
    """Concatenates prompt and completion (which ends with eos) into at most max_length tokens."""
    truncated = len(prompt) + len(completion) > max_length
    if truncated:
        if len(completion) >= max_length:
            prompt, completion = [], completion[:max_length]
        else:
            keep = max_length - len(completion)
            # Cut the prompt's start but keep a leading BOS: models were trained to see it first.
            if bos_id is not None and prompt and prompt[0] == bos_id:
                prompt = [bos_id] + prompt[len(prompt) - keep + 1:]
            else:
                prompt = prompt[len(prompt) - keep:]
    return Tokenized(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion, truncated)


def _prompt_ids(tokenizer, examples: list[Example]) -> list[list[int]]:
    """Plain prompts get the tokenizer's special tokens (BOS); chat-wrapped ones carry their own."""
    ids: list[list[int] | None] = [None] * len(examples)
    for chat in (False, True):
        index = [i for i, e in enumerate(examples) if e.chat == chat]
        if not index:
            continue
        texts = [examples[i].prompt for i in index]
        if chat:
            texts = chat_prompts(tokenizer, texts)
        for i, x in zip(index, tokenizer(texts, add_special_tokens=not chat)["input_ids"]):
            ids[i] = x
    return ids


def _prompted(tokenizer, examples: list[Example], max_length: int, policy: str) -> list[Tokenized | None]:
    """Prompt/completion examples; None for one dropped as too long."""
    prompts = _prompt_ids(tokenizer, examples)
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out: list[Tokenized | None] = []
    for e, p, c in zip(examples, prompts, completions):
        c = c + [eos]
        if policy == "drop" and len(p) + len(c) > max_length:
            out.append(None)
            continue
        x = join_and_truncate(p, c, max_length, tokenizer.bos_token_id)
        out.append(Tokenized(x.input_ids, x.labels, x.truncated, e.task) if e.task is not None else x)
    return out


def _conversation(tokenizer, e: Example, max_length: int, policy: str, specials) -> Tokenized | None:
    """A chat row, cut as the module docstring says; None when dropped."""
    from kubetune_trainer.data.chat_masks import tokenize_conversation

    ids, labels, prompt_length, ends = tokenize_conversation(tokenizer, e.conversation, e.where, specials)
    if len(ids) <= max_length:
        return Tokenized(ids, labels, False, e.task, prompt_length)
    if policy == "drop":
        return None
    cut = max((end for end in ends if end <= max_length), default=max_length)
    if all(label == IGNORE_INDEX for label in labels[:cut]):
        return None
    return Tokenized(ids[:cut], labels[:cut], True, e.task, min(prompt_length, cut))


def tokenize(tokenizer, examples: list[Example], max_length: int, policy: str = "truncate",
             dropped: list[Example] | None = None) -> list[Tokenized]:
    """Tokenized examples, in order; those left out (policy 'drop', or a conversation with no
    trained token within maxLength) are appended to `dropped`."""
    if not examples:
        return []
    policy = getattr(policy, "value", policy)
    results: list[Tokenized | None] = [None] * len(examples)
    chats = [i for i, e in enumerate(examples) if e.conversation is not None]
    if chats:
        from kubetune_trainer.data.chat_masks import special_texts

        specials = special_texts(tokenizer)
        for i in chats:
            results[i] = _conversation(tokenizer, examples[i], max_length, policy, specials)
    prompted = [i for i, e in enumerate(examples) if e.conversation is None]
    if prompted:
        for i, x in zip(prompted, _prompted(tokenizer, [examples[i] for i in prompted], max_length, policy)):
            results[i] = x
    if dropped is not None:
        dropped.extend(e for e, x in zip(examples, results) if x is None)
    return [x for x in results if x is not None]


def _check_not_emptied(split: str, before: list[Example], after: list[Tokenized], max_length: int) -> None:
    """A split (or a task's part of it) that had rows must keep some after dropping."""
    had = Counter(e.task for e in before)
    kept = Counter(x.task for x in after)
    for task, n in had.items():
        if n and not kept[task]:
            example = next(e for e in before if e.task == task)
            which = f"task {task}'s {split}" if task is not None else split
            raise DataError(
                f"{example.where.rsplit(' ', 2)[0]}: the {which} split is empty: all {n} rows are longer than "
                f"dataset.maxLength {max_length} tokens and dataset.lengthPolicy is drop (first: {example.where})"
            )


def tokenize_splits(splits: dict[str, list[Example]], tokenizer, max_length: int, policy: str = "truncate") -> PreparedData:
    policy = getattr(policy, "value", policy)
    data = PreparedData(length_policy=policy)
    for name, items in splits.items():
        dropped: list[Example] = []
        tokenized = tokenize(tokenizer, items, max_length, policy, dropped)
        _check_not_emptied(name, items, tokenized, max_length)
        data.dropped[name] = Counter(e.task for e in dropped)
        data.dropped_rows[name] = [e.where for e in dropped[:MAX_NAMED_ROWS]]
        gone = {id(e) for e in dropped}
        kept = [e for e in items if id(e) not in gone]
        data.truncated_rows[name] = [e.where for e, x in zip(kept, tokenized) if x.truncated][:MAX_NAMED_ROWS] if policy == "truncate" else []
        for e in dropped[:MAX_NAMED_ROWS]:
            log.warning("%s: longer than dataset.maxLength %d tokens, dropped (%s split)", e.where, max_length, name)
        if name == "retention":
            data.retention = tokenized
        else:
            data.splits[name] = tokenized
    return data


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

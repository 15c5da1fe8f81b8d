"""Tokenization, completion-only labels, truncation, splitting and padding."""
from __future__ import annotations

from kubetune_api.training import DatasetSpec
from kubetune_trainer.data.splits import load_splits, split_examples
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Collator, Tokenized, join_and_truncate, tokenize, tokenize_splits
from kubetune_trainer.data.rows import Example
from tinymodels import TEMPLATE

BOS = 1


def spec(path, **kw) -> DatasetSpec:
    return DatasetSpec(path=str(path), prompt_template=TEMPLATE, completion_field="answer", **kw)


def test_labels_mask_the_prompt_and_keep_completion_and_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    (x,) = tokenize(tok, [Example("Which animal is red cat?\nAnswer:", " cat")], max_length=64)
    prompt = tok("Which animal is red cat?\nAnswer:")["input_ids"]
    completion = tok(" cat", add_special_tokens=False)["input_ids"]
    assert prompt[0] == tok.bos_token_id
    assert x.input_ids == prompt + completion + [tok.eos_token_id]
    assert x.labels == [IGNORE_INDEX] * len(prompt) + completion + [tok.eos_token_id]
    assert tok.decode([t for t in x.labels if t != IGNORE_INDEX]) == " cat</s>"
    assert not x.truncated


def test_long_rows_lose_the_start_of_the_prompt_but_keep_bos(tiny_tokenizer):
    tok = tiny_tokenizer
    long_prompt = "red green blue yellow " * 10 + "Which animal is red cat?\nAnswer:"
    (x,) = tokenize(tok, [Example(long_prompt, " cat")], max_length=16)
    full = tok(long_prompt)["input_ids"] + tok(" cat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert x.truncated and len(x.input_ids) == 16
    assert x.input_ids == [tok.bos_token_id] + full[-15:]  # BOS, then the end of the prompt and the whole answer
    assert tok.decode(x.input_ids[-6:]).endswith("Answer: cat</s>")


def test_join_and_truncate_cases():
    eos = 2
    assert join_and_truncate([BOS, 10, 11], [20, eos], 8, BOS) == Tokenized([BOS, 10, 11, 20, eos], [-100] * 3 + [20, eos])
    # Prompt start cut, BOS kept.
    assert join_and_truncate([BOS, 10, 11, 12, 13], [20, eos], 5, BOS) == Tokenized([BOS, 12, 13, 20, eos], [-100] * 3 + [20, eos], True)
    # Without a leading BOS the prompt is simply cut from the start.
    assert join_and_truncate([10, 11, 12, 13], [20, eos], 4, BOS).input_ids == [12, 13, 20, eos]
    # A completion longer than the limit keeps its start and no prompt.
    assert join_and_truncate([BOS, 10], [20, 21, 22, 23, eos], 3, BOS) == Tokenized([20, 21, 22], [20, 21, 22], True)


def test_truncations_are_counted_per_split(tiny_tokenizer, dataset_file):
    splits = load_splits(spec(dataset_file), seed=1)
    counts = tokenize_splits(splits, tiny_tokenizer, max_length=8).counts()
    assert counts["rows"] == 48 and counts["train"] + counts["validation"] + counts["test"] == 48
    assert counts["truncated"] == {"train": counts["train"], "validation": counts["validation"], "test": counts["test"]}
    assert tokenize_splits(splits, tiny_tokenizer, 64).counts()["truncated"] == {"train": 0, "validation": 0, "test": 0}


def test_splits_are_deterministic_per_seed_and_partition_the_data():
    s = DatasetSpec(path="x", prompt_template="{{ a }}", completion_field="b", validation_ratio=0.2, test_ratio=0.1)
    items = list(range(50))
    first, again, other = split_examples(items, s, 7), split_examples(items, s, 7), split_examples(items, s, 8)
    assert first == again and first != other
    assert [len(first[k]) for k in ("train", "validation", "test")] == [35, 10, 5]
    assert sorted(first["train"] + first["validation"] + first["test"]) == items


def test_collator_pads_right_and_masks_padding():
    batch = Collator(pad_id=0)([Tokenized([5, 6, 7], [-100, 6, 7]), Tokenized([8], [8])])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]

"""Completion templates, chat-template wrapping, explicit split files, null values, length policies."""
from __future__ import annotations

import copy

import pytest

from kubetune_api.training import DatasetSpec
from kubetune_trainer.data.splits import load_splits
from kubetune_trainer.data.tokenization import IGNORE_INDEX, tokenize, tokenize_splits
from kubetune_api.errors import ConfigError, DataError
from kubetune_trainer.data.rows import Example, check_dataset
from tinymodels import TEMPLATE, make_rows, write_jsonl

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def spec(path, **kw) -> DatasetSpec:
    kw.setdefault("completion_field", "answer")
    return DatasetSpec(path=str(path), prompt_template=kw.pop("template", TEMPLATE), **kw)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_completion_template_builds_the_completion(dataset_file):
    s = spec(dataset_file, completion_field=None, completion_template=" It is a {{ color }} {{ animal }}.")
    splits = load_splits(s, seed=0)
    e = splits["train"][0]
    assert e.completion.startswith(" It is a ") and e.completion.endswith(".")
    rows = make_rows(6)
    rows[2]["animal"] = None
    s = s.model_copy(update={"path": str(write_jsonl(dataset_file.with_name("n.jsonl"), rows)),
                             "prompt_template": "Say {{ color }}"})
    with pytest.raises(DataError, match=r"n\.jsonl line 3: field 'animal' used by dataset\.completionTemplate has no value"):
        check_dataset(s)


def test_chat_template_wraps_the_prompt_as_a_user_turn(chat_tokenizer):
    example = Example("Which animal is red cat?\nAnswer:", " cat", chat=True)
    (x,) = tokenize(chat_tokenizer, [example], max_length=128)
    wrapped = "<|user|>\nWhich animal is red cat?\nAnswer:</s>\n<|assistant|>\n"
    assert chat_tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], tokenize=False,
                                              add_generation_prompt=True) == wrapped
    prompt_ids = chat_tokenizer(wrapped, add_special_tokens=False)["input_ids"]
    completion_ids = chat_tokenizer(" cat", add_special_tokens=False)["input_ids"] + [chat_tokenizer.eos_token_id]
    assert x.input_ids == prompt_ids + completion_ids
    assert x.labels == [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    assert chat_tokenizer.decode(x.input_ids).startswith("<|user|>\nWhich animal")
    # Plain examples in the same batch keep the tokenizer's BOS and no chat markup.
    plain, chat = tokenize(chat_tokenizer, [Example("Hi", " cat"), example], max_length=128)
    assert plain.input_ids[0] == chat_tokenizer.bos_token_id and chat.input_ids == x.input_ids


def test_chat_template_flag_flows_from_the_spec(dataset_file, chat_tokenizer):
    splits = load_splits(spec(dataset_file, chat_template=True), seed=0)
    assert all(e.chat for e in splits["train"])
    data = tokenize_splits(splits, chat_tokenizer, 128)
    assert chat_tokenizer.decode(data.splits["train"][0].input_ids).startswith("<|user|>\n")


def test_chat_template_missing_is_a_clear_error(tiny_tokenizer):
    assert not getattr(tiny_tokenizer, "chat_template", None)
    with pytest.raises(ConfigError, match="dataset.chatTemplate is true but the model's tokenizer has no chat template"):
        tokenize(tiny_tokenizer, [Example("x", "y", chat=True)], 64)


def test_explicit_split_files_are_not_cut_from_the_training_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    val = write_jsonl(tmp_path / "val.jsonl", [{**r, "answer": " v"} for r in make_rows(3)])
    test = write_jsonl(tmp_path / "test.jsonl", [{**r, "answer": " t"} for r in make_rows(4)])
    splits = load_splits(spec(train, validation_path=str(val), test_path=str(test)), seed=0)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [20, 3, 4]
    assert {e.completion for e in splits["validation"]} == {" v"} and {e.completion for e in splits["test"]} == {" t"}
    # Only a validation file: the test split is still cut from the training file by ratio.
    splits = load_splits(spec(train, validation_path=str(val), test_ratio=0.25), seed=0)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [15, 3, 5]
    assert check_dataset(spec(train, validation_path=str(val), test_path=str(test))) == 27
    # A split file without rows is an empty split, named.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: dataset file has no rows"):
        check_dataset(spec(train, validation_path=str(empty)))
    with pytest.raises(DataError, match=r"empty\.jsonl: dataset file has no rows"):
        load_splits(spec(train, test_path=str(empty)), seed=0)
    rows = make_rows(3)
    rows[1]["answer"] = None
    with pytest.raises(DataError, match=r"val2\.jsonl line 2: completion field 'answer' has no value"):
        check_dataset(spec(train, validation_path=str(write_jsonl(tmp_path / "val2.jsonl", rows))))


def test_length_policies_are_counted_per_split(tmp_path, tiny_tokenizer):
    rows = make_rows(20)
    for i in (0, 3, 7, 11):
        rows[i]["color"] = "very long " * 12 + rows[i]["color"]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    s = spec(path, validation_ratio=0.2, test_ratio=0.2)
    splits = load_splits(s, seed=0)
    long_in = {k: sum("very long" in e.prompt for e in v) for k, v in splits.items()}
    assert sum(long_in.values()) == 4

    truncated = tokenize_splits(splits, tiny_tokenizer, 24, "truncate")
    counts = truncated.counts()
    assert counts["truncated"] == long_in and "dropped" not in counts
    assert sum(len(v) for v in counts["truncatedRows"].values()) == 4
    assert all(r.startswith(f"{path} line ") for v in counts["truncatedRows"].values() for r in v)

    dropped = tokenize_splits(splits, tiny_tokenizer, 24, "drop")
    counts = dropped.counts()
    assert counts["lengthPolicy"] == "drop" and counts["dropped"] == long_in
    assert counts["truncated"] == {"train": 0, "validation": 0, "test": 0}
    assert {k: counts[k] for k in ("train", "validation", "test")} == {k: len(v) - long_in[k] for k, v in splits.items()}
    lines = sorted(int(r.rsplit(" ", 1)[1]) for v in counts["droppedRows"].values() for r in v)
    assert lines == [1, 4, 8, 12]


def test_dropping_every_row_of_a_split_is_an_error(tmp_path, tiny_tokenizer):
    rows = make_rows(10)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    val = write_jsonl(tmp_path / "v.jsonl", [{**r, "color": "red green blue " * 10} for r in make_rows(2)])
    splits = load_splits(spec(path, validation_path=str(val), test_ratio=0), seed=0)
    with pytest.raises(DataError, match=r"v\.jsonl: the validation split is empty: all 2 rows are longer than dataset\.maxLength 24 .* \(first: .*v\.jsonl line 1\)"):
        tokenize_splits(splits, tiny_tokenizer, 24, "drop")
    assert tokenize_splits(splits, tiny_tokenizer, 24, "truncate").counts()["truncated"]["validation"] == 2


def test_retention_rows_are_read_capped_and_kept_apart(dataset_file, tmp_path, tiny_tokenizer):
    other = write_jsonl(tmp_path / "other.jsonl", [{"word": w, "upper": " " + w.upper()} for w in ["cat", "dog", "fox"] * 5])
    s = spec(dataset_file, retention={"path": str(other), "promptTemplate": "Shout {{ word }}:", "completionField": "upper", "maxExamples": 10})
    splits = load_splits(s, seed=0)
    assert len(splits["retention"]) == 10 and splits["retention"][0].completion == " CAT"
    data = tokenize_splits(splits, tiny_tokenizer, 64)
    assert len(data.retention) == 10 and set(data.splits) == {"train", "validation", "test"}
    assert data.counts()["retention"] == 10 and data.counts()["rows"] == 48
    bad = write_jsonl(tmp_path / "bad_ret.jsonl", [{"word": "cat"}])
    with pytest.raises(DataError, match=r"bad_ret\.jsonl line 1: completion field 'upper' is missing"):
        check_dataset(s.model_copy(update={"retention": s.retention.model_copy(update={"path": str(bad)})}))

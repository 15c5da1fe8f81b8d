"""k-shot prompts (dataset.fewShot): which shots, in what order, how they read (no torch, no model)."""
from __future__ import annotations

import pytest

from kubetune_api.errors import DataError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation.dataset import check_eval_dataset, load_items
from tinymodels import TEMPLATE, make_rows, write_jsonl


def config(path, few_shot: dict | None, task="generation") -> EvalConfig:
    fields = {"generation": {"referenceFields": ["answer"]},
              "multiple-choice": {"choicesField": "choices", "answerField": "label"}}[task]
    return EvalConfig.model_validate({
        "models": [{"name": "m", "path": "unused"}], "task": task, "output": {"path": "out"},
        "metrics": ["accuracy"] if task == "multiple-choice" else ["exact_match"],
        "dataset": {"path": str(path), "promptTemplate": TEMPLATE, "fewShot": few_shot, **fields}})


@pytest.fixture
def shots_file(tmp_path):
    """A separate split to draw shots from: 10 rows unlike the evaluated ones (numbered colors)."""
    rows = [{"color": f"c{i}", "animal": "yak", "answer": f" yak{i}", "choices": [" no", f" yes{i}"], "label": 1}
            for i in range(10)]
    return write_jsonl(tmp_path / "dev.jsonl", rows)


def shot(i: int) -> str:
    return f"Which animal is c{i} yak?\nAnswer: yak{i}"


def test_k_shots_from_the_named_split_precede_every_prompt(eval_file, shots_file):
    items, _ = load_items(config(eval_file, {"k": 3, "path": str(shots_file), "seed": 7}))
    plain, _ = load_items(config(eval_file, None))
    prefix = items[0].prompt.removesuffix(plain[0].prompt)
    blocks = prefix.split("\n\n")
    assert len(blocks) == 4 and blocks[-1] == ""  # three shots, each followed by the separator
    assert all(block in [shot(i) for i in range(10)] for block in blocks[:3]) and len(set(blocks[:3])) == 3
    # The same shots, in the same order, for every item (as MMLU's k-shot prompts); references untouched.
    assert all(item.prompt == prefix + p.prompt and item.references == p.references for item, p in zip(items, plain))


def test_seed_decides_the_shots_and_the_separator_joins_them(eval_file, shots_file):
    def first_prompt(**few_shot):
        return load_items(config(eval_file, {"k": 2, "path": str(shots_file), **few_shot}))[0][0].prompt

    assert first_prompt(seed=1) == first_prompt(seed=1) != first_prompt(seed=2)
    prompt = first_prompt(seed=1, separator="\n###\n")
    assert prompt.count("\n###\n") == 2 and prompt.endswith("\n###\nWhich animal is red cat?\nAnswer:")


def test_multiple_choice_shots_end_with_the_correct_option(eval_file, shots_file):
    item = load_items(config(eval_file, {"k": 1, "path": str(shots_file)}, "multiple-choice"))[0][0]
    shot_text = item.prompt.split("\n\n")[0]
    number = shot_text.split(" yak?")[0].removeprefix("Which animal is c")
    assert shot_text == f"Which animal is c{number} yak?\nAnswer: yes{number}" and item.choices == [" cat", " dog", " fox"]


def test_an_item_is_never_its_own_shot_when_shots_come_from_the_evaluated_file(tmp_path):
    rows = [{"color": f"c{i}", "animal": "yak", "answer": f" a{i}"} for i in range(6)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    items, _ = load_items(config(path, {"k": 2, "path": str(path), "seed": 3}))
    prefixes = []
    for item in items:
        shots = item.prompt.split("\n\n")[:-1]
        own = f"Which animal is c{item.line - 1} yak?\nAnswer: a{item.line - 1}"
        assert len(shots) == 2 and own not in shots
        prefixes.append(tuple(shots))
    # k + 1 rows are drawn: the items that are not among the first k share those k shots.
    assert max(prefixes.count(p) for p in prefixes) >= len(items) - 2 and len(set(prefixes)) <= 3


def test_too_few_rows_and_bad_shot_rows_are_named(tmp_path, eval_file, shots_file):
    with pytest.raises(DataError, match=r"dev.jsonl: dataset.fewShot needs 11 rows for k=11, the file has 10"):
        load_items(config(eval_file, {"k": 11, "path": str(shots_file)}))
    small = write_jsonl(tmp_path / "small.jsonl", make_rows(3))
    with pytest.raises(DataError, match="needs 4 rows for k=3"):  # the evaluated file itself: k + 1
        load_items(config(small, {"k": 3, "path": str(small)}))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"color": "red", "animal": "cat"}])
    with pytest.raises(DataError) as error:
        check_eval_dataset(config(eval_file, {"k": 1, "path": str(bad)}))  # the check phase builds the shots
    assert str(error.value).startswith(f"{bad} line 1: reference field (dataset.referenceFields) 'answer' is missing")
    with pytest.raises(DataError, match="not found"):
        check_eval_dataset(config(eval_file, {"k": 1, "path": str(tmp_path / "nope.jsonl")}))

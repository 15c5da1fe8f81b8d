"""Multi-task mixtures: spec validation, the mixing rule, per-task splits and counts."""
from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from kubetune_api.training import DatasetSpec
from kubetune_trainer.data.splits import load_splits, mix, mixture_quotas
from kubetune_trainer.data.tokenization import tokenize_splits
from kubetune_api.errors import DataError
from kubetune_trainer.data.rows import check_dataset
from tinymodels import TEMPLATE, make_rows, write_jsonl


def task(name, path, **kw):
    return {"name": name, "path": str(path), "promptTemplate": TEMPLATE, "completionField": "answer", **kw}


@pytest.fixture
def task_files(tmp_path):
    """Three tasks of different sizes; the rows say which task they come from."""
    files = {}
    for name, n in (("big", 200), ("mid", 60), ("small", 20)):
        rows = [{**r, "answer": f" {name}{i}"} for i, r in enumerate(make_rows(n))]
        files[name] = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return files


def test_tasks_or_single_task_fields_not_both(task_files):
    with pytest.raises(ValidationError, match="dataset.tasks replaces the single-task fields; move dataset.path, dataset.promptTemplate"):
        DatasetSpec.model_validate({"path": "x", "promptTemplate": "t", "tasks": [task("a", task_files["big"])]})
    with pytest.raises(ValidationError, match="task names must be unique; repeated: a"):
        DatasetSpec.model_validate({"tasks": [task("a", task_files["big"]), task("a", task_files["mid"])]})
    with pytest.raises(ValidationError, match=r"dataset.tasks\[a\]: set exactly one of completionField and completionTemplate"):
        DatasetSpec.model_validate({"tasks": [task("a", task_files["big"], completionTemplate="{{ animal }}")]})
    with pytest.raises(ValidationError, match="mixtureSize applies to dataset.tasks only"):
        DatasetSpec.model_validate({"path": "x", "promptTemplate": "t", "completionField": "a", "mixtureSize": 5})
    with pytest.raises(ValidationError, match="dataset needs path and promptTemplate"):
        DatasetSpec.model_validate({"completionField": "a"})
    with pytest.raises(ValidationError, match="weight"):
        DatasetSpec.model_validate({"tasks": [task("a", task_files["big"], weight=0)]})
    # Ratios and maxLength stay shared settings next to tasks.
    spec = DatasetSpec.model_validate({"tasks": [task("a", task_files["big"])], "validationRatio": 0.2, "maxLength": 64})
    assert spec.tasks[0].weight == 1.0 and spec.path is None
    # The API server fills in the CRD's defaults (format auto, chatTemplate false): still a mixture.
    filled = DatasetSpec.model_validate({"tasks": [task("a", task_files["big"])], "format": "auto", "chatTemplate": False,
                                         "lengthPolicy": "truncate", "validationRatio": 0.1})
    assert filled.tasks[0].name == "a"


def test_quotas_follow_weights_and_sum_to_the_mixture_size():
    assert mixture_quotas({"a": 100, "b": 10}, {"a": 1, "b": 1}, None) == {"a": 55, "b": 55}
    assert mixture_quotas({"a": 100, "b": 10, "c": 5}, {"a": 1, "b": 2, "c": 1}, 1000) == {"a": 250, "b": 500, "c": 250}
    quotas = mixture_quotas({"a": 7, "b": 7, "c": 7}, {"a": 1, "b": 1, "c": 1}, 10)
    assert sum(quotas.values()) == 10 and sorted(quotas.values()) == [3, 3, 4]


def test_mix_samples_without_replacement_and_upsamples_small_pools():
    pools = {"a": [("a", i) for i in range(200)], "b": [("b", i) for i in range(50)], "c": [("c", i) for i in range(30)]}
    mixed = mix(pools, {"a": 1, "b": 2, "c": 1}, 1000, seed=3)
    assert Counter(t for t, _ in mixed) == {"a": 250, "b": 500, "c": 250}
    per_item = Counter(mixed)
    assert {per_item[x] for x in pools["b"]} == {10}  # 500 = 10 x 50: each repeated exactly
    assert {per_item[x] for x in pools["a"]} <= {1, 2}  # 250 from 200: all once, 50 twice
    assert mixed == mix(pools, {"a": 1, "b": 2, "c": 1}, 1000, seed=3) and mixed != mix(pools, {"a": 1, "b": 2, "c": 1}, 1000, seed=4)
    # Downsampling: distinct examples only.
    small = mix(pools, {"a": 1, "b": 1, "c": 1}, 30, seed=0)
    assert len(set(small)) == 30


def test_mixture_splits_per_task_proportions_and_counts(task_files, tiny_tokenizer):
    spec = DatasetSpec.model_validate({
        "tasks": [task("big", task_files["big"], weight=1), task("mid", task_files["mid"], weight=2),
                  task("small", task_files["small"], weight=1, maxExamples=10)],
        "mixtureSize": 400, "validationRatio": 0.1, "testRatio": 0.1,
    })
    splits = load_splits(spec, seed=5)
    share = Counter(e.task for e in splits["train"])
    assert sum(share.values()) == 400
    for name, weight in (("big", 1), ("mid", 2), ("small", 1)):
        assert abs(share[name] / 400 - weight / 4) <= 0.01, share
    # The cap: 'small' trains on at most 10 distinct rows.
    assert len({e.completion for e in splits["train"] if e.task == "small"}) == 10
    # Validation/test rows are each task's own, kept apart and never in training.
    assert Counter(e.task for e in splits["validation"]) == {"big": 20, "mid": 6, "small": 2}
    assert Counter(e.task for e in splits["test"]) == {"big": 20, "mid": 6, "small": 2}
    for e in splits["validation"] + splits["test"]:
        assert e.completion.strip().startswith(e.task)
    held_out = {e.completion for e in splits["validation"] + splits["test"]}
    assert not held_out & {e.completion for e in splits["train"]}
    assert load_splits(spec, seed=5) == splits

    data = tokenize_splits(splits, tiny_tokenizer, 64)
    counts = data.counts()
    assert data.tasks() == ["big", "mid", "small"]
    assert counts["train"] == 400 and set(counts["tasks"]) == {"big", "mid", "small"}
    assert counts["tasks"]["mid"]["validation"] == 6 and counts["tasks"]["mid"]["train"] == share["mid"]
    assert {name: len(items) for name, items in data.by_task("test").items()} == {"big": 20, "mid": 6, "small": 2}


def test_mixture_default_size_and_explicit_task_split_files(task_files, tmp_path):
    val = write_jsonl(tmp_path / "mid_val.jsonl", [{**r, "answer": " midval"} for r in make_rows(4)])
    spec = DatasetSpec.model_validate({
        "tasks": [task("big", task_files["big"]), task("mid", task_files["mid"], validationPath=str(val))],
        "validationRatio": 0.1, "testRatio": 0.1,
    })
    splits = load_splits(spec, seed=1)
    # Pools: big 160, mid 54 (no validation cut from its file): default size 214, equal weights.
    assert len(splits["train"]) == 214 and Counter(e.task for e in splits["train"]) == {"big": 107, "mid": 107}
    assert [e.completion for e in splits["validation"] if e.task == "mid"] == [" midval"] * 4
    assert Counter(e.task for e in splits["test"]) == {"big": 20, "mid": 6}


def test_check_dataset_covers_each_task_and_its_files(task_files, tmp_path):
    rows = make_rows(8)
    del rows[5]["animal"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    good = {"tasks": [task("big", task_files["big"])]}
    assert check_dataset(DatasetSpec.model_validate(good)) == 200
    with pytest.raises(DataError, match=r"bad\.jsonl line 6: field 'animal' used by dataset\.tasks\[two\]\.promptTemplate is missing"):
        check_dataset(DatasetSpec.model_validate({"tasks": [task("big", task_files["big"]), task("two", bad)]}))
    with pytest.raises(DataError, match=r"bad\.jsonl line 6: field 'animal' used by dataset\.tasks\[big\]\.promptTemplate"):
        check_dataset(DatasetSpec.model_validate({"tasks": [task("big", task_files["big"], testPath=str(bad))]}))
    tiny = write_jsonl(tmp_path / "tiny.jsonl", make_rows(2))
    with pytest.raises(DataError, match=r"tiny\.jsonl: 2 rows are too few"):
        check_dataset(DatasetSpec.model_validate({"tasks": [task("big", task_files["big"]), task("tiny", tiny)]}))


def test_operator_hands_the_trainer_the_whole_mixture(task_files):
    from kubetune_operator import preflight

    spec = {"model": {"path": "/models/base"}, "output": {"path": "runs/out"},
            "dataset": {"tasks": [task("big", task_files["big"]), task("two", "/data/two.jsonl")]}}
    # The operator hands the trainer its config (every field, defaults included): still a mixture.
    assert [t.name for t in preflight.validate("demo", spec).training_config().dataset.tasks] == ["big", "two"]


def test_per_task_and_retention_metrics_reach_the_report():
    from kubetune_api.reports import Metrics, PodReport, TaskMetrics
    from kubetune_trainer.reporting.status_reporter import StatusReporter

    metrics = Metrics(validation_loss=1.0, tasks={"qa": TaskMetrics(validation_loss=1.234567, test_accuracy=0.5)},
                      retention_loss_before=2.0, retention_loss_after=2.5, retention_loss_change=0.5)
    reporter = StatusReporter()
    reporter.report(PodReport(metrics=metrics))
    patch = reporter.state["metrics"]
    assert patch["tasks"] == {"qa": {"validationLoss": 1.2346, "testAccuracy": 0.5}}
    assert (patch["retentionLossBefore"], patch["retentionLossAfter"], patch["retentionLossChange"]) == (2.0, 2.5, 0.5)

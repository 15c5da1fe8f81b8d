"""kubetune-eval on a two-task suite (few-shot generation + multiple-choice) with two tiny models:
per-task predictions, scores.json, report.md, and the status with both tasks and the aggregate."""
from __future__ import annotations

import json

import pytest
import yaml

from kubetune_trainer.evaluation import cli
from tinymodels import TEMPLATE, make_rows, write_jsonl

from test_eval_cli import api  # noqa: F401 - the fake Kubernetes API fixture


@pytest.fixture
def suite_config(tmp_path, tiny_model_dir, other_tiny_model_dir, eval_file):
    dev = write_jsonl(tmp_path / "dev.jsonl", make_rows(8))  # the split the shots come from
    config = {
        "models": [{"name": "base", "path": str(tiny_model_dir)}, {"name": "other", "path": str(other_tiny_model_dir)}],
        "tasks": [
            {"name": "qa", "metrics": ["exact_match", "token_f1"], "generation": {"maxNewTokens": 3, "stop": ["\n"]},
             "dataset": {"path": str(eval_file), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 6,
                         "fewShot": {"k": 2, "path": str(dev), "seed": 5}}},
            {"name": "mc", "task": "multiple-choice", "metrics": ["accuracy"],
             "dataset": {"path": str(eval_file), "promptTemplate": TEMPLATE, "choicesField": "choices", "answerField": "label"}},
        ],
        "generation": {"batchSize": 4},
        "samples": 1,
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_task_few_shot_suite_reports_each_task_and_the_aggregate(suite_config, tmp_path, api):  # noqa: F811
    assert cli.main(["--config", str(suite_config)]) == 0
    out = tmp_path / "out"

    qa_predictions = [json.loads(line) for line in (out / "predictions-qa-base.jsonl").read_text().splitlines()]
    assert len(qa_predictions) == 6 and qa_predictions[0]["prompt"].count("\n\n") == 2  # two shots before each prompt
    assert qa_predictions[0]["prompt"].endswith("\n\nWhich animal is red cat?\nAnswer:")
    assert {p.name for p in out.glob("predictions-*.jsonl")} == {
        f"predictions-{task}-{model}.jsonl" for task in ("qa", "mc") for model in ("base", "other")}

    scores = json.loads((out / "scores.json").read_text())
    assert [(t["name"], t["task"], t["counts"]["examples"]) for t in scores["tasks"]] == [
        ("qa", "generation", 6), ("mc", "multiple-choice", 12)]
    assert [m["model"] for m in scores["tasks"][1]["models"]] == ["base", "other"]

    status = api.reports()[-1]
    suite = {t["name"]: t for t in status["suite"]}
    assert set(suite) == {"qa", "mc"} and suite["mc"]["task"] == "multiple-choice" and suite["qa"]["examples"] == 6
    base_qa, other_qa = suite["qa"]["results"]
    base_mc, other_mc = suite["mc"]["results"]
    base, other = status["results"]  # the aggregate: one row per model
    assert (base["model"], other["model"]) == ("base", "other") and base["examples"] == 18
    assert set(base["scores"]) == {"qa/exactMatch", "qa/tokenF1", "mc/accuracy", "mc/accuracyNorm", "mean"}
    assert base["scores"]["mc/accuracy"] == base_mc["scores"]["accuracy"]
    # mean: each task's primary score (its first metric's first score), averaged over the tasks.
    assert base["scores"]["mean"] == pytest.approx((base_qa["scores"]["exactMatch"] + base_mc["scores"]["accuracy"]) / 2, abs=1e-4)
    assert other["delta"]["mean"] == pytest.approx(other["scores"]["mean"] - base["scores"]["mean"], abs=2e-4)
    assert other_qa["delta"]["exactMatch"] == pytest.approx(other_qa["scores"]["exactMatch"] - base_qa["scores"]["exactMatch"], abs=2e-4)
    assert other_mc["predictionsPath"] == str(out / "predictions-mc-other.jsonl")
    assert [(s["task"], s["model"]) for s in status["samples"]] == [("qa", "base"), ("qa", "other"), ("mc", "base"), ("mc", "other")]
    assert status["progress"]["done"] == status["progress"]["total"] == 36
    assert status["artifacts"]["reportPath"] == str(out / "report.md")

    report = (out / "report.md").read_text()
    assert "| model | qa/exactMatch | qa/tokenF1 | mc/accuracy | mc/accuracyNorm | mean |" in report
    assert f"| other | {other['scores']['qa/exactMatch']:.4f} |" in report and "## Delta against base" in report

    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["message"].startswith("evaluated 2 model(s) on 2 tasks (18 examples): base mean ")
    assert [t["name"] for t in message["suite"]] == ["qa", "mc"] and set(message["results"][1]["scores"]) == set(other["scores"])


def test_check_only_checks_every_task_and_its_few_shot_file(suite_config, tmp_path, monkeypatch, capsys):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(log))
    assert cli.main(["--config", str(suite_config), "--check-only"]) == 0
    assert capsys.readouterr().out.startswith("check passed: 18 dataset rows")  # 6 + 12 evaluated
    write_jsonl(tmp_path / "dev.jsonl", [{"color": "red", "animal": "cat"}] * 3)  # shots without an answer
    assert cli.main(["--config", str(suite_config), "--check-only"]) == 3
    failure = json.loads(log.read_text())
    assert failure["reason"] == "InvalidDataset" and "dev.jsonl line" in failure["error"] and "'answer' is missing" in failure["error"]


def test_termination_message_of_a_large_suite_drops_the_per_task_table_first(tmp_path):
    from kubetune_api.reports import EvalPodReport, ModelResult, SuiteTaskResult
    from kubetune_trainer.evaluation.runner import _termination_report
    from kubetune_trainer.reporting.status_reporter import MAX_TERMINATION_BYTES, StatusReporter

    scores = {f"metric{i}": 0.123456789 for i in range(4)}
    models = [ModelResult(model=f"m{i}", scores=scores, delta=scores) for i in range(3)]
    suite = [SuiteTaskResult(name=f"t{i}", task="generation", examples=10, results=models) for i in range(32)]
    aggregate = [ModelResult(model=f"m{i}", scores={f"t{t}/metric0": 0.5 for t in range(8)}) for i in range(3)]
    report = _termination_report(EvalPodReport(results=aggregate, suite=suite), "done")
    assert report.suite is None and len(report.results) == 3  # the aggregate fits on its own
    StatusReporter(termination_log=str(tmp_path / "log")).finish(report, "done")
    assert len((tmp_path / "log").read_bytes()) <= MAX_TERMINATION_BYTES

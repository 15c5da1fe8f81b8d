"""kubetune-eval end to end on the tiny model with and without an adapter; exit codes and messages."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from kubetune_trainer.evaluation import cli, runner
from kubetune_trainer.reporting.status_reporter import StatusReporter
from report_lines import ReportLines
from tinymodels import TEMPLATE


def write_config(tmp_path: Path, models: list[dict], data: Path, **overrides) -> Path:
    config = {
        "models": models,
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
        "metrics": ["rouge", "bleu", "exact_match", "token_f1"],
        "generation": {"maxNewTokens": 4, "batchSize": 5, "stop": ["\n"]},
        "samples": 2,
        "output": {"path": str(tmp_path / "out")},
        **overrides,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def api(tmp_path, monkeypatch) -> ReportLines:
    """A reporter as in an evaluator pod: report lines in its log, the summary in its termination message."""
    log = ReportLines()
    monkeypatch.setattr(StatusReporter, "from_env", classmethod(
        lambda cls: cls(str(tmp_path / "termination-log"), log, min_interval=0)))
    return log


def test_cli_compares_base_and_adapter(tiny_model_dir, tiny_adapter, eval_file, tmp_path, api, capsys):
    models = [{"name": "base", "path": str(tiny_model_dir)},
              {"name": "tuned", "path": str(tiny_model_dir), "adapter": str(tiny_adapter)}]
    assert cli.main(["--config", str(write_config(tmp_path, models, eval_file))]) == 0
    out = tmp_path / "out"
    assert capsys.readouterr().out.strip() == str(out / "scores.json")

    scores = json.loads((out / "scores.json").read_text())
    base, tuned = scores["models"]
    assert scores["counts"] == {"rows": 12, "examples": 12, "models": 2}
    assert {"rouge1", "rouge2Recall", "rougeLsumPrecision", "bleu", "exactMatch", "tokenF1"} <= set(base["scores"])
    assert base["delta"] == {} and tuned["delta"]["bleu"] == pytest.approx(tuned["scores"]["bleu"] - base["scores"]["bleu"])
    assert scores["signatures"]["bleu"].startswith("nrefs:1|") and scores["signatures"]["rouge"].startswith("rouge-score|")
    assert scores["config"]["models"][1]["adapter"] == str(tiny_adapter) and base["evaluateSeconds"] > 0
    # Each delta that is a mean over rows has its paired-bootstrap interval around it; BLEU has none.
    assert "deltaInterval" not in base and tuned["deltaLevel"] == 0.95
    assert set(tuned["deltaInterval"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "exactMatch", "tokenF1"}
    for metric, (low, high) in tuned["deltaInterval"].items():
        assert low <= tuned["delta"][metric] <= high, metric

    predictions = [[json.loads(line) for line in (out / f"predictions-{m}.jsonl").read_text().splitlines()]
                   for m in ("base", "tuned")]
    assert [len(p) for p in predictions] == [12, 12]
    assert set(predictions[0][0]) == {"line", "prompt", "prediction", "references"}
    assert predictions[0][0]["references"] == [" cat"]
    assert [p["prediction"] for p in predictions[0]] != [p["prediction"] for p in predictions[1]]  # the adapter matters

    statuses = api.reports()  # each line holds everything reported so far
    assert statuses[-1]["progress"] == {"model": "tuned", "done": 24, "total": 24, "percent": 100.0}
    assert [r["model"] for r in statuses[-1]["results"]] == ["base", "tuned"]
    shown = statuses[-1]["results"][1]
    assert shown["deltaLow"] == {k: v[0] for k, v in tuned["deltaInterval"].items()} and shown["deltaLevel"] == 0.95
    assert "rouge1Precision" not in statuses[-1]["results"][0]["scores"]  # detail stays in scores.json
    assert [s["model"] for s in statuses[-1]["samples"]] == ["base", "base", "tuned", "tuned"]
    assert any(s.get("progress", {}).get("done") == 5 for s in statuses)  # progress after the first batch

    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["message"].startswith("evaluated 2 model(s) on 12 examples: base rouge1")
    assert message["artifacts"]["scoresPath"] == str(out / "scores.json") and "samples" not in message


def test_cli_multiple_choice_and_perplexity(tiny_model_dir, eval_file, tmp_path):
    models = [{"name": "base", "path": str(tiny_model_dir)}]
    dataset = {"path": str(eval_file), "promptTemplate": TEMPLATE, "choicesField": "choices", "answerField": "label"}
    config = write_config(tmp_path, models, eval_file, task="multiple-choice", metrics=["accuracy"], dataset=dataset)
    assert cli.main(["--config", str(config)]) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["models"][0]["scores"]
    assert set(scores) == {"accuracy", "accuracyNorm"}

    dataset = {"path": str(eval_file), "promptTemplate": TEMPLATE, "textField": "answer"}
    config = write_config(tmp_path, models, eval_file, task="perplexity", metrics=["perplexity"], dataset=dataset)
    assert cli.main(["--config", str(config), "--output", str(tmp_path / "ppl")]) == 0
    assert json.loads((tmp_path / "ppl" / "scores.json").read_text())["models"][0]["scores"]["perplexity"] > 1


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if the evaluator loads a model: bad input must be refused before that."""
    def refuse(spec, *_):
        raise AssertionError(f"model {spec.name} loaded")

    monkeypatch.setattr(runner, "load_eval_model", refuse)


@pytest.mark.parametrize("overrides, code, reason, message", [
    ({"metrics": ["rouge", "no_such_metric_xyz"]}, 2, "UnknownMetric", "metric 'no_such_metric_xyz' is not built in"),
    ({"metrics": ["accuracy"]}, 2, "UnknownMetric", "metrics: 'accuracy' cannot score task generation"),
    ({"dataset": {"promptTemplate": TEMPLATE, "referenceFields": ["summary"]}}, 3, "InvalidDataset",
     "line 1: reference field (dataset.referenceFields) 'summary' is missing"),
    ({"models": [{"name": "m", "path": "/nonexistent/model"}]}, 2, "InvalidModel", "models[m].path '/nonexistent/model'"),
    ({"models": [{"name": "m", "path": "MODEL", "adapter": "/nonexistent"}]}, 2, "InvalidModel", "models[m].adapter '/nonexistent'"),
    ({"models": [{"name": "Bad Name", "path": "MODEL"}]}, 2, "InvalidConfig", "models.0.name"),
    ({"task": "multiple-choice"}, 2, "InvalidConfig", "dataset.choicesField is required for task multiple-choice"),
])
def test_cli_bad_input_exits_with_a_named_reason_before_any_model_loads(
        tiny_model_dir, eval_file, tmp_path, monkeypatch, no_model_loads, overrides, code, reason, message):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(log))
    for model in overrides.get("models", []):
        model["path"] = model["path"].replace("MODEL", str(tiny_model_dir))
    if "dataset" in overrides:
        overrides["dataset"]["path"] = str(eval_file)
    models = overrides.pop("models", [{"name": "m", "path": str(tiny_model_dir)}])
    started = time.monotonic()
    assert cli.main(["--config", str(write_config(tmp_path, models, eval_file, **overrides))]) == code
    assert time.monotonic() - started < 60  # an offline Hub metric fails at once, without retries
    failure = json.loads(log.read_text())
    assert message in failure["error"] and failure["reason"] == reason, failure
    if "no_such_metric" in message:  # not on the allowlist: the evaluate package is never asked
        assert "is not allowed here" in failure["error"]
    assert not (tmp_path / "out").exists()


def test_output_outside_the_writable_roots_is_refused_and_nothing_is_written(
        tiny_model_dir, eval_file, tmp_path, monkeypatch, no_model_loads):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(log))
    monkeypatch.setenv("KUBETUNE_WRITABLE_ROOTS", str(tmp_path / "volume"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the working directory is writable too: not this test's point
    outside = tmp_path / "elsewhere" / "out"
    config = write_config(tmp_path, [{"name": "m", "path": str(tiny_model_dir)}], eval_file,
                          output={"path": str(outside)})
    assert cli.main(["--config", str(config)]) == 2
    failure = json.loads(log.read_text())
    assert failure["reason"] == "InvalidConfig" and f"output.path '{outside}'" in failure["error"], failure
    assert not (tmp_path / "elsewhere").exists()


def test_output_inside_a_writable_root_and_check_only(tiny_model_dir, eval_file, tmp_path, monkeypatch,
                                                      no_model_loads, capsys):
    monkeypatch.setenv("KUBETUNE_WRITABLE_ROOTS", str(tmp_path / "volume"))
    config = write_config(tmp_path, [{"name": "m", "path": str(tiny_model_dir)}], eval_file,
                          output={"path": str(tmp_path / "volume" / "out")})
    assert cli.main(["--config", str(config), "--check-only"]) == 0
    assert capsys.readouterr().out.startswith("check passed: 12 dataset rows")
    assert not (tmp_path / "volume").exists()  # the check creates nothing


def test_termination_message_fits_with_many_models(tmp_path):
    from kubetune_trainer.evaluation.runner import _termination_report
    from kubetune_api.reports import EvalPodReport, ModelResult
    from kubetune_trainer.reporting.status_reporter import MAX_TERMINATION_BYTES

    scores = {f"metric{i}": 0.123456789 for i in range(30)}
    report = EvalPodReport(results=[ModelResult(model=f"model-{i}", scores=scores, delta=scores) for i in range(16)])
    reporter = StatusReporter(termination_log=str(tmp_path / "log"))
    reporter.finish(_termination_report(report, "x" * 5000), "x" * 5000)
    text = (tmp_path / "log").read_text()
    assert len(text.encode()) <= MAX_TERMINATION_BYTES
    assert 1 <= len(json.loads(text)["results"]) < 16

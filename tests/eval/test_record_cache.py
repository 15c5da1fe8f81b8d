"""Reused predictions: a second evaluation of the same model on the same rows and decoding takes
the first one's records (scored again with its own metrics); anything that changes them misses."""
from __future__ import annotations

import json

import pytest
import yaml

from kubetune_trainer.evaluation import cli, runner
from tinymodels import write_jsonl

TEMPLATE = "Which animal is {{ color }} {{ animal }}?\nAnswer:"


@pytest.fixture
def shared_cache(tmp_path, monkeypatch):
    """The runtime's model cache, shared by the evaluations of a test."""
    directory = tmp_path / "model-cache"
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(directory))
    return directory / "kubetune-eval-records"


def _evaluate(tmp_path, model_dir, data, run, **overrides) -> dict:
    config = {"models": [{"name": "base", "path": str(model_dir)}],
              "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
              "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3, "stop": ["\n"]},
              "output": {"path": str(tmp_path / run)}, **overrides}
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["--config", str(path)]) == 0
    return json.loads((tmp_path / run / "scores.json").read_text())["models"][0]


def _predictions(tmp_path, run):
    return (tmp_path / run / "predictions-base.jsonl").read_text()


def _no_model_loads(monkeypatch):
    def refuse(spec, *_):
        raise AssertionError(f"{spec.name} was loaded although its records are cached")
    monkeypatch.setattr(runner, "load_eval_model", refuse)


def test_a_second_evaluation_reuses_the_records_without_loading_the_model(tiny_model_dir, eval_file, tmp_path,
                                                                         shared_cache, monkeypatch):
    first = _evaluate(tmp_path, tiny_model_dir, eval_file, "first")
    assert first["cached"] is False and len(list(shared_cache.iterdir())) == 1
    _no_model_loads(monkeypatch)
    again = _evaluate(tmp_path, tiny_model_dir, eval_file, "again", metrics=["exact_match", "token_f1"])
    assert again["cached"] is True and again["loadSeconds"] < 0.5
    assert again["scores"]["exactMatch"] == first["scores"]["exactMatch"] and "tokenF1" in again["scores"]  # scored anew
    assert _predictions(tmp_path, "again") == _predictions(tmp_path, "first")


@pytest.mark.parametrize("change", ["decoding", "data", "template", "off"])
def test_what_changes_the_records_misses(tiny_model_dir, eval_rows, tmp_path, shared_cache, change):
    data = write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    _evaluate(tmp_path, tiny_model_dir, data, "first")
    overrides = {}
    if change == "decoding":
        overrides["generation"] = {"maxNewTokens": 2, "stop": ["\n"]}
    elif change == "data":
        write_jsonl(data, eval_rows[:-1] + [{**eval_rows[-1], "color": "pink"}])  # same path, other bytes
    elif change == "template":
        overrides["dataset"] = {"path": str(data), "promptTemplate": "Q: " + TEMPLATE, "referenceFields": ["answer"]}
    else:
        overrides["reusePredictions"] = False
    assert _evaluate(tmp_path, tiny_model_dir, data, "second", **overrides)["cached"] is False


@pytest.mark.parametrize("tamper", [
    lambda cached: "{not json",
    lambda cached: json.dumps({**cached, "records": cached["records"][:-1]}),
    lambda cached: json.dumps({**cached, "records": [{**r, "line": r["line"] + 1} for r in cached["records"]]}),
    lambda cached: json.dumps({**cached, "records": [{**r, "prediction": 7} for r in cached["records"]]}),
    lambda cached: json.dumps({**cached, "truncatedPrompts": "many"}),
], ids=["garbage", "a-row-short", "other-lines", "wrong-type", "bad-count"])
def test_a_cache_entry_that_does_not_fit_is_evaluated_again(tiny_model_dir, eval_file, tmp_path, shared_cache, tamper):
    first = _evaluate(tmp_path, tiny_model_dir, eval_file, "first")
    (entry,) = shared_cache.iterdir()
    entry.write_text(tamper(json.loads(entry.read_text())))
    again = _evaluate(tmp_path, tiny_model_dir, eval_file, "again")
    assert again["cached"] is False and again["scores"] == first["scores"]


def test_cached_records_take_the_rows_own_references(tiny_model_dir, eval_file, tmp_path, shared_cache):
    first = _evaluate(tmp_path, tiny_model_dir, eval_file, "first")
    (entry,) = shared_cache.iterdir()
    cached = json.loads(entry.read_text())
    for record in cached["records"]:
        record["references"] = [record["prediction"]]  # a forged cache that would score every row right
    entry.write_text(json.dumps(cached))
    again = _evaluate(tmp_path, tiny_model_dir, eval_file, "again")
    assert first["scores"]["exactMatch"] < 1.0
    assert again["cached"] is True and again["scores"]["exactMatch"] == first["scores"]["exactMatch"]

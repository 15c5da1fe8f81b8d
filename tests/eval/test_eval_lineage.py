"""An evaluation's lineage: data file, every model and adapter by digest, config hash, in scores.json
and in every report line."""
from __future__ import annotations

import hashlib
import json

from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation import cli
from kubetune_trainer.reporting.lineage import digest, evaluation_lineage
from kubetune_trainer.reporting.status_reporter import StatusReporter
from report_lines import ReportLines
from test_eval_cli import write_config


def test_scores_and_status_carry_the_lineage(tiny_model_dir, tiny_adapter, eval_file, tmp_path, monkeypatch):
    log = ReportLines()
    monkeypatch.setattr(StatusReporter, "from_env", classmethod(lambda cls: cls(None, log, min_interval=60)))
    models = [{"name": "base", "path": str(tiny_model_dir)},
              {"name": "tuned", "path": str(tiny_model_dir), "adapter": str(tiny_adapter)}]
    assert cli.main(["--config", str(write_config(tmp_path, models, eval_file, metrics=["exact_match"]))]) == 0

    lineage = json.loads((tmp_path / "out" / "scores.json").read_text())["lineage"]
    assert lineage["datasets"] == [{"role": "eval", "uri": str(eval_file), "rows": 12, "bytes": eval_file.stat().st_size,
                                    "sha256": hashlib.sha256(eval_file.read_bytes()).hexdigest()}]
    base, adapter = "sha256:" + digest(str(tiny_model_dir)).sha256, "sha256:" + digest(str(tiny_adapter)).sha256
    assert [(m["name"], m["role"], m["digest"]) for m in lineage["models"]] == [
        ("base", "base", base), ("tuned", "base", base), ("tuned", "adapter", adapter)]
    assert lineage["configHash"].startswith("sha256:") and lineage["versions"]["torch"]
    # The first report line carries it, past the reporter's rate limit, and every later line keeps it.
    reports = log.reports()
    assert reports[0] == {"lineage": lineage} and all(r["lineage"] == lineage for r in reports)


def test_a_suite_names_each_task_file_and_its_few_shot_file(tiny_model_dir, eval_file, tmp_path):
    shots = tmp_path / "shots.jsonl"
    shots.write_text(eval_file.read_text().splitlines()[0] + "\n")
    dataset = {"path": str(eval_file), "promptTemplate": "{{ color }}", "referenceFields": ["answer"]}
    config = EvalConfig.model_validate({
        "models": [{"name": "base", "path": str(tiny_model_dir)}],
        "tasks": [{"name": "plain", "dataset": dataset},
                  {"name": "shot", "dataset": {**dataset, "fewShot": {"k": 1, "path": str(shots)}}}],
        "output": {"path": str(tmp_path / "out")}})
    lineage = evaluation_lineage(config, {}, {"plain": 12, "shot": 12})
    assert [(d.role, d.uri, d.rows) for d in lineage.datasets] == [
        ("task:plain", str(eval_file), 12), ("task:shot", str(eval_file), 12), ("task:shot/few-shot", str(shots), 1)]
    assert lineage.datasets[2].sha256 == hashlib.sha256(shots.read_bytes()).hexdigest()

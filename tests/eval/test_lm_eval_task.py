"""Task lm-eval: the evaluator runs lm-evaluation-harness's own code on each model and reports the
very scores lm-eval's CLI reports on the same model, adapter and task data (the project's example
task, examples/lm-eval); bad task names, uncached data, `!function` YAML and template escapes fail
in the check phase, before any model loads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_api.errors import ConfigError, DataError
from kubetune_api.evaluation import EvalConfig

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "examples" / "lm-eval"
TASK = "kubetune_opposites"
LIMIT = 12
DATA = TASKS / TASK / "opposites.jsonl"


def config(tmp_path, models, **lm_eval) -> EvalConfig:
    return EvalConfig.model_validate({
        "models": models, "task": "lm-eval", "output": {"path": str(tmp_path / "out")},
        "lmEval": {"tasks": [TASK], "includePath": [str(TASKS)], "limit": LIMIT, **lm_eval}})


def cli_results(tmp_path, model_args: str, *extra: str) -> dict:
    """lm-eval's own CLI, as a user runs it, on the same model and task: its results JSON."""
    out = tmp_path / f"cli-{abs(hash(model_args))}"
    subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args", model_args, "--tasks", TASK,
                    "--include_path", str(TASKS), "--device", "cpu", "--limit", str(LIMIT), "--output_path", str(out), *extra],
                   check=True, cwd=ROOT, capture_output=True, text=True)
    (found,) = out.glob("**/results_*.json")
    return json.loads(found.read_text())["results"][TASK]


def test_scores_equal_lm_eval_cli(tiny_model_dir, tiny_adapter, tmp_path, monkeypatch):
    from kubetune_trainer.evaluation.runner import run
    from kubetune_trainer.status_reporter import StatusReporter

    monkeypatch.chdir(ROOT)  # the example's data_files are relative to the working directory, as for the CLI
    models = [{"name": "base", "path": str(tiny_model_dir)},
              {"name": "tuned", "path": str(tiny_model_dir), "adapter": str(tiny_adapter)}]
    scores = json.loads(run(config(tmp_path, models, numFewshot=2), StatusReporter()).read_text())
    base, tuned = scores["models"]
    fewshot = ("--num_fewshot", "2")
    expected_base = cli_results(tmp_path, f"pretrained={tiny_model_dir}", *fewshot)
    expected_tuned = cli_results(tmp_path, f"pretrained={tiny_model_dir},peft={tiny_adapter}", *fewshot)
    for entry, expected in ((base, expected_base), (tuned, expected_tuned)):
        assert entry["scores"] == {f"{TASK}/acc": expected["acc,none"], f"{TASK}/acc_norm": expected["acc_norm,none"]}
        assert entry["stderr"][f"{TASK}/acc"] == expected["acc_stderr,none"]
        assert entry["examples"] == LIMIT and entry["nShot"] == {TASK: 2}
    assert base["scores"] != tuned["scores"]  # the adapter changes the answers: the comparison is not vacuous
    assert tuned["delta"] == {k: tuned["scores"][k] - base["scores"][k] for k in base["scores"]}
    low, high = tuned["deltaInterval"][f"{TASK}/acc"]  # paired bootstrap over lm-eval's per-row values
    assert low <= tuned["delta"][f"{TASK}/acc"] <= high
    rows = [json.loads(line) for line in Path(tuned["predictionsPath"]).read_text().splitlines()]
    assert len(rows) == LIMIT and rows[0]["task"] == TASK


def write_task(directory: Path, name: str, **fields) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(DATA)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{word}}", "doc_to_choice": "{{choices}}",
            "doc_to_target": "answer", **fields}
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return path


def check(tmp_path, tasks, directory):
    from kubetune_trainer.evaluation.lm_eval_tasks import check_lm_eval

    spec = config(tmp_path, [{"name": "m", "path": "/m"}], tasks=tasks, includePath=[str(directory)]).lm_eval
    return check_lm_eval(spec)


def test_check_counts_rows_of_a_local_task(tmp_path):
    write_task(tmp_path / "tasks", "local_ok")
    assert check(tmp_path, ["local_ok"], tmp_path / "tasks") == LIMIT


def test_unknown_task_named(tmp_path):
    write_task(tmp_path / "tasks", "local_ok")
    with pytest.raises(ConfigError, match="'no_such_task' not in lm-eval's task registry"):
        check(tmp_path, ["local_ok", "no_such_task"], tmp_path / "tasks")


def test_registry_task_without_cached_data_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-hf-home" / "datasets"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-hf-home" / "datasets")
    write_task(tmp_path / "tasks", "local_ok")
    with pytest.raises(DataError, match=r"'arc_easy': cannot load its data \(allenai/ai2_arc/ARC-Easy\) offline"):
        check(tmp_path, ["arc_easy"], tmp_path / "tasks")


def test_function_tag_refused_naming_the_file(tmp_path):
    path = write_task(tmp_path / "tasks", "evil")
    (tmp_path / "tasks" / "utils.py").write_text("import os\ndef process(d):\n    os.system('touch /tmp/pwned')\n    return d\n")
    path.write_text(path.read_text()[:-1] + ', "process_docs": !function utils.process}')
    with pytest.raises(ConfigError, match=rf"{path}: '!function utils.process'.*refused"):
        check(tmp_path, ["evil"], tmp_path / "tasks")


def test_function_tag_in_an_included_file_refused(tmp_path):
    outside = write_task(tmp_path / "elsewhere", "base_task")
    outside.write_text(outside.read_text()[:-1] + ', "process_docs": !function utils.process}')
    write_task(tmp_path / "tasks", "child", include=str(outside))
    with pytest.raises(ConfigError, match=rf"{outside}: '!function"):
        check(tmp_path, ["child"], tmp_path / "tasks")


def test_template_escape_refused(tmp_path):
    write_task(tmp_path / "tasks", "escape", doc_to_text="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(DataError, match="unsafe"):
        check(tmp_path, ["escape"], tmp_path / "tasks")


def test_template_sandbox_renders_as_lm_eval_does():
    """The sandbox changes nothing for a plain template: lm-eval's own environment gives the same text."""
    import lm_eval.utils

    from kubetune_trainer.evaluation.lm_eval_tasks import _sandboxed_apply_template

    doc = {"word": "hot", "choices": ["cold", "warm"]}
    for template in ("Question: {{word}}?\nAnswer:", "{{choices}}", "{{ word | upper }} {{ choices[0] }}\n"):
        assert _sandboxed_apply_template(template, doc) == lm_eval.utils.env.from_string(template).render(**doc)

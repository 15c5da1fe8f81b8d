"""Task lm-eval: the evaluator runs lm-evaluation-harness's own code on each model and reports the
very scores lm-eval's CLI reports on the same model, adapter and task data (the project's example
task, examples/lm-eval); bad task names, uncached data, `!function` YAML, prompt files, outside includes, template escapes
and more scores than a result holds fail in the check phase, before any model loads; lm-eval reads
only the screened private copy of the task YAML, so a file swapped after the screen never reaches it."""
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
    from kubetune_trainer.reporting.status_reporter import StatusReporter

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
    """A relative include (here a non-.yaml template, lm-eval's own habit) is copied and screened too."""
    template = tmp_path / "tasks" / "_template_yaml"
    base = write_task(tmp_path / "tasks", "base_task")
    template.write_text(base.read_text()[:-1] + ', "process_docs": !function utils.process}')
    base.unlink()
    write_task(tmp_path / "tasks", "child", include="_template_yaml")
    with pytest.raises(ConfigError, match=rf"{template}: '!function"):
        check(tmp_path, ["child"], tmp_path / "tasks")


def test_relative_include_resolves_in_the_copy(tmp_path):
    base = write_task(tmp_path / "tasks" / "shared", "base_task")
    (tmp_path / "tasks" / "shared" / "_template_yaml").write_text(base.read_text().replace('"base_task"', '"unused"'))
    base.unlink()
    write_task(tmp_path / "tasks" / "sub", "child", include="../shared/_template_yaml")
    assert check(tmp_path, ["child"], tmp_path / "tasks") == LIMIT


@pytest.mark.parametrize("absolute", [True, False])
def test_include_outside_the_include_paths_refused(tmp_path, absolute):
    outside = write_task(tmp_path / "elsewhere", "base_task")  # plain data, but not screened at use: refused
    path = write_task(tmp_path / "tasks", "child", include=str(outside) if absolute else "../elsewhere/base_task.yaml")
    with pytest.raises(ConfigError, match=rf"{path}: include '.*base_task.yaml' is outside the include path.*refused"):
        check(tmp_path, ["child"], tmp_path / "tasks")


def swap_in_function(path: Path, marker: Path) -> None:
    """What another pod on the same volume could do after the screen: a `!function` whose module
    leaves `marker` when lm-eval imports it."""
    (path.parent / "utils.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\ndef process(d):\n    return d\n")
    path.write_text(path.read_text()[:-1] + ', "process_docs": !function utils.process}')


def test_check_phase_reads_the_screened_copy(tmp_path):
    from kubetune_trainer.evaluation.lm_eval_tasks import load_tasks, task_manager

    path, marker = write_task(tmp_path / "tasks", "swapped"), tmp_path / "imported"
    spec = config(tmp_path, [{"name": "m", "path": "/m"}], tasks=["swapped"], includePath=[str(tmp_path / "tasks")]).lm_eval
    manager = task_manager(spec)  # screened
    swap_in_function(path, marker)
    loaded = load_tasks(spec, manager)["swapped"]
    assert len(loaded["tasks"]["swapped"].eval_docs) == len(DATA.read_text().splitlines()) and not marker.exists()
    with pytest.raises(ConfigError, match=rf"{path}: '!function"):  # a fresh screen sees the swap
        task_manager(spec)


def test_run_reads_the_screened_copy(tiny_model_dir, tmp_path):
    """The run screens once, before the first model loads; a swap after that reaches no model's evaluation."""
    from kubetune_trainer.evaluation.lm_eval_run import LmEvalEvaluation
    from kubetune_trainer.reporting.status_reporter import StatusReporter

    path, marker = write_task(tmp_path / "tasks", "swapped"), tmp_path / "imported"
    models = [{"name": "a", "path": str(tiny_model_dir)}, {"name": "b", "path": str(tiny_model_dir)}]
    evaluation = LmEvalEvaluation(config(tmp_path, models, tasks=["swapped"], includePath=[str(tmp_path / "tasks")], limit=2),
                                  StatusReporter(), tmp_path / "out", 2)
    (tmp_path / "out").mkdir()  # as the runner does before the first model
    evaluation.run_model(evaluation.config.models[0])
    swap_in_function(path, marker)
    evaluation.run_model(evaluation.config.models[1])
    assert [r.examples for r in evaluation.runs[0].results] == [2, 2] and not marker.exists()


@pytest.mark.parametrize("where", ["task", "group"])
def test_prompt_file_refused(tmp_path, where):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "prompts.yaml").write_text("prompts: {p: {doc_to_text: '{{word}}', doc_to_target: '{{answer}}'}}")
    path = write_task(tmp_path / "tasks", "prompted", **({"use_prompt": "prompts.yaml:p"} if where == "task" else {}))
    name = "prompted"
    if where == "group":  # an inline task of a group's list is screened as a task is
        path = tmp_path / "tasks" / "group.yaml"
        path.write_text(json.dumps({"group": "grouped", "task": [{"task": "prompted", "use_prompt": "/etc/x.yaml:p"}]}))
        name = "grouped"
    with pytest.raises(ConfigError, match=rf"{path}: use_prompt '.*' is not a name of lm-eval's prompt registry"):
        check(tmp_path, [name], tmp_path / "tasks")


def test_registry_prompt_allowed(tmp_path):
    """Past the screen: lm-eval's registry prompt renders (and wants a 'question' these rows lack)."""
    write_task(tmp_path / "tasks", "prompted", use_prompt="qa-basic:q-newline-a")
    with pytest.raises(DataError, match="'question' is undefined"):
        check(tmp_path, ["prompted"], tmp_path / "tasks")


def write_group(directory: Path, name: str, size: int) -> list[str]:
    members = [write_task(directory, f"{name}_{n}").stem for n in range(size)]
    (directory / f"{name}.yaml").write_text(json.dumps({
        "group": name, "task": members, "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean"}]}))
    return members


def test_too_many_scores_refused_before_any_model_loads(tmp_path, monkeypatch):
    from kubetune_trainer.evaluation import lm_eval_tasks

    write_group(tmp_path / "tasks", "many", 3)  # 3 tasks x (acc, acc_norm) + the group's acc: 7 scores
    monkeypatch.setattr(lm_eval_tasks, "MAX_SCORES", 7)
    assert check(tmp_path, ["many"], tmp_path / "tasks") == 3 * LIMIT
    monkeypatch.setattr(lm_eval_tasks, "MAX_SCORES", 6)
    with pytest.raises(ConfigError, match=r"lmEval.tasks: many would report 7 scores per model \(3 tasks and 1 groups.*more than the 6"):
        check(tmp_path, ["many"], tmp_path / "tasks")


def test_counted_scores_are_the_reported_ones(tiny_model_dir, tmp_path):
    from kubetune_trainer.evaluation.lm_eval_tasks import load_tasks, score_keys
    from kubetune_trainer.evaluation.runner import run
    from kubetune_trainer.reporting.status_reporter import StatusReporter

    write_group(tmp_path / "tasks", "many", 3)
    evaluation = config(tmp_path, [{"name": "m", "path": str(tiny_model_dir)}], tasks=["many", TASK],
                        includePath=[str(tmp_path / "tasks"), str(TASKS)], limit=2)
    counted = set().union(*(score_keys(loaded) for loaded in load_tasks(evaluation.lm_eval).values()))
    (entry,) = json.loads(run(evaluation, StatusReporter()).read_text())["models"]
    assert counted == set(entry["scores"]) and len(counted) == 9


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

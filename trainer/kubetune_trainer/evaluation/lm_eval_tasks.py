"""Task lm-eval, check phase: lm-evaluation-harness's tasks resolved, their YAML screened, their
data loaded offline and the scores they would report counted, before any model loads (spec.lmEval;
kubetune_trainer.evaluation.lm_eval_run runs them).

Task YAML in lmEval.includePath is the tenant's data, not code: lm-eval reads only a private,
screened copy of it (kubetune_trainer.evaluation.lm_eval_screen: no `!function`, hf_evaluate,
unregistered metric, prompt file or `include:` outside the include paths); doc_to_text,
doc_to_target and doc_to_choice render in the project's Jinja sandbox
(kubetune_trainer.data.templates: immutable sandbox, strict undefined, bounded output and time)
instead of lm-eval's plain Environment (`sandbox_lm_eval_templates`).
Data comes from local files (dataset_path: json with data_files) or the Hugging Face cache:
HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set, so a registry task whose data is not cached fails
here naming the task and the dataset it needs. A model's result holds at most MAX_SCORES scores:
tasks and groups that would report more (every subtask and group of a big group such as bigbench)
are refused here, not after the first model. Light at import: lm_eval is imported when used.
"""
from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

from kubetune_api.base import MAX_SCORES
from kubetune_api.errors import ConfigError, DataError
from kubetune_api.lm_eval import LmEvalSpec
from kubetune_trainer.evaluation.lm_eval_screen import screened_copy

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def score_key(task: str, metric: str, filter_name: str) -> str:
    """'<task>/<metric>' ('.<filter>' added unless lm-eval's filter is none), key-safe."""
    return _UNSAFE.sub("_", f"{task}/{metric}" + ("" if filter_name == "none" else f".{filter_name}"))


def go_offline() -> None:
    """Hub and datasets from the local cache only (as the evaluator's other sources, once fetched)."""
    from kubetune_trainer.sources import stay_offline

    stay_offline()
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets.config
    except ImportError:
        return
    datasets.config.HF_HUB_OFFLINE = True
    if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
        datasets.config.HF_DATASETS_OFFLINE = True


def include_directories(spec: LmEvalSpec) -> list[Path]:
    """The include paths, resolved (relative ones against the working directory), each a directory."""
    found = []
    for path in spec.include_path:
        directory = Path(path).resolve()
        if not directory.is_dir():
            raise ConfigError(f"lmEval.includePath {path!r}: {directory} is not a directory")
        found.append(directory)
    return found


@functools.lru_cache(maxsize=512)
def _compiled(source: str):
    from kubetune_trainer.data.templates import compile_template

    return compile_template(source, "lm-eval task template")


def _sandboxed_apply_template(template: str, doc: dict) -> str:
    from kubetune_trainer.data.templates import render_prompt

    return render_prompt(_compiled(template), doc, "lm-eval task document", "lm-eval task template")


def sandbox_lm_eval_templates() -> None:
    """lm-eval renders its task templates (utils.apply_template) in the project's sandbox from now on."""
    import lm_eval.utils

    lm_eval.utils.apply_template = _sandboxed_apply_template


def task_manager(spec: LmEvalSpec):
    """lm-eval's TaskManager over its registry and the screened private copy of the include paths
    (lm_eval_screen); unknown names refused."""
    from lm_eval.tasks import TaskManager

    directories = include_directories(spec)
    copy = screened_copy(directories)  # lm-eval reads the screened copy only, never the volume again
    manager = TaskManager(include_path=[str(root) for root in copy.roots] if copy else None)
    manager.kubetune_screened_copy = copy  # the copy stays on disk while the manager may read it
    unknown = [name for name in spec.tasks if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lmEval.tasks: {', '.join(map(repr, unknown))} not in lm-eval's task registry"
                          + (" or the task YAML of lmEval.includePath" if directories else " (lmEval.includePath adds task YAML)"))
    return manager


def _dataset_of(manager, name: str) -> str:
    """The dataset a task (or a group's first task) reads, for messages."""
    entry = manager.task_index.get(name)
    config = getattr(entry, "cfg", None) or {}
    path = config.get("dataset_path")
    if path:
        return f"{path}{'/' + config['dataset_name'] if config.get('dataset_name') else ''}"
    return "its subtasks' datasets"


def load_tasks(spec: LmEvalSpec, manager=None) -> dict:
    """{name: lm-eval's loaded task dict} (the data read, offline); DataError naming a task whose
    data is not available."""
    go_offline()
    sandbox_lm_eval_templates()
    manager = manager or task_manager(spec)
    loaded = {}
    for name in spec.tasks:
        try:
            loaded[name] = manager.load([name])
        except (ConfigError, DataError):
            raise
        except Exception as error:  # datasets raises many kinds (ConnectionError, FileNotFoundError, ValueError, ...)
            raise DataError(
                f"lmEval.tasks: {name!r}: cannot load its data ({_dataset_of(manager, name)}) offline: it must be a local "
                f"file or in the Hugging Face cache (HF_HOME) of the pod: {type(error).__name__}: {str(error)[:400]}") from None
    return loaded


def score_keys(loaded: dict) -> set[str]:
    """The score keys lm_eval_run reports for lm-eval's loaded task dict: every leaf task's metrics
    under each of its filters, every group's aggregate metrics under theirs (a group without
    aggregate_metric_list reports none)."""
    keys = set()
    filters = {name: [ensemble.name for ensemble in getattr(task, "_filters", None) or []] or ["none"]
               for name, task in loaded["tasks"].items()}
    for name, task in loaded["tasks"].items():
        keys |= {score_key(task.task_name, metric, f) for metric in task.aggregation() or {} for f in filters[name]}
    for group in loaded["groups"].values():
        for aggregate in group.aggregate_metric_list or []:
            names = aggregate.filter_list
            if names is None:  # lm-eval discovers them: the filters of member tasks with that metric
                names = {f for t in group.get_all_tasks() if aggregate.metric in (t.aggregation() or {})
                         for f in filters.get(t.task_name, ["none"])}
            keys |= {score_key(group.name, aggregate.metric, f) for f in names}
    return keys


def check_lm_eval(spec: LmEvalSpec) -> int:
    """The check phase of task lm-eval: how many rows will be evaluated (per model). ConfigError
    when the tasks would report more scores than a model's result holds (MAX_SCORES)."""
    rows, keys, tasks, groups = 0, set(), set(), set()
    for name, loaded in load_tasks(spec).items():
        keys |= score_keys(loaded)
        tasks |= set(loaded["tasks"])
        groups |= set(loaded["groups"])
        for task in loaded["tasks"].values():
            count = len(task.eval_docs)
            rows += min(count, spec.limit) if spec.limit else count
            log.info("lm-eval task %s (%s): %d rows", task.task_name, name, count)
    if len(keys) > MAX_SCORES:
        raise ConfigError(
            f"lmEval.tasks: {', '.join(spec.tasks)[:300]} would report {len(keys)} scores per model ({len(tasks)} tasks "
            f"and {len(groups)} groups, times their metrics and filters), more than the {MAX_SCORES} a model's result "
            f"holds: name fewer tasks, or a group's subgroups in separate jobs")
    return rows

"""Task lm-eval, check phase: lm-evaluation-harness's tasks resolved, their YAML screened and their
data loaded offline, before any model loads (spec.lmEval; kubetune_trainer.evaluation.lm_eval_run runs them).

Task YAML in lmEval.includePath is the tenant's data, not code:
- a `!function` tag (lm-eval imports the Python file it names) is refused, naming the file, in
  that YAML and in every file it includes (lm-eval's own registry YAML may use them: its code is
  installed with lm-eval, not chosen by the tenant); so are `hf_evaluate` and metric names
  lm-eval does not register (they would load a script through the evaluate package);
- doc_to_text, doc_to_target and doc_to_choice render in the project's Jinja sandbox
  (kubetune_trainer.templates: immutable sandbox, strict undefined, bounded output and time)
  instead of lm-eval's plain Environment (`sandbox_lm_eval_templates`).
Data comes from local files (dataset_path: json with data_files) or the Hugging Face cache:
HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set, so a registry task whose data is not cached fails
here naming the task and the dataset it needs. Light at import: lm_eval is imported when used.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from kubetune_api.errors import ConfigError, DataError
from kubetune_api.lm_eval import LmEvalSpec

log = logging.getLogger(__name__)

MAX_YAML_FILES = 10_000  # under all include paths together
MAX_YAML_BYTES = 1_000_000  # one task YAML
_IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}


class _Refused(Exception):
    pass


class _ScreeningLoader(yaml.SafeLoader):
    """YAML as data: a `!function` tag stops the load (no other custom tag loads either)."""


def _refuse_function(loader: yaml.SafeLoader, node: yaml.Node):
    raise _Refused(f"'!function {loader.construct_scalar(node)}' (lm-eval would import Python from the task directory)")


_ScreeningLoader.add_constructor("!function", _refuse_function)


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


def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _screen_file(path: Path, trusted: Path, seen: set[Path]) -> None:
    """ConfigError unless `path` (and every file it includes) is plain data."""
    path = path.resolve()
    if path in seen or path.is_relative_to(trusted):  # lm-eval's own YAML: installed code
        return
    seen.add(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise _Refused(f"larger than {MAX_YAML_BYTES} bytes")
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_ScreeningLoader)  # noqa: S506 (a SafeLoader)
    except _Refused as error:
        raise ConfigError(f"lmEval.includePath: {path}: {error}: refused") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"lmEval.includePath: {path}: not a readable task YAML: {str(error)[:300]}") from None
    if not isinstance(config, dict):
        return  # lm-eval skips it too
    _screen_metrics(path, config)
    includes = config.get("include") or []
    for include in includes if isinstance(includes, list) else [includes]:
        target = Path(str(include))
        _screen_file(target if target.is_absolute() else path.parent / target, trusted, seen)


def _screen_metrics(path: Path, config: dict[str, Any]) -> None:
    """Metrics lm-eval registers only: any other name would load a script through `evaluate`."""
    from lm_eval.api.registry import METRIC_REGISTRY

    for entry in config.get("metric_list") or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("hf_evaluate"):
            raise ConfigError(f"lmEval.includePath: {path}: metric_list hf_evaluate loads a metric script: refused")
        name = entry.get("metric")
        if isinstance(name, str) and name not in METRIC_REGISTRY:
            raise ConfigError(f"lmEval.includePath: {path}: metric {name!r} is not one lm-eval registers "
                              f"(it would load a script through the evaluate package): refused")


def include_directories(spec: LmEvalSpec) -> list[Path]:
    """The include paths, resolved (relative ones against the working directory), each a directory."""
    found = []
    for path in spec.include_path:
        directory = Path(path).resolve()
        if not directory.is_dir():
            raise ConfigError(f"lmEval.includePath {path!r}: {directory} is not a directory")
        found.append(directory)
    return found


def screen_task_yaml(directories: list[Path]) -> int:
    """Screens every *.yaml lm-eval would index under `directories`; returns how many."""
    trusted, seen = _lm_eval_tasks_dir(), set()
    files = [p for d in directories for p in sorted(d.glob("**/*.yaml")) if not _IGNORE_DIRS & set(p.parts)]
    if len(files) > MAX_YAML_FILES:
        raise ConfigError(f"lmEval.includePath: {len(files)} YAML files, more than {MAX_YAML_FILES}")
    for path in files:
        _screen_file(path, trusted, seen)
    return len(files)


@functools.lru_cache(maxsize=512)
def _compiled(source: str):
    from kubetune_trainer.templates import compile_template

    return compile_template(source, "lm-eval task template")


def _sandboxed_apply_template(template: str, doc: dict) -> str:
    from kubetune_trainer.templates import render_prompt

    return render_prompt(_compiled(template), doc, "lm-eval task document", "lm-eval task template")


def sandbox_lm_eval_templates() -> None:
    """lm-eval renders its task templates (utils.apply_template) in the project's sandbox from now on."""
    import lm_eval.utils

    lm_eval.utils.apply_template = _sandboxed_apply_template


def task_manager(spec: LmEvalSpec):
    """lm-eval's TaskManager over its registry and the (screened) include paths; unknown names refused."""
    from lm_eval.tasks import TaskManager

    directories = include_directories(spec)
    screen_task_yaml(directories)
    manager = TaskManager(include_path=[str(d) for d in directories] or None)
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


def check_lm_eval(spec: LmEvalSpec) -> int:
    """The check phase of task lm-eval: how many rows will be evaluated (per model)."""
    rows = 0
    for name, loaded in load_tasks(spec).items():
        for task in loaded["tasks"].values():
            count = len(task.eval_docs)
            rows += min(count, spec.limit) if spec.limit else count
            log.info("lm-eval task %s (%s): %d rows", task.task_name, name, count)
    return rows



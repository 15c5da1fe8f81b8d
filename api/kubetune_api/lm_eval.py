"""Task lm-eval: tasks of lm-evaluation-harness (its registry, or task YAML on the job's volumes)
run by lm-eval's own code on each model (spec.lmEval). Light: pydantic only.

lm-eval's task definitions choose the rows, prompts, few-shot examples and metrics, so with this
task spec.dataset and spec.metrics stay unset; scores are '<task>/<metric>' as in a suite.
"""
from __future__ import annotations

from typing import Annotated, Optional

from pydantic import Field, StringConstraints, field_validator

from kubetune_api.base import MAX_PATH, MAX_ROWS, ApiModel
from kubetune_api.catalog import EvalTask
from kubetune_api.paths import check_relative_stays_inside

# lm-eval task and group names (arc_easy, mmlu, super-glue-lm-eval-v1, bigbench_..._multiple_choice,
# tinyArc): letters, digits, '_', '-', '.'; no globs, paths or spaces.
LM_EVAL_TASK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_LM_EVAL_TASKS = 64
MAX_INCLUDE_PATHS = 8
LmEvalTaskName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=LM_EVAL_TASK_PATTERN)]


class LmEvalSpec(ApiModel):
    """What lm-evaluation-harness runs on every model."""

    tasks: list[LmEvalTaskName] = Field(
        min_length=1, max_length=MAX_LM_EVAL_TASKS,
        description="lm-eval task or group names (e.g. arc_easy, hellaswag, mmlu, glue), from lm-eval's registry or the task YAML in includePath. Unknown names fail the check phase, before any model loads.")
    num_fewshot: Optional[int] = Field(
        None, ge=0, le=64,
        description="Solved examples before each prompt, drawn as lm-eval draws them (its sampler, from the task's fewshot split); unset: each task's own default (num_fewshot in its YAML, else 0).")
    limit: Optional[int] = Field(None, ge=1, le=MAX_ROWS, description="Evaluate only the first N rows of each task (lm-eval's --limit); unset: all rows.")
    include_path: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH)]] = Field(
        default_factory=list, max_length=MAX_INCLUDE_PATHS,
        description="Directories of lm-eval task YAML (lm-eval's --include_path) on the job's volumes: relative to the pod's working directory (no '..' that leaves it) or absolute. Their YAML is data: lm-eval reads a private copy screened in the pod, where a `!function` tag (Python code), a prompt file (use_prompt) or an include outside these directories is refused, and prompt templates render in a Jinja sandbox.")
    batch_size: int = Field(1, ge=1, le=1024, description="Requests per forward pass (lm-eval's --batch_size).")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("lmEval.tasks: names must be unique")
        return tasks

    @field_validator("include_path")
    @classmethod
    def _local_directories(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if "://" in path:
                raise ValueError(f"lmEval.includePath: {path[:200]!r} must be a local directory (not a URI)")
            check_relative_stays_inside(path, "lmEval.includePath")
        return paths


def check_task_inputs(task: EvalTask, has_dataset: bool, lm_eval: Optional[LmEvalSpec]) -> None:
    """ValueError unless exactly the input `task` reads is set: lmEval for lm-eval, dataset otherwise."""
    if task == EvalTask.lm_eval:
        if lm_eval is None:
            raise ValueError("lmEval is required for task lm-eval (the lm-eval tasks to run)")
        if has_dataset:
            raise ValueError("dataset: task lm-eval reads its rows through lm-eval's task definitions (lmEval.tasks); leave dataset unset")
        return
    if lm_eval is not None:
        raise ValueError(f"lmEval: set but task is {task.value} (it applies to task lm-eval)")
    if not has_dataset:
        raise ValueError(f"dataset is required for task {task.value}")

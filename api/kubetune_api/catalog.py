"""What the pods decide, told to everyone: which methods produce an adapter and which a whole
model, and for each evaluation task its metrics and the dataset fields it needs. The operator
reads this instead of guessing; the trainer and evaluator build on the same table."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kubetune_api.errors import MetricError


class Method(str, Enum):
    full = "full"
    lora = "lora"
    qlora = "qlora"
    prompt_tuning = "prompt-tuning"
    prefix_tuning = "prefix-tuning"
    ia3 = "ia3"
    selective = "selective"


# Methods whose output is a whole model; the others save a PEFT adapter for the base model
# (LoRA too, unless lora.mergeOnSave merges it into a whole model).
FULL_MODEL_METHODS = frozenset({Method.full, Method.selective})


def produces_full_model(method: Method | str, merge_on_save: bool = False) -> bool:
    method = Method(method)
    return method in FULL_MODEL_METHODS or (merge_on_save and method in (Method.lora, Method.qlora))


class EvalTask(str, Enum):
    generation = "generation"
    multiple_choice = "multiple-choice"
    perplexity = "perplexity"
    lm_eval = "lm-eval"  # lm-evaluation-harness's own tasks (spec.lmEval): they name their metrics


@dataclass(frozen=True)
class TaskInfo:
    metrics: tuple[str, ...]  # built in
    required_fields: tuple[str, ...]  # of the eval dataset (snake_case)
    hub_metrics: bool  # may other names load through the evaluate package?


TASKS = {
    EvalTask.generation: TaskInfo(("rouge", "bleu", "exact_match", "token_f1"), ("reference_fields",), True),
    EvalTask.multiple_choice: TaskInfo(("accuracy",), ("choices_field", "answer_field"), False),
    EvalTask.perplexity: TaskInfo(("perplexity",), ("text_field",), False),
    EvalTask.lm_eval: TaskInfo((), (), False),  # no dataset and no metrics field: lm-eval's task YAML says
}
BUILTIN_METRICS = tuple(name for info in TASKS.values() for name in info.metrics)
# The built-in names as an enum, so a schema can list them (FineTuneJob spec.evaluation.metrics).
BuiltinMetric = Enum("BuiltinMetric", {name: name for name in BUILTIN_METRICS}, type=str)


def hub_metric_names(task: EvalTask, metrics: list[str], field: str = "metrics", allow_hub: bool = True) -> list[str]:
    """The names that must load through `evaluate`; MetricError (naming `field`) for a name the
    task cannot use. Without `allow_hub`, only the task's built-in names pass."""
    if task == EvalTask.lm_eval:  # its task definitions name the metrics; spec.metrics is refused if set
        return []
    info = TASKS[task]
    hub_allowed = info.hub_metrics and allow_hub
    hub = []
    for name in metrics:
        if name in info.metrics:
            continue
        if not hub_allowed or name in BUILTIN_METRICS:
            raise MetricError(f"{field}: {name!r} cannot score task {task.value}; use {', '.join(info.metrics)}"
                              + (" (or an evaluate metric name)" if hub_allowed else ""))
        hub.append(name)
    return hub

"""Evaluation tasks behind one registry, as kubetune_trainer.model.methods is for training methods.

Each task is a small class (tasks.base.Task) that turns rows into items, runs one model on a
batch of items, and scores and samples its records; the runner only looks its task up here.
Which metrics each task has built in, and which dataset fields it needs, is
kubetune_api.catalog.TASKS. Light at import: no torch.
"""
from __future__ import annotations

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation.tasks.base import Item, Task
from kubetune_trainer.evaluation.tasks.generation import Generation
from kubetune_trainer.evaluation.tasks.multiple_choice import MultipleChoice
from kubetune_trainer.evaluation.tasks.perplexity import Perplexity

TASKS: dict[EvalTask, type[Task]] = {task.kind: task for task in (Generation, MultipleChoice, Perplexity)}


def task_for(config: EvalConfig) -> Task:
    """The task config.task names, set up for config (its prompt template compiled)."""
    return TASKS[config.task](config)


__all__ = ["TASKS", "Item", "Task", "task_for"]

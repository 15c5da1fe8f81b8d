"""The rows an evaluation runs on, as items of its task (kubetune_trainer.evaluation.tasks).

Light: no torch. The check phase (kubetune_trainer.checks) calls `check_eval_dataset` before
any model loads, so a bad file, template or missing column fails at once, naming file, line
and field; with dataset.fewShot, the shots are built too (kubetune_trainer.evaluation.fewshot).
"""
from __future__ import annotations

import random

from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation.fewshot import add_shots
from kubetune_trainer.evaluation.tasks import Item, Task, task_for
from kubetune_trainer.data.rows import Row, read_rows


def select_rows(rows: list[Row], config: EvalConfig) -> list[Row]:
    """The rows evaluated: all, or the first maxExamples after an optional seeded shuffle."""
    if config.dataset.shuffle:
        rows = rows[:]
        random.Random(config.generation.seed).shuffle(rows)
    return rows[: config.dataset.max_examples] if config.dataset.max_examples else rows


def load_items(config: EvalConfig, task: Task | None = None) -> tuple[list[Item], int]:
    """(items to evaluate, with their shots; rows in the file)."""
    task = task or task_for(config)
    rows = read_rows(config.dataset.path)
    return add_shots(config, [task.item(row) for row in select_rows(rows, config)]), len(rows)


def check_eval_dataset(config: EvalConfig, max_rows_to_check: int = 1000) -> int:
    """Raises DataError unless every selected row (up to `max_rows_to_check`) makes an item;
    returns the number of rows that will be evaluated."""
    task = task_for(config)
    rows = select_rows(read_rows(config.dataset.path), config)
    add_shots(config, [task.item(row) for row in rows[:max_rows_to_check]])
    return len(rows)

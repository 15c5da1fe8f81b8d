"""k-shot prompts (dataset.fewShot): solved examples from a named split before every item.

A shot is dataset.promptTemplate rendered on a row of fewShot.path followed by its answer
(generation: the first reference; multiple-choice: the correct option). The k shots are drawn
once with fewShot.seed, so every item gets the same shots in the same order, as MMLU-style
k-shot evaluations do. When fewShot.path is the evaluated file itself, k + 1 rows are drawn and
an item's own row (same line) is skipped, so an item never sees its own answer.

Light: no torch. The check phase builds the same shots, so a bad few-shot row fails before any
model loads, naming the few-shot file, line and field.
"""
from __future__ import annotations

import os
import random
from dataclasses import replace

from kubetune_api.errors import DataError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation.tasks import Item, task_for
from kubetune_trainer.data.rows import read_rows


def shot_text(item: Item) -> str:
    """The item's prompt followed by its answer."""
    return item.prompt + (item.references[0] if item.references else item.choices[item.answer])


def same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def draw_shots(config: EvalConfig) -> list[Item]:
    """The shots drawn from fewShot.path (k of them, or k + 1 from the evaluated file itself)."""
    spec = config.dataset.few_shot
    # The same task on the few-shot rows: its messages name the few-shot file.
    task = task_for(config.model_copy(update={"dataset": config.dataset.model_copy(update={"path": spec.path, "few_shot": None})}))
    rows = read_rows(spec.path)
    wanted = spec.k + 1 if same_file(spec.path, config.dataset.path) else spec.k
    if len(rows) < wanted:
        raise DataError(f"{spec.path}: dataset.fewShot needs {wanted} rows for k={spec.k}, the file has {len(rows)}")
    return [task.item(rows[i]) for i in random.Random(spec.seed).sample(range(len(rows)), wanted)]


def add_shots(config: EvalConfig, items: list[Item]) -> list[Item]:
    """`items` with the shots before each prompt; unchanged without dataset.fewShot."""
    spec = config.dataset.few_shot
    if spec is None:
        return items
    shots = draw_shots(config)
    own = same_file(spec.path, config.dataset.path)
    texts = [(shot.line, shot_text(shot) + spec.separator) for shot in shots]

    def prefix(item: Item) -> str:
        return "".join([text for line, text in texts if not (own and line == item.line)][: spec.k])

    return [replace(item, prompt=prefix(item) + item.prompt) for item in items]

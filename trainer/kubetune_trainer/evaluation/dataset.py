"""Rows of an evaluation dataset as items (prompt plus references, options or text to score).

Light: no torch. The operator calls `check_eval_dataset` before it launches evaluator pods,
so a bad file, template or missing column fails the EvalJob at once, naming file, line and field.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalConfig
from kubetune_api.errors import DataError
from kubetune_trainer.examples import Row, read_rows
from kubetune_trainer.templates import compile_template, render_prompt, template_variables


@dataclass(frozen=True)
class Item:
    line: int
    prompt: str = ""  # empty for perplexity, which scores `text` alone
    references: list[str] = field(default_factory=list)  # generation
    choices: list[str] = field(default_factory=list)  # multiple-choice
    answer: int = -1  # multiple-choice: index into choices
    text: str = ""  # perplexity


def _strings(value, where: str, name: str, what: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: {what} '{name}' must be a string or a non-empty list of strings, got {value!r:.80}")
    return values


class ItemMaker:
    """Turns one row into an Item for config.task; errors name file, line and field."""

    def __init__(self, config: EvalConfig):
        self.spec, self.task = config.dataset, config.task
        if self.task is not EvalTask.perplexity:
            self.template = compile_template(self.spec.prompt_template)
            self.variables = sorted(template_variables(self.spec.prompt_template))

    def _field(self, row: Row, name: str, what: str):
        if name not in row.values:
            raise DataError(f"{self.spec.path} line {row.line}: {what} '{name}' is missing")
        return row.values[name]

    def __call__(self, row: Row) -> Item:
        where = f"{self.spec.path} line {row.line}"
        if self.task is EvalTask.perplexity:
            text = self._field(row, self.spec.text_field, "text field (dataset.textField)")
            if not isinstance(text, str) or not text:
                raise DataError(f"{where}: text field '{self.spec.text_field}' must be a non-empty string")
            return Item(row.line, text=text)
        for name in self.variables:
            self._field(row, name, "field used by dataset.promptTemplate")
        prompt = render_prompt(self.template, row.values, where)
        if self.task is EvalTask.generation:
            references = [ref for name in self.spec.reference_fields
                          for ref in _strings(self._field(row, name, "reference field (dataset.referenceFields)"),
                                              where, name, "reference field")]
            return Item(row.line, prompt, references=references)
        name = self.spec.choices_field
        choices = _strings(self._field(row, name, "choices field (dataset.choicesField)"), where, name, "choices field")
        if len(choices) < 2:
            raise DataError(f"{where}: choices field '{name}' needs at least two options, got {len(choices)}")
        answer = self._field(row, self.spec.answer_field, "answer field (dataset.answerField)")
        if isinstance(answer, str) and answer in choices:
            answer = choices.index(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(f"{where}: answer field '{self.spec.answer_field}' must be an option's index "
                            f"(0-{len(choices) - 1}) or its text, got {answer!r:.80}")
        return Item(row.line, prompt, choices=choices, answer=answer)


def select_rows(rows: list[Row], config: EvalConfig) -> list[Row]:
    """The rows evaluated: all, or the first maxExamples after an optional seeded shuffle."""
    if config.dataset.shuffle:
        rows = rows[:]
        random.Random(config.generation.seed).shuffle(rows)
    return rows[: config.dataset.max_examples] if config.dataset.max_examples else rows


def load_items(config: EvalConfig) -> tuple[list[Item], int]:
    """(items to evaluate, rows in the file)."""
    rows = read_rows(config.dataset.path)
    make = ItemMaker(config)
    return [make(row) for row in select_rows(rows, config)], len(rows)


def check_eval_dataset(config: EvalConfig, max_rows_to_check: int = 1000) -> int:
    """Raises DataError unless every selected row (up to `max_rows_to_check`) makes an item;
    returns the number of rows that will be evaluated."""
    rows = select_rows(read_rows(config.dataset.path), config)
    make = ItemMaker(config)
    for row in rows[:max_rows_to_check]:
        make(row)
    return len(rows)

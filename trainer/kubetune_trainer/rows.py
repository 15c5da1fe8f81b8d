"""Raw JSONL rows to prompt/completion examples, and the preflight check of a dataset.

Light: no torch/transformers. The operator calls `check_dataset` before it launches a pod, so
a bad file or template fails the FineTuneJob at once with a message naming file, line and field.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubetune_trainer.config import DatasetSpec
from kubetune_trainer.errors import DataError
from kubetune_trainer.templates import compile_template, render_prompt, template_variables


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line in the file, for error messages
    values: dict


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers."""
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found (resolved to {Path(path).resolve()})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read dataset file: {e.strerror or e}") from e
    with f:
        try:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text: {e}") from e


def _parse(path: str | Path, number: int, line: str) -> Row:
    try:
        values = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {number}: invalid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(values, dict):
        raise DataError(f"{path} line {number}: expected a JSON object, got {type(values).__name__}")
    return Row(number, values)


def read_rows(path: str | Path) -> list[Row]:
    rows = [_parse(path, number, line) for number, line in _lines(path)]
    if not rows:
        raise DataError(f"{path}: dataset file has no rows")
    return rows


class ExampleMaker:
    """Turns rows into examples as the spec says; errors name file, line and field."""

    def __init__(self, spec: DatasetSpec):
        self.path = spec.path
        self.completion_field = spec.completion_field
        self.template = compile_template(spec.prompt_template)
        self.variables = sorted(template_variables(spec.prompt_template))

    def __call__(self, row: Row) -> Example:
        where = f"{self.path} line {row.line}"
        for name in self.variables:
            if name not in row.values:
                raise DataError(f"{where}: field '{name}' used by dataset.promptTemplate is missing")
        if self.completion_field not in row.values:
            raise DataError(f"{where}: completion field '{self.completion_field}' is missing")
        completion = row.values[self.completion_field]
        if not isinstance(completion, str):
            raise DataError(
                f"{where}: completion field '{self.completion_field}' must be a string, got {type(completion).__name__}"
            )
        return Example(render_prompt(self.template, row.values, where), completion)


def split_sizes(n_rows: int, spec: DatasetSpec) -> tuple[int, int, int]:
    """(train, validation, test) counts; a split with a non-zero ratio gets at least one row."""

    def held_out(ratio: float) -> int:
        return max(1, round(n_rows * ratio)) if ratio > 0 else 0

    n_val, n_test = held_out(spec.validation_ratio), held_out(spec.test_ratio)
    n_train = n_rows - n_val - n_test
    if n_train < 1:
        raise DataError(
            f"{spec.path}: {n_rows} rows are too few for validationRatio {spec.validation_ratio} and "
            f"testRatio {spec.test_ratio}: need at least {n_val + n_test + 1} "
            f"(validation {n_val}, test {n_test}, train at least 1)"
        )
    return n_train, n_val, n_test


def check_dataset(spec: DatasetSpec, max_rows_to_check: int = 1000) -> int:
    """Raises DataError unless the dataset can be trained on; returns the row count.

    The first `max_rows_to_check` rows are parsed and rendered; the rest are only counted,
    which bounds the preflight's cost on large files.
    """
    make = ExampleMaker(spec)
    n_rows = 0
    for number, line in _lines(spec.path):
        n_rows += 1
        if n_rows <= max_rows_to_check:
            make(_parse(spec.path, number, line))
    if n_rows == 0:
        raise DataError(f"{spec.path}: dataset file has no rows")
    split_sizes(n_rows, spec)
    return n_rows

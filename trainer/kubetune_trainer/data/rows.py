"""Raw rows to prompt/completion examples, and the preflight check of a dataset.

Light: no torch/transformers/datasets at import. The pod's check phase (kubetune_trainer.checks)
calls `check_dataset` before any model loads, so a bad file or template fails the FineTuneJob at
once (reason InvalidDataset) with a message naming file, line (or row) and field. Reading files
of every format and location is `readers`'s job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from kubetune_api.training import DatasetSpec
from kubetune_api.errors import DataError
from kubetune_trainer.data.conversations import Conversation, read_conversation
from kubetune_trainer.data.readers import is_remote, jsonl_lines, parse_jsonl, records, resolve_format, row_count, unit
from kubetune_trainer.data.templates import compile_template, render_prompt, template_variables


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line (JSONL, CSV) or row (Parquet, HF) in the file, for error messages
    values: dict
    unit: str = "line"


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    chat: bool = False  # wrap the prompt in the tokenizer's chat template
    task: Optional[str] = None  # the mixture task it belongs to
    where: str = ""  # 'file line N', for messages about this example
    conversation: Optional[Conversation] = None  # a chat row (dataset.conversations): prompt unused, completion its reference


def read_rows(path: str, fmt: str = "auto", limit: int | None = None) -> list[Row]:
    fmt = resolve_format(path, fmt)
    rows = [Row(number, values, unit(fmt)) for number, values in records(path, fmt, limit)]
    if not rows:
        raise DataError(f"{path}: dataset file has no rows")
    return rows


@dataclass(frozen=True)
class Source:
    """One task's rows and how they become examples: the single-task dataset, a mixture task."""

    name: Optional[str]  # None for the single-task dataset
    field: str  # where its settings are in the spec, for messages: 'dataset', 'dataset.tasks[qa]'
    spec: object  # DatasetSpec, TaskSpec or RetentionSpec: path, format, templates, chat_template
    weight: float = 1.0
    max_examples: Optional[int] = None

    @property
    def validation_path(self) -> Optional[str]:
        return getattr(self.spec, "validation_path", None)

    @property
    def test_path(self) -> Optional[str]:
        return getattr(self.spec, "test_path", None)


def task_sources(spec: DatasetSpec) -> list[Source]:
    if spec.tasks:
        return [Source(t.name, f"dataset.tasks[{t.name}]", t, t.weight, t.max_examples) for t in spec.tasks]
    return [Source(None, "dataset", spec)]


def retention_source(spec: DatasetSpec) -> Optional[Source]:
    if spec.retention is None:
        return None
    return Source(None, "dataset.retention", spec.retention, max_examples=spec.retention.max_examples)


class ExampleMaker:
    """Turns one file's rows into examples as the spec says; errors name file, line and field."""

    def __init__(self, spec, path: str | None = None, field: str = "dataset", task: str | None = None):
        self.path = path if path is not None else spec.path
        self.task = task
        self.conversations = getattr(spec, "conversations", None)
        if self.conversations is not None:  # chat rows: no prompt template
            return
        self.chat = bool(getattr(spec, "chat_template", False))
        self.prompt_field = f"{field}.promptTemplate"
        self.template = compile_template(spec.prompt_template, self.prompt_field)
        self.variables = sorted(template_variables(spec.prompt_template, self.prompt_field))
        self.completion_field = spec.completion_field
        self.completion_template = None
        if getattr(spec, "completion_template", None) is not None:
            self.completion_name = f"{field}.completionTemplate"
            self.completion_template = compile_template(spec.completion_template, self.completion_name)
            self.completion_variables = sorted(template_variables(spec.completion_template, self.completion_name))

    def _check_variables(self, where: str, row: Row, names: list[str], field: str) -> None:
        for name in names:
            if name not in row.values:
                raise DataError(f"{where}: field '{name}' used by {field} is missing")
            if row.values[name] is None:
                raise DataError(f"{where}: field '{name}' used by {field} has no value (null)")

    def __call__(self, row: Row) -> Example:
        where = f"{self.path} {row.unit} {row.line}"
        if self.conversations is not None:
            conversation = read_conversation(self.conversations, row.values, where)
            last = conversation.messages[conversation.last_assistant]["content"]
            return Example("", last, True, self.task, where, conversation)
        self._check_variables(where, row, self.variables, self.prompt_field)
        if self.completion_template is not None:
            self._check_variables(where, row, self.completion_variables, self.completion_name)
            completion = render_prompt(self.completion_template, row.values, where, self.completion_name)
        else:
            if self.completion_field not in row.values:
                raise DataError(f"{where}: completion field '{self.completion_field}' is missing")
            completion = row.values[self.completion_field]
            if completion is None:
                raise DataError(f"{where}: completion field '{self.completion_field}' has no value (null)")
            if not isinstance(completion, str):
                raise DataError(
                    f"{where}: completion field '{self.completion_field}' must be a string, got {type(completion).__name__}"
                )
        prompt = render_prompt(self.template, row.values, where, self.prompt_field)
        return Example(prompt, completion, self.chat, self.task, where)


def cut_sizes(n_rows: int, validation_ratio: float, test_ratio: float, where: str) -> tuple[int, int, int]:
    """(train, validation, test) counts; a split with a non-zero ratio gets at least one row."""

    def held_out(ratio: float) -> int:
        return max(1, round(n_rows * ratio)) if ratio > 0 else 0

    n_val, n_test = held_out(validation_ratio), held_out(test_ratio)
    n_train = n_rows - n_val - n_test
    if n_train < 1:
        raise DataError(
            f"{where}: {n_rows} rows are too few for validationRatio {validation_ratio} and "
            f"testRatio {test_ratio}: need at least {n_val + n_test + 1} "
            f"(validation {n_val}, test {n_test}, train at least 1)"
        )
    return n_train, n_val, n_test


def split_ratios(spec: DatasetSpec, source: Source | None = None) -> tuple[float, float]:
    """The ratios cut from the training file: none for a split that has its own file."""
    paths = source.spec if source is not None else spec
    return (0.0 if getattr(paths, "validation_path", None) else spec.validation_ratio,
            0.0 if getattr(paths, "test_path", None) else spec.test_ratio)


def split_sizes(n_rows: int, spec: DatasetSpec, source: Source | None = None) -> tuple[int, int, int]:
    path = source.spec.path if source is not None else spec.path
    return cut_sizes(n_rows, *split_ratios(spec, source), path)


def _check_file(path: str, fmt: str, make: ExampleMaker, max_rows: int, limit: int | None = None) -> int | None:
    """Renders the first max_rows rows; returns the row count, or None when only a prefix was read."""
    fmt = resolve_format(path, fmt)
    whole = not is_remote(path) and fmt in ("jsonl", "csv")  # cheap to count locally
    n_rows = 0
    if fmt == "jsonl":  # lines past max_rows are only counted, not parsed
        for number, line in jsonl_lines(path):
            n_rows += 1
            if n_rows <= max_rows:
                make(Row(number, parse_jsonl(path, number, line), "line"))
            elif not whole:
                return None
            if limit is not None and n_rows >= limit:
                break
    else:
        for number, values in records(path, fmt, None if whole else max_rows + 1):
            n_rows += 1
            if n_rows <= max_rows:
                make(Row(number, values, unit(fmt)))
            if limit is not None and n_rows >= limit:
                break
        if not whole and n_rows > max_rows:
            n_rows = row_count(path, fmt) or None
    if n_rows == 0:
        raise DataError(f"{path}: dataset file has no rows")
    return n_rows


def check_dataset(spec: DatasetSpec, max_rows_to_check: int = 1000) -> int:
    """Raises DataError unless the dataset can be trained on; returns the rows seen.

    Covers every file the spec names: the training file (or each mixture task's), explicit
    validation/test files and the retention file. The first `max_rows_to_check` rows of each
    are parsed and rendered; local JSONL/CSV files are counted to the end, Parquet and saved
    datasets give their count from metadata, and remote files are read no further.
    """
    total = 0
    for source in task_sources(spec):
        s = source.spec
        n = _check_file(s.path, s.format, ExampleMaker(s, s.path, source.field, source.name), max_rows_to_check)
        if n is not None:
            split_sizes(n, spec, source)
        total += n or max_rows_to_check
        for path in (source.validation_path, source.test_path):
            if path:
                total += _check_file(path, s.format, ExampleMaker(s, path, source.field, source.name), max_rows_to_check) or max_rows_to_check
    retention = retention_source(spec)
    if retention is not None:
        s = retention.spec
        total += _check_file(s.path, s.format, ExampleMaker(s, s.path, retention.field), max_rows_to_check, limit=s.max_examples) or 0
    return total

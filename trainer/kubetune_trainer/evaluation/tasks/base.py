"""What every evaluation task shares: the Item a row becomes, the Task interface the runner
calls, and the field readers whose errors name file, line and field.

Light at import (no torch): the check phase turns rows into items with these classes. The
model work each task does imports torch when it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kubetune_api import catalog
from kubetune_api.catalog import EvalTask
from kubetune_api.errors import DataError
from kubetune_api.evaluation import EvalConfig
from kubetune_api.reports import Sample
from kubetune_trainer.evaluation.bootstrap import RowStatistic
from kubetune_trainer.data.rows import Row
from kubetune_trainer.data.templates import compile_template, render_prompt, template_variables

Statistics = dict[str, RowStatistic]  # score name -> its per-row statistic
SAMPLE_CHARS = 300  # of each text copied into the status as a sample
# Score keys kept in scores.json only: the status (and termination message) carry the rest.
DETAIL_SUFFIXES = ("Precision", "Recall", "Low", "High")


@dataclass(frozen=True)
class Item:
    line: int
    prompt: str = ""  # empty for perplexity, which scores `text` alone
    references: list[str] = field(default_factory=list)  # generation
    choices: list[str] = field(default_factory=list)  # multiple-choice
    answer: int = -1  # multiple-choice: index into choices
    text: str = ""  # perplexity
    conversation: object = None  # generation on chat rows (dataset.conversations): a data.conversations.Conversation


def short(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 3] + "..."


def strings(value, where: str, name: str, what: str) -> list[str]:
    """`value` as a non-empty list of strings (a single string becomes a list of one)."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: {what} '{name}' must be a string or a non-empty list of strings, got {value!r:.80}")
    return values


class Task:
    """One evaluation task: rows to items, a model's records for a batch of items, scores."""

    kind: ClassVar[EvalTask]
    detail_keys: ClassVar[frozenset[str]] = frozenset()  # score keys left out of the status

    def __init__(self, config: EvalConfig):
        self.config, self.dataset = config, config.dataset

    @classmethod
    def builtin_metrics(cls) -> tuple[str, ...]:
        return catalog.TASKS[cls.kind].metrics

    def where(self, row: Row) -> str:
        return f"{self.dataset.path} line {row.line}"

    def field(self, row: Row, name: str, what: str):
        """The row's value of column `name`; DataError if the row lacks it."""
        if name not in row.values:
            raise DataError(f"{self.where(row)}: {what} '{name}' is missing")
        return row.values[name]

    def item(self, row: Row) -> Item:
        """The row as an item; DataError naming file, line and field."""
        raise NotImplementedError

    def records(self, model, tokenizer, items: list[Item]) -> tuple[list[dict], int]:
        """One record per item (written to predictions-<model>.jsonl), and how many prompts
        were truncated."""
        raise NotImplementedError

    def scores(self, records: list[dict], metrics: dict) -> tuple[dict[str, float], dict[str, str]]:
        """(scores, metric signatures) of one model's records; `metrics` as resolve_metrics returns."""
        scores, signatures, _ = self.scored(records, metrics)
        return scores, signatures

    def scored(self, records: list[dict], metrics: dict) -> tuple[dict[str, float], dict[str, str], Statistics]:
        """scores() and the per-row statistics of each score that is a sum over rows (what the
        paired-bootstrap intervals of the deltas resample)."""
        raise NotImplementedError

    def samples(self, model_name: str, records: list[dict]) -> list[Sample]:
        """The first records as the status shows them; none by default."""
        return []

    def headline(self, scores: dict[str, float]) -> dict[str, float]:
        """The scores the status carries: detail stays in scores.json."""
        return {k: v for k, v in scores.items() if k not in self.detail_keys and not k.endswith(DETAIL_SUFFIXES)}


class PromptTask(Task):
    """A task whose rows become prompts through dataset.promptTemplate."""

    def __init__(self, config: EvalConfig):
        super().__init__(config)
        if self.dataset.prompt_template is None:  # chat rows (dataset.conversations): no template
            self.template, self.variables = None, []
            return
        self.template = compile_template(self.dataset.prompt_template)
        self.variables = sorted(template_variables(self.dataset.prompt_template))

    def prompt(self, row: Row) -> str:
        for name in self.variables:
            self.field(row, name, "field used by dataset.promptTemplate")
        return render_prompt(self.template, row.values, self.where(row))

    def sample(self, model_name: str, prompt: str, prediction: str, reference: str) -> Sample:
        return Sample(model=model_name, prompt=short(prompt), prediction=short(prediction), reference=short(reference))

"""Contamination: evaluation rows that overlap the data a compared model was trained on.

A row overlaps when it shares an n-gram of `ngram` words with a training row (GPT-3's test, 13
words by default) or when one of its fields is identical to a training row's field (4 words or
more, after lowercasing and collapsing whitespace: what catches short questions copied whole).
The evaluation rows are indexed and the training files streamed, so memory follows the
evaluation set, not the training data. Light: no torch.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Optional

from kubetune_api.base import MAX_PATH
from kubetune_api.errors import DataError
from kubetune_api.evaluation import ContaminationAction, EvalConfig
from kubetune_api.reports import Contamination
from kubetune_trainer import readers
from kubetune_trainer.evaluation.dataset import select_rows
from kubetune_trainer.examples import read_rows

log = logging.getLogger(__name__)
MIN_IDENTICAL_WORDS = 4
SHOWN_LINES = 20
_WORD = re.compile(r"\w+")


def texts(value: Any) -> Iterator[str]:
    """Every string in a row's value, nested lists and objects (chat messages) included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[int]:
    return set(map(hash, zip(*(tokens[i:] for i in range(n)))))


def identical_fields(values: dict) -> set[int]:
    """Hashes of the row's fields long enough to count when identical."""
    return {hash(" ".join(tokens)) for text in texts(values) if len(tokens := words(text)) >= MIN_IDENTICAL_WORDS}


class Index:
    """The evaluation rows by n-gram and by identical field: which rows a training row touches."""

    def __init__(self, n: int):
        self.n = n
        self.lines: list[str] = []
        self.by_ngram: dict[int, list[int]] = {}
        self.by_field: dict[int, list[int]] = {}

    def add(self, line: str, values: dict) -> None:
        row = len(self.lines)
        self.lines.append(line)
        for text in texts(values):
            for gram in ngrams(words(text), self.n):
                self.by_ngram.setdefault(gram, []).append(row)
        for field in identical_fields(values):
            self.by_field.setdefault(field, []).append(row)

    def touched(self, values: dict) -> tuple[set[int], set[int]]:
        """(rows sharing an n-gram with `values`, rows with a field identical to one of its)."""
        grams = set().union(*(ngrams(words(text), self.n) for text in texts(values)))
        shared = {row for gram in grams & self.by_ngram.keys() for row in self.by_ngram[gram]}
        same = {row for field in identical_fields(values) & self.by_field.keys() for row in self.by_field[field]}
        return shared, same


def _fitted(line: str) -> str:
    """'<file> line <n>' within a status path's length: a very long file name loses its start."""
    return line if len(line) <= MAX_PATH else "..." + line[-(MAX_PATH - 3):]


def evaluation_index(config: EvalConfig) -> Index:
    """Every evaluated row (each suite task's), as the run selects them."""
    index = Index(config.contamination.ngram)
    for _, part in config.task_configs():
        for row in select_rows(read_rows(part.dataset.path), part):
            index.add(f"{part.dataset.path} line {row.line}", row.values)
    return index


def check_contamination(config: EvalConfig) -> Optional[Contamination]:
    """The overlap of the evaluation rows with spec.contamination.trainingFiles (None when off or
    there are none); DataError naming the first rows when the action is refuse and some overlap."""
    spec = config.contamination
    if spec.action == ContaminationAction.off or not spec.training_files:
        return None
    index = evaluation_index(config)
    overlapping, identical, training_rows, unread = set(), set(), 0, []
    for file in spec.training_files:  # remote ones were fetched with the other sources
        try:
            for _, values in readers.records(file.path, file.format.value):
                shared, same = index.touched(values)
                overlapping |= shared | same
                identical |= same
                training_rows += 1
        except DataError as error:
            if spec.action == ContaminationAction.refuse:  # an unread file cannot prove the rows clean
                raise DataError(f"contamination.trainingFiles: {error}") from error
            log.warning("contamination: %s; compared without it", error)
            unread.append(file.path)
    lines = [_fitted(index.lines[row]) for row in sorted(overlapping)]
    report = Contamination(action=spec.action.value, ngram=spec.ngram, rows=len(index.lines), overlapping=len(overlapping),
                           identical=len(identical), lines=lines[:SHOWN_LINES], training_files=len(spec.training_files) - len(unread),
                           training_rows=training_rows, unread_files=unread[:SHOWN_LINES])
    if overlapping and spec.action == ContaminationAction.refuse:
        raise DataError(f"contamination: {len(overlapping)} of {len(index.lines)} evaluation rows overlap the training data "
                        f"({len(identical)} with an identical field, the rest share a {spec.ngram}-word n-gram): "
                        f"{', '.join(lines[:5])}{' ...' if len(lines) > 5 else ''}; set contamination.action: flag to "
                        "evaluate anyway")
    return report

"""Contamination: evaluation rows that overlap the data a compared model was trained on.

A row overlaps when it shares an n-gram of `ngram` words with a training row (GPT-3's test, 13
words by default) or when it is identical to a training row: all its text, field by field in
order, case, punctuation and spacing aside (what catches short rows copied whole). An n-gram
that occurs in more than one evaluation row is prompt text the rows share (an instruction, a
template), not a row's own content, and does not count. The evaluation rows are indexed and the
training files streamed, so memory follows the evaluation set, not the training data. Light: no
torch.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Optional

from kubetune_api.base import MAX_PATH
from kubetune_api.errors import DataError
from kubetune_api.evaluation import ContaminationAction, EvalConfig
from kubetune_api.reports import Contamination
from kubetune_trainer.data import readers
from kubetune_trainer.evaluation.dataset import select_rows
from kubetune_trainer.data.rows import read_rows

log = logging.getLogger(__name__)
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


def row_hash(values: dict) -> int:
    """The row's text, field by field, with case, punctuation and spacing left out."""
    return hash(tuple(" ".join(words(text)) for text in texts(values)))


class Index:
    """The evaluation rows by n-gram and by their whole text: which rows a training row touches."""

    def __init__(self, n: int):
        self.n = n
        self.lines: list[str] = []
        self.by_ngram: dict[int, int] = {}  # n-gram -> the one row that has it
        self.shared: set[int] = set()  # n-grams of more than one row: prompt text, not content
        self.by_row: dict[int, list[int]] = {}

    def add(self, line: str, values: dict) -> None:
        row = len(self.lines)
        self.lines.append(line)
        for gram in set().union(*(ngrams(words(text), self.n) for text in texts(values))):
            if self.by_ngram.setdefault(gram, row) != row:
                self.shared.add(gram)
        self.by_row.setdefault(row_hash(values), []).append(row)

    def touched(self, values: dict) -> tuple[set[int], set[int]]:
        """(rows sharing an n-gram of their own with `values`, rows identical to it)."""
        grams = set().union(*(ngrams(words(text), self.n) for text in texts(values)))
        shared = {self.by_ngram[gram] for gram in (grams & self.by_ngram.keys()) - self.shared}
        return shared, set(self.by_row.get(row_hash(values), ()))


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
                        f"({len(identical)} identical to a training row, the rest share a {spec.ngram}-word n-gram): "
                        f"{', '.join(lines[:5])}{' ...' if len(lines) > 5 else ''}; set contamination.action: flag to "
                        "evaluate anyway")
    return report

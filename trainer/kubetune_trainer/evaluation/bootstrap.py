"""Paired-bootstrap intervals of a delta (a model's score minus the first model's) on the same rows.

A corpus score is a function of per-row statistics summed over the rows: a mean (ROUGE F1,
exact match, accuracy) sums (value, 1); perplexity sums (NLL, tokens). Resampling the rows
with replacement, the same draw for both models (paired: a row's difficulty cancels), and
taking the percentiles of the resampled deltas gives the interval. Light: numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Resamples drawn at once: bounds memory at CHUNK x rows x statistics floats.
CHUNK = 256


@dataclass(frozen=True)
class RowStatistic:
    """A corpus score as reduce(sum of `rows` over the rows); rows has shape (rows, k)."""

    rows: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray]  # (..., k) sums -> (...) scores

    def score(self) -> float:
        return float(self.reduce(self.rows.sum(axis=0)))


def _mean(sums: np.ndarray) -> np.ndarray:
    return sums[..., 0] / sums[..., 1]


def _perplexity(sums: np.ndarray) -> np.ndarray:
    return np.exp(sums[..., 0] / sums[..., 1])


def mean_of(values: Sequence[float]) -> RowStatistic:
    """The mean of one value per row."""
    values = np.asarray(values, dtype=np.float64)
    return RowStatistic(np.stack([values, np.ones_like(values)], axis=1), _mean)


def perplexity_of(nll: Sequence[float], tokens: Sequence[float]) -> RowStatistic:
    """exp(total NLL / total tokens), token-weighted over the rows."""
    return RowStatistic(np.stack([np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.float64)], axis=1),
                        _perplexity)


def paired_interval(first: RowStatistic, other: RowStatistic, level: float, samples: int,
                    seed: int) -> tuple[float, float]:
    """The percentile interval, at `level`, of other's score minus first's over `samples` paired
    resamples of the rows (the same rows, in the same order, for both)."""
    count = len(first.rows)
    if count != len(other.rows) or count == 0:
        raise ValueError(f"paired rows differ: {count} and {len(other.rows)}")
    rng = np.random.default_rng(seed)
    deltas = []
    with np.errstate(invalid="ignore", divide="ignore"):
      for done in range(0, samples, CHUNK):
        draw = rng.integers(0, count, size=(min(CHUNK, samples - done), count))
        deltas.append(other.reduce(other.rows[draw].sum(axis=1)) - first.reduce(first.rows[draw].sum(axis=1)))
    tail = (1.0 - level) / 2
    low, high = np.nanquantile(np.concatenate(deltas), [tail, 1.0 - tail])  # nan: a draw of rows without tokens
    return float(low), float(high)


def delta_intervals(first: dict[str, RowStatistic], other: dict[str, RowStatistic], names: Sequence[str],
                    level: float, samples: int, seed: int) -> dict[str, tuple[float, float]]:
    """Metric -> (low, high) for each of `names` both models have row statistics for."""
    return {name: paired_interval(first[name], other[name], level, samples, seed)
            for name in names if name in first and name in other}

"""Paired-bootstrap intervals of deltas: what promotion's minDeltaLowerBound reads."""
import math

import numpy as np
import pytest

from kubetune_trainer.evaluation.bootstrap import delta_intervals, mean_of, paired_interval, perplexity_of
from kubetune_trainer.evaluation.tasks.perplexity import perplexity_scores


def _rows(seed=0, count=400):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, count)
    return base, np.clip(base + rng.normal(0.02, 0.05, count), 0, 1)


def test_the_interval_of_a_mean_delta_agrees_with_the_normal_approximation():
    base, tuned = _rows()
    low, high = paired_interval(mean_of(base), mean_of(tuned), level=0.95, samples=4000, seed=1)
    differences = tuned - base
    error = differences.std(ddof=1) / math.sqrt(len(differences))
    center = differences.mean()
    assert low == pytest.approx(center - 1.96 * error, abs=0.15 * error)
    assert high == pytest.approx(center + 1.96 * error, abs=0.15 * error)


def test_pairing_cancels_what_both_models_share():
    # Rows of very different difficulty, the same gain on each: paired, the delta has no doubt.
    base = np.random.default_rng(2).uniform(0.0, 0.9, 200)
    low, high = paired_interval(mean_of(base), mean_of(base + 0.01), level=0.95, samples=500, seed=3)
    assert low == pytest.approx(0.01) and high == pytest.approx(0.01)


def test_a_higher_level_widens_the_interval_and_a_seed_repeats_it():
    base, tuned = mean_of(_rows()[0]), mean_of(_rows()[1])
    narrow = paired_interval(base, tuned, level=0.8, samples=1000, seed=5)
    wide = paired_interval(base, tuned, level=0.99, samples=1000, seed=5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert paired_interval(base, tuned, level=0.8, samples=1000, seed=5) == narrow


def test_perplexity_resamples_tokens_and_nll_together():
    records = [{"nll": n, "tokens": t} for n, t in [(12.0, 5), (40.0, 20), (3.0, 1), (30.0, 9), (8.0, 4)]]
    tuned = [{"nll": r["nll"] * 0.9, "tokens": r["tokens"]} for r in records]
    base_statistic = perplexity_of([r["nll"] for r in records], [r["tokens"] for r in records])
    tuned_statistic = perplexity_of([r["nll"] for r in tuned], [r["tokens"] for r in tuned])
    assert base_statistic.score() == pytest.approx(perplexity_scores(records)["perplexity"])
    low, high = paired_interval(base_statistic, tuned_statistic, level=0.95, samples=1000, seed=0)
    delta = perplexity_scores(tuned)["perplexity"] - perplexity_scores(records)["perplexity"]
    assert low <= delta <= high < 0  # 10% less NLL on every row: perplexity falls in every resample


def test_only_metrics_both_models_have_rows_for_get_an_interval():
    base, tuned = _rows(count=50)
    intervals = delta_intervals({"rouge1": mean_of(base)}, {"rouge1": mean_of(tuned), "exactMatch": mean_of(tuned)},
                                ["rouge1", "exactMatch", "bleu"], level=0.95, samples=200, seed=0)
    assert set(intervals) == {"rouge1"}


def test_rows_that_do_not_pair_are_refused():
    with pytest.raises(ValueError, match="paired rows differ: 3 and 2"):
        paired_interval(mean_of([1, 0, 1]), mean_of([1, 1]), level=0.95, samples=100, seed=0)

"""Dataset rows to train/validation/test examples, and multi-task mixtures.

Multi-task mixtures (dataset.tasks), the exact rule:
  1. each task's rows are split on their own: validation/test from its validationPath/testPath
     when given, else cut from its file by dataset.validationRatio/testRatio with a seeded
     shuffle (seed: training.seed and the task name);
  2. the rest is the task's training pool, capped at its maxExamples (the first ones of the
     shuffled pool);
  3. the mixture has N = dataset.mixtureSize training examples (default: the pools summed);
     task i gets k_i = N * w_i / sum(w) examples, rounded by largest remainder so they sum to N;
  4. a task whose pool holds at least k_i examples contributes a seeded sample of k_i without
     replacement; a smaller pool is repeated whole floor(k_i / pool) times plus a sample of the
     remainder (upsampling);
  5. the mixed training set is shuffled with the seed. Validation and test sets keep every
     task's rows, tagged with the task, so they are scored per task and overall.
"""
from __future__ import annotations

import logging
import random
from typing import TypeVar

from kubetune_api.training import DatasetSpec
from kubetune_trainer.data.rows import (
    Example, ExampleMaker, Source, read_rows, retention_source, split_sizes, task_sources,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def split_examples(items: list[T], spec: DatasetSpec, seed, source: Source | None = None) -> dict[str, list[T]]:
    """A seeded shuffle cut by the spec's ratios: the same data and seed give the same splits.

    A split with its own file (validationPath, testPath) gets nothing from here."""
    n_train, n_val, _ = split_sizes(len(items), spec, source)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, len(items))}
    return {name: [items[i] for i in order[start:end]] for name, (start, end) in bounds.items()}


def _cap(pool: list[T], max_examples: int | None) -> list[T]:
    return pool if max_examples is None else pool[:max_examples]


def mixture_quotas(pools: dict[str, int], weights: dict[str, float], size: int | None) -> dict[str, int]:
    """Examples per task: size * w / sum(w), rounded by largest remainder (they sum to size)."""
    size = sum(pools.values()) if size is None else size
    total = sum(weights.values())
    exact = {name: size * weights[name] / total for name in pools}
    quotas = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(pools, key=lambda name: (-(exact[name] - quotas[name]), list(pools).index(name)))
    for name in by_remainder[: size - sum(quotas.values())]:
        quotas[name] += 1
    return quotas


def mix(pools: dict[str, list[T]], weights: dict[str, float], size: int | None, seed) -> list[T]:
    """The training mixture (see the module docstring for the rule), shuffled with the seed."""
    rng = random.Random(f"{seed}:mixture")
    quotas = mixture_quotas({name: len(pool) for name, pool in pools.items()}, weights, size)
    mixed: list[T] = []
    for name, pool in pools.items():
        k = quotas[name]
        repeats, rest = divmod(k, len(pool))
        mixed.extend(pool * repeats)
        mixed.extend(rng.sample(pool, rest))
    rng.shuffle(mixed)
    return mixed


def _examples(source: Source, path: str, limit: int | None = None) -> list[Example]:
    make = ExampleMaker(source.spec, path, source.field, source.name)
    return [make(row) for row in read_rows(path, source.spec.format, limit)]


def _task_splits(spec: DatasetSpec, source: Source, seed) -> dict[str, list[Example]]:
    main = _examples(source, source.spec.path)
    splits = split_examples(main, spec, seed if source.name is None else f"{seed}:{source.name}", source)
    if source.validation_path:
        splits["validation"] = _examples(source, source.validation_path)
    if source.test_path:
        splits["test"] = _examples(source, source.test_path)
    return splits


def load_splits(spec: DatasetSpec, seed: int) -> dict[str, list[Example]]:
    """Reads and renders every row (failing fast, before any model loads) and splits them.

    Keys: train, validation, test, and retention when dataset.retention is set. Mixture
    examples carry their task's name."""
    sources = task_sources(spec)
    if spec.tasks:
        per_task = {source.name: _task_splits(spec, source, seed) for source in sources}
        pools = {source.name: _cap(per_task[source.name]["train"], source.max_examples) for source in sources}
        weights = {source.name: source.weight for source in sources}
        splits = {
            "train": mix(pools, weights, spec.mixture_size, seed),
            "validation": [e for name in per_task for e in per_task[name]["validation"]],
            "test": [e for name in per_task for e in per_task[name]["test"]],
        }
        log.info("mixture: %s", {name: {"pool": len(pools[name]), "train": sum(e.task == name for e in splits["train"])} for name in pools})
    else:
        splits = _task_splits(spec, sources[0], seed)
    retention = retention_source(spec)
    if retention is not None:
        splits["retention"] = _examples(retention, retention.spec.path, retention.max_examples)
    return splits

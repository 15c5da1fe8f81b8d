"""Which rows form each batch, per epoch and per process: deterministic from seed and epoch.

Grouping rows of similar length keeps padding (work on nothing) small: rows are shuffled,
sorted by length within windows of GROUP_BATCHES batches, cut into batches, and the batches
shuffled again, so batch order stays random while each batch is nearly uniform in length.
Because the order depends only on (seed, epoch), a resumed run recomputes it and skips the
batches already consumed.
"""
from __future__ import annotations

import random

GROUP_BATCHES = 50  # batches per length-sorted window: larger pads less but randomises less


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True) -> list[list[int]]:
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * GROUP_BATCHES
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lambda i: -lengths[i])]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def shard(batches: list, rank: int, world_size: int) -> list:
    """This process's batches; with several processes every one gets the same count, so
    they step (and all-reduce) together; the few leftover batches are dropped."""
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]

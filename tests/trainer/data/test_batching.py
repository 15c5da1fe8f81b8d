"""Length-grouped batches: deterministic per (seed, epoch), every row once, little padding, sharded evenly."""
from __future__ import annotations

import random

from kubetune_trainer.data.batching import epoch_batches, shard


def test_batches_cover_every_row_once_and_repeat_for_the_same_seed_and_epoch():
    lengths = [random.Random(i).randint(5, 500) for i in range(103)]
    batches = epoch_batches(lengths, 4, seed=7, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert batches == epoch_batches(lengths, 4, seed=7, epoch=0)
    assert batches != epoch_batches(lengths, 4, seed=7, epoch=1) != epoch_batches(lengths, 4, seed=8, epoch=0)


def test_grouping_by_length_cuts_padding():
    lengths = [random.Random(i).randint(5, 500) for i in range(400)]

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    grouped, plain = epoch_batches(lengths, 4, 0, 0), epoch_batches(lengths, 4, 0, 0, group_by_length=False)
    assert padding(grouped) < 0.1 * padding(plain)


def test_shards_are_disjoint_and_equally_long():
    batches = [[i] for i in range(11)]
    shards = [shard(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(b[0] for s in shards for b in s) == list(range(9))
    assert shard(batches, 0, 1) == batches

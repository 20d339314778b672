"""Real, index-driven epochs that split across processes and resume mid-epoch.

Every epoch is a permutation of ``num_items`` drawn from ``(seed, epoch)``. It is cut into **global micro-batches**
of ``batch_size * world_size`` positions; process ``rank`` takes the ``rank``-th slice of ``batch_size`` of each.
Two consequences the trainer relies on:

* one process with batch ``2b`` sees exactly the samples that two processes with batch ``b`` see together, and
  batch ``b`` with two accumulation steps sees them too (the same global order);
* the data position is one number, the global micro-batches consumed in the epoch, the same on every rank, so
  a resume restarts at ``(epoch, start_batch)`` and yields exactly what the uninterrupted run would have.

The sampler yields :class:`SampleKey` (epoch, position in the epoch, item index) rather than bare indices, so a
dataset can draw the sample's own randomness (labels, negatives, crops) from
``lsync.training.seeding.sample_rng(seed, key.epoch, key.position)`` independently of workers and ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """What a :class:`EpochBatchSampler` hands to ``dataset[key]``."""

    epoch: int
    position: int  # position in the epoch's order (global: the same sample has the same position on any rank)
    index: int  # the item: ``order[position]``


def epoch_order(num_items: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The item order of one epoch: a permutation drawn from ``(seed, epoch)`` (or ``arange`` unshuffled)."""
    if not shuffle:
        return np.arange(num_items)
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(num_items)


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """Batches of :class:`SampleKey` for one process of a (possibly distributed) run.

    Args:
        num_items: items in the dataset.
        batch_size: samples per process per micro-batch.
        seed: run seed; the epoch's order is ``epoch_order(num_items, seed, epoch)``.
        epoch: which epoch to yield.
        start_batch: global micro-batches of this epoch already consumed (resume point).
        rank, world_size: this process and the number of processes.
        shuffle: permute items each epoch (``False`` for evaluation).
        drop_last: drop the tail that does not fill ``accumulation`` global micro-batches (keeps ranks in step,
            sizes equal, and an optimizer step inside one epoch); without it the tail is split as evenly as
            possible and may leave some ranks a short batch.
        accumulation: micro-batches per optimizer step; with ``drop_last`` the epoch holds a whole number of
            steps, so batch ``b`` x ``accumulation`` sees what batch ``b * accumulation`` sees.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int = 0, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 accumulation: int = 1):
        if batch_size < 1 or world_size < 1 or accumulation < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler geometry: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.accumulation = accumulation

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        """Global micro-batches in one whole epoch."""
        if self.drop_last:
            return self.num_items // (self.global_batch * self.accumulation) * self.accumulation
        return -(-self.num_items // self.global_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = epoch_order(self.num_items, self.seed, self.epoch, self.shuffle)
        for batch in range(self.start_batch, self.batches_per_epoch):
            first = batch * self.global_batch
            block = range(first, min(first + self.global_batch, self.num_items))
            if len(block) == self.global_batch:
                mine = block[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            else:  # the short tail (drop_last=False): deal it out round-robin
                mine = block[self.rank::self.world_size]
            yield [SampleKey(self.epoch, p, int(order[p])) for p in mine]

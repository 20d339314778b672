"""Index-driven epochs: deterministic, complete, split across processes and resumable mid-epoch."""

from __future__ import annotations

import pytest

from lsync.training.sampling import EpochBatchSampler, SampleKey, epoch_order


def keys(sampler) -> list[list[SampleKey]]:
    return [list(batch) for batch in sampler]


def test_an_epoch_visits_every_item_once_in_an_order_fixed_by_seed_and_epoch():
    first = [k.index for batch in EpochBatchSampler(23, 5, seed=3, epoch=0, drop_last=False) for k in batch]
    assert sorted(first) == list(range(23))
    again = [k.index for batch in EpochBatchSampler(23, 5, seed=3, epoch=0, drop_last=False) for k in batch]
    assert again == first
    assert list(epoch_order(23, 3, 1)) != first
    assert list(epoch_order(23, 4, 0)) != first
    assert list(epoch_order(5, 0, 0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_keys_carry_epoch_and_global_position():
    batches = keys(EpochBatchSampler(10, 3, seed=1, epoch=7))
    assert len(batches) == 3  # drop_last: 10 // 3
    order = epoch_order(10, 1, 7)
    for b, batch in enumerate(batches):
        for i, key in enumerate(batch):
            assert key == SampleKey(7, 3 * b + i, int(order[3 * b + i]))


def test_two_processes_together_see_the_batches_of_one_process_with_twice_the_batch():
    single = keys(EpochBatchSampler(40, 8, seed=5, epoch=2))
    rank0 = keys(EpochBatchSampler(40, 4, seed=5, epoch=2, rank=0, world_size=2))
    rank1 = keys(EpochBatchSampler(40, 4, seed=5, epoch=2, rank=1, world_size=2))
    assert len(single) == len(rank0) == len(rank1) == 5
    for whole, a, b in zip(single, rank0, rank1):
        assert whole == a + b
    # Accumulating two micro-batches of 4 in one process covers the same samples as one batch of 8.
    micro = keys(EpochBatchSampler(40, 4, seed=5, epoch=2))
    assert [micro[2 * i] + micro[2 * i + 1] for i in range(5)] == single


def test_start_batch_resumes_mid_epoch_with_the_remaining_batches():
    whole = keys(EpochBatchSampler(30, 4, seed=9, epoch=1, rank=1, world_size=2))
    rest = EpochBatchSampler(30, 4, seed=9, epoch=1, start_batch=2, rank=1, world_size=2)
    assert len(rest) == len(whole) - 2
    assert keys(rest) == whole[2:]


def test_short_tail_is_dealt_out_when_not_dropped():
    rank0 = keys(EpochBatchSampler(10, 4, seed=0, rank=0, world_size=2, drop_last=False))
    rank1 = keys(EpochBatchSampler(10, 4, seed=0, rank=1, world_size=2, drop_last=False))
    seen = sorted(k.position for batches in (rank0, rank1) for batch in batches for k in batch)
    assert seen == list(range(10))
    assert len(rank0[-1]) == len(rank1[-1]) == 1


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError):
        EpochBatchSampler(10, 0, seed=0)
    with pytest.raises(ValueError):
        EpochBatchSampler(10, 2, seed=0, rank=2, world_size=2)


def test_an_epoch_holds_whole_optimizer_steps():
    sampler = EpochBatchSampler(37, 4, seed=0, accumulation=2)
    assert sampler.batches_per_epoch == 8  # 37 // 8 steps of 2 micro-batches; 9 micro-batches would split a step
    assert EpochBatchSampler(37, 8, seed=0).batches_per_epoch == 4

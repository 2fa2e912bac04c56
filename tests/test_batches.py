"""Batches: the validation order kept, the training order fixed by (seed, epoch)."""

import numpy as np

from catsdogs.training.batches import Batches


def test_batches_keep_order_without_shuffle_and_reshuffle_deterministically():
    array = np.arange(10)[:, None] * np.ones((1, 2), dtype=np.int64)
    labels = np.arange(10) % 2
    val = Batches(array, labels, [7, 2, 9, 0], batch_size=3, shuffle=False, seed=0)
    assert len(val) == 2
    assert val[0][0][:, 0].tolist() == [7, 2, 9] and val[1][1].tolist() == [0]

    train = Batches(array, labels, np.arange(10), batch_size=4, shuffle=True, seed=5)
    epoch0 = np.concatenate([train[i][0][:, 0] for i in range(len(train))])
    train.on_epoch_end()
    epoch1 = np.concatenate([train[i][0][:, 0] for i in range(len(train))])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0.tolist() != epoch1.tolist()
    resumed = Batches(array, labels, np.arange(10), batch_size=4, shuffle=True, seed=5)
    resumed.set_epoch(1)
    assert np.concatenate([resumed[i][0][:, 0] for i in range(len(resumed))]).tolist() == epoch1.tolist()


def test_shuffled_batches_keep_each_image_with_its_label():
    array = np.arange(23)[:, None]
    labels = np.arange(23) * 10
    batches = Batches(array, labels, np.arange(3, 23), batch_size=6, shuffle=True, seed=2)
    for epoch in (0, 1, 2):
        batches.set_epoch(epoch)
        seen = []
        for i in range(len(batches)):
            x, y = batches[i]
            assert y.tolist() == (x[:, 0] * 10).tolist()
            seen += x[:, 0].tolist()
        assert sorted(seen) == list(range(3, 23))


def test_every_seed_and_epoch_has_its_own_order():
    """The order comes from (seed, epoch) together: seed 6's first epoch is not seed 5's second."""
    orders = set()
    for seed in (5, 6, 7):
        for epoch in (0, 1, 2):
            batches = Batches(np.arange(40)[:, None], np.zeros(40), np.arange(40), batch_size=8,
                                      shuffle=True, seed=seed)
            batches.set_epoch(epoch)
            orders.add(tuple(np.concatenate([batches[i][0][:, 0] for i in range(len(batches))])))
    assert len(orders) == 9

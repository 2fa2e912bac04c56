import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import dataset, images
from catsdogs.errors import UserError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("Cat", 13), ("Dog", 11)):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "img" / cls / f"{i}.jpg")
    return tmp_path / "img"


def test_split_holds_keras_subsets_as_indices_into_sorted_paths(folder):
    data = dataset.split(folder, 0.25, seed=1337)
    shuffled, labels, _ = images.index(folder, 1337)
    (train, _), (val, _) = images.split(shuffled, labels, 0.25)
    assert data.paths == sorted(shuffled)
    assert [data.paths[i] for i in data.train] == train and [data.paths[i] for i in data.val] == val
    assert [data.class_names[data.labels[i]] for i in data.val] == [p.split("/")[0] for p in val]
    assert len(data.val) == 6 and not set(data.train) & set(data.val)


@pytest.mark.parametrize("method", ["keras", "hash"])
def test_split_file_gives_back_the_same_subsets_in_the_same_order(folder, tmp_path, method):
    data = dataset.split(folder, 0.25, seed=7, method=method)
    dataset.write_split(tmp_path / "split.csv", folder, data)
    again, digests = dataset.read_split(tmp_path / "split.csv", data.class_names)
    assert again.paths == data.paths and again.class_names == data.class_names
    assert np.array_equal(again.labels, data.labels)
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)  # order too
    assert digests == dataset.content_digests(folder, data.paths) and len(set(digests)) == len(digests)
    dataset.verify(folder, data.paths, digests, "split.csv")  # nothing changed: no error


def test_verify_names_a_changed_or_missing_image(folder, tmp_path):
    data = dataset.split(folder, 0.25, seed=7)
    dataset.write_split(tmp_path / "split.csv", folder, data)
    _, digests = dataset.read_split(tmp_path / "split.csv", data.class_names)
    changed = folder / "Dog" / "3.jpg"
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, other bytes
    with pytest.raises(UserError, match=r"Dog/3.jpg changed since the model was trained "
                                        r"\(hash differs from split.csv\): rerun the train stage"):
        dataset.verify(folder, data.paths, digests, "split.csv")
    os.remove(folder / "Cat" / "0.jpg")
    with pytest.raises(UserError, match=r"Cat/0.jpg: listed in split.csv but not found: rerun the train stage"):
        dataset.verify(folder, data.paths, digests, "split.csv")


def test_read_split_refuses_a_foreign_or_missing_file(tmp_path):
    (tmp_path / "split.csv").write_text("path,label\nCat/1.jpg,0\n")
    with pytest.raises(UserError, match="columns .* are not .*: rerun the train stage"):
        dataset.read_split(tmp_path / "split.csv", ["Cat", "Dog"])
    (tmp_path / "split.csv").write_text("path,class,subset,sha256\nBird/1.jpg,Bird,train,00\n")
    with pytest.raises(UserError, match="unknown class or subset Bird"):
        dataset.read_split(tmp_path / "split.csv", ["Cat", "Dog"])
    with pytest.raises(UserError, match="the split file is missing"):
        dataset.read_split(tmp_path / "nothing.csv", ["Cat", "Dog"])


def test_images_are_decoded_once_and_the_cache_follows_the_data(folder, tmp_path):
    data = dataset.split(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    array = dataset.load_images(folder, data.paths, (16, 24), cache)
    assert array.shape == (24, 16, 24, 3) and array.dtype == np.uint8
    assert np.array_equal(array[5], images.decode_file(folder / data.paths[5], (16, 24)))
    [first] = cache.glob("*.npy")
    mtime = first.stat().st_mtime_ns

    again = dataset.load_images(folder, data.paths, (16, 24), cache)  # reused, not rewritten
    assert np.array_equal(again, array) and first.stat().st_mtime_ns == mtime

    dataset.load_images(folder, data.paths, (8, 8), cache)  # another size: a new cache replaces the old
    [second] = cache.glob("*.npy")
    assert second != first and "8x8" in second.name

    os.remove(folder / "Dog" / "3.jpg")  # the data changed: a new cache
    data = dataset.split(folder, 0.25, seed=1)
    assert dataset.load_images(folder, data.paths, (8, 8), cache).shape[0] == 23
    assert [p.name for p in cache.iterdir()] != [second.name]


def test_batches_keep_order_without_shuffle_and_reshuffle_deterministically():
    array = np.arange(10)[:, None] * np.ones((1, 2), dtype=np.int64)
    labels = np.arange(10) % 2
    val = dataset.Batches(array, labels, [7, 2, 9, 0], batch_size=3, shuffle=False, seed=0)
    assert len(val) == 2
    assert val[0][0][:, 0].tolist() == [7, 2, 9] and val[1][1].tolist() == [0]

    train = dataset.Batches(array, labels, np.arange(10), batch_size=4, shuffle=True, seed=5)
    epoch0 = np.concatenate([train[i][0][:, 0] for i in range(len(train))])
    train.on_epoch_end()
    epoch1 = np.concatenate([train[i][0][:, 0] for i in range(len(train))])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0.tolist() != epoch1.tolist()
    resumed = dataset.Batches(array, labels, np.arange(10), batch_size=4, shuffle=True, seed=5)
    resumed.set_epoch(1)
    assert np.concatenate([resumed[i][0][:, 0] for i in range(len(resumed))]).tolist() == epoch1.tolist()


def test_hash_split_puts_exactly_the_images_hashed_below_the_fraction_in_validation(tmp_path):
    for cls in ("Cat", "Dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(150):
            (tmp_path / "img" / cls / f"{i}.jpg").write_bytes(b"")  # the split reads names only
    data = dataset.split(tmp_path / "img", 0.2, seed=1, method="hash")
    # the fraction of a path: the first 8 bytes of its SHA-256, as a big-endian number, over 2**64
    fraction = {p: int(hashlib.sha256(p.encode()).hexdigest()[:16], 16) / 2**64 for p in data.paths}
    assert dataset.stable_fraction("Cat/0.jpg") == fraction["Cat/0.jpg"]
    assert {data.paths[i] for i in data.val} == {p for p in data.paths if fraction[p] < 0.2}
    assert sorted([*data.train, *data.val]) == list(range(300))
    assert 0.15 < len(data.val) / 300 < 0.25


def test_shuffled_batches_keep_each_image_with_its_label():
    array = np.arange(23)[:, None]
    labels = np.arange(23) * 10
    batches = dataset.Batches(array, labels, np.arange(3, 23), batch_size=6, shuffle=True, seed=2)
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
            batches = dataset.Batches(np.arange(40)[:, None], np.zeros(40), np.arange(40), batch_size=8,
                                      shuffle=True, seed=seed)
            batches.set_epoch(epoch)
            orders.add(tuple(np.concatenate([batches[i][0][:, 0] for i in range(len(batches))])))
    assert len(orders) == 9

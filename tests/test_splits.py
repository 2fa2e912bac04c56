"""The split: the tutorial's subsets file for file, the stable hash split, and the split file."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from catsdogs.data import images, splits
from catsdogs.errors import UserError
from test_images import write_folder


def test_split_holds_keras_subsets_as_indices_into_sorted_paths(folder):
    data = splits.assign(folder, 0.25, seed=1337)
    shuffled, labels, _ = images.index(folder, 1337)
    train, val = splits.keras_holdout(shuffled, 0.25)
    assert data.paths == sorted(shuffled)
    assert [data.paths[i] for i in data.train] == train and [data.paths[i] for i in data.val] == val
    assert [data.class_names[data.labels[i]] for i in data.val] == [p.split("/")[0] for p in val]
    assert len(data.val) == 6 and not set(data.train) & set(data.val)


@pytest.mark.parametrize("method", ["keras", "hash"])
def test_split_file_gives_back_the_same_subsets_in_the_same_order(folder, tmp_path, method):
    data = splits.assign(folder, 0.25, seed=7, method=method)
    splits.write(tmp_path / "split.csv", folder, data)
    again, digests = splits.read(tmp_path / "split.csv", data.class_names)
    assert again.paths == data.paths and again.class_names == data.class_names
    assert np.array_equal(again.labels, data.labels)
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)  # order too
    assert digests == splits.content_digests(folder, data.paths) and len(set(digests)) == len(digests)
    splits.verify(folder, data.paths, digests, "split.csv")  # nothing changed: no error


def test_verify_names_a_changed_or_missing_image(folder, tmp_path):
    data = splits.assign(folder, 0.25, seed=7)
    splits.write(tmp_path / "split.csv", folder, data)
    _, digests = splits.read(tmp_path / "split.csv", data.class_names)
    changed = folder / "Dog" / "3.jpg"
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, other bytes
    with pytest.raises(UserError, match=r"Dog/3.jpg changed since the model was trained "
                                        r"\(hash differs from split.csv\): rerun the train stage"):
        splits.verify(folder, data.paths, digests, "split.csv")
    os.remove(folder / "Cat" / "0.jpg")
    with pytest.raises(UserError, match=r"Cat/0.jpg: listed in split.csv but not found: rerun the train stage"):
        splits.verify(folder, data.paths, digests, "split.csv")


def test_read_split_refuses_a_foreign_or_missing_file(tmp_path):
    (tmp_path / "split.csv").write_text("path,label\nCat/1.jpg,0\n")
    with pytest.raises(UserError, match="columns .* are not .*: rerun the train stage"):
        splits.read(tmp_path / "split.csv", ["Cat", "Dog"])
    (tmp_path / "split.csv").write_text("path,class,subset,sha256\nBird/1.jpg,Bird,train,00\n")
    with pytest.raises(UserError, match="split.csv, line 2: class 'Bird' is not one of 'Cat', 'Dog': rerun the train"):
        splits.read(tmp_path / "split.csv", ["Cat", "Dog"])
    (tmp_path / "split.csv").write_text("path,class,subset,sha256\nCat/1.jpg,Cat,val,00\n")
    with pytest.raises(UserError, match="line 2: subset 'val' is not one of 'train', 'validation'"):
        splits.read(tmp_path / "split.csv", ["Cat", "Dog"])
    (tmp_path / "split.csv").write_text("path,class,subset,sha256\nCat/1.jpg,Cat,train\n")
    with pytest.raises(UserError, match="line 2: 3 values where 4 columns"):
        splits.read(tmp_path / "split.csv", ["Cat", "Dog"])
    (tmp_path / "split.csv").write_text("path,class,subset,sha256\nCat/1.jpg,Cat,train,00\nCat/1.jpg,Cat,validation,00\n")
    with pytest.raises(UserError, match="split.csv: Cat/1.jpg is listed twice: rerun the train stage"):
        splits.read(tmp_path / "split.csv", ["Cat", "Dog"])
    with pytest.raises(UserError, match="the split file is missing"):
        splits.read(tmp_path / "nothing.csv", ["Cat", "Dog"])


def test_split_matches_keras_file_for_file(tmp_path: Path):
    import keras

    write_folder(tmp_path, {"Cat": [f"{i}.jpg" for i in range(23)], "Dog": [f"{i}.jpg" for i in range(19)],
                            "Emu": [f"{i}.jpg" for i in range(7)]})
    for seed in (1337, 7):
        train_ds, val_ds = keras.utils.image_dataset_from_directory(
            tmp_path, validation_split=0.2, subset="both", seed=seed, image_size=(8, 8), batch_size=4, verbose=False)
        data = splits.assign(tmp_path, 0.2, seed)
        assert [str(tmp_path / data.paths[i]) for i in data.train] == train_ds.file_paths
        assert [str(tmp_path / data.paths[i]) for i in data.val] == val_ds.file_paths
        assert data.class_names == train_ds.class_names
        keras_val_labels = np.concatenate([y for _, y in val_ds.as_numpy_iterator()])
        assert data.labels[data.val].tolist() == keras_val_labels.tolist()


def test_an_empty_subset_is_refused():
    with pytest.raises(UserError, match="empty subset"):
        splits.keras_holdout(["a", "b"], 0.2)
    with pytest.raises(UserError, match="empty subset"):
        splits.hash_holdout(["a", "b"], 0.01)


def test_hash_split_puts_exactly_the_images_hashed_below_the_fraction_in_validation(tmp_path):
    for cls in ("Cat", "Dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(150):
            (tmp_path / "img" / cls / f"{i}.jpg").write_bytes(b"")  # the split reads names only
    data = splits.assign(tmp_path / "img", 0.2, seed=1, method="hash")
    # the fraction of a path: the first 8 bytes of its SHA-256, as a big-endian number, over 2**64
    fraction = {p: int(hashlib.sha256(p.encode()).hexdigest()[:16], 16) / 2**64 for p in data.paths}
    assert splits.stable_fraction("Cat/0.jpg") == fraction["Cat/0.jpg"]
    assert {data.paths[i] for i in data.val} == {p for p in data.paths if fraction[p] < 0.2}
    assert sorted([*data.train, *data.val]) == list(range(300))
    assert 0.15 < len(data.val) / 300 < 0.25

"""Which images train and which validate, and the file that records it. Pure Python and numpy: no Keras.

`keras`: exactly the files `image_dataset_from_directory(validation_split, subset="both", seed)` puts in each
subset (the tutorial's split). It shuffles the whole file list, so adding or removing one image moves others
between subsets. `hash`: each image's subset follows from a stable hash of its path alone, so other images
never move when the data changes and metrics of two data versions stay comparable.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs import atomic, tables
from catsdogs.data import images
from catsdogs.errors import UserError


@dataclass
class Split:
    """The two subsets, as indices into `paths` (the folder's images in sorted order), and each path's
    content hash once known (`content_digests`; split.csv records them): the decoded-image cache's key."""

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    train: np.ndarray
    val: np.ndarray
    digests: list[str] | None = field(default=None, repr=False)


def keras_holdout(paths: list[str], validation_split: float) -> tuple[list[str], list[str]]:
    """Keras' rule: the last int(validation_split * n) shuffled files are the validation subset."""
    num_val = int(validation_split * len(paths))
    if num_val == 0 or num_val == len(paths):
        raise UserError(f"validation_split {validation_split} of {len(paths)} images leaves an empty subset")
    return paths[:-num_val], paths[-num_val:]


def stable_fraction(path: str) -> float:
    """A number in [0, 1) fixed by the image's path (e.g. "Cat/12.jpg") and nothing else."""
    return int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2**64


def hash_holdout(paths: list[str], validation_split: float) -> tuple[list[str], list[str]]:
    in_val = [stable_fraction(path) < validation_split for path in paths]
    train = [p for p, v in zip(paths, in_val) if not v]
    val = [p for p, v in zip(paths, in_val) if v]
    if not train or not val:
        raise UserError(f"validation_split {validation_split} of {len(paths)} images leaves an empty subset")
    return train, val


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def check_every_class(names: list[str], train_labels, val_labels, validation_split: float) -> None:
    """Every class in both subsets: a class the validation subset lacks is never measured, one the
    training subset lacks never learned. Small classes of one's own data are where this happens."""
    for label, name in enumerate(names):
        in_train, in_val = list(train_labels).count(label), list(val_labels).count(label)
        if not in_val:
            raise UserError(f"class {name}: {_images(in_train)}, and validation_split {validation_split} holds "
                            "none of them: add images or raise data.validation_split")
        if not in_train:
            raise UserError(f"class {name}: {_images(in_val)}, all in the validation subset (validation_split "
                            f"{validation_split}): add images or lower data.validation_split")


def assign(directory: str | os.PathLike, validation_split: float, seed: int, method: str = "keras") -> Split:
    """The training and validation images of `directory` (one subfolder per class), by `method`."""
    if method == "hash":
        listed, labels, names = images.index(directory, seed=None, shuffle=False)
        train_paths, val_paths = hash_holdout(listed, validation_split)
    else:
        listed, labels, names = images.index(directory, seed)
        train_paths, val_paths = keras_holdout(listed, validation_split)
    paths = sorted(listed)
    position = {path: i for i, path in enumerate(paths)}
    label_of = dict(zip(listed, labels))
    check_every_class(names, [label_of[p] for p in train_paths], [label_of[p] for p in val_paths],
                      validation_split)
    return Split(
        paths=paths,
        labels=np.asarray([label_of[p] for p in paths], dtype=np.int32),
        class_names=names,
        train=np.asarray([position[p] for p in train_paths], dtype=np.int64),
        val=np.asarray([position[p] for p in val_paths], dtype=np.int64),
    )


def write(path: str | os.PathLike, directory: str | os.PathLike, split: Split) -> None:
    """The split the model was trained on, as a file: every image's class, subset and content hash.

    Evaluate and plot read this file, not the image folder: DVC then checks the folder's 25,000 files once
    per `dvc repro` (for train) instead of three times, and the hashes still make the file, and so the
    stages after it, change whenever an image they read changes. They are the split's own when it has them
    (the train stage hashes before it decodes: the images it trained on).
    """
    digests = split.digests if split.digests is not None else content_digests(directory, split.paths)
    atomic.write_csv(path, tables.SPLIT, (
        [split.paths[i], split.class_names[split.labels[i]], subset, digests[i]]
        for subset, indices in zip(tables.SUBSETS, (split.train, split.val)) for i in indices
    ))


def read(path: str | os.PathLike, class_names: list[str]) -> tuple[Split, list[str]]:
    """The Split written by `write` (the same subsets, in the same order), and each path's hash."""
    try:
        rows = tables.read(path, tables.SPLIT, "rerun the train stage", values={"class": class_names})
    except FileNotFoundError:
        raise UserError(f"{path}: the split file is missing (the train stage writes it)") from None
    paths = sorted(r["path"] for r in rows)
    twice = next((a for a, b in zip(paths, paths[1:]) if a == b), None)
    if twice is not None:
        raise UserError(f"{path}: {twice} is listed twice: rerun the train stage")
    position = {p: i for i, p in enumerate(paths)}
    labels = np.zeros(len(paths), dtype=np.int32)
    digests = [""] * len(paths)
    for r in rows:
        labels[position[r["path"]]] = class_names.index(r["class"])
        digests[position[r["path"]]] = r["sha256"]
    subset = {s: np.asarray([position[r["path"]] for r in rows if r["subset"] == s], dtype=np.int64)
              for s in tables.SUBSETS}
    train, val = (subset[s] for s in tables.SUBSETS)
    return Split(paths, labels, list(class_names), train, val, digests), digests


def read_unchanged(directory: str | os.PathLike, split_file: str | os.PathLike, class_names: list[str]) -> Split:
    """The split the model was trained on, with every image it lists checked unchanged since (the input of
    the stages after train)."""
    if not Path(directory).is_dir():
        raise UserError(f"{directory}: cleaned image folder not found (run the filter stage first)")
    split, digests = read(split_file, class_names)
    verify(directory, split.paths, digests, split_file)
    return split


def verify(directory: str | os.PathLike, paths: list[str], digests: list[str], split_file) -> None:
    """Stop before any work if an image is not the one the model was trained with (changed or gone)."""
    directory = Path(directory)
    try:
        current = content_digests(directory, paths)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: listed in {split_file} but not found: rerun the train stage") from None
    changed = [p for p, now, then in zip(paths, current, digests) if now != then]
    if changed:
        others = f" and {len(changed) - 1} other image(s)" if len(changed) > 1 else ""
        raise UserError(f"{directory / changed[0]}{others} changed since the model was trained (hash differs from "
                        f"{split_file}): rerun the train stage")


def content_digests(directory: str | os.PathLike, paths: list[str]) -> list[str]:
    """A short SHA-256 of each file's bytes, in threads (hashlib releases the GIL while hashing)."""
    directory = Path(directory)

    def digest(path: str) -> str:
        return hashlib.sha256((directory / path).read_bytes()).hexdigest()[:16]

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(digest, paths))

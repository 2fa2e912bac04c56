"""Input pipeline: the tutorial's split, every image decoded once into a uint8 cache, batches from memory.

The tutorial decodes and resizes every JPEG again in every epoch. Here each image is decoded once per
(cleaned folder, image size), in parallel, into a uint8 .npy file that later runs and experiments reuse;
batches are gathered from it, memory-mapped, so the OS keeps it in RAM when it fits and pages it when
it does not. Augmentation happens inside the model (catsdogs.augment), on the accelerator.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from catsdogs import atomic, images
from catsdogs.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """The tutorial's two subsets, as indices into `paths` (the folder's images in sorted order)."""

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    train: np.ndarray
    val: np.ndarray


def split(directory: str | os.PathLike, validation_split: float, seed: int, method: str = "keras") -> Split:
    """The training and validation files.

    `keras`: exactly the files `image_dataset_from_directory(validation_split, subset="both", seed)` puts in
    each subset (the tutorial's split). It shuffles the whole file list, so adding or removing one image
    moves others between subsets. `hash`: each image's subset follows from a stable hash of its path alone,
    so other images never move when the data changes and metrics of two data versions stay comparable.
    """
    if method == "hash":
        ordered, labels, names = images.index(directory, seed=None, shuffle=False)
        in_val = [stable_fraction(path) < validation_split for path in ordered]
        train_paths = [p for p, v in zip(ordered, in_val) if not v]
        val_paths = [p for p, v in zip(ordered, in_val) if v]
        if not train_paths or not val_paths:
            raise UserError(f"validation_split {validation_split} of {len(ordered)} images leaves an empty subset")
        shuffled = ordered
    else:
        shuffled, labels, names = images.index(directory, seed)
        (train_paths, _), (val_paths, _) = images.split(shuffled, labels, validation_split)
    paths = sorted(shuffled)
    position = {path: i for i, path in enumerate(paths)}
    by_path = dict(zip(shuffled, labels))
    return Split(
        paths=paths,
        labels=np.asarray([by_path[p] for p in paths], dtype=np.int32),
        class_names=names,
        train=np.asarray([position[p] for p in train_paths], dtype=np.int64),
        val=np.asarray([position[p] for p in val_paths], dtype=np.int64),
    )


SPLIT_COLUMNS = ["path", "class", "subset", "sha256"]
SUBSETS = ("train", "validation")


def write_split(path: str | os.PathLike, directory: str | os.PathLike, data: Split) -> None:
    """The split the model was trained on, as a file: every image's class, subset and content hash.

    Evaluate and plot read this file, not the image folder: DVC then checks the folder's 25,000 files once
    per `dvc repro` (for train) instead of three times, and the hashes still make the file, and so the
    stages after it, change whenever an image they read changes.
    """
    digests = content_digests(directory, data.paths)
    atomic.write_csv(path, SPLIT_COLUMNS, (
        [data.paths[i], data.class_names[data.labels[i]], subset, digests[i]]
        for subset, indices in zip(SUBSETS, (data.train, data.val)) for i in indices
    ))


def read_split(path: str | os.PathLike, class_names: list[str]) -> tuple[Split, list[str]]:
    """The Split written by `write_split` (the same subsets, in the same order), and each path's hash."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != SPLIT_COLUMNS:
                raise UserError(f"{path}: columns {reader.fieldnames} are not {SPLIT_COLUMNS}: rerun the train stage")
            rows = list(reader)
    except FileNotFoundError:
        raise UserError(f"{path}: the split file is missing (the train stage writes it)") from None
    unknown = sorted({r["class"] for r in rows} - set(class_names)) + sorted({r["subset"] for r in rows} - set(SUBSETS))
    if unknown:
        raise UserError(f"{path}: unknown class or subset {', '.join(unknown)} (classes: {', '.join(class_names)})")
    paths = sorted(r["path"] for r in rows)
    position = {p: i for i, p in enumerate(paths)}
    labels = np.zeros(len(paths), dtype=np.int32)
    digests = [""] * len(paths)
    for r in rows:
        labels[position[r["path"]]] = class_names.index(r["class"])
        digests[position[r["path"]]] = r["sha256"]
    subset = {s: np.asarray([position[r["path"]] for r in rows if r["subset"] == s], dtype=np.int64) for s in SUBSETS}
    return Split(paths, labels, list(class_names), subset["train"], subset["validation"]), digests


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


def stable_fraction(path: str) -> float:
    """A number in [0, 1) fixed by the image's path (e.g. "Cat/12.jpg") and nothing else."""
    return int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2**64


def fingerprint(directory: Path, paths: list[str], extra: str = "") -> str:
    """A short key for these files as they are now (names, sizes, modification times) plus `extra`."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        st = (Path(directory) / path).stat()
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_images(directory: str | os.PathLike, paths: list[str], size, cache_dir: str | os.PathLike,
                mode: str = "mmap") -> np.ndarray:
    """All `paths` decoded to uint8 (N, height, width, 3), from the cache.

    `mode`: "mmap" maps the cache file: the OS keeps the pages it can in RAM, so data larger than memory
    still trains (slower once it no longer fits, as random batches then read from disk). "memory" reads it
    all into RAM first: the fastest batches, but the whole array must fit.
    The cache file is named after the image size and every file's name, size and mtime, so a changed
    folder or image size gets a new one; stale ones are removed. It is written under a temporary name
    and renamed when complete, so an interrupted decode is never mistaken for a cache.
    """
    directory, cache_dir = Path(directory), Path(cache_dir)
    size = tuple(size)
    key = fingerprint(directory, paths, f"{size[0]}x{size[1]}")
    cache = cache_dir / f"images-{size[0]}x{size[1]}-{key}.npy"
    mmap_mode = "r" if mode == "mmap" else None
    if cache.exists():
        log.info("reusing decoded images from %s", cache)
        return np.load(cache, mmap_mode=mmap_mode)

    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob("images-*.npy"):
        stale.unlink()
    with atomic.atomic_path(cache, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *size, 3))

        def decode_into(i: int) -> None:
            array[i] = images.decode_file(directory / paths[i], size)

        # Pillow releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for _ in tqdm(pool.map(decode_into, range(len(paths))), total=len(paths), desc="decode", unit="img"):
                pass
        array.flush()
    log.info("decoded %d images once into %s", len(paths), cache)
    return np.load(cache, mmap_mode=mmap_mode)


class Batches(keras.utils.PyDataset):
    """Batches of (uint8 images, labels) gathered from the decoded array, in the order of `indices`,
    or reshuffled every epoch; `transform` (the CPU augmentation) is applied to each batch of images.

    The order of epoch e depends only on (seed, e), so a run resumed at epoch e sees the same batches.
    """

    def __init__(self, array, labels, indices, batch_size: int, shuffle: bool, seed: int, transform=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.array, self.labels, self.transform = array, labels, transform
        self.indices = np.asarray(indices)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self._order = self._order_for(0)

    def _order_for(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        order = np.random.default_rng([self.seed, epoch]).permutation(self.indices)
        # Sorted reads are faster from a memory map, and the order within a batch does not matter.
        for start in range(0, len(order), self.batch_size):
            order[start : start + self.batch_size].sort()
        return order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = self._order_for(epoch)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, i: int):
        batch = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        images = self.array[batch]
        return (self.transform(images) if self.transform else images), self.labels[batch]

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

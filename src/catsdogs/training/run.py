"""What a training run is made of besides its callbacks: the input batches, the learning-rate schedule and the
run's work folder.

Imported only after `catsdogs.backend.select()` has chosen Keras' backend.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np

from catsdogs import params
from catsdogs.data import splits
from catsdogs.training import augment, batches


def input_batches(array: np.ndarray, split: splits.Split, batch_size: int, seed: int,
                  augmentation: params.Augmentation):
    """The training batches (augmented on the CPU when `augmentation.where` is cpu) and the validation ones."""
    on_cpu = augment.on_cpu(augmentation.flip, augmentation.rotation, seed) if augmentation.where == "cpu" else None
    train = batches.Batches(array, split.labels, split.train, batch_size, shuffle=True, seed=seed, transform=on_cpu)
    val = batches.Batches(array, split.labels, split.val, batch_size, shuffle=False, seed=seed)
    return train, val


def in_model_augmentation(augmentation: params.Augmentation) -> params.Augmentation:
    """What the model's own augmentation layer does: `train.augment`, or nothing when it runs on the CPU
    instead."""
    if augmentation.where == "model":
        return augmentation
    return augmentation.model_copy(update={"flip": False, "rotation": 0.0})


def learning_rate(peak: float, schedule: str, warmup_epochs: int, epochs: int, steps_per_epoch: int):
    """`train.learning_rate` as `train.lr_schedule` spreads it over `epochs` epochs of `steps_per_epoch`."""
    if schedule == "constant":
        return peak
    warmup = warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=epochs * steps_per_epoch - warmup,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def work_folder(root: Path, shaping: dict, data_key: str) -> Path:
    """The run's own folder under `root`, named after everything that shapes training (`shaping`: the values
    of params.TRAINING); any other folder there is an interrupted run with other params or data, which can
    never be resumed, and is removed."""
    key = hashlib.sha256(json.dumps([shaping, data_key], sort_keys=True).encode()).hexdigest()[:16]
    if root.is_dir():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    return root / key

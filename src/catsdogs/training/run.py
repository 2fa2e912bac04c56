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


def input_batches(array: np.ndarray, data: splits.Split, p: params.Params):
    """The training batches (augmented on the CPU when `train.augment.where` is cpu) and the validation ones."""
    a = p.train.augment
    on_cpu = augment.on_cpu(a.flip, a.rotation, p.seed) if a.where == "cpu" else None
    train = batches.Batches(array, data.labels, data.train, p.data.batch_size, shuffle=True, seed=p.seed,
                            transform=on_cpu)
    val = batches.Batches(array, data.labels, data.val, p.data.batch_size, shuffle=False, seed=p.seed)
    return train, val


def in_model_augmentation(p: params.Params) -> params.Augmentation:
    """What the model's own augmentation layer does: the params' augmentation, or nothing when it runs on
    the CPU instead."""
    a = p.train.augment
    return a if a.where == "model" else a.model_copy(update={"flip": False, "rotation": 0.0})


def learning_rate(p: params.Params, steps_per_epoch: int):
    t = p.train
    if t.lr_schedule == "constant":
        return t.learning_rate
    warmup = t.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else t.learning_rate,
        decay_steps=p.epochs * steps_per_epoch - warmup,
        warmup_target=t.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def work_folder(root: Path, p: params.Params, data_key: str) -> Path:
    """The run's own folder under `root`, named after everything that shapes training; any other folder
    there is an interrupted run with other params or data, which can never be resumed, and is removed."""
    shaping = p.model_dump(include=set(params.TRAINING))
    key = hashlib.sha256(json.dumps([shaping, data_key], sort_keys=True).encode()).hexdigest()[:16]
    if root.is_dir():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    return root / key

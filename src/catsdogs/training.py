"""Keras pieces of the train stage: the input batches, the learning-rate schedule and the callbacks.

Imported only after `catsdogs.backend.select()` has chosen Keras' backend.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from catsdogs import atomic, augment, batches, params, splits
from catsdogs import model as model_lib
from catsdogs.entry import raise_if_interrupted


def number(epoch_index: int) -> int:
    """Keras gives callbacks the epoch's index, from 0; the log, the checkpoints and the summary number
    epochs from 1, as Keras prints them. The one place where one becomes the other."""
    return epoch_index + 1


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


def callbacks(work: Path, train, seed: int, replicas: list, logs: list) -> list:
    """Every callback of `fit`, in order: Ctrl-C, the epoch's seeds, its statistics, what several replicas
    need, then the checkpoint and `logs` (catsdogs.monitor: progress and the live log), and last the resume
    state, so that an epoch counts as done only once its checkpoint and log rows are written."""
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return [
        Interruptible(),
        EpochSeeds(train, seed),
        EpochStats(),
        *replicas,
        AtomicCheckpoint(work / "checkpoints"),
        *logs,
        keras.callbacks.BackupAndRestore(str(work / "backup"), double_checkpoint=True),
    ]


class Interruptible(keras.callbacks.Callback):
    """Ends training at the next batch after Ctrl-C, even if the interrupt itself was swallowed."""

    def on_train_batch_end(self, batch, logs=None):
        raise_if_interrupted()

    on_test_batch_end = on_train_batch_end


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate, the epoch's seconds and its training seconds (up to the validation pass,
    what images/s figures are computed from) to the logs, before the log row is written."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.trained = time.perf_counter(), None

    def on_test_begin(self, logs=None):  # within fit: the epoch's validation pass starts
        self.trained = self.trained or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = now - self.start
        logs["train_seconds"] = (self.trained or now) - self.start


class EpochSeeds(keras.callbacks.Callback):
    """Ties each epoch's randomness to (seed, epoch) alone: the batch order, and the state of every layer's
    seed generator (augmentation, dropout), which BackupAndRestore does not save. So a resumed run
    repeats exactly what an uninterrupted one would have done."""

    def __init__(self, train: batches.Batches, seed: int):
        super().__init__()
        self.train, self.seed = train, seed

    def on_epoch_begin(self, epoch, logs=None):
        self.train.set_epoch(epoch)
        generators = [layer.seed_generator for layer in self.model.layers if hasattr(layer, "seed_generator")]
        for i, generator in enumerate(generators):
            generator.state.assign(np.array([epoch, self.seed + i], dtype=generator.state.dtype))


class AtomicCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint("save_at_{epoch}.keras") written through a temporary file: a kill mid-save
    leaves the previous checkpoints intact and no truncated one. Each holds the epoch's inference model
    (model.inference_model: plain Keras loads it); BackupAndRestore keeps the training model to resume."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        with atomic.atomic_path(self.folder / f"save_at_{number(epoch)}.keras", suffix=".keras") as tmp:
            model_lib.inference_model(self.model).save(tmp)

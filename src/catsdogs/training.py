"""Keras pieces of the train stage: callbacks and the learning-rate schedule.

Imported only after `catsdogs.backend.select()` has chosen Keras' backend.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from catsdogs import atomic, dataset, params
from catsdogs.errors import raise_if_interrupted


class Interruptible(keras.callbacks.Callback):
    """Ends training at the next batch after Ctrl-C, even if the interrupt itself was swallowed."""

    def on_train_batch_end(self, batch, logs=None):
        raise_if_interrupted()

    on_test_batch_end = on_train_batch_end


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate, the epoch's seconds and its training seconds (up to the validation pass,
    what images/s figures are computed from) to the logs, before CSVLogger writes them."""

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

    def __init__(self, batches: dataset.Batches, seed: int):
        super().__init__()
        self.batches, self.seed = batches, seed

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
        generators = [layer.seed_generator for layer in self.model.layers if hasattr(layer, "seed_generator")]
        for i, generator in enumerate(generators):
            generator.state.assign(np.array([epoch, self.seed + i], dtype=generator.state.dtype))


class AtomicCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint("save_at_{epoch}.keras") written through a temporary file: a kill mid-save
    leaves the previous checkpoints intact and no truncated one."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        with atomic.atomic_path(self.folder / f"save_at_{epoch + 1}.keras", suffix=".keras") as tmp:
            self.model.save(tmp)


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

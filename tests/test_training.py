"""catsdogs.training.run: the learning-rate schedule's values, and the train stage's callbacks on tiny real models.

Expected values are computed here from the formulas (in float64), never from Keras' own schedule classes.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import pytest

from catsdogs.training import batches as batches_lib
from catsdogs import entry, params
from catsdogs.data import splits
from catsdogs.training import callbacks, run
from catsdogs.training.augment import Augment
from conftest import params_with


def expected_rate(step: int, peak: float, total: int, warmup: int) -> float:
    """Linear from 0 to `peak` over `warmup` steps, then half a cosine from `peak` down to 0 at `total`."""
    if step < warmup:
        return peak * step / warmup
    done = (min(step, total) - warmup) / (total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * done))


def rate_at(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


# ---------------------------------------------------------------------------------------------------------
# learning_rate(peak, schedule, warmup_epochs, epochs, steps_per_epoch)


def test_constant_schedule_is_the_learning_rate_itself():
    assert run.learning_rate(1.0e-3, "constant", 0, 5, 7) == 1.0e-3
    assert run.learning_rate(2.0e-3, "constant", 2, 5, 7) == 2.0e-3  # warm-up applies to the cosine schedule only


def test_cosine_without_warmup_starts_at_the_peak_halves_midway_and_ends_at_zero():
    peak, epochs, per_epoch = 3.0e-4, 5, 8
    total = epochs * per_epoch  # 40 steps
    schedule = run.learning_rate(peak, "cosine", 0, epochs, per_epoch)
    assert rate_at(schedule, 0) == pytest.approx(peak, rel=1e-6)
    assert rate_at(schedule, total // 2) == pytest.approx(peak / 2, rel=1e-6)
    assert rate_at(schedule, 10) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-6)
    # the last training step (optimizer iteration total - 1) is almost 0, and the schedule's end is 0
    assert rate_at(schedule, total - 1) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 39 / 40)), rel=1e-3)
    assert rate_at(schedule, total - 1) < peak * 0.002
    assert abs(rate_at(schedule, total)) <= 1e-9 * peak
    assert abs(rate_at(schedule, total + 5)) <= 1e-9 * peak  # and it stays there
    for step in range(total + 1):
        # Keras computes in float32: 1 + cos(x) near the end keeps only float32's absolute precision
        assert rate_at(schedule, step) == pytest.approx(expected_rate(step, peak, total, 0), rel=1e-5, abs=peak * 1e-7)


def test_cosine_with_warmup_rises_linearly_from_zero_then_decays_to_zero():
    peak, epochs, warmup_epochs, per_epoch = 1.0e-3, 6, 2, 5
    total, warmup = epochs * per_epoch, warmup_epochs * per_epoch  # 30 and 10 steps
    schedule = run.learning_rate(peak, "cosine", warmup_epochs, epochs, per_epoch)
    assert rate_at(schedule, 0) == 0.0
    assert rate_at(schedule, 1) == pytest.approx(peak / 10, rel=1e-6)
    assert rate_at(schedule, 5) == pytest.approx(peak / 2, rel=1e-6)
    assert rate_at(schedule, warmup) == pytest.approx(peak, rel=1e-6)  # the end of warm-up is the peak
    rising = [rate_at(schedule, s) for s in range(warmup + 1)]
    np.testing.assert_allclose(np.diff(rising), peak / warmup, rtol=1e-4)  # linear: equal increments
    assert rate_at(schedule, warmup + 10) == pytest.approx(peak / 2, rel=1e-6)  # halfway through the decay
    assert abs(rate_at(schedule, total)) <= 1e-9 * peak
    for step in range(total + 3):
        assert rate_at(schedule, step) == pytest.approx(expected_rate(step, peak, total, warmup), rel=1e-5,
                                                        abs=peak * 1e-7)


def tiny_model(seed: int = 0) -> keras.Model:
    """uint8 images -> one logit, with an augmentation layer and a dropout (the layers with seed generators)."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = Augment(flip=True, rotation=0.1, seed=seed, name="augment")(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5, seed=seed)(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def tiny_data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, n)


class RecordRates(keras.callbacks.Callback):
    """The learning rate the optimizer uses for each step, read before the step runs."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_the_optimizer_follows_the_schedule_step_by_step_in_training():
    """In a real fit: step s uses the schedule's value at s, so warm-up starts at 0 and the last step is the
    smallest positive rate; EpochStats logs the rate after each epoch (the next step's)."""
    keras.utils.set_random_seed(0)
    peak, epochs, warmup_epochs, batch_size = 1.0e-2, 4, 1, 4
    x, y = tiny_data(12)
    per_epoch = len(x) // batch_size  # 3
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(run.learning_rate(peak, "cosine", warmup_epochs, epochs, per_epoch)),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    record = RecordRates()
    fitted = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[record, callbacks.EpochStats()])
    total, warmup = epochs * per_epoch, warmup_epochs * per_epoch
    expected = [expected_rate(s, peak, total, warmup) for s in range(total)]
    np.testing.assert_allclose(record.rates, expected, rtol=1e-5, atol=peak * 1e-7)
    assert record.rates[0] == 0.0 and record.rates[warmup] == pytest.approx(peak, rel=1e-6)
    logged = [expected_rate((e + 1) * per_epoch, peak, total, warmup) for e in range(epochs)]
    np.testing.assert_allclose(fitted.history["learning_rate"], logged, rtol=1e-5, atol=1e-9 * peak)


# ---------------------------------------------------------------------------------------------------------
# The train stage's other helpers, on plain values


def augmentation(where: str) -> params.Augmentation:
    return params.Augmentation(flip=True, rotation=0.1, where=where)


def test_augmentation_runs_in_the_model_or_in_the_cpu_batches_never_both():
    assert run.in_model_augmentation(augmentation("model")) == augmentation("model")
    assert run.in_model_augmentation(augmentation("cpu")) == params.Augmentation(flip=False, rotation=0.0,
                                                                                where="cpu")
    images, labels = tiny_data(12)
    split = splits.Split(paths=[f"{i}.jpg" for i in range(12)], labels=labels, class_names=["Cat", "Dog"],
                         train=list(range(8)), val=list(range(8, 12)))
    for where, transformed in (("model", False), ("cpu", True)):
        train, val = run.input_batches(images, split, 4, 7, augmentation(where))
        assert (train.transform is not None) == transformed and val.transform is None
        assert (len(train), len(val), train.seed, train.shuffle, val.shuffle) == (2, 1, 7, True, False)


def test_the_work_folder_is_named_after_what_shapes_training_and_the_data(tmp_path):
    shaping = params.View(params.parse(params_with({})), params.TRAINING, "train").values()
    folder = run.work_folder(tmp_path, shaping, "data-1")
    folder.mkdir()
    assert run.work_folder(tmp_path, shaping, "data-1") == folder and folder.is_dir()
    other = params_with({"train": {"learning_rate": 1.0e-3}})
    changed = params.View(params.parse(other), params.TRAINING, "train").values()
    assert run.work_folder(tmp_path, changed, "data-1") != folder
    assert not folder.exists()  # an interrupted run with other params can never resume: it goes
    folder = run.work_folder(tmp_path, shaping, "data-1")
    assert run.work_folder(tmp_path, shaping, "data-2") != folder


# ---------------------------------------------------------------------------------------------------------
# Callbacks


def test_epoch_stats_adds_the_rate_and_the_seconds_of_each_epoch():
    keras.utils.set_random_seed(0)
    x, y = tiny_data(16)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(2.5e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))

    class Slow(keras.callbacks.Callback):  # known durations: 2 x 0.03 s of training, 2 x 0.1 s of validation
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.03)

        def on_test_batch_end(self, batch, logs=None):
            time.sleep(0.1)

    fitted = model.fit(x[:8], y[:8], validation_data=(x[8:], y[8:]), batch_size=4, epochs=2, verbose=0,
                        callbacks=[Slow(), callbacks.EpochStats()])
    logs = fitted.history
    assert logs["learning_rate"] == [pytest.approx(2.5e-3, rel=1e-6)] * 2
    for seconds, train_seconds in zip(logs["seconds"], logs["train_seconds"]):
        # train_seconds stops where the validation pass starts: the 0.2 s validation is in seconds only
        assert train_seconds >= 0.06 and seconds >= train_seconds + 0.2
    # without validation the two are the same span
    fitted = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callbacks.EpochStats()])
    assert fitted.history["train_seconds"][0] == pytest.approx(fitted.history["seconds"][0], abs=1e-3)


def seed_states(model) -> list[list[int]]:
    return [keras.ops.convert_to_numpy(layer.seed_generator.state).tolist()
            for layer in model.layers if hasattr(layer, "seed_generator")]


def augmented(model, images) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.get_layer("augment")(images, training=True))


def test_epoch_seeds_ties_batch_order_and_random_layers_to_seed_and_epoch():
    images, labels = tiny_data(10)
    x = np.repeat(images[:1], 6, axis=0)

    def fresh():
        batches = batches_lib.Batches(images, labels, np.arange(10), batch_size=3, shuffle=True, seed=5)
        callback = callbacks.EpochSeeds(batches, seed=5)
        model = tiny_model(seed=11)
        callback.set_model(model)
        return batches, callback, model

    a_batches, a, a_model = fresh()
    a.on_epoch_begin(3)
    b_batches, b, b_model = fresh()
    augmented(b_model, x)  # b's generators and batches have moved on: epoch 3 must not depend on that
    b_batches.on_epoch_end()
    b.on_epoch_begin(3)

    assert a_batches.epoch == b_batches.epoch == 3
    reference = batches_lib.Batches(images, labels, np.arange(10), batch_size=3, shuffle=True, seed=5)
    reference.set_epoch(3)
    for i in range(len(reference)):
        assert a_batches[i][1].tolist() == b_batches[i][1].tolist() == reference[i][1].tolist()
        assert np.array_equal(a_batches[i][0], reference[i][0])
    states = seed_states(a_model)
    assert len(states) == 2 and states == seed_states(b_model)
    assert states[0] != states[1]  # each layer draws its own stream
    assert np.array_equal(augmented(a_model, x), augmented(b_model, x))

    a.on_epoch_begin(4)  # another epoch: other states, other draws
    assert seed_states(a_model) != states
    a.on_epoch_begin(3)
    assert seed_states(a_model) == states
    _, other_seed, other_model = fresh()
    other_seed.seed = 6
    other_seed.on_epoch_begin(3)
    assert all(s != t for s, t in zip(seed_states(other_model), states))


def test_atomic_checkpoint_writes_save_at_epoch_plus_one_and_nothing_else(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = tiny_data(8)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.copy() for w in self.model.get_weights()])

    folder = tmp_path / "checkpoints"
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[callbacks.AtomicCheckpoint(folder), Snapshot()])
    assert sorted(p.name for p in folder.iterdir()) == ["save_at_1.keras", "save_at_2.keras", "save_at_3.keras"]
    for epoch, weights in enumerate(snapshots, start=1):  # save_at_N holds the weights after epoch N
        saved = keras.saving.load_model(folder / f"save_at_{epoch}.keras").get_weights()
        assert all(np.array_equal(s, w) for s, w in zip(saved, weights))
    assert not any(np.array_equal(a[-1], b[-1]) for a, b in zip(snapshots, snapshots[1:]))


def test_interruptible_ends_training_at_the_next_batch(monkeypatch):
    keras.utils.set_random_seed(0)
    x, y = tiny_data(12)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callbacks.Interruptible()])  # no interrupt
    assert int(model.optimizer.iterations) == 3
    monkeypatch.setattr(entry, "_interrupted", True)  # a Ctrl-C that was swallowed somewhere
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[callbacks.Interruptible()])
    assert int(model.optimizer.iterations) == 4  # one more batch, not the rest of the epoch
    with pytest.raises(KeyboardInterrupt):
        model.evaluate(x, y, batch_size=4, verbose=0, callbacks=[callbacks.Interruptible()])

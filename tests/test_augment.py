"""The augmentation layer: the tutorial's flip and rotation, jit-compatible, training only."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from catsdogs.training import augment


def batch(seed=0, shape=(4, 20, 30, 3)):
    return np.random.default_rng(seed).integers(0, 255, shape).astype("float32")


def test_rotation_equals_keras_affine_transform_with_reflection():
    x, angle = batch(), np.array([0.0, 0.3, -0.5, 1.0], dtype="float32")
    height, width = x.shape[1:3]
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin, zero = np.cos(angle), np.sin(angle), np.zeros_like(angle)
    transforms = np.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero], 1)
    expected = ops.image.affine_transform(x, transforms, interpolation="bilinear", fill_mode="reflect")
    np.testing.assert_allclose(ops.convert_to_numpy(augment.rotate(x, angle)), expected, atol=1e-2)


def test_quarter_turn_of_a_square_image_is_exact():
    x = batch(shape=(1, 8, 8, 3))
    rotated = ops.convert_to_numpy(augment.rotate(x, np.array([math.pi / 2], dtype="float32")))
    # a positive angle turns the picture counter-clockwise as displayed (rows down, columns right)
    np.testing.assert_allclose(rotated[0], np.rot90(x[0], k=1, axes=(0, 1)), atol=1e-3)


def test_layer_augments_in_training_only_and_keeps_shape():
    layer = augment.Augment(flip=True, rotation=0.1, seed=3)
    x = batch(shape=(16, 12, 12, 3))
    assert np.array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
    out = ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == x.shape and not np.array_equal(out, x)
    flips_only = augment.Augment(flip=True, rotation=0.0, seed=3)
    out = ops.convert_to_numpy(flips_only(x, training=True))
    flipped = [np.array_equal(o, im[:, ::-1]) for o, im in zip(out, x)]
    kept = [np.array_equal(o, im) for o, im in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_a_model_with_the_layer_trains_under_xla():
    """Keras' RandomRotation cannot be compiled by XLA; this layer can, on every backend."""
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = augment.Augment(flip=True, rotation=0.1, seed=1)(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(np.zeros((8, 16, 16, 3), "uint8"), np.zeros(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_cpu_pipeline_augmentation_returns_uint8_batches():
    on_cpu = augment.on_cpu(flip=True, rotation=0.1, seed=2)
    images = batch(shape=(4, 10, 10, 3)).astype(np.uint8)
    out = on_cpu(images)
    assert out.dtype == np.uint8 and out.shape == images.shape and not np.array_equal(out, images)


@pytest.mark.parametrize("rotation", [0.0, 0.25])
def test_config_round_trip(rotation):
    layer = augment.Augment(flip=False, rotation=rotation, seed=9)
    clone = augment.Augment.from_config(layer.get_config())
    assert (clone.flip, clone.rotation, clone.seed) == (False, rotation, 9)


def test_flip_is_a_fair_coin_per_image():
    x = batch(shape=(400, 2, 3, 1))
    out = ops.convert_to_numpy(augment.Augment(flip=True, rotation=0.0, seed=4)(x, training=True))
    flipped = [np.array_equal(o, im[:, ::-1]) for o, im in zip(out, x)]
    assert all(f or np.array_equal(o, im) for f, o, im in zip(flipped, out, x))
    assert 0.42 < np.mean(flipped) < 0.58


def test_rotation_angles_span_plus_and_minus_the_fraction_of_a_full_turn():
    """rotation: 0.1 is up to 36 degrees either way, as Keras' RandomRotation(0.1). The angles are read where
    the layer hands them to its rotation."""
    layer = augment.Augment(flip=False, rotation=0.1, seed=5)
    angles = []
    layer._rotate = lambda images, angle: angles.append(ops.convert_to_numpy(angle)) or images
    layer(batch(shape=(2000, 2, 2, 1)), training=True)
    [angle] = angles
    limit = 0.1 * 2 * math.pi
    assert -limit <= angle.min() < -0.97 * limit and 0.97 * limit < angle.max() <= limit
    assert abs(angle.mean()) < 0.05 * limit


def test_cpu_augmentation_is_the_layer_rounded_to_uint8():
    images = batch(shape=(6, 10, 10, 3)).astype(np.uint8)
    out = augment.on_cpu(flip=True, rotation=0.1, seed=2)(images)
    layer = ops.convert_to_numpy(augment.Augment(flip=True, rotation=0.1, seed=2)(images, training=True))
    assert np.any(layer != np.round(layer))  # bilinear: fractions, to round and not truncate
    assert np.array_equal(out, np.clip(np.rint(layer), 0, 255).astype(np.uint8))

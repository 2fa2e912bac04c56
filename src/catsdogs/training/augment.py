"""The tutorial's augmentation (horizontal flip + rotation) as one jit-compatible Keras layer.

Keras' RandomRotation declares itself not jit-compatible, which switches XLA off for the whole model
when the layer sits inside it. This layer does the same transformation with backend-agnostic ops
(one affine transform per image), so it runs inside the compiled train step on any backend and
does nothing at inference.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="catsdogs")
class Augment(keras.layers.Layer):
    """Random horizontal flip and a random rotation of up to `rotation` of a full turn, training only."""

    def __init__(self, flip: bool = True, rotation: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.flip = flip
        self.rotation = rotation
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._rotate = _xla_compiled(rotate)

    def call(self, images, training=None):
        images = ops.cast(images, self.compute_dtype)
        if not training:
            return images
        batch = ops.shape(images)[0]
        if self.flip:
            coin = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
            images = ops.where(coin < 0.5, ops.flip(images, axis=2), images)
        if self.rotation > 0:
            turn = keras.random.uniform((batch,), -self.rotation, self.rotation, seed=self.seed_generator)
            images = self._rotate(images, turn * 2 * math.pi)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation, "seed": self.seed}


def _xla_compiled(function):
    """On TensorFlow, `function` compiled by XLA even inside a train step that is not: TensorFlow leaves
    XLA off on CPUs, where it slows the convolutions, but the rotation's gathers run about 8x faster under
    it (11 vs 94 ms for 32 images of 180x180 on 2 cores). JAX compiles the whole step anyway."""
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True, autograph=False)


def _reflect(index, size: int):
    """Reflect out-of-range pixel indices back into [0, size) as "d c b a | a b c d | d c b a"
    (Keras' fill_mode="reflect")."""
    index = ops.mod(index, 2 * size)
    return ops.where(index >= size, 2 * size - 1 - index, index)


def rotate(images, angle):
    """Rotate each image by its angle (radians) about its centre, bilinear, reflecting at the borders.

    Written as plain gathers instead of ops.image.affine_transform, whose TensorFlow kernel has no XLA
    implementation: this way the whole train step compiles with XLA on every backend. One flat gather over
    all pixels of the batch is several times faster than a per-image take_along_axis.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rows, cols = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"),
                              indexing="ij")
    cos = ops.cos(ops.cast(angle, "float32"))[:, None, None]
    sin = ops.sin(ops.cast(angle, "float32"))[:, None, None]
    # For each output pixel, where it comes from in the input image.
    x = cos * (cols - cx) - sin * (rows - cy) + cx
    y = sin * (cols - cx) + cos * (rows - cy) + cy
    x0, y0 = ops.floor(x), ops.floor(y)
    wx = ops.cast(x - x0, images.dtype)[..., None]
    wy = ops.cast(y - y0, images.dtype)[..., None]
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    flat = ops.reshape(images, (-1, channels))
    first_pixel = (ops.arange(ops.shape(images)[0], dtype="int32") * (height * width))[:, None, None]

    def pixels(yi, xi):
        return ops.take(flat, first_pixel + _reflect(yi, height) * width + _reflect(xi, width), axis=0)

    top = pixels(y0, x0) * (1 - wx) + pixels(y0, x0 + 1) * wx
    bottom = pixels(y0 + 1, x0) * (1 - wx) + pixels(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def on_cpu(flip: bool, rotation: float, seed: int):
    """The same augmentation as a function for the input pipeline, run on the CPU whatever the training
    device (the tutorial's way: it competes with the input pipeline for CPU time, but keeps the model free
    of augmentation)."""
    layer = Augment(flip=flip, rotation=rotation, seed=seed)
    backend = keras.backend.backend()

    def cpu_device():
        if backend == "jax":
            import jax

            return jax.default_device(jax.devices("cpu")[0])
        import tensorflow as tf

        return tf.device("/CPU:0")

    def augment(images):
        with cpu_device():
            augmented = ops.convert_to_numpy(layer(images, training=True))
        return np.clip(np.rint(augmented), 0, 255).astype(np.uint8)  # the model takes uint8

    return augment

"""The tutorial's augmentation (horizontal flip + rotation) as one jit-compatible Keras layer.

Keras' RandomRotation declares itself not jit-compatible, which switches XLA off for the whole model
when the layer sits inside it. This layer does the same transformation with backend-agnostic ops
(one affine transform per image), so it runs inside the compiled train step on any backend and
does nothing at inference.
"""

from __future__ import annotations

import math

import keras
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
            images = ops.image.affine_transform(
                images, rotation_transforms(turn * 2 * math.pi, images.shape[1], images.shape[2]),
                interpolation="bilinear", fill_mode="reflect",
            )
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation, "seed": self.seed}


def rotation_transforms(angle, height: int, width: int):
    """Per-image transforms [a0, a1, a2, b0, b1, b2, 0, 0] mapping output pixels to input pixels
    for a rotation by `angle` radians about the image centre (the convention of affine_transform)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = ops.cos(angle), ops.sin(angle)
    zero = ops.zeros_like(angle)
    return ops.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero], axis=1
    )

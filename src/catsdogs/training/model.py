"""The one model builder: the tutorial's small Xception, with its widths as parameters."""

from __future__ import annotations

import random
from pathlib import Path

import keras
import numpy as np
from keras import layers

from catsdogs import classes
from catsdogs.training.augment import Augment
from catsdogs.errors import UserError, first_line


@keras.saving.register_keras_serializable(package="catsdogs")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused kernel (FusedBatchNormV3 and its gradient).

    Keras 3 normalizes with separate ops (moments, then scale and shift), which TensorFlow runs as about
    fifteen elementwise ops and reductions per layer, forward and backward, unless XLA fuses them
    (keras-team/keras-core#225): on the project's 2-core CPUs, where XLA is off, they took as long as all
    the convolutions, and this layer makes a training step a third faster. The fused kernel (oneDNN on
    CPUs) computes the same thing: in training, normalization by the batch's mean and biased variance and
    the same moving-average updates; otherwise, by the moving statistics. Only the rounding differs. Other
    backends, and the options the kernel does not cover (a mask, renorm, synchronized, another axis), run
    Keras' own code.
    """

    def call(self, inputs, training=None, mask=None):
        if (keras.backend.backend() != "tensorflow" or mask is not None or self.renorm or self.synchronized
                or len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.scale and self.center)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras: statistics in float32 whatever the compute dtype
        gamma, beta = tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32")
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                 is_training=True)
            # the kernel returns the unbiased variance; Keras' moving variance averages the biased one
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
            variance = variance * ((n - 1.0) / n)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean, variance=moving_variance,
                                                       epsilon=self.epsilon, is_training=False)
        return tf.cast(y, self.compute_dtype)


def build(image_size, num_classes: int, model_params, augment_params, seed: int,
          batch_norm=FusedBatchNormalization) -> keras.Model:
    """The tutorial's `make_model`, taking uint8 images and augmenting them inside the model.

    Two classes give one logit (binary cross-entropy), more give one logit per class (softmax).
    `batch_norm=keras.layers.BatchNormalization` gives the tutorial's exact layers (the benchmark's
    "tutorial as written").
    """
    inputs = keras.Input(shape=(*image_size, 3), dtype="uint8", name="image")
    x = Augment(flip=augment_params.flip, rotation=augment_params.rotation, seed=seed, name="augment")(inputs)
    x = layers.Rescaling(1.0 / 255)(x)

    # Entry block
    x = layers.Conv2D(model_params.entry_width, 3, strides=2, padding="same")(x)
    x = batch_norm(momentum=model_params.bn_momentum)(x)
    x = layers.Activation("relu")(x)

    previous_block_activation = x  # Set aside residual

    for size in model_params.block_widths:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = batch_norm(momentum=model_params.bn_momentum)(x)

        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = batch_norm(momentum=model_params.bn_momentum)(x)

        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

        # Project residual
        # = Conv2D(size, 1, strides=2), as a subsampling then a 1x1 convolution: TensorFlow 2.21's oneDNN
        # kernel for the strided 1x1 convolution corrupts the heap on CPUs for some batch sizes and widths.
        residual = layers.MaxPooling2D(1, strides=2, padding="same")(previous_block_activation)
        residual = layers.Conv2D(size, 1, padding="same")(residual)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    x = layers.SeparableConv2D(model_params.exit_width, 3, padding="same")(x)
    x = batch_norm(momentum=model_params.bn_momentum)(x)
    x = layers.Activation("relu")(x)

    x = layers.GlobalAveragePooling2D()(x)
    units = classes.outputs_for(num_classes)
    x = layers.Dropout(model_params.dropout)(x)
    # Logits, in float32 even under mixed precision
    outputs = layers.Dense(units, activation=None, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="xception_small")


def inference_model(trained: keras.Model) -> keras.Model:
    """The trained model's inference graph, in stock Keras layers with float32 weights and policy: what
    every `.keras` file of the pipeline holds, so that plain Keras loads it (safe mode on, this project
    never imported) on any backend.

    The same layers with the same names and weights (cast to float32), except: no augmentation (training
    only, as in the tutorial's option 2), Keras' own BatchNormalization in place of the fused one (the
    same computation at inference), and a float32 policy whatever the training precision (bfloat16 runs
    at half speed on CPUs). The training model, its fast layers and its optimizer stay in the train
    stage and its resume state.
    """
    def clone(layer):
        stock = layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return stock.from_config({**layer.get_config(), "dtype": "float32"})

    def call(layer, *args, **kwargs):
        return args[0] if isinstance(layer, Augment) else layer(*args, **kwargs)

    # Building layers draws Python's random numbers for their (unused) initializers: put them back, so that
    # saving a checkpoint changes nothing in the training run (a resumed run must repeat it exactly).
    state, policy = random.getstate(), keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("float32")
        model = keras.models.clone_model(trained, clone_function=clone, call_function=call)
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(state)
    for layer in model.layers:
        if layer.weights:  # (an input layer has none, and its name may be a new one)
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in trained.get_layer(layer.name).get_weights()])
    custom = [layer.name for layer in model.layers if type(layer).__module__.startswith("catsdogs")]
    assert not custom, f"layers of this project left in the inference model: {custom}"
    return model


def with_probabilities(model: keras.Model) -> keras.Model:
    """`model` ending in class probabilities instead of logits, in stock layers: what the SavedModel and
    the ONNX file serve (`probabilities()` computes the same from the logits)."""
    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="image")
    logits = model(inputs)
    if classes.count(model.output_shape[-1]) == 2:
        second = layers.Activation("sigmoid")(logits)
        return keras.Model(inputs, layers.Concatenate()([layers.Rescaling(-1.0, offset=1.0)(second), second]))
    return keras.Model(inputs, layers.Softmax()(logits))


def compile_for(model: keras.Model, num_classes: int, learning_rate) -> None:
    """The tutorial's loss and metric ("acc") for two classes; their sparse softmax versions for more.

    The tutorial's BinaryAccuracy keeps its default threshold of 0.5, but the model outputs logits: it
    counts a dog only above a logit of 0.5 (a probability of 0.62). Threshold 0 is probability 0.5, as in
    the evaluate stage and in predictions.
    """
    if classes.outputs_for(num_classes) == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metric = keras.metrics.BinaryAccuracy(name="acc", threshold=0.0)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metric = keras.metrics.SparseCategoricalAccuracy(name="acc")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[metric])


def load(path) -> keras.Model:
    """Load a trained model with safe_mode=True (no arbitrary code from the file); UserError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model not found (run the train stage first, or pass --model)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds of errors for a bad file
        raise UserError(f"{path}: not a loadable Keras model ({first_line(exc)})") from None


def load_classes(path, model: keras.Model) -> list[str]:
    """The class names saved by the train stage, checked against the model's output."""
    return classes.read_checked(path, classes.count(model.output_shape[-1]), "the model")

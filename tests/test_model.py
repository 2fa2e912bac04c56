"""The model builder: the tutorial's architecture with its widths as params."""

import json
import subprocess
from pathlib import Path
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from catsdogs import classes
from catsdogs.training import model as model_lib
from conftest import ENV, ROOT

TUTORIAL = SimpleNamespace(entry_width=128, block_widths=[256, 512, 728], exit_width=1024, dropout=0.25,
                           bn_momentum=0.99)
AUGMENT = SimpleNamespace(flip=True, rotation=0.1)


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_the_tutorial_architecture():
    model = model_lib.build((180, 180), 2, TUTORIAL, AUGMENT, seed=1)
    assert model.input.dtype == "uint8" and model.output_shape == (None, 1)
    assert [l.filters for l in layers_of(model, keras.layers.SeparableConv2D)] == [256, 256, 512, 512, 728, 728, 1024]
    assert layers_of(model, keras.layers.Dropout)[0].rate == 0.25
    assert all(l.momentum == 0.99 for l in layers_of(model, keras.layers.BatchNormalization))
    entry = layers_of(model, keras.layers.Conv2D)[0]
    assert (entry.filters, entry.strides) == (128, (2, 2))


def test_more_than_two_classes_get_one_logit_each_and_softmax_loss():
    model = model_lib.build((32, 32), 5, SimpleNamespace(entry_width=8, block_widths=[8], exit_width=8,
                                                         dropout=0.1, bn_momentum=0.9), AUGMENT, seed=1)
    model_lib.compile_for(model, 5, 1e-3)
    assert model.output_shape == (None, 5)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    probs = classes.probabilities(np.array([[1.0, 2.0, 0.0, 0.0, -1.0]]))
    assert probs.shape == (1, 5) and np.isclose(probs.sum(), 1) and probs.argmax() == 1


def test_fused_batch_normalization_computes_what_keras_layer_does():
    """Outputs, gradients and moving statistics of Keras' layer, in training and at inference: only rounding
    differs (the moving variance averages the biased batch variance, as Keras' does)."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(8, 5, 5, 6)).astype("float32"))
    plain, fused = keras.layers.BatchNormalization(momentum=0.5), model_lib.FusedBatchNormalization(momentum=0.5)
    gradients = []
    for layer in (plain, fused):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 6))
        layer.beta.assign(np.linspace(-1.0, 1.0, 6))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype="float32"))
        gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
        layer.y = y
    np.testing.assert_allclose(fused.y, plain.y, atol=1e-5)
    # gamma's gradient is c * sum(x_hat of channel c) over 200 values that cancel to 0: its float32 rounding,
    # up to ~2e-4 here, follows the order of the reduction (TensorFlow's thread count changes it); a wrong
    # formula is off by whole units
    for a, b in zip(*gradients):
        np.testing.assert_allclose(b, a, atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)


def test_the_residual_projection_equals_a_strided_1x1_convolution():
    x = np.random.default_rng(0).normal(size=(3, 15, 15, 8)).astype("float32")
    strided = keras.layers.Conv2D(16, 1, strides=2, padding="same")
    expected = strided(x)
    subsample = keras.layers.MaxPooling2D(1, strides=2, padding="same")
    conv = keras.layers.Conv2D(16, 1, padding="same")
    conv.build((None, 8, 8, 8))
    conv.set_weights(strided.get_weights())
    np.testing.assert_allclose(conv(subsample(x)), expected, atol=1e-6)


def test_odd_batches_of_a_narrow_model_train_without_crashing():
    """TensorFlow 2.21's oneDNN strided 1x1 convolution corrupted the heap here (segfault or abort in most
    runs of this very program): the model avoids that kernel."""
    program = """
import numpy as np, keras
from types import SimpleNamespace as NS
from catsdogs.training import model as model_lib
keras.utils.set_random_seed(1)
x = np.random.randint(0, 255, (46, 32, 32, 3), dtype=np.uint8); y = np.random.randint(0, 2, 46)
m = model_lib.build((32, 32), 2, NS(entry_width=4, block_widths=[8], exit_width=8, dropout=0.25, bn_momentum=0.9),
                    NS(flip=True, rotation=0.1), 1)
model_lib.compile_for(m, 2, 1e-3)
m.fit(x[:37], y[:37], validation_data=(x[37:], y[37:]), batch_size=37, epochs=2, verbose=0)
print("trained")
"""
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", program], env=ENV, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-2000:]


def test_probabilities_of_known_logits():
    """One logit is p(class 1) = sigmoid(logit), class 0 first; more logits are a softmax, in class order."""
    two = classes.probabilities(np.array([[np.log(3.0)], [-np.log(3.0)], [0.0], [40.0], [-40.0]]))
    np.testing.assert_allclose(two, [[0.25, 0.75], [0.75, 0.25], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]], atol=1e-12)
    three = classes.probabilities(np.log([[1.0, 2.0, 5.0], [5.0, 2.0, 1.0], [1e-300, 1.0, 1.0]]) + [[0.0], [700.0], [3.0]])
    np.testing.assert_allclose(three, [[0.125, 0.25, 0.625], [0.625, 0.25, 0.125], [0.0, 0.5, 0.5]], atol=1e-12)


def test_class_names_must_match_the_model_outputs(tmp_path):
    from catsdogs.errors import UserError

    def model_with(units):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(units)(inputs))

    path = tmp_path / "classes.json"
    for names, units in ((["Cat", "Dog"], 1), (["Cat", "Dog"], 2), (["a", "b", "c"], 3)):
        path.write_text(json.dumps(names))
        assert model_lib.load_classes(path, model_with(units)) == names
    for names, units in ((["Cat"], 1), (["a", "b", "c"], 2), (["a", "b", "c"], 1), ("Cat", 1), (["Cat", 2], 1)):
        path.write_text(json.dumps(names))
        with pytest.raises(UserError, match=r"does not match the \d classes of the model"):
            model_lib.load_classes(path, model_with(units))


def test_accuracy_counts_a_logit_above_0_as_class_1():
    """Logit 0 is probability 0.5: a logit of 0.3 (p = 0.57) is a dog, and is counted as right.
    The tutorial's BinaryAccuracy() would count a dog only above a logit of 0.5."""
    inputs = keras.Input((1,))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.array([[1.0]]), np.array([0.0])])  # the logit is the input
    model_lib.compile_for(model, 2, 1e-3)
    logits = np.array([[0.3], [0.1], [-0.2], [-0.4], [0.7], [-0.05]], dtype="float32")
    labels = np.array([1, 1, 0, 0, 0, 1])  # the last two wrong: 4 of 6 right
    _, accuracy = model.evaluate(logits, labels, verbose=0)
    assert accuracy == pytest.approx(4 / 6)


def test_images_are_scaled_to_0_1_inside_the_model():
    model = model_lib.build((8, 8), 2, SimpleNamespace(entry_width=4, block_widths=[8], exit_width=8, dropout=0.1,
                                                       bn_momentum=0.9), AUGMENT, seed=1)
    [rescaling] = layers_of(model, keras.layers.Rescaling)
    scaled = keras.Model(model.input, rescaling.output)
    x = np.stack([np.full((8, 8, 3), v, dtype=np.uint8) for v in (0, 51, 255)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled(x, training=False))[:, 0, 0, 0], [0.0, 0.2, 1.0],
                               rtol=1e-6)


# --- the saved model: plain Keras loads it -------------------------------------------------------------

# Probabilities of the saved float32 model against the float32 training model: both compute the same
# function in float32, differing only in rounding (the fused batch-norm kernel, another backend's
# convolutions): about 1e-7 here, and 1e-5 leaves a hundredfold margin while staying ten times below the
# 0.01 percentage point that `catsdogs predict` prints.
PLAIN_KERAS_TOLERANCE = 1e-5

PLAIN_LOAD = """
import json, sys
import numpy as np
import keras
images = np.load(sys.argv[1])
outputs = {}
for path in sys.argv[2:]:
    model = keras.saving.load_model(path, safe_mode=True)
    outputs[path] = {"logits": model.predict(images, verbose=0).tolist(), "policy": model.dtype_policy.name,
                     "dtypes": sorted({v.dtype for v in model.weights}),
                     "classes": sorted({type(layer).__module__.split(".")[0] for layer in model.layers})}
assert not [name for name in sys.modules if name.split(".")[0] == "catsdogs"]
print(json.dumps({"backend": keras.backend.backend(), "outputs": outputs}))
"""


def load_with_plain_keras(backend: str, images: np.ndarray, paths, tmp_path) -> dict:
    """Load each .keras file in a fresh process on `backend`, where importing catsdogs fails."""
    import json

    blocked = tmp_path / "no_catsdogs"
    (blocked / "catsdogs").mkdir(parents=True, exist_ok=True)
    (blocked / "catsdogs" / "__init__.py").write_text('raise ImportError("catsdogs is not installed")\n')
    np.save(tmp_path / "images.npy", images)
    env = dict(ENV, KERAS_BACKEND=backend, PYTHONPATH=str(blocked))
    result = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(tmp_path / "images.npy"), *map(str, paths)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report["outputs"]


def test_saved_models_load_with_plain_keras_on_both_backends_and_match_training(tmp_path):
    import pytest

    pytest.importorskip("jax")
    from catsdogs.training import callbacks

    keras.utils.set_random_seed(3)
    narrow = SimpleNamespace(entry_width=4, block_widths=[8], exit_width=8, dropout=0.25, bn_momentum=0.9)
    model = model_lib.build((32, 32), 2, narrow, AUGMENT, seed=1)
    model_lib.compile_for(model, 2, 1e-3)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, 48)
    model.fit(images, labels, epochs=2, batch_size=16, verbose=0,
              callbacks=[callbacks.AtomicCheckpoint(tmp_path / "checkpoints")])
    model_lib.inference_model(model).save(tmp_path / "model.keras")  # as the train stage saves it
    expected = classes.probabilities(model.predict(images, verbose=0))
    paths = [tmp_path / "model.keras", tmp_path / "checkpoints" / "save_at_2.keras"]
    for backend in ("tensorflow", "jax"):
        for path, loaded in load_with_plain_keras(backend, images, paths, tmp_path).items():
            assert loaded["policy"] == "float32" and loaded["dtypes"] == ["float32"], path
            assert loaded["classes"] == ["keras"], path  # stock layers only: no Augment, no fused batch norm
            difference = np.abs(classes.probabilities(np.array(loaded["logits"])) - expected).max()
            assert difference <= PLAIN_KERAS_TOLERANCE, (backend, path, difference)
            print(f"{backend}: {Path(path).name}: largest probability difference {difference:.2e}")
    earlier = load_with_plain_keras("tensorflow", images, [tmp_path / "checkpoints" / "save_at_1.keras"], tmp_path)
    assert np.abs(np.array(next(iter(earlier.values()))["logits"]) - model.predict(images, verbose=0)).max() > 0


def test_the_inference_model_keeps_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = model_lib.build((32, 32), 3, SimpleNamespace(entry_width=4, block_widths=[8], exit_width=8,
                                                             dropout=0.1, bn_momentum=0.9), AUGMENT, seed=1)
        inference = model_lib.inference_model(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert inference.dtype_policy.name == "float32"
    assert {layer.dtype_policy.name for layer in inference.layers} == {"float32"}
    assert {v.dtype for v in inference.weights} == {"float32"}
    assert not layers_of(inference, model_lib.FusedBatchNormalization) and "augment" not in [
        layer.name for layer in inference.layers]
    assert inference.count_params() == model.count_params()

"""`catsdogs predict` on each of the three formats (catsdogs.serving.exports): the same percentages, the lean
install without TensorFlow and JAX, only JAX, and every kind of bad model file."""

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from catsdogs.commands import cli
from catsdogs.serving import exports
from catsdogs.training import model as model_lib
from catsdogs.errors import UserError
from conftest import ENV, ROOT

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

FORMATS = ["model.keras", "savedmodel", "model.onnx"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export folder as the export stage writes it, from a small model with trained-looking weights."""
    import keras

    folder = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(5)
    narrow = SimpleNamespace(entry_width=4, block_widths=[8], exit_width=8, dropout=0.25, bn_momentum=0.9)
    training = model_lib.build((32, 32), 2, narrow, SimpleNamespace(flip=True, rotation=0.1), seed=1)
    model_lib.compile_for(training, 2, 1e-2)
    rng = np.random.default_rng(0)
    training.fit(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, 64), epochs=2, verbose=0)
    model = model_lib.inference_model(training)
    model.save(folder / "model.keras")
    serving = model_lib.with_probabilities(model)
    serving.export(str(folder / "savedmodel"), format="tf_saved_model", verbose=False)
    serving.export(str(folder / "model.onnx"), format="onnx", verbose=False)
    (folder / exports.METADATA_FILE).write_text(json.dumps(
        exports.describe(["Cat", "Dog"], (32, 32), list(exports.FILES), {}, {})))
    return folder


def photos(folder, count=6):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        side = (40 + 7 * i, 30 + 5 * i)
        pixels = np.clip(rng.normal(40 * i + 30, 40, (*side, 3)), 0, 255).astype(np.uint8)  # darker to lighter
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return folder


def predict(*args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_the_three_formats_give_the_same_percentages(exported, tmp_path, capsys):
    images = photos(tmp_path / "photos")
    outputs, probabilities = {}, {}
    for name in FORMATS:
        code, outputs[name], err = predict("--model", exported / name, images, capsys=capsys)
        assert code == 0, err
        code, out, _ = predict("--model", exported / name, "--json", images, capsys=capsys)
        probabilities[name] = np.array([[r["probabilities"]["Cat"], r["probabilities"]["Dog"]] for r in json.loads(out)])
    assert outputs["model.keras"] == outputs["savedmodel"] == outputs["model.onnx"]
    assert len(outputs["model.onnx"].splitlines()) == 6 and "% cat and " in outputs["model.onnx"]
    for name in FORMATS[1:]:
        assert np.abs(probabilities[name] - probabilities["model.keras"]).max() <= 1e-5
    assert len({tuple(p.round(4)) for p in probabilities["model.keras"]}) > 1  # the photos differ


def test_class_names_come_from_the_metadata_beside_an_export(exported, tmp_path, capsys):
    folder = tmp_path / "renamed"
    shutil.copytree(exported, folder)
    meta = json.loads((folder / exports.METADATA_FILE).read_text())
    (folder / exports.METADATA_FILE).write_text(json.dumps({**meta, "classes": ["Hamster", "Parrot"]}))
    code, out, _ = predict("--model", folder / "model.onnx", photos(tmp_path / "p", 1), capsys=capsys)
    assert code == 0 and "% hamster and " in out


# --- bad input: one line naming the file, exit 2 -----------------------------------------------------------

def broken(exported, tmp_path, how):
    folder = tmp_path / "broken"
    shutil.copytree(exported, folder)
    onnx, pb, meta = folder / "model.onnx", folder / "savedmodel/saved_model.pb", folder / exports.METADATA_FILE
    if how == "missing onnx":
        onnx.unlink()
        return onnx, "model not found"
    if how == "truncated onnx":
        onnx.write_bytes(onnx.read_bytes()[:2000])
        return onnx, "not a loadable ONNX model"
    if how == "foreign onnx":
        onnx.write_bytes(b"PK\x03\x04 this is a zip file, not ONNX" * 20)
        return onnx, "not a loadable ONNX model"
    if how == "truncated savedmodel":
        pb.write_bytes(pb.read_bytes()[:500])
        return folder / "savedmodel", "not a loadable SavedModel"
    if how == "empty folder":
        pb.unlink()
        return folder / "savedmodel", "without saved_model.pb"
    if how == "truncated keras":
        keras_file = folder / "model.keras"
        keras_file.write_bytes(keras_file.read_bytes()[:3000])
        return keras_file, "not a loadable Keras model"
    if how == "foreign file":
        other = folder / "model.pt"
        other.write_bytes(b"\x80\x02")
        return other, "not a model file this command reads"
    if how == "no metadata":
        meta.unlink()
        return onnx, f"{meta}: metadata not found"
    if how == "metadata of other classes":
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "classes": ["Cat", "Dog", "Fox"]}))
        return onnx, f"{meta}: names 3 classes, but {onnx} has 2"
    if how == "metadata of another size":
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "input": {**data["input"], "shape": [None, 64, 64, 3]}}))
        return folder / "savedmodel", f"{meta}: says 64x64 images, but {folder / 'savedmodel'} takes 32x32"
    if how == "not metadata":
        meta.write_text("[1, 2")
        return onnx, f"{meta}: unreadable metadata"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["missing onnx", "truncated onnx", "foreign onnx", "truncated savedmodel",
                                 "empty folder", "truncated keras", "foreign file", "no metadata",
                                 "metadata of other classes", "metadata of another size", "not metadata"])
def test_a_bad_model_file_is_one_line_and_exit_2(exported, tmp_path, capsys, how):
    model, message = broken(exported, tmp_path, how)
    out_dir = photos(tmp_path / "photos", 1)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = predict("--model", model, out_dir, capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert str(model) in err or "metadata" in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("name", FORMATS)
def test_an_image_of_the_wrong_size_for_the_model_is_one_error_naming_it(exported, name):
    runner = exports.load(exported / name)
    with pytest.raises(UserError, match=rf"^{exported / name}: takes uint8 images of 32x32x3 .*got uint8 48x32x3$"):
        runner.probabilities(np.zeros((2, 48, 32, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="got float32 32x32x3"):
        runner.probabilities(np.zeros((2, 32, 32, 3), dtype=np.float32))


# --- the lean install, and JAX alone --------------------------------------------------------------------

def blocked_env(tmp_path, *packages) -> dict:
    folder = tmp_path / "blocked"
    for name in packages:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f'raise ImportError("{name} is not installed")\n')
    return dict(ENV, PYTHONPATH=f"{folder}:{ROOT / 'src'}")


def cli_predict(env, model, images, cwd):
    code = ("import runpy, sys; sys.argv = ['catsdogs', 'predict', '--model', sys.argv[1], sys.argv[2]]\n"
            "try:\n    runpy.run_module('catsdogs.commands.cli', run_name='__main__')\n"
            "finally:\n    heavy = sorted({n.split('.')[0] for n in sys.modules} & {'keras', 'tensorflow', 'jax'})\n"
            "    print('imported:', heavy, file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code, str(model), str(images)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_predict_on_onnx_needs_neither_tensorflow_nor_jax_nor_keras(exported, tmp_path):
    env = blocked_env(tmp_path, "tensorflow", "jax", "keras")
    images = photos(tmp_path / "photos")
    result = cli_predict(env, exported / "model.onnx", images, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stderr
    full = cli_predict(ENV, exported / "model.keras", images, tmp_path)
    assert result.stdout == full.stdout and result.stdout.count("This image is") == 6
    # what needs the packages this install lacks says so in one line
    for model, needs in ((exported / "model.keras", "needs TensorFlow or JAX"),
                         (exported / "savedmodel", "needs TensorFlow: pip install 'catsdogs[cpu]'")):
        refused = cli_predict(env, model, images, tmp_path)
        assert refused.returncode == 2 and needs in refused.stderr and "Traceback" not in refused.stderr


def test_predict_with_only_jax_installed(exported, tmp_path):
    pytest.importorskip("jax")
    env = blocked_env(tmp_path, "tensorflow", "onnxruntime")
    images = photos(tmp_path / "photos")
    result = cli_predict(env, exported / "model.keras", images, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported: ['jax', 'keras']" in result.stderr
    assert result.stdout == cli_predict(ENV, exported / "model.keras", images, tmp_path).stdout
    refused = cli_predict(env, exported / "model.onnx", images, tmp_path)
    assert refused.returncode == 2 and "needs onnxruntime: pip install 'catsdogs[lite]'" in refused.stderr


BAD_METADATA = [
    {"format": "catsdogs-export/0"},
    {"classes": ["cat"]},
    {"classes": ["cat", 2]},
    {"input": {"name": "image", "shape": [None, 32, 32, 1], "dtype": "uint8"}},
    {"input": {"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32"}},
    {"input": {"name": "image", "shape": [None, "32", 32, 3], "dtype": "uint8"}},
    {"input": {"name": "image", "shape": [None, 32, 3], "dtype": "uint8"}},
]


def test_metadata_is_checked_under_python_O_too(tmp_path):
    """Issue 17: the checks were `assert`s, which `python -O` drops."""
    paths = []
    for n, change in enumerate(BAD_METADATA):
        paths.append(tmp_path / str(n) / exports.METADATA_FILE)
        paths[-1].parent.mkdir()
        paths[-1].write_text(json.dumps(exports.describe(["cat", "dog"], (32, 32), ["keras"], {}, {}) | change))
    code = ("import sys; from pathlib import Path; from catsdogs.serving import exports; from catsdogs.errors import "
            "UserError\nfor path in sys.argv[1:]:\n    try:\n        exports.read_metadata(Path(path))\n"
            "    except UserError as exc:\n        print(exc)")
    result = subprocess.run([sys.executable, "-O", "-c", code, *map(str, paths)], env=ENV, text=True,
                            capture_output=True, check=True)
    assert result.stdout.splitlines() == [f"{path}: not a metadata file of format catsdogs-export/1 (rerun the "
                                          "export stage)" for path in paths]


def test_a_three_class_onnx_export_names_its_classes_and_predicts_the_top_three(tmp_path, capsys):
    """A model of stock layers with known logits, exported as the export stage does: the metadata names the
    three classes, and predict on the ONNX file alone gives their softmax, most likely first."""
    import keras

    inputs = keras.Input((8, 8, 3), dtype="uint8", name="image")
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))))
    dense.set_weights([np.zeros((3, 3)), np.log([1.0, 3.0, 6.0])])  # every image: (1, 3, 6) / 10
    folder = tmp_path / "export"
    folder.mkdir()
    model.save(folder / "model.keras")
    serving = model_lib.with_probabilities(model)
    serving(np.zeros((1, 8, 8, 3), np.uint8))  # Keras exports only a model that has been called
    serving.export(str(folder / "model.onnx"), format="onnx", verbose=False)
    names = ["Lynx", "Puma", "Tabby"]
    (folder / exports.METADATA_FILE).write_text(json.dumps(exports.describe(names, (8, 8), ["keras", "onnx"], {}, {})))
    assert exports.read_metadata(folder / exports.METADATA_FILE).classes == names
    image = photos(tmp_path / "p", 1) / "0.jpg"
    code, out, _ = predict("--model", folder / "model.onnx", image, capsys=capsys)
    assert (code, out) == (0, f"{image}: This image is 60.00% tabby, 30.00% puma and 10.00% lynx.\n")

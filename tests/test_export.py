"""The export stage on a tiny trained model: each format against Keras with its own runtime, the metrics,
the metadata, and a difference beyond tolerance or a missing package."""

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, TINY_TRAINING, committed_params, run, stage_command

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")


def blocking(folder, *packages):
    """A folder to put first on PYTHONPATH where importing each of `packages` raises ImportError."""
    for name in packages:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f'raise ImportError("{name} is not installed")\n')
    return folder


def write_params(workdir, **export):
    params = committed_params()
    for key, value in TINY_TRAINING.items():
        params[key] = params[key] | value if isinstance(value, dict) else value
    params["export"] |= export
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with cleaned images, the train stage's outputs and the export stage's."""
    workdir = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    for cls in ("Cat", "Dog"):
        (workdir / "clean" / cls).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(workdir / "clean" / cls / f"{i}.jpg")
    write_params(workdir)
    run(*stage_command("train", "clean"), cwd=workdir)
    result = run(*stage_command("export", "clean"), cwd=workdir)
    assert "Traceback" not in result.stderr
    return workdir


def validation_images(workdir):
    from catsdogs.data import images, splits

    data, _ = splits.read(workdir / "models/split.csv", ["Cat", "Dog"])
    return np.stack([images.decode_file(workdir / "clean" / data.paths[i], (32, 32)) for i in data.val])


def keras_probabilities(workdir, batch):
    from catsdogs import classes
    from catsdogs.training import model as model_lib

    return classes.probabilities(model_lib.load(workdir / "models/model.keras").predict(batch, verbose=0))


def test_each_export_matches_keras_in_its_own_runtime(trained):
    import onnxruntime
    import tensorflow as tf

    batch = validation_images(trained)
    expected = keras_probabilities(trained, batch)
    session = onnxruntime.InferenceSession(str(trained / "models/export/model.onnx"))
    onnx = session.run(None, {"image": batch})[0]
    loaded = tf.saved_model.load(str(trained / "models/export/savedmodel"))
    served = loaded.signatures["serving_default"](image=tf.constant(batch))["output_0"].numpy()
    metrics = json.loads((trained / "metrics/export.json").read_text())
    for name, got in (("onnx", onnx), ("savedmodel", served)):
        assert got.shape == expected.shape and got.dtype == np.float32
        difference = float(np.abs(got - expected).max())
        assert difference <= 1e-5, name
        assert metrics["largest_difference"][name] == pytest.approx(difference, abs=1e-6)
        print(f"{name}: largest probability difference {difference:.2e} on {len(batch)} images")
    assert metrics["validation_images"] == len(batch) and metrics["skipped"] == []
    assert (trained / "models/export/model.keras").read_bytes() == (trained / "models/model.keras").read_bytes()


def test_the_metadata_says_what_a_caller_needs(trained):
    from catsdogs.serving import exports

    meta = json.loads((trained / "models/export/metadata.json").read_text())
    assert meta["classes"] == ["Cat", "Dog"]
    assert meta["input"] == {"name": "image", "shape": [None, 32, 32, 3], "dtype": "uint8",
                             "preprocessing": exports.PREPROCESSING}
    assert meta["files"] == exports.FILES and set(meta["outputs"]) == set(exports.FILES)
    assert meta["trained_on"]["params"]["epochs"] == TINY_TRAINING["epochs"]
    assert meta["trained_on"]["params"]["data"]["image_size"] == [32, 32]
    assert len(meta["trained_on"]["data"]["split_sha256"]) == 64
    assert meta["checked"]["tolerance"] == committed_params()["export"]["tolerance"]


def test_a_difference_beyond_tolerance_writes_nothing(trained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("export", "export.json"))
    write_params(workdir, tolerance=1e-12)
    result = run(*stage_command("export", "clean"), cwd=workdir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert "more than export.tolerance (1e-12): nothing written" in line and "models/export/" in line
    assert not (workdir / "models/export").exists() and not (workdir / "metrics/export.json").exists()
    assert not list((workdir / "models").glob(".export.*"))


def test_a_format_whose_packages_are_missing_is_skipped_with_one_line(trained, tmp_path, monkeypatch):
    import conftest

    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("export", "export.json"))
    monkeypatch.setitem(conftest.ENV, "PYTHONPATH", f"{blocking(tmp_path / 'block', 'tf2onnx')}:{ROOT / 'src'}")
    result = run(*stage_command("export", "clean"), cwd=workdir)
    assert "export: onnx skipped: it needs tf2onnx (pip install 'catsdogs[cpu,export]')" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (workdir / "models/export").iterdir()) == ["metadata.json", "model.keras",
                                                                            "savedmodel"]
    assert json.loads((workdir / "metrics/export.json").read_text())["skipped"] == ["onnx"]
    assert set(json.loads((workdir / "models/export/metadata.json").read_text())["files"]) == {"keras", "savedmodel"}

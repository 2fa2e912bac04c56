"""The train stage on the jax backend, in a process where TensorFlow cannot be imported."""

import json
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from catsdogs import caches, history
from conftest import ROOT, TINY_TRAINING, committed_params, run, stage_command

pytest.importorskip("jax")

@pytest.fixture
def workdir(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("Cat", "Dog"):
        (tmp_path / "clean" / cls).mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "clean" / cls / f"{i}.jpg")
    params = committed_params()
    for key, value in TINY_TRAINING.items():
        params[key] = params[key] | value if isinstance(value, dict) else value
    params["train"]["backend"] = "jax"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    # a package named tensorflow that refuses to import, first on the path
    (tmp_path / "no_tf" / "tensorflow").mkdir(parents=True)
    (tmp_path / "no_tf" / "tensorflow" / "__init__.py").write_text('raise ImportError("TensorFlow is not installed")\n')
    return tmp_path


def test_jax_backend_trains_without_tensorflow(workdir, monkeypatch):
    env_path = f"{workdir / 'no_tf'}:{ROOT / 'src'}"
    monkeypatch.setenv("PYTHONPATH", env_path)
    import conftest

    monkeypatch.setitem(conftest.ENV, "PYTHONPATH", env_path)
    monkeypatch.setitem(conftest.ENV, caches.ENV, str(workdir / "caches"))  # its own: empty before this run
    refused = run(sys.executable, "-c", "import tensorflow", cwd=workdir, check=False)
    assert "TensorFlow is not installed" in refused.stderr

    result = run(*stage_command("train", "clean"), cwd=workdir)
    assert "on jax" in result.stderr + result.stdout
    # logged live through DVCLive, which needs no TensorFlow either
    summary = history.read_summary(workdir / "metrics/train")
    assert summary["step"] == TINY_TRAINING["epochs"]
    assert [row["epoch"] for row in history.read_history(workdir / "metrics/train")] == [1, 2]
    assert (workdir / "models/model.keras").stat().st_size > 0
    assert any((workdir / "caches" / caches.JAX).iterdir())  # the persistent compilation cache was filled

    # the evaluate stage reads the same params and so runs on jax too
    result = run(*stage_command("evaluate", "clean"), cwd=workdir)
    metrics = json.loads((workdir / "metrics/metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["final"]["val_acc"], abs=1e-5)

"""The Keras check at the start of training: the verified range, the patched internals, the one-line error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from catsdogs import backend, compat
from catsdogs.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RANGE = SpecifierSet(">=3.10,<3.16")


@pytest.fixture
def tensorflow_keras():
    """Keras on its TensorFlow backend, as the train stage has it when it calls check_keras."""
    pytest.importorskip("tensorflow")
    backend.select("tensorflow")


def use(monkeypatch, installed: str, verified: SpecifierSet = RANGE) -> None:
    monkeypatch.setattr(compat, "installed_keras", lambda: installed)
    monkeypatch.setattr(compat, "verified_range", lambda: verified)


def test_the_installed_environment_passes(tensorflow_keras):
    compat.check_keras("tensorflow")


@pytest.mark.parametrize("version", ["3.10.0", "3.15.1", "3.15.2rc1"])
def test_a_version_inside_the_range_passes(monkeypatch, tensorflow_keras, version):
    use(monkeypatch, version)
    compat.check_keras("tensorflow")
    compat.check_keras("jax")


@pytest.mark.parametrize("version", ["3.16.0", "3.16.0rc1", "4.0.0", "3.9.3", "not-a-version"])
def test_a_version_outside_the_range_is_one_line_naming_both(monkeypatch, version):
    use(monkeypatch, version)
    for name in ("tensorflow", "jax"):
        with pytest.raises(UserError) as error:
            compat.check_keras(name)
        message = str(error.value)
        assert "\n" not in message
        assert f"keras {version} is installed" in message
        assert "keras>=3.10,<3.16" in message
        assert "pip install --require-hashes -r requirements.lock" in message


@pytest.mark.parametrize("module, attribute", [
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
    ("keras.src.backend.tensorflow.trainer.TensorFlowTrainer", "_maybe_symbolic_build"),
    ("keras.src.trainers.trainer.Trainer", "_symbolic_build"),
])
def test_a_missing_patched_internal_is_the_error(monkeypatch, tensorflow_keras, module, attribute):
    """Where Keras defines them: keras.Model inherits the last two."""
    use(monkeypatch, "3.15.1")
    monkeypatch.delattr(f"{module}.{attribute}")
    with pytest.raises(UserError) as error:
        compat.check_keras("tensorflow")
    message = str(error.value)
    assert "\n" not in message
    assert attribute in message and "keras 3.15.1" in message and "keras>=3.10,<3.16" in message
    compat.check_keras("jax")  # nothing of Keras is patched for jax


def test_the_range_is_read_from_installed_metadata(monkeypatch, tmp_path):
    """From real package metadata: the keras requirement of the pipeline extra, not another extra's."""
    info = tmp_path / "example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: example\nVersion: 1.0\n"
                                   "Requires-Dist: numpy>=1.26\n"
                                   'Requires-Dist: keras>=3.20; extra == "other"\n'
                                   'Requires-Dist: keras<3.16,>=3.10; extra == "pipeline"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert compat.verified_range("example") == RANGE
    assert compat.describe(compat.verified_range("example")) == ">=3.10,<3.16"


def test_an_uninstalled_project_is_a_user_error():
    with pytest.raises(UserError, match="not installed"):
        compat.verified_range("no-such-distribution-installed")


def test_pyproject_bounds_keras_and_the_lock_is_inside():
    """The range must have an upper bound to mean anything, and the locked Keras must lie in it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][compat.EXTRA]
    keras = next(Requirement(line) for line in declared if Requirement(line).name == "keras")
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in keras.specifier)
    pins = [line.split("==")[1].split()[0] for line in (ROOT / "requirements.lock").read_text().splitlines()
            if line.startswith("keras==")]
    assert len(pins) == 1 and pins[0] in keras.specifier


def test_compat_imports_no_keras():
    """Importing it must not choose Keras' backend."""
    code = "import sys, catsdogs.compat; assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

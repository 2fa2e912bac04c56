"""catsdogs.commands.cli, the `catsdogs` command: its arguments, what each command is given, and its exit codes.

What predict prints for each image is pinned in test_predict.py; here, what reaches it and how the process
ends, in this process and as a real `python -m catsdogs.commands.cli` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import caches, tables
from catsdogs.commands import cli, experiments, review
from conftest import ENV, ROOT

CHILD_ENV = dict(ENV, PYTHONPATH=str(ROOT / "src"))


def run_cli(*argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Stock layers only: the logit is 2 x (mean brightness) - 1, so white is Dog and black is Cat."""
    import keras

    folder = tmp_path_factory.mktemp("cli_model")
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(1)
    m = keras.Model(inputs, dense(x))
    dense.set_weights([np.full((3, 1), 2 / 3), np.array([-1.0])])
    m.save(folder / "model.keras")
    (folder / "classes.json").write_text('["Cat", "Dog"]')
    return folder


def image(path, level=255):
    Image.new("RGB", (12, 10), (level,) * 3).save(path)
    return path


@pytest.mark.parametrize("argv", [[], ["predict"], ["fly"], ["predict", "--colour", "x.jpg"],
                                  ["demo", "--config"]])
def test_bad_arguments_are_usage_errors_with_exit_code_2(argv, capsys):
    code, out, err = run_cli(*argv, capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("usage: catsdogs") and "error: " in err


@pytest.mark.parametrize("argv, shown", [(["--help"], "{predict,demo,review,best,tune,cache}"),
                                         (["predict", "--help"], "--classes"), (["demo", "--help"], "--config"),
                                         (["review", "--help"], "--accept-top"), (["best", "--help"], "--metric"),
                                         (["tune", "--help"], "--storage"), (["cache", "--help"], "--clear")])
def test_help_exits_0(argv, shown, capsys):
    code, out, _ = run_cli(*argv, capsys=capsys)
    assert code == 0 and out.startswith("usage: catsdogs") and shown in out


def test_predict_defaults_to_the_train_stage_outputs(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("catsdogs.serving.predict.predict", lambda *args, top: calls.append((*args, top)) or [])
    assert run_cli("predict", "a.jpg", "folder", capsys=capsys) == (0, "", "")
    assert calls == [(["a.jpg", "folder"], "models/model.keras", None, None)]  # class names: beside the model
    run_cli("predict", "--model", "m.keras", "--classes", "c.json", "--top", "2", "b.png", capsys=capsys)
    assert calls[-1] == (["b.png"], "m.keras", "c.json", 2)


def test_demo_gets_its_config_and_the_dvc_arguments_after_the_double_dash(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("catsdogs.commands.demo.run", lambda config, extra: calls.append((config, extra)) or 7)
    assert run_cli("demo", capsys=capsys)[0] == 7  # dvc's exit code is the command's
    assert run_cli("demo", "--config", "my.yaml", "--", "-S", "epochs=1", "--temp", capsys=capsys)[0] == 7
    assert calls[0] == ("configs/demo.yaml", [])
    assert calls[1][0] == "my.yaml" and [a for a in calls[1][1] if a != "--"] == ["-S", "epochs=1", "--temp"]


def test_demo_with_a_missing_config_is_one_line_and_exit_code_2(tmp_path, capsys):
    code, out, err = run_cli("demo", "--config", tmp_path / "none.yaml", capsys=capsys)
    assert (code, out) == (2, "")
    assert err == f"error: {tmp_path / 'none.yaml'}: demo configuration not found (run from the repository root)\n"


def test_predict_exit_codes_follow_the_files(model, tmp_path, capsys):
    good, bad = image(tmp_path / "good.png"), tmp_path / "bad.jpg"
    bad.write_text("not an image")
    options = ["predict", "--model", model / "model.keras", "--classes", model / "classes.json"]

    code, out, err = run_cli(*options, good, capsys=capsys)
    assert (code, err) == (0, "") and out == f"{good}: This image is 26.89% cat and 73.11% dog.\n"

    code, out, err = run_cli(*options, bad, good, capsys=capsys)  # one bad file: 2, and the rest still predicted
    assert code == 2 and out == f"{good}: This image is 26.89% cat and 73.11% dog.\n"
    assert err == f"{bad}: skipped: not_an_image: {'no known image signature and no decoder recognises it'}\n"

    code, out, err = run_cli(*options, "--json", bad, good, capsys=capsys)  # JSON on stdout, errors on stderr
    assert code == 2 and err.startswith(f"{bad}: skipped: not_an_image")
    assert json.loads(out) == [
        {"path": str(bad), "error": "not_an_image: no known image signature and no decoder recognises it"},
        {"path": str(good), "predicted": "Dog", "probabilities": {"Cat": 0.268941, "Dog": 0.731059}}]

    code, out, err = run_cli(*options, tmp_path / "missing.jpg", good, capsys=capsys)  # stops before predicting
    assert (code, out) == (2, "") and err == f"error: {tmp_path / 'missing.jpg'}: no such file or folder\n"


def test_the_real_command_prints_and_exits_like_main(model, tmp_path):
    good = image(tmp_path / "black.png", level=0)
    command = [sys.executable, "-m", "catsdogs.commands.cli", "predict", "--model", str(model / "model.keras"),
               "--classes", str(model / "classes.json")]
    result = subprocess.run([*command, str(good)], env=CHILD_ENV, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{good}: This image is 73.11% cat and 26.89% dog.\n"
    # a user's mistake: exit code 2 and one line (the demo command fails before importing Keras: fast)
    result = subprocess.run([sys.executable, "-m", "catsdogs.commands.cli", "demo", "--config", "none.yaml"], env=CHILD_ENV,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: none.yaml: demo configuration not found (run from the repository root)\n"


@pytest.fixture
def in_a_pipeline(tmp_path, monkeypatch):
    """A folder holding dvc.yaml, the pipeline's paths in it moved, as the working directory."""
    text = (ROOT / "dvc.yaml").read_text()
    for path in ("models/model.keras", "data/exclude.csv", "metrics/predictions.csv"):
        text = text.replace(path, "moved/" + path.split("/")[-1])
    (tmp_path / "dvc.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_default_paths_are_dvc_yamls(in_a_pipeline, monkeypatch, capsys):
    """The paths are written once, in dvc.yaml's commands: predict and review take theirs from there."""
    calls = []
    monkeypatch.setattr("catsdogs.serving.predict.predict", lambda *args, top: calls.append(args) or [])
    monkeypatch.setattr(review, "run", lambda *args: calls.append(args) or dict.fromkeys(
        [f"{kind}_candidates" for kind in tables.CANDIDATE_KINDS], 0))
    monkeypatch.setattr(review, "accept", lambda *args: calls.append(args) or ([], []))
    run_cli("predict", "a.jpg", capsys=capsys)
    assert calls[-1] == (["a.jpg"], "moved/model.keras", None)
    code, out, _ = run_cli("review", capsys=capsys)
    assert code == 0 and out.startswith("0 label, 0 non_pet, 0 duplicate candidates in review/candidates.csv")
    assert calls[-1] == (Path("data/clean"), Path("models/split.csv"), Path("models/classes.json"),
                         Path("moved/predictions.csv"), Path("moved/model.keras"), Path("review"),
                         None, None, None, None, Path("metrics/filter.json"))  # None: the shared image cache
    run_cli("review", "--accept-top", "3", "--kind", "label", capsys=capsys)
    assert calls[-1] == (Path("review/candidates.csv"), Path("moved/exclude.csv"), [], 3, ["label"])


def test_best_gets_its_options(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(experiments, "best", lambda *args, **kwargs: calls.append((args, kwargs)) or 0)
    assert run_cli("best", capsys=capsys)[0] == 0
    assert calls[-1] == ((Path.cwd(), experiments.DEFAULT_METRIC, None, experiments.TOP),
                         {"apply": False, "branch": None})
    run_cli("best", "--metric", "loss", "--min", "--top", "2", "--branch", "b", capsys=capsys)
    assert calls[-1] == ((Path.cwd(), "loss", True, 2), {"apply": False, "branch": "b"})


@pytest.mark.parametrize("argv, line", [
    (["review", "--kind", "label"], "error: --kind label: only with --accept-top K (it picks the kinds whose first K "
                                    "candidates to accept)"),
    (["review", "--accept-top", "0"],
     "error: --accept-top 0: accept the first K candidates of each kind, K at least 1"),
    (["review", "--accept", "PetImages/Cat/1.jpg", "--folds", "3"],
     "error: --folds: an option of the review itself, not of accepting its candidates: run them one after the other"),
    (["review", "--folds", "1"], "error: --folds 1: cross-validation needs at least 2 folds"),
    (["review", "--epochs", "0"], "error: --epochs 0: each fold's model needs at least 1 epoch"),
    (["review", "--max-distance", "65"], "error: --max-distance 65: a number of pHash bits, 0 to 64"),
    (["review"], "error: moved/model.keras: model not found (run `dvc repro` first)"),
    (["best", "--top", "0"], "error: --top 0: how many experiments to print, at least 1"),
])
def test_a_mistake_in_the_options_is_one_line_before_any_work(in_a_pipeline, argv, line, capsys):
    code, out, err = run_cli(*argv, capsys=capsys)
    assert (code, out, err) == (2, "", line + "\n")
    assert sorted(p.name for p in in_a_pipeline.iterdir()) == ["dvc.yaml"]  # nothing written


def test_without_dvc_yaml_a_default_path_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("predict", "a.jpg", capsys=capsys)
    assert (code, out) == (2, "")
    assert err == "error: --model: no default without dvc.yaml here (run from the repository root, or pass --model)\n"
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    code, out, err = run_cli("review", "--accept-top", "1", capsys=capsys)
    assert err == "error: dvc.yaml: the filter stage's command gives no --exclude to take --exclude's default from: " \
                  "pass --exclude\n"


def test_review_into_a_file_is_one_line_before_any_work(in_a_pipeline, capsys):
    (in_a_pipeline / "moved").mkdir()
    (in_a_pipeline / "moved" / "model.keras").write_bytes(b"a model")
    (in_a_pipeline / "report").write_text("mine")
    code, out, err = run_cli("review", "--out", "report", capsys=capsys)
    assert (code, out, err) == (2, "", "error: report: not a folder, and the report is one: pass another --out\n")


def test_cache_shows_where_the_shared_caches_are_and_their_sizes_then_clears_them(tmp_path, monkeypatch, capsys):
    root = tmp_path / "caches"
    monkeypatch.setenv(caches.ENV, str(root))
    assert run_cli("cache", capsys=capsys) == (0, f"images  {root / 'images'}  not made yet\n"
                                                  f"jax     {root / 'jax'}  not made yet\n", "")
    (caches.folder(caches.IMAGES) / "images-8x8-0123.npy").write_bytes(b"x" * 1500)
    (caches.folder(caches.IMAGES) / "images-4x4-4567.npy").write_bytes(b"x" * 700)
    (caches.folder(caches.JAX) / "jit_step").write_bytes(b"x" * 20)
    assert run_cli("cache", capsys=capsys) == (0, f"images  {root / 'images'}  2 files, 2.2 kB\n"
                                                  f"jax     {root / 'jax'}  1 file, 20 B\n", "")
    assert run_cli("cache", "--clear", capsys=capsys) == (
        0, f"freed 2.2 kB: {root / 'images'} (2 files), {root / 'jax'} (1 file)\n", "")
    assert sorted(p.name for p in root.iterdir()) == [caches.TAG]
    assert run_cli("cache", "--clear", capsys=capsys) == (0, f"nothing to free: no cache in {root}\n", "")


def test_cache_mistakes_are_one_line_and_exit_code_2(tmp_path):
    """A relative CATSDOGS_CACHE_DIR, and one pointing at a folder the project did not make: --clear removes
    nothing there (its images/ may be the user's photos)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "holiday.jpg").write_bytes(b"a photo")
    for value, argv, line in [
        ("relative", ["cache"], "error: CATSDOGS_CACHE_DIR=relative: not an absolute path; each experiment runs in "
                                "another folder, so the cache would be another each time: give an absolute one"),
        (str(tmp_path), ["cache", "--clear"], f"error: {tmp_path}: no CACHEDIR.TAG, so not a folder of catsdogs' "
                                              f"caches: nothing removed (check CATSDOGS_CACHE_DIR, or remove "
                                              f"{tmp_path / 'images'} yourself)")]:
        result = subprocess.run([sys.executable, "-m", "catsdogs.commands.cli", *argv], cwd=tmp_path,
                                env=CHILD_ENV | {caches.ENV: value}, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")
    assert (tmp_path / "images" / "holiday.jpg").exists()

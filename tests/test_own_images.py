"""Train on your own images: three layouts a user brings, through the real `dvc` CLI, download to export.

Each is tiny (30 images of 32x32 per class, the tiny model, one epoch): what is checked is the way through,
not the accuracy. The classes differ by colour, so one epoch already tells them apart a little.
"""

import copy
import csv
import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import params
from conftest import TINY_TRAINING, committed_params, dvc, params_with, run, set_params, stage_command

CLASSES = ("daisy", "roses", "tulips")
COLOURS = {"daisy": (230, 230, 60), "roses": (200, 30, 40), "tulips": (60, 80, 220)}
PER_CLASS = 30


def picture(rng, cls: str) -> np.ndarray:
    """A 32x32 image of the class's colour, with noise and a random darker square: varied, but learnable."""
    pixels = np.clip(np.asarray(COLOURS[cls]) + rng.normal(0, 25, (32, 32, 3)), 0, 255)
    y, x = rng.integers(0, 20, 2)
    pixels[y:y + 12, x:x + 12] *= 0.5
    return pixels.astype(np.uint8)


def images(classes, ext: str, seed: int = 0) -> dict[str, bytes]:
    """{"<class>/<i>.<ext>": encoded bytes} for each class."""
    rng = np.random.default_rng(seed)
    found = {}
    for cls in classes:
        for i in range(PER_CLASS):
            buffer = io.BytesIO()
            Image.fromarray(picture(rng, cls)).save(buffer, "PNG" if ext == "png" else "JPEG")
            found[f"{cls}/{i}.{ext}"] = buffer.getvalue()
    return found


def own_params(url: Path) -> dict:
    p = copy.deepcopy(TINY_TRAINING)
    p.update(epochs=1, download={"source": "url", "url": str(url), "size": None, "sha256": None},
             filter={"workers": 2}, export={"formats": []})
    return p


def repro_own(repo: Path, url: Path, classes, root: str, ext: str, predict: bool = False) -> None:
    """dvc repro on the user's data, then one image excluded: what each stage says about the classes."""
    set_params(repo, own_params(url))
    run("git", "commit", "-qam", "my images", cwd=repo)
    dvc("repro", cwd=repo)

    kept = json.loads((repo / "metrics/filter.json").read_text())
    assert kept["root"] == root and kept["kept_per_class"] == {cls: PER_CLASS for cls in classes}
    assert sorted(p.relative_to(repo / "data/clean").as_posix() for p in (repo / "data/clean").rglob("*.*")) == \
        sorted(images(classes, ext))
    assert json.loads((repo / "models/classes.json").read_text()) == list(classes)
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["images"] == int(0.2 * PER_CLASS * len(classes)) and 0 <= metrics["accuracy"] <= 1
    assert set(metrics["per_class_accuracy"]) == set(metrics["per_class_f1"]) == set(classes)
    assert set(metrics["macro"]) == {"precision", "recall", "f1", "roc_auc"}
    predicted = list(csv.DictReader((repo / "metrics/predictions.csv").open()))
    assert {row["actual"] for row in predicted} == set(classes)
    assert json.loads((repo / "models/export/metadata.json").read_text())["classes"] == list(classes)
    if predict:  # once: it loads the model, seconds of the test's time
        photo = repo / "data/clean" / classes[0] / f"0.{ext}"
        said = run(sys.executable, "-m", "catsdogs.commands.cli", "predict", str(photo), cwd=repo).stdout
        shares = re.findall(r"(\d+\.\d\d)% (\w+)", said)  # the top three, most likely first
        assert sorted(name for _, name in shares) == sorted(classes), said
        assert [float(x) for x, _ in shares] == sorted((float(x) for x, _ in shares), reverse=True), said

    # One image excluded, as the review would: its member name is the filter's, and the filter's counts move.
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "trained", cwd=repo)
    member = f"{root}/{classes[1]}/3.{ext}".lstrip("/")
    with (repo / "data/exclude.csv").open("a", encoding="utf-8") as f:
        f.write(f"{member},blurry,me,\n")
    dvc("repro", "filter", cwd=repo)
    dropped = {row["member"]: row["reason"] for row in csv.DictReader((repo / "metrics/filter_dropped.csv").open())}
    assert dropped[member] == "excluded"
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)["metrics/filter.json"]
    assert diff["kept"] == {"old": PER_CLASS * len(classes), "new": PER_CLASS * len(classes) - 1, "diff": -1}
    assert diff[f"kept_per_class.{classes[1]}"]["diff"] == -1


@pytest.mark.slow
def test_a_three_class_tar_gz_with_a_top_folder(repo, tmp_path):
    path = tmp_path / "flowers.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in images(CLASSES, "jpg").items():
            info = tarfile.TarInfo(f"flowers/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    repro_own(repo, path, CLASSES, "flowers", "jpg", predict=True)


@pytest.mark.slow
def test_a_three_class_folder_without_a_top_folder(repo, tmp_path):
    folder = tmp_path / "flowers"
    for name, data in images(CLASSES, "jpg").items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image, and not in a class folder")
    repro_own(repo, folder, CLASSES, "", "jpg")


@pytest.mark.slow
def test_a_zip_of_pngs(repo, tmp_path):
    path = tmp_path / "shapes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in images(CLASSES[:2], "png").items():
            zf.writestr(name, data)
    repro_own(repo, path, CLASSES[:2], "", "png")


# Mistakes with one's own data: one line naming it, exit 2, before any work starts


def test_a_class_too_small_for_the_validation_subset_stops_the_train_stage_at_once(tmp_path):
    (tmp_path / "params.yaml").write_text(json.dumps(params_with({"seed": 1})))  # JSON is YAML
    for cls, n in (("a", 20), ("b", 20), ("c", 3)):  # with seed 1, c's three images all train
        (tmp_path / "clean" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), COLOURS["roses"]).save(tmp_path / "clean" / cls / f"{i}.jpg")
    result = run(*stage_command("train", data="clean"), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("error: class c: 3 images, and validation_split 0.2 holds none of "
                                              "them: add images or raise data.validation_split")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "params.yaml"]  # nothing written, no cache


def test_the_committed_params_are_the_tutorials_archive():
    download = committed_params()["download"]
    assert (download["url"], download["size"], download["sha256"]) == (
        params.TUTORIAL_URL, params.TUTORIAL_SIZE, params.TUTORIAL_SHA256)


@pytest.mark.parametrize("size, sha256, keys", [
    (None, "tutorial", "download.sha256 is"), ("tutorial", None, "download.size is"),
    ("tutorial", "tutorial", "download.size and download.sha256 are"),
])
def test_the_tutorials_size_or_sha256_with_my_url_says_which_to_set_to_null(size, sha256, keys):
    tutorial = params_with({})["download"]
    raw = params_with({"download": {"url": "/data/flowers", "size": tutorial["size"] if size else None,
                                    "sha256": tutorial["sha256"] if sha256 else None}})
    with pytest.raises(params.ParamsError) as error:
        params.parse(raw)
    them = "them" if " and " in keys else "it"
    assert str(error.value) == (f"params.yaml: download: download.url is /data/flowers, not the tutorial's archive, "
                                f"but {keys} still the tutorial archive's: set {them} to null (or to your archive's)")
    params.parse(params_with({"download": {"url": "/data/flowers", "size": None, "sha256": None}}))
    params.parse(params_with({"download": {"url": "file:///mirror/kagglecatsanddogs_5340.zip"}}))  # a mirror
    params.parse(params_with({"download": {"source": "synthetic", "url": "/data/flowers"}}))

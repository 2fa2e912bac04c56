"""The pipeline through the real `dvc` CLI in temporary git repositories, on small synthetic archives."""

import csv
import json
import sys
import zipfile
from collections import Counter

import pytest
import yaml

from catsdogs import history, tables
from catsdogs.data import images, synthetic
from conftest import TINY_DATA, TINY_TRAINING, dvc, run, set_params

ARCHIVE = "data/raw/archive"


def ran(result) -> set[str]:
    """Names of the stages a `dvc repro`/`dvc exp run` actually ran."""
    return {line.split("'")[1] for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Running stage '")}


def expected_drops(archive_path, method: str) -> Counter:
    """What the filter must drop, computed independently: the generator's own record for `decode`,
    the raw bytes for `jfif`."""
    s = TINY_DATA["download"]["synthetic"]
    if method == "decode":
        odd = synthetic.generate(archive_path.parent / "again.zip", images_per_class=s["images_per_class"],
                                 side_range=s["side_range"], pathology_rate=s["pathology_rate"], seed=s["seed"],
                                 progress=False)
        return Counter(synthetic.PATHOLOGIES[kind]["decode"] for kind in odd.values()
                       if synthetic.PATHOLOGIES[kind]["decode"])
    with zipfile.ZipFile(archive_path) as zf:
        return Counter("no_jfif" for name in zf.namelist()
                       if name.startswith("PetImages/") and images.is_image_name(name)
                       and b"JFIF" not in zf.read(name)[:4096])


def test_repro_filter_on_synthetic_archive(repo):
    set_params(repo, TINY_DATA)
    result = dvc("repro", "filter", cwd=repo)
    assert ran(result) == {"download", "filter"}
    summary = json.loads((repo / "metrics/filter.json").read_text())
    expected = expected_drops(repo / ARCHIVE, "decode")
    assert sum(expected.values()) >= 4  # the archive really has odd files in it
    assert {r: n for r, n in summary["dropped_per_reason"].items() if n} == dict(expected)
    kept = sorted(p.name for p in (repo / "data/clean").rglob("*.jpg"))
    assert len(kept) == summary["kept"] == summary["images"] - sum(expected.values())
    assert summary["ignored_members"] == 4  # two Thumbs.db, the licence and the readme

    assert ran(dvc("repro", "filter", cwd=repo)) == set()
    assert "up to date" in dvc("status", "filter", cwd=repo).stdout

    set_params(repo, {"filter": {"method": "jfif"}})
    result = dvc("repro", "filter", cwd=repo)
    assert ran(result) == {"filter"}
    summary = json.loads((repo / "metrics/filter.json").read_text())
    assert summary["dropped_per_reason"] == {**expected_drops(repo / ARCHIVE, "jfif"), "excluded": 0}


@pytest.mark.slow
def test_whole_pipeline_then_its_artifact_and_predict(repo, tmp_path):
    set_params(repo, TINY_DATA | TINY_TRAINING)
    run("git", "commit", "-qam", "tiny params", cwd=repo)
    result = dvc("repro", cwd=repo)
    assert ran(result) == {"download", "filter", "train", "export", "evaluate", "plot"}

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for section in ("outs", "metrics", "plots"):
            for out in stage.get(section, []):
                path = next(iter(out)) if isinstance(out, dict) else out
                assert (repo / path).exists(), f"{name}: {path} missing"
    assert len(list((repo / "models/checkpoints").glob("save_at_*.keras"))) == 2

    m = json.loads((repo / "metrics/metrics.json").read_text())
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["roc_auc"] <= 1 and m["loss"] > 0
    assert m["images"] == int(0.2 * json.loads((repo / "metrics/filter.json").read_text())["kept"])
    assert set(m["per_class_accuracy"]) == {"Cat", "Dog"}
    train = history.read_summary(repo / "metrics/train")  # DVCLive's summary: `step` is the last epoch
    assert train["step"] == 2 and train["train_images_per_second"] > 0
    rows = history.read_history(repo / "metrics/train", tables.EPOCH_METRICS + tables.SYSTEM_METRICS)
    assert [r["epoch"] for r in rows] == [1, 2]
    # images/s come from the epoch without its validation pass
    assert all(0 < r["train_seconds"] < r["seconds"] for r in rows)
    kept = json.loads((repo / "metrics/filter.json").read_text())["kept"]
    assert train["train_images_per_second"] == pytest.approx((kept - m["images"]) / rows[1]["train_seconds"],
                                                             rel=0.01)
    assert rows[1]["images_per_second"] == pytest.approx((kept - m["images"]) / rows[1]["train_seconds"], rel=1e-3)
    assert all(0 <= r["system/cpu_percent"] <= 100 and r["system/ram_gb"] > 0.1 for r in rows)
    # the split file lists every cleaned image once, with the subsets the metrics were computed on
    with open(repo / "models/split.csv", newline="") as f:
        split = list(csv.DictReader(f))
    assert sum(r["subset"] == "validation" for r in split) == m["images"]
    assert len({r["path"] for r in split}) == len(split) == kept
    # the saved model scores the validation images exactly as Keras did at the end of training
    assert m["accuracy"] == pytest.approx(train["final"]["val_acc"], abs=1e-5)
    assert m["loss"] == pytest.approx(train["final"]["val_loss"], abs=1e-4)

    html = dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    page = (tmp_path / "plots" / "index.html").read_text()
    for title in ("Loss per epoch", "Accuracy per epoch", "Confusion matrix", "ROC curve"):
        assert title in page, html.stdout
    for png in ("train_images", "augmented", "training_curves", "confusion_matrix", "roc", "most_wrong"):
        assert f"metrics_plots_{png}.png" in page
    # the curves are DVCLive's histories, epoch by epoch
    plots = json.loads(dvc("plots", "show", "--json", cwd=repo).stdout)["data"]
    for plot, names in {"loss": ["loss", "val_loss"], "accuracy": ["acc", "val_acc"],
                        "speed": ["images_per_second"]}.items():
        values = plots[plot][0]["content"]["data"]["values"]
        for name in names:
            drawn = [(int(v["step"]), float(v[name])) for v in values if name in v]
            assert drawn == [(r["epoch"], pytest.approx(r[name], abs=1e-6)) for r in rows], (plot, name, values)

    # the export stage: every format written, each within tolerance of Keras, the differences a metric
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert set(exported["largest_difference"]) == {"savedmodel", "onnx"} and exported["skipped"] == []
    assert max(exported["largest_difference"].values()) <= yaml.safe_load((repo / "params.yaml").read_text())[
        "export"]["tolerance"]
    assert exported["validation_images"] == m["images"]
    assert "largest_difference.onnx" in dvc("metrics", "show", cwd=repo).stdout
    assert sorted(p.name for p in (repo / "models/export").iterdir()) == ["metadata.json", "model.keras",
                                                                         "model.onnx", "savedmodel"]

    assert ran(dvc("repro", cwd=repo)) == set()

    # the registered artifact, fetched from a clone with its remote, as another project would
    remote = tmp_path / "remote"
    dvc("remote", "add", "-d", "-f", "shared", str(remote), cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "a run, and a shared remote", cwd=repo)
    run("git", "tag", "-a", "cats-vs-dogs@v0.1.0", "-m", "Registering artifact cats-vs-dogs version v0.1.0",
        cwd=repo)  # a version, as `gto register` writes it
    dvc("push", cwd=repo)
    run("git", "clone", "-q", str(repo), str(tmp_path / "clone"), cwd=tmp_path)
    dvc("artifacts", "get", str(tmp_path / "clone"), "cats-vs-dogs", "-o", str(tmp_path / "got"), cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["metadata.json", "model.keras", "model.onnx",
                                                                    "savedmodel"]
    assert (tmp_path / "got/model.onnx").read_bytes() == (repo / "models/export/model.onnx").read_bytes()

    # (an experiment on top: test_workflows.py, which starts from this same tiny run)

    # predict on one of the synthetic images, through the installed console command
    image = next((repo / "data/clean/Dog").glob("*.jpg"))
    out = run(sys.executable, "-m", "catsdogs.commands.cli", "predict", str(image), cwd=repo).stdout.strip()
    assert out.startswith(f"{image}: This image is ") and out.endswith("% dog.")
    cat, dog = [float(word.rstrip("%")) for word in out.split() if word.endswith("%")]
    assert abs(cat + dog - 100) <= 0.011

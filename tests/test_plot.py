"""The plot stage on tiny real inputs: JPEGs, CSVs as the train and evaluate stages write them, a saved model."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from catsdogs import history, params, tables
from catsdogs.data import splits
from catsdogs.errors import UserError
from catsdogs.evaluation import figures, metrics
from catsdogs.training import model as model_lib
from catsdogs.stages import plot
from conftest import committed_params

FIGURES = ["train_images.png", "augmented.png", "training_curves.png", "confusion_matrix.png", "roc.png",
           "most_wrong.png", "architecture.png"]


@dataclass
class Inputs:
    root: Path
    images: Path
    log: Path
    predictions: Path
    roc: Path
    model: Path
    classes: Path
    split: Path


def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def picture(rng) -> np.ndarray:
    """A gradient with a coloured square: flips and rotations show, unlike on noise."""
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
    y, x = rng.integers(2, 22, 2)
    image[y : y + 12, x : x + 12] = rng.integers(0, 256, 3)
    return image


def prediction_rows(data: splits.Split, wrong_every: int | None):
    """One row per validation image, as the evaluate stage writes them; every `wrong_every`-th one wrong."""
    rows = []
    for n, i in enumerate(data.val):
        actual = int(data.labels[i])
        predicted = 1 - actual if wrong_every and n % wrong_every == 0 else actual
        probability = round(0.55 + 0.4 * n / len(data.val), 4)
        positive = probability if predicted == 1 else round(1 - probability, 4)
        rows.append([data.paths[i], data.class_names[actual], data.class_names[predicted], probability, positive])
    return rows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    raw = committed_params()
    raw["epochs"] = 3
    raw["data"].update(image_size=[32, 32], validation_split=0.5, batch_size=4)
    raw["model"].update(entry_width=4, block_widths=[8], exit_width=8)
    (root / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    p = params.load(root / "params.yaml")

    images = root / "PetImages"
    rng = np.random.default_rng(0)
    for cls in ("Cat", "Dog"):
        (images / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(picture(rng)).save(images / cls / f"{i}.jpg")

    log = root / "live"  # written by DVCLive, epochs numbered from 1, as the train stage does
    live = history.open_live(log)
    for e in (1, 2, 3):
        live.step = e
        for name, value in zip(tables.EPOCH_METRICS, [0.8 - 0.1 * e, 0.4 + 0.1 * e, 0.85 - 0.1 * e, 0.35 + 0.1 * e,
                                                      3e-4, 1.5, 1.2, 100.0]):
            live.log_metric(name, value)
        live.next_step()
    live.end()
    data = splits.assign(images, p.data.validation_split, p.seed)
    rows = prediction_rows(data, wrong_every=2)
    predictions = write_csv(root / "predictions.csv", tables.PREDICTIONS, rows)
    fpr, tpr, thresholds = metrics.roc_curve(np.array([r[1] == "Dog" for r in rows]), np.array([r[4] for r in rows]))
    roc = write_csv(root / "roc.csv", tables.ROC, zip(fpr, tpr, thresholds))
    model = model_lib.build(p.data.image_size, 2, p.model, p.train.augment, p.seed)
    model.save(root / "model.keras")
    (root / "classes.json").write_text('["Cat", "Dog"]')
    splits.write(root / "split.csv", images, data)
    return Inputs(root, images, log, predictions, roc, root / "model.keras", root / "classes.json", root / "split.csv")


@pytest.fixture(autouse=True)
def in_inputs(inputs, monkeypatch):
    monkeypatch.chdir(inputs.root)  # params.load() reads ./params.yaml


def run(inputs: Inputs, out: Path, predictions: Path | None = None) -> None:
    plot.main([str(inputs.images), "--live", str(inputs.log), "--predictions", str(predictions or inputs.predictions),
               "--roc", str(inputs.roc), "--model", str(inputs.model), "--classes", str(inputs.classes),
               "--split", str(inputs.split), "--out", str(out)])


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 140, image.size
        image.load()  # decodes every byte: a truncated file fails here


def test_writes_every_figure_deterministically(inputs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run(inputs, tmp_path / "a")
    run(inputs, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(FIGURES)  # and no temporary file
    for name in FIGURES:
        assert_png(tmp_path / "a" / name)
        assert f"wrote {tmp_path / 'a' / name}" in caplog.text
    for name in FIGURES[:-1]:  # Graphviz' rendering, when present, is not matplotlib's to promise
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_missing_predictions_is_a_user_error(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(inputs, tmp_path / "plots", predictions=tmp_path / "predictions.csv")
    assert exit_info.value.code == 2
    assert f"{tmp_path / 'predictions.csv'} not found: run the evaluate stage first" in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()  # inputs are checked before any figure is drawn


def test_an_image_changed_since_training_stops_the_stage_before_any_figure(inputs, tmp_path, capsys):
    p = params.load()
    data = splits.assign(inputs.images, p.data.validation_split, p.seed)
    wrong = inputs.images / data.paths[data.val[0]]  # the first row is a wrong prediction: most_wrong draws it
    original = wrong.read_bytes()
    try:
        Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(wrong)
        with pytest.raises(SystemExit) as exit_info:
            run(inputs, tmp_path / "plots")
    finally:
        wrong.write_bytes(original)
    assert exit_info.value.code == 2
    assert (f"{wrong} changed since the model was trained (hash differs from {inputs.split}): "
            "rerun the train stage") in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()


def test_no_errors_still_writes_most_wrong(inputs, tmp_path):
    p = params.load()
    data = splits.assign(inputs.images, p.data.validation_split, p.seed)
    all_right = write_csv(tmp_path / "predictions.csv", tables.PREDICTIONS, prediction_rows(data, None))
    run(inputs, tmp_path / "plots", predictions=all_right)
    assert_png(tmp_path / "plots" / "most_wrong.png")


def test_failed_diagram_falls_back_on_the_summary(inputs, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("dot crashed")

    monkeypatch.setattr(figures.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(keras.utils, "plot_model", broken)
    model = keras.saving.load_model(inputs.model, safe_mode=True)
    target = tmp_path / "architecture.png"
    assert not figures.architecture_diagram(model, target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    figures.save(figures.model_summary(model), target)
    assert_png(target)


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.texts]


@pytest.mark.parametrize("curve, names, says", [
    ([], ["Bird", "Cat", "Dog"], "No ROC curve: the ROC file has no rows"),
    ([], ["Cat", "Dog"], "No ROC curve: the ROC file has no rows"),
])
def test_roc_is_a_placeholder_without_a_curve(tmp_path, curve, names, says):
    fig = figures.roc(curve, [], names)
    assert not fig.axes and texts(fig) == [says]
    figures.save(fig, tmp_path / "roc.png")
    assert_png(tmp_path / "roc.png")


def evaluation(inputs: Inputs, predictions: Path | None = None):
    """The evaluate stage's two CSVs, read as the plot stage reads them."""
    return (plot.read_csv(predictions or inputs.predictions, "evaluate", tables.PREDICTIONS),
            plot.read_csv(inputs.roc, "evaluate", tables.ROC))


def test_roc_draws_the_curve_with_the_auc_of_the_positive_class(inputs):
    predictions, curve = evaluation(inputs)
    [ax] = figures.roc(curve, predictions, ["Cat", "Dog"]).axes
    model_line, chance = ax.lines
    assert list(model_line.get_xdata()) == [float(r["fpr"]) for r in curve]
    assert list(model_line.get_ydata()) == [float(r["tpr"]) for r in curve]
    dog = np.array([r["actual"] == "Dog" for r in predictions])
    auc = metrics.roc_auc(dog, np.array([float(r["positive_probability"]) for r in predictions]))
    assert auc != pytest.approx(0.5) and model_line.get_label() == f"model (AUC = {auc:.4f})"
    assert ax.get_title() == "ROC curve (Dog as the positive class)"
    assert list(chance.get_xdata()) == [0, 1] == list(chance.get_ydata())


def test_training_curves_draw_each_metric_per_epoch(inputs):
    rows = history.read_history(inputs.log)
    loss, accuracy = figures.training_curves(rows).axes
    for ax, key in ((loss, "loss"), (accuracy, "acc")):
        training, validation = ax.lines
        assert list(training.get_xdata()) == [1, 2, 3] == list(validation.get_xdata())
        assert list(training.get_ydata()) == [r[key] for r in rows]
        assert list(validation.get_ydata()) == [r[f"val_{key}"] for r in rows]
    assert (loss.get_ylabel(), accuracy.get_ylabel()) == ("loss", "accuracy")


def test_the_confusion_matrix_counts_actual_rows_by_predicted_columns(inputs):
    predictions, _ = evaluation(inputs)
    [ax] = figures.confusion_matrix(predictions, ["Cat", "Dog"]).axes
    expected = np.zeros((2, 2), dtype=int)
    for r in predictions:
        expected[["Cat", "Dog"].index(r["actual"]), ["Cat", "Dog"].index(r["predicted"])] += 1
    assert expected[0, 1] and expected[1, 0]  # both kinds of error occur: a transposed matrix would differ
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(expected.flat)


def test_roc_of_more_classes_is_the_evaluate_stages_mean_curve_with_its_area(tmp_path):
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1],
                      [0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    fpr, tpr = metrics.macro_roc_curve(labels, probs)
    curve = plot.read_csv(write_csv(tmp_path / "roc.csv", tables.ROC, ((f"{a:.6f}", f"{b:.6f}", "") for a, b in
                                                                         zip(fpr, tpr))), "evaluate", tables.ROC)
    [ax] = figures.roc(curve, [], ["Lynx", "Puma", "Tabby"]).axes
    model_line, _ = ax.lines
    np.testing.assert_allclose(model_line.get_xdata(), fpr, atol=1e-6)
    np.testing.assert_allclose(model_line.get_ydata(), tpr, atol=1e-6)
    auc = metrics.classification(labels, probs, ["Lynx", "Puma", "Tabby"])["roc_auc"]
    assert auc != pytest.approx(1.0) and model_line.get_label() == f"model (AUC = {auc:.4f})"
    assert ax.get_title() == "ROC curve (mean of the 3 one-vs-rest curves)"


def test_the_confusion_matrix_of_ten_classes_counts_each_pair_and_names_them_tilted(tmp_path):
    names = [f"class_{c}" for c in range(10)]
    rows = [{"path": f"{a}/{b}.jpg", "actual": names[a], "predicted": names[b], "probability": "0.5",
             "positive_probability": ""} for a in range(10) for b in range(10) for _ in range((a + 2 * b) % 3)]
    fig = figures.confusion_matrix(rows, names)
    [ax] = fig.axes
    expected = np.fromfunction(lambda a, b: (a + 2 * b) % 3, (10, 10), dtype=int)
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    figures.save(fig, tmp_path / "confusion_matrix.png")
    assert_png(tmp_path / "confusion_matrix.png")


def test_most_wrong_shows_the_most_confident_errors_first(inputs):
    predictions, _ = evaluation(inputs)
    shown = []
    fig = figures.most_wrong(predictions, lambda path: shown.append(path) or np.zeros((4, 4, 3), np.uint8))
    wrong = sorted((r for r in predictions if r["actual"] != r["predicted"]),
                   key=lambda r: -float(r["probability"]))
    assert shown == [r["path"] for r in wrong]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"{r['actual']} → {r['predicted']} ({float(r['probability']):.2f})" for r in wrong]


def test_the_sample_grid_titles_each_image_with_its_class(inputs, tmp_path):
    fig = figures.image_grid([np.zeros((4, 4, 3), np.uint8)] * 4, ["Cat", "Dog", "Cat", "Dog"])
    assert [ax.get_title() for ax in fig.axes] == ["Cat", "Dog", "Cat", "Dog", "", ""]  # 2 rows of 3
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 1, 1, 0, 0]


def test_a_missing_training_history_names_the_train_stage(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(inputs.images), "--live", str(tmp_path / "live"), "--predictions", str(inputs.predictions),
                   "--roc", str(inputs.roc), "--model", str(inputs.model), "--classes", str(inputs.classes),
                   "--split", str(inputs.split), "--out", str(tmp_path / "plots")])
    assert exit_info.value.code == 2
    missing = history.history_file(tmp_path / "live", tables.EPOCH_METRICS[0])
    assert f"{missing} not found: run the train stage first" in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()


def wrong_rows(count: int) -> list[dict]:
    return [{"path": f"Cat/{n}.jpg", "actual": "Cat", "predicted": "Dog", "probability": f"{0.5 + n / 100:.2f}",
             "positive_probability": f"{0.5 + n / 100:.2f}"} for n in range(count)]


def test_most_wrong_shows_at_most_one_grid(inputs):
    shown = []
    fig = figures.most_wrong(wrong_rows(12), lambda path: shown.append(path) or np.zeros((4, 4, 3), np.uint8))
    assert shown == [f"Cat/{n}.jpg" for n in range(11, 2, -1)]  # the 9 most confident, most confident first
    assert fig.get_suptitle() == "Most confidently wrong validation images (9 shown)"


def test_predictions_naming_a_class_the_model_lacks_is_a_user_error():
    with pytest.raises(UserError, match="predictions name class\\(es\\) Bird that the image folder lacks "
                                        "\\(Cat, Dog\\): rerun the evaluate stage"):
        figures.confusion_matrix(wrong_rows(1) + [wrong_rows(1)[0] | {"actual": "Bird"}], ["Cat", "Dog"])


def test_the_augmented_grid_shows_nine_different_augmentations_of_one_image(inputs):
    p = params.load()
    original = picture(np.random.default_rng(0))
    fig = figures.augmented(original, p.train.augment, p.seed)
    shown = [ax.images[0].get_array() for ax in fig.axes]
    assert len(shown) == 9 and all(image.shape == original.shape for image in shown)
    assert len({image.tobytes() for image in shown}) > 1 and any(
        not np.array_equal(image, original) for image in shown)  # the augmentation ran


def test_the_evaluate_and_plot_stages_on_three_classes(inputs, tmp_path, monkeypatch):
    """Three classes end to end through the two stages: a model of stock layers that reads an image's main colour
    (the mean of each channel, times 6, is a class's logit), images of each colour, some of them ambiguous."""
    import json

    from catsdogs.stages import evaluate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((inputs.root / "params.yaml").read_text())
    names, channel = ["Blue", "Green", "Red"], [2, 1, 0]
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for c, name in enumerate(names):
        (images / name).mkdir(parents=True)
        for i in range(10):
            pixel = rng.uniform(0, 150, 3)
            pixel[channel[c]] = rng.uniform(90, 255)
            Image.fromarray(np.full((12, 12, 3), pixel, dtype=np.uint8)).save(images / name / f"{i}.png")
    dense = keras.layers.Dense(3)
    inputs_layer = keras.Input((16, 16, 3), dtype="uint8")
    model = keras.Model(inputs_layer, dense(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Rescaling(1 / 255)(inputs_layer))))
    dense.set_weights([6 * np.eye(3)[channel].T, np.zeros(3)])  # class c's logit: 6 x the mean of its channel
    model.save(tmp_path / "model.keras")
    (tmp_path / "classes.json").write_text(json.dumps(names))
    splits.write(tmp_path / "split.csv", images, splits.assign(images, 0.5, 1))
    common = ["--model", "model.keras", "--classes", "classes.json", "--split", "split.csv"]
    evaluate.main([str(images), *common, "--metrics", "metrics.json", "--predictions", "predictions.csv",
                   "--roc", "roc.csv", "--image-cache", "cache"])

    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["images"] == 15 and set(summary["per_class_f1"]) == set(names)
    assert summary["macro"]["f1"] == summary["f1"] and 0.5 < summary["accuracy"] < 1  # some errors, mostly right
    rows = plot.read_csv(tmp_path / "predictions.csv", "evaluate", tables.PREDICTIONS)
    assert {r["positive_probability"] for r in rows} == {""} and {r["actual"] for r in rows} == set(names)
    curve = plot.read_csv(tmp_path / "roc.csv", "evaluate", tables.ROC)
    assert {r["threshold"] for r in curve} == {""}
    fpr, tpr = (np.array([float(r[k]) for r in curve]) for k in ("fpr", "tpr"))
    assert metrics.area(fpr, tpr) == pytest.approx(summary["roc_auc"], abs=1e-5)

    plot.main([str(images), "--live", str(inputs.log), "--predictions", "predictions.csv", "--roc", "roc.csv",
               *common, "--out", "plots"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        assert_png(tmp_path / "plots" / name)

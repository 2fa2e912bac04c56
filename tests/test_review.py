"""`catsdogs review`: candidates from cleanlab and imagehash, the contact sheet, and accepting candidates."""

from __future__ import annotations

import copy
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from catsdogs import tables
from catsdogs.commands import review
from catsdogs.data import exclusions, splits, synthetic
from catsdogs.errors import UserError
from conftest import TINY_DATA, TINY_TRAINING, committed_params, dvc, params_with, run, set_params

FAULTY = {"flipped_rate": 0.05, "non_pet_rate": 0.05, "duplicate_rate": 0.08}


def good_probs(labels: np.ndarray, rng) -> np.ndarray:
    """What a good model's out-of-sample probabilities look like: the given class, confidently."""
    p1 = np.where(labels == 1, rng.uniform(0.6, 1.0, len(labels)), rng.uniform(0.0, 0.4, len(labels)))
    return np.stack([1 - p1, p1], axis=1)


def test_find_ranks_flipped_labels_outliers_and_cross_split_duplicates(tmp_path):
    """The decision logic on known inputs: flipped labels with the other class's probability, outliers far
    from every other feature vector, and near-identical hashes across the subsets."""
    rng = np.random.default_rng(0)
    n = 200
    paths = sorted(f"{cls}/{i}.jpg" for cls in ("Cat", "Dog") for i in range(n // 2))
    labels = np.asarray([0 if p.startswith("Cat") else 1 for p in paths], dtype=np.int32)
    order = rng.permutation(n)
    data = splits.Split(paths, labels, ["Cat", "Dog"], np.sort(order[:150]), np.sort(order[150:]))
    true_class = labels.copy()
    flipped = list(data.train[:6]) + list(data.val[:2])
    true_class[flipped] = 1 - true_class[flipped]
    probs = good_probs(true_class, rng)
    probs[flipped] = np.where(true_class[flipped, None] == 1, [0.02, 0.98], [0.98, 0.02])  # confidently the other
    features = rng.normal(size=(n, 8)) * 0.1 + np.eye(8)[true_class]  # a direction per class
    odd = [int(data.train[10]), int(data.val[5])]
    features[odd] = -1.0  # pointing away from both classes (cleanlab compares directions: cosine)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    copy_of = {int(data.val[7]): int(data.train[20]), int(data.val[8]): int(data.train[21])}
    for a, b in copy_of.items():
        hashes[a] = hashes[b] ^ np.uint64(0b101)  # 2 bits apart
    hashes[data.train[30]] = hashes[data.train[31]]  # a duplicate within the training subset: not a candidate

    inputs = review.Inputs(data, probs[data.val], root="PetImages")
    rows, summary = review.find(tmp_path, inputs, probs[data.train], features, hashes, max_distance=4)
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in tables.CANDIDATE_KINDS}
    assert {r["member"] for r in by_kind["label"]} == {review.member(paths[i], "PetImages") for i in flipped}
    assert {r["member"] for r in by_kind["non_pet"][:2]} == {review.member(paths[i], "PetImages") for i in odd}  # first
    assert {(r["member"], r["partner"]) for r in by_kind["duplicate"]} == {
        (review.member(paths[a], "PetImages"), review.member(paths[b], "PetImages")) for a, b in copy_of.items()}
    assert all(r["distance"] == "2" for r in by_kind["duplicate"])
    assert summary["groups_spanning_subsets"] == 2 and summary["near_duplicate_groups"] == 3
    assert [int(r["rank"]) for r in by_kind["label"]] == list(range(1, 9))
    scores = [float(r["score"]) for r in by_kind["label"]]
    assert scores == sorted(scores)  # most suspect first


def test_find_on_three_classes_with_known_probabilities(tmp_path):
    """cleanlab with three probability columns: the images filed under the wrong one of three classes are the
    label candidates, each with the class the model gives and its probability."""
    rng = np.random.default_rng(1)
    names = ["Lynx", "Puma", "Tabby"]
    paths = [f"{name}/{i}.jpg" for name in names for i in range(40)]
    labels = np.repeat(np.arange(3), 40).astype(np.int32)
    order = rng.permutation(len(paths))
    data = splits.Split(paths, labels, names, np.sort(order[:90]), np.sort(order[90:]))
    true_class = labels.copy()
    flipped = [int(data.train[0]), int(data.train[1]), int(data.val[0])]
    true_class[flipped] = (true_class[flipped] + 1) % 3  # filed under the class before the true one
    probs = np.full((len(paths), 3), 0.05) + 0.05 * rng.uniform(size=(len(paths), 3))
    probs[np.arange(len(paths)), true_class] = rng.uniform(0.8, 0.9, len(paths))
    probs[flipped] = np.eye(3)[true_class[flipped]] * 0.96 + 0.02  # confidently another class than the filed one
    probs /= probs.sum(axis=1, keepdims=True)
    features = rng.normal(size=(len(paths), 6)) * 0.1 + np.eye(6)[true_class]
    hashes = rng.integers(0, 2**63, size=len(paths), dtype=np.int64).astype(np.uint64)

    rows, summary = review.find(tmp_path, review.Inputs(data, probs[data.val]), probs[data.train], features, hashes)
    label_rows = {r["member"]: r for r in rows if r["kind"] == "label"}
    assert set(label_rows) == {review.member(paths[i], "") for i in flipped}
    for i in flipped:
        row = label_rows[review.member(paths[i], "")]
        assert (row["label"], row["predicted"]) == (names[labels[i]], names[true_class[i]])
        assert row["probability"] == f"{probs[i].max():.4f}"
        assert float(row["score"]) == pytest.approx(probs[i, labels[i]], abs=1e-4)  # self-confidence
    assert summary["train_accuracy"] == round(float(np.mean(probs[data.train].argmax(1) == labels[data.train])), 4)


@pytest.mark.slow  # three tiny models trained for an epoch: about 15 s
def test_cross_validation_and_the_models_probabilities_have_a_column_per_class(tmp_path):
    """A tiny real model of three classes: each fold's model and the trained one give three probabilities."""
    from catsdogs import classes, params
    from catsdogs.training import model as model_lib

    p = params.parse(params_with(TINY_TRAINING | {"data": {"image_size": [16, 16], "batch_size": 8}}))
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(12, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 4).astype(np.int32)
    data = splits.Split([f"{c}/{i}.jpg" for c in "abc" for i in range(4)], labels, ["a", "b", "c"],
                        np.arange(9), np.arange(9, 12))
    probs = review.cross_validated(array, data, p, folds=2, epochs=1, progress=lambda line: None)
    assert probs.shape == (9, 3) and np.allclose(probs.sum(axis=1), 1)
    model = model_lib.build((16, 16), 3, p.model, p.train.augment, seed=1)
    model.save(tmp_path / "model.keras")
    features, every = review.embeddings(tmp_path / "model.keras", array, 8)
    assert features.shape[0] == 12 and every.shape == (12, 3) and np.allclose(every.sum(axis=1), 1)
    assert np.allclose(every, classes.probabilities(model.predict(array, verbose=0)), atol=1e-6)


def test_near_pairs_and_groups():
    hashes = np.asarray([0b0, 0b1, 0b11, 0b11111111, 0xFF00FF00], dtype=np.uint64)
    pairs = review.near_pairs(hashes, max_distance=1, chunk=2)
    assert sorted(pairs) == [(0, 1, 1), (1, 2, 1)]
    assert review.groups(5, pairs).tolist() == [0, 0, 0, 3, 4]


def candidates_file(tmp_path, rows):
    path = tmp_path / "review" / review.CANDIDATES_FILE
    path.parent.mkdir()
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, tables.CANDIDATES)
        writer.writeheader()
        writer.writerows(rows)
    return path


ROWS = [
    {"rank": 1, "kind": "label", "member": "PetImages/Cat/1.jpg", "subset": "train", "label": "Cat", "predicted": "Dog",
     "probability": "0.9900", "score": "0.0100", "partner": "", "partner_subset": "", "distance": ""},
    {"rank": 2, "kind": "label", "member": "PetImages/Dog/5.jpg", "subset": "validation", "label": "Dog",
     "predicted": "Cat", "probability": "0.7000", "score": "0.3000", "partner": "", "partner_subset": "", "distance": ""},
    {"rank": 1, "kind": "duplicate", "member": "PetImages/Dog/7.jpg", "subset": "validation", "label": "Dog",
     "predicted": "Dog", "probability": "0.9000", "score": "2", "partner": "PetImages/Dog/8.jpg",
     "partner_subset": "train", "distance": "2"},
]


def test_accept_appends_named_and_top_candidates_without_duplicates(tmp_path):
    report = candidates_file(tmp_path, ROWS)
    exclude = tmp_path / "data/exclude.csv"
    added, already = review.accept(report, exclude, ["PetImages/Dog/7.jpg"], None, None, who="me")
    assert [e.member for e in added] == ["PetImages/Dog/7.jpg"] and not already
    assert added[0].reason == "duplicate: near-duplicate of PetImages/Dog/8.jpg (train, 2 bits)"
    added, already = review.accept(report, exclude, [], 1, None, who="me")
    assert [e.member for e in added] == ["PetImages/Cat/1.jpg"] and [e.member for e in already] == ["PetImages/Dog/7.jpg"]
    added, already = review.accept(report, exclude, ["PetImages/Cat/1.jpg"], 5, ["label"], who="me")
    assert [e.member for e in added] == ["PetImages/Dog/5.jpg"] and len(already) == 2
    listed = exclusions.read(exclude)
    assert [e.member for e in listed] == ["PetImages/Dog/7.jpg", "PetImages/Cat/1.jpg", "PetImages/Dog/5.jpg"]
    assert listed[1].reason == "label: filed as Cat, p(Dog)=0.9900" and listed[1].who == "me" and listed[1].when
    assert len(exclude.read_text().splitlines()) == 4  # the header and three members, each once


def test_accept_refuses_what_is_not_a_candidate(tmp_path):
    report = candidates_file(tmp_path, ROWS)
    with pytest.raises(UserError) as info:
        review.accept(report, tmp_path / "exclude.csv", ["PetImages/Cat/99.jpg"], None, None)
    assert str(info.value) == (f"PetImages/Cat/99.jpg is not a candidate in {report} (members look like "
                               f"PetImages/Cat/1.jpg); to exclude another image, add it to {tmp_path / 'exclude.csv'} "
                               "by hand")
    with pytest.raises(UserError, match="no review report"):
        review.accept(tmp_path / "none.csv", tmp_path / "exclude.csv", [], 1, None)
    assert not (tmp_path / "exclude.csv").exists()


def test_synthetic_faults_are_recorded_and_drawn(tmp_path):
    s = dict(images_per_class=40, side_range=[48, 64], pathology_rate=0.1, seed=1, **FAULTY)
    truth = synthetic.faults(**s)
    odd = synthetic.generate(tmp_path / "a.zip", **s, progress=False)
    kinds = [kind for kind, _ in truth.values()]
    assert {k: kinds.count(k) for k in synthetic.FAULTS} == {"flipped": 4, "non_pet": 4, "duplicate": 6}
    assert not set(truth) & set(odd)  # faults go to images the pathologies leave good
    originals = [o for kind, o in truth.values() if kind == "duplicate"]
    assert not set(originals) & (set(truth) | set(odd)) and len(set(originals)) == len(originals)
    import imagehash
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        for member, (kind, original) in truth.items():
            image = Image.open(io.BytesIO(zf.read(member)))
            assert image.format == "JPEG"
            if kind == "duplicate":
                assert original.split("/")[1] == member.split("/")[1]  # same class folder
                other = Image.open(io.BytesIO(zf.read(original)))
                assert imagehash.phash(image) - imagehash.phash(other) <= 12
    assert synthetic.faults(**{**s, **dict.fromkeys(FAULTY, 0.0)}) == {}


@pytest.mark.slow
def test_review_command_on_a_tiny_pipeline(repo):
    """The real loop: dvc repro, catsdogs review (real cross-validation), the contact sheet, the injected
    cross-split duplicates found, --accept, then the filter drops them."""
    params = copy.deepcopy(TINY_DATA)
    params["download"]["synthetic"].update(images_per_class=80, side_range=[48, 64], pathology_rate=0.0,
                                           duplicate_rate=0.1)
    set_params(repo, params | TINY_TRAINING)
    dvc("repro", cwd=repo)
    run("git", "checkout", "params.yaml", cwd=repo)  # as after the demo: the full-size params, 180x180
    result = run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--epochs", "1", cwd=repo)
    assert "candidates in review/candidates.csv" in result.stdout
    assert "with the params models/model.keras was trained with (dvc.lock): 32x32 images, 2 epochs" in result.stderr
    set_params(repo, params | TINY_TRAINING)
    sheet = Image.open(repo / "review" / review.CONTACT_SHEET)
    assert sheet.format == "PNG" and sheet.width > 500
    summary = json.loads((repo / "review" / review.SUMMARY_FILE).read_text())
    assert summary["folds"] == 2 and summary["epochs"] == 1

    rows = review.read_candidates(repo / "review" / review.CANDIDATES_FILE)
    found = {frozenset((r["member"], r["partner"])) for r in rows if r["kind"] == "duplicate"}
    root = review.filter_root(repo / "metrics/filter.json")
    subset = {review.member(r["path"], root): r["subset"] for r in csv.DictReader((repo / "models/split.csv").open())}
    truth = {frozenset((m, o)) for m, (kind, o) in synthetic.faults(**params["download"]["synthetic"]).items()
             if kind == "duplicate" and subset[m] != subset[o]}
    assert len(truth) >= 3
    assert len(found & truth) / len(truth) >= 0.8

    run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--accept-top", "100", "--kind", "duplicate", cwd=repo)
    again = run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--accept-top", "100", "--kind", "duplicate",
                cwd=repo)
    assert f"{len(found)} already listed" in again.stdout
    assert "changed deps" in dvc("status", "filter", cwd=repo).stdout
    dvc("repro", "filter", cwd=repo)
    summary = json.loads((repo / "metrics/filter.json").read_text())
    assert summary["dropped_per_reason"]["excluded"] == len(found)


def test_bit_count_is_numpy_1_and_2_alike():
    """np.bitwise_count needs numpy 2, and pyproject allows 1.26."""
    values = np.random.default_rng(0).integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    values = np.concatenate([values, np.asarray([0, 2**64 - 1], dtype=np.uint64)])
    assert review.bit_count(values).tolist() == [bin(int(v)).count("1") for v in values]
    block = values[:7, None] ^ values[None, :]
    assert review.bit_count(block).tolist() == [[bin(int(v)).count("1") for v in row] for row in block]


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A workspace after the demo and `git checkout params.yaml`: the committed params (180x180), and dvc.lock
    recording the demo's train params for the model it wrote."""
    import hashlib

    from conftest import COMMITTED_PARAMS_TEXT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(COMMITTED_PARAMS_TEXT)
    model = tmp_path / "models" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"a model")
    recorded = {"epochs": 15, "seed": 1337, "data": {**committed_params()["data"], "image_size": [64, 64]},
                "model.entry_width": 16}
    lock = {"schema": "2.0", "stages": {"train": {
        "cmd": "python -m catsdogs.stages.train", "params": {"params.yaml": recorded},
        "outs": [{"path": "models/model.keras", "hash": "md5", "md5": hashlib.md5(b"a model").hexdigest(),
                  "size": 7}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return Path("models/model.keras")


def test_the_review_uses_the_params_the_model_was_trained_with(trained):
    """Issue 17: after `git checkout params.yaml` the review cross-validated the full model at 180x180 and fed
    images of that size to the demo's model. dvc.lock records what the train stage ran with."""
    p = review.trained_params(trained)
    assert p.data.image_size == [64, 64] and p.epochs == 15 and p.model.entry_width == 16
    assert p.model.block_widths == committed_params()["model"]["block_widths"]  # not recorded: params.yaml's


def test_a_model_without_a_record_of_its_params_is_refused_at_once(trained, tmp_path):
    trained.write_bytes(b"another model")
    with pytest.raises(UserError) as info:
        review.trained_params(trained)
    assert str(info.value) == ("models/model.keras: not the model dvc.lock records for the train stage: run "
                               "`dvc checkout` (or `dvc repro`) first")
    other = tmp_path / "other.keras"
    other.write_bytes(b"a model")
    with pytest.raises(UserError) as info:
        review.trained_params(Path("other.keras"))
    assert str(info.value) == ("other.keras: no stage in dvc.lock wrote it, so the params it was trained with are "
                               "unknown: review the pipeline's model")
    (tmp_path / "dvc.lock").unlink()
    with pytest.raises(UserError) as info:
        review.trained_params(trained)
    assert str(info.value) == ("models/model.keras: no record of the params it was trained with (dvc.lock not found "
                               "or unreadable): train it with `dvc repro` first")


def test_docs_state_the_reviews_defaults():
    """docs/review.md's figures are review.py's constants."""
    from conftest import ROOT

    text = (ROOT / "docs" / "review.md").read_text()
    assert f"`--folds {review.FOLDS}`" in text
    assert f"`imagehash.phash` ({review.HASH_BITS} bits) within {review.MAX_DISTANCE} bits" in text
    assert f"the top {review.SHEET_PER_KIND} of each kind" in text
    assert f"mean distance to the {review.OOD_NEIGHBOURS} nearest neighbours" in text
    assert f"Q3 + {1 / review.OOD_THRESHOLD - 1:.1f} IQR" in text
    assert f"`{review.OUT}/` (not in git)" in text

"""`catsdogs review`: candidates from cleanlab and imagehash, the contact sheet, and accepting candidates."""

from __future__ import annotations

import copy
import csv
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from catsdogs import tables
from catsdogs.commands import review
from catsdogs.data import exclusions, splits, synthetic
from catsdogs.errors import UserError
from conftest import TINY_DATA, TINY_TRAINING, dvc, run, set_params

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

    inputs = review.Inputs(data, probs[data.val])
    rows, summary = review.find(tmp_path, inputs, probs[data.train], features, hashes, max_distance=4)
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in tables.CANDIDATE_KINDS}
    assert {r["member"] for r in by_kind["label"]} == {review.member(paths[i]) for i in flipped}
    assert {r["member"] for r in by_kind["non_pet"][:2]} == {review.member(paths[i]) for i in odd}  # first
    assert {(r["member"], r["partner"]) for r in by_kind["duplicate"]} == {
        (review.member(paths[a]), review.member(paths[b])) for a, b in copy_of.items()}
    assert all(r["distance"] == "2" for r in by_kind["duplicate"])
    assert summary["groups_spanning_subsets"] == 2 and summary["near_duplicate_groups"] == 3
    assert [int(r["rank"]) for r in by_kind["label"]] == list(range(1, 9))
    scores = [float(r["score"]) for r in by_kind["label"]]
    assert scores == sorted(scores)  # most suspect first


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
    with pytest.raises(UserError, match="PetImages/Cat/99.jpg is not a candidate in"):
        review.accept(report, tmp_path / "exclude.csv", ["PetImages/Cat/99.jpg"], None, None)
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
    cross-split duplicates found, --accept, then dvc repro drops them."""
    params = copy.deepcopy(TINY_DATA)
    params["download"]["synthetic"].update(images_per_class=80, side_range=[48, 64], pathology_rate=0.0,
                                           duplicate_rate=0.1)
    set_params(repo, params | TINY_TRAINING)
    dvc("repro", cwd=repo)
    result = run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--epochs", "1", cwd=repo)
    assert "candidates in review/candidates.csv" in result.stdout
    sheet = Image.open(repo / "review" / review.CONTACT_SHEET)
    assert sheet.format == "PNG" and sheet.width > 500
    summary = json.loads((repo / "review" / review.SUMMARY_FILE).read_text())
    assert summary["folds"] == 2 and summary["epochs"] == 1

    rows = review.read_candidates(repo / "review" / review.CANDIDATES_FILE)
    found = {frozenset((r["member"], r["partner"])) for r in rows if r["kind"] == "duplicate"}
    subset = {review.member(r["path"]): r["subset"] for r in csv.DictReader((repo / "models/split.csv").open())}
    truth = {frozenset((m, o)) for m, (kind, o) in synthetic.faults(**params["download"]["synthetic"]).items()
             if kind == "duplicate" and subset[m] != subset[o]}
    assert len(truth) >= 3
    assert len(found & truth) / len(truth) >= 0.8

    run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--accept-top", "100", "--kind", "duplicate", cwd=repo)
    again = run(sys.executable, "-m", "catsdogs.commands.cli", "review", "--accept-top", "100", "--kind", "duplicate",
                cwd=repo)
    assert f"{len(found)} already listed" in again.stdout
    assert "changed deps" in dvc("status", "filter", cwd=repo).stdout
    dvc("repro", cwd=repo)
    summary = json.loads((repo / "metrics/filter.json").read_text())
    assert summary["dropped_per_reason"]["excluded"] == len(found)

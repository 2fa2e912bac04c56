"""`catsdogs review`: candidates for the exclusion list, found with cleanlab and a perceptual hash.

Three kinds of candidates (tables.CANDIDATE_KINDS), each ranked, most suspect first:

- `label`: the given class is likely wrong. cleanlab's confident learning (`cleanlab.filter.find_label_issues`)
  on out-of-sample probabilities of every class, ranked by the probability of the given class
  (self-confidence). The validation subset's come from the trained model, as in the evaluate stage (whose
  metrics/predictions.csv must list the same images); the training subset's from a K-fold
  cross-validation of the pipeline's own model and recipe on the training subset (each image predicted by a
  model that never saw it): with 2 folds about the cost of the train stage once.
- `non_pet`: a picture unlike the others. cleanlab's out-of-distribution score
  (`cleanlab.outlier.OutOfDistribution`: the mean distance to the k nearest neighbours) of every image's
  embedding, the trained model's pooled features: flagged beyond Q3 + 1.7 IQR of those distances (the
  rule and threshold of cleanlab's Datalab), ranked by the score. A class model still gives a picture with
  no pet a confident class, so the probabilities alone miss them. An outlier is listed as `non_pet` only,
  even when its label is also suspect.
- `duplicate`: a validation image with a near-duplicate in the training subset (a perceptual hash,
  `imagehash.phash`, within `max_distance` bits): the model has seen it, so it inflates validation accuracy.
  Images within the distance are grouped (single linkage); a group is flagged when it spans both subsets,
  and each of its validation images is listed with its nearest training image as partner.

The report is review/candidates.csv (tables.CANDIDATES) and review/contact_sheet.png. `accept()` appends
chosen candidates to the exclusion list (catsdogs.data.exclusions); then `dvc repro` and `dvc metrics diff`.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catsdogs import atomic, classes, tables
from catsdogs.data import exclusions, images, sources, splits
from catsdogs.errors import UserError

if TYPE_CHECKING:  # imported where used: `catsdogs predict` loads this module for the defaults alone
    from catsdogs import params

log = logging.getLogger("review")

CANDIDATES_FILE = "candidates.csv"
CONTACT_SHEET = "contact_sheet.png"
SUMMARY_FILE = "summary.json"
OOD_THRESHOLD = 0.37037  # cleanlab Datalab's default for features: an outlier's kNN distance > Q3 + (1/t - 1) IQR
OOD_NEIGHBOURS = 30  # more than a few: pictures with no pet look alike, and must not be each other's only neighbours
MAX_DISTANCE = 6  # phash bits (of 64) within which two images count as near-duplicates
HASH_BITS = 64  # imagehash.phash's default hash size (8 x 8)
FOLDS = 2  # cross-validation folds for the training subset
SHEET_PER_KIND = 12  # candidates of each kind shown on the contact sheet
OUT = "review"  # the report's folder (not in git)
LOCK = "dvc.lock"  # DVC's record of each stage's params and outputs: the params the model was trained with
LABEL, NON_PET, DUPLICATE = tables.CANDIDATE_KINDS
TRAIN, VALIDATION = tables.SUBSETS


@dataclass
class Inputs:
    data: splits.Split
    val_probs: np.ndarray  # (len(data.val), classes), from the trained model
    root: str = ""  # the archive's folder of the class folders, as the filter found it: member names


def member(path: str, root: str) -> str:
    """The archive member of a cleaned image, as the filter and the exclusion list name it
    (catsdogs.data.sources.member_name)."""
    return sources.member_name(root, path)


def filter_root(filter_metrics: Path) -> str:
    """The root the filter found or was given, from its metrics (`root`)."""
    try:
        root = json.loads(filter_metrics.read_text(encoding="utf-8"))["root"]
    except FileNotFoundError:
        raise UserError(f"{filter_metrics}: the filter's metrics not found (run `dvc repro` first)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{filter_metrics}: no root recorded: rerun the filter stage (`dvc repro`)") from None
    if not isinstance(root, str):
        raise UserError(f"{filter_metrics}: root {root!r} is not a folder name: rerun the filter stage")
    return root


def read_inputs(directory: Path, split_file: Path, classes_file: Path, predictions_file: Path) -> splits.Split:
    """The split, checked against the images and the evaluate stage's predictions (they must be the ones the
    model was trained and evaluated on)."""
    class_names = classes.read(classes_file)
    if not (isinstance(class_names, list) and len(class_names) >= 2 and all(isinstance(n, str) for n in class_names)):
        raise UserError(f"{classes_file}: {class_names!r} is not a list of two or more class names: rerun the train "
                        "stage")
    data = splits.read_unchanged(directory, split_file, class_names)
    try:
        rows = tables.read(predictions_file, tables.PREDICTIONS, "run `dvc repro` first")
    except FileNotFoundError:
        raise UserError(f"{predictions_file}: predictions not found (run `dvc repro` first)") from None
    if sorted(row["path"] for row in rows) != sorted(data.paths[i] for i in data.val):
        raise UserError(f"{predictions_file} does not list exactly the validation images of {split_file}: "
                        "run `dvc repro` first")
    return data


def cross_validated(array: np.ndarray, data: splits.Split, p: params.Params, folds: int, epochs: int,
                    progress=print) -> np.ndarray:
    """Out-of-sample class probabilities of the training subset: `folds` models of the pipeline's own
    architecture, each trained `epochs` epochs on the other folds and predicting its own."""
    import keras

    from catsdogs.training import batches, run
    from catsdogs.training import model as model_lib

    train = np.asarray(data.train)
    num_classes = len(data.class_names)
    fold_of = np.random.default_rng([p.seed, 14]).permutation(len(train)) % folds
    probs = np.zeros((len(train), num_classes))
    for fold in range(folds):
        start = time.perf_counter()
        keras.utils.set_random_seed(p.seed + fold)
        fit_on, held = train[fold_of != fold], train[fold_of == fold]
        fit = batches.Batches(array, data.labels, fit_on, p.data.batch_size, shuffle=True, seed=p.seed + fold)
        model = model_lib.build(p.data.image_size, num_classes, p.model,
                                run.in_model_augmentation(p.train.augment), p.seed + fold)
        model_lib.compile_for(model, num_classes, run.learning_rate(p.train.learning_rate, p.train.lr_schedule,
                                                          p.train.warmup_epochs, epochs, len(fit)))
        model.fit(fit, epochs=epochs, verbose=0, shuffle=False)
        held_batches = batches.Batches(array, data.labels, held, p.data.batch_size, shuffle=False, seed=p.seed)
        probs[fold_of == fold] = classes.probabilities(model.predict(held_batches, verbose=0))
        accuracy = float(np.mean(probs[fold_of == fold].argmax(axis=1) == data.labels[held]))
        progress(f"fold {fold + 1}/{folds}: trained on {len(fit_on)} images, {len(held)} held out, "
                 f"accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)")
        keras.backend.clear_session()
    return probs


def embeddings(model_file: Path, array: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image's pooled features in the trained model (the input of its last Dense layer), and its class
    probabilities, from the same pass."""
    import keras

    from catsdogs.training import batches
    from catsdogs.training import model as model_lib

    model = model_lib.load(model_file)
    pooled = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not pooled:
        raise UserError(f"{model_file}: no global pooling layer to take features from")
    both = keras.Model(model.inputs, [pooled[-1].output, model.outputs[0]])
    everything = batches.Batches(array, np.zeros(len(array), np.int32), np.arange(len(array)), batch_size,
                                 shuffle=False, seed=0)
    features, logits = both.predict(everything, verbose=0)
    return np.asarray(features, dtype=np.float32), classes.probabilities(logits)


def label_issues(labels: np.ndarray, probs: np.ndarray):
    """cleanlab on one subset, with one probability column per class: (label-issue mask, label quality: the
    probability of the given class)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if len(np.unique(labels)) < 2:
        raise UserError("a subset holds only one class: too few images to review")
    issues = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return issues, get_label_quality_scores(labels, probs, method="self_confidence")


def outliers(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's out-of-distribution score of each image's features (lower: more atypical), and which are
    outliers by Datalab's rule on the mean kNN distance."""
    from cleanlab.outlier import OutOfDistribution

    k = min(OOD_NEIGHBOURS, len(features) - 1)
    ood = OutOfDistribution(params={"k": k})
    score = ood.fit_score(features=features, verbose=False)
    distance = -np.log(np.clip(score, 1e-300, 1.0))  # cleanlab's score is exp(-t * mean distance)
    q1, q3 = np.percentile(distance, [25, 75])
    return score, distance > q3 + (1 / OOD_THRESHOLD - 1) * (q3 - q1)


def perceptual_hashes(directory: Path, paths: list[str]) -> np.ndarray:
    """imagehash's 64-bit pHash of each image, as uint64, in threads (Pillow releases the GIL)."""
    import imagehash

    def phash(path: str) -> int:
        bits = imagehash.phash(images.viewed(directory / path)).hash.flatten()
        return int("".join("1" if b else "0" for b in bits), 2)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return np.asarray(list(pool.map(phash, paths)), dtype=np.uint64)


_SET_BITS = np.asarray([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


def bit_count(values: np.ndarray) -> np.ndarray:
    """The set bits of each uint64, by byte (np.bitwise_count needs numpy 2; pyproject allows 1.26)."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64)[..., None].view(np.uint8)
    return _SET_BITS[as_bytes].sum(axis=-1, dtype=np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 512):
    """(i, j, distance) for every i < j whose hashes differ in at most `max_distance` bits."""
    found = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk, None] ^ hashes[None, :]
        distance = bit_count(block)
        i, j = np.nonzero(distance <= max_distance)
        keep = j > i + start
        found += zip((i[keep] + start).tolist(), j[keep].tolist(), distance[i[keep], j[keep]].tolist())
    return found


def groups(n: int, pairs) -> np.ndarray:
    """Each image's group (single linkage over `pairs`), as the smallest index in it."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.asarray([root(i) for i in range(n)])


def find(directory: Path, inputs: Inputs, train_probs: np.ndarray, features: np.ndarray, hashes: np.ndarray,
         max_distance: int = MAX_DISTANCE) -> tuple[list[dict], dict]:
    """The candidate rows (tables.CANDIDATES) and a summary with counts."""
    data = inputs.data
    names = data.class_names
    rows: dict[str, list[dict]] = {kind: [] for kind in tables.CANDIDATE_KINDS}
    summary: dict = {"images": len(data.paths), TRAIN: len(data.train), VALIDATION: len(data.val)}
    ood, atypical = outliers(features)
    for subset, indices, probs in ((TRAIN, data.train, train_probs), (VALIDATION, data.val, inputs.val_probs)):
        labels = data.labels[indices]
        issues, quality = label_issues(labels, probs)
        summary[f"{subset}_accuracy"] = round(float(np.mean(probs.argmax(axis=1) == labels)), 4)
        for n, i in enumerate(indices):
            row = {"member": member(data.paths[i], inputs.root), "subset": subset, "label": names[labels[n]],
                   "predicted": names[int(probs[n].argmax())], "probability": f"{probs[n].max():.4f}",
                   "partner": "", "partner_subset": "", "distance": ""}
            if atypical[i]:  # first: a picture with no pet has no right label either
                rows[NON_PET].append(row | {"kind": NON_PET, "score": f"{ood[i]:.6g}"})
            elif issues[n]:
                rows[LABEL].append(row | {"kind": LABEL, "score": f"{quality[n]:.4f}"})

    pairs = near_pairs(hashes, max_distance)
    group = groups(len(data.paths), pairs)
    subset_of = np.empty(len(data.paths), dtype=object)
    subset_of[data.train], subset_of[data.val] = TRAIN, VALIDATION
    nearest: dict[int, tuple[int, int]] = {}  # validation image -> (distance, nearest training image)
    for i, j, distance in pairs:
        for a, b in ((i, j), (j, i)):
            closer = (distance, b) < nearest.get(a, (HASH_BITS + 1, 0))
            if subset_of[a] == VALIDATION and subset_of[b] == TRAIN and closer:
                nearest[a] = (distance, b)
    spanning = {g for g in np.unique(group) if set(tables.SUBSETS) <= set(subset_of[group == g])}
    val_label = dict(zip(data.val.tolist(), inputs.val_probs))
    for a, (distance, b) in nearest.items():
        if group[a] in spanning:
            probs = val_label[a]
            rows[DUPLICATE].append({
                "kind": DUPLICATE, "member": member(data.paths[a], inputs.root), "subset": VALIDATION,
                "label": names[data.labels[a]], "predicted": names[int(probs.argmax())],
                "probability": f"{probs.max():.4f}", "score": str(distance), "partner": member(data.paths[b], inputs.root),
                "partner_subset": TRAIN, "distance": str(distance)})
    summary["near_duplicate_pairs"] = len(pairs)
    summary["near_duplicate_groups"] = int(sum(np.bincount(group) > 1))
    summary["groups_spanning_subsets"] = len(spanning)

    ranked = []
    for kind, key in ((LABEL, lambda r: (float(r["score"]), r["member"])),
                      (NON_PET, lambda r: (float(r["score"]), r["member"])),
                      (DUPLICATE, lambda r: (int(r["distance"]), r["member"]))):
        for rank, row in enumerate(sorted(rows[kind], key=key), start=1):
            ranked.append(row | {"rank": rank})
        summary[f"{kind}_candidates"] = len(rows[kind])
    return ranked, summary


def contact_sheet(rows: list[dict], directory: Path, path: Path, per_kind: int = SHEET_PER_KIND) -> None:
    """The top candidates of each kind, one row of the sheet per kind: the image with its given label and
    predicted probability; a duplicate beside its training partner."""
    from matplotlib.figure import Figure

    from catsdogs.evaluation import figures

    columns = 6
    cells: list[tuple[str | None, str]] = []  # (cleaned path or None, title); rows of `columns` cells
    for kind in tables.CANDIDATE_KINDS:
        top = [r for r in rows if r["kind"] == kind][:per_kind]
        kind_cells = []
        for r in top:
            if kind == DUPLICATE:
                kind_cells += [(r["member"], f"#{r['rank']} val {_short(r['member'])}\n{r['label']}, "
                                             f"{r['distance']} bits from"),
                               (r["partner"], f"train {_short(r['partner'])}")]
            else:
                kind_cells.append((r["member"], f"#{r['rank']} {kind} {_short(r['member'])}\nfiled {r['label']}, "
                                                f"p({r['predicted']})={float(r['probability']):.2f}"))
        if not kind_cells:
            kind_cells = [(None, f"no {kind} candidate")]
        kind_cells += [(None, "")] * (-len(kind_cells) % columns)
        cells += kind_cells
    grid_rows = len(cells) // columns
    fig = Figure(figsize=(2.2 * columns, 2.5 * grid_rows + 0.5), layout="constrained")
    for ax, (name, title) in zip(fig.subplots(grid_rows, columns, squeeze=False).flat, cells):
        ax.axis("off")
        if name:
            ax.imshow(np.asarray(images.viewed(directory / _short(name))))
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"catsdogs review: top candidates per kind ({', '.join(tables.CANDIDATE_KINDS)})")
    figures.save(fig, path)


def _short(name: str) -> str:
    return name.split("/", 1)[1]


def trained_params(model_file: Path, lock: Path = Path(LOCK)) -> params.Params:
    """The params `model_file` was trained with: params.yaml with the values dvc.lock records for the stage that
    wrote it (the train stage) put over it. The workspace's own may be others (`git checkout params.yaml` after
    the demo): cross-validating with them would train another model, at another image size."""
    from catsdogs import params

    try:
        stages = params.read_yaml(lock)["stages"]
    except params.ParamsError:
        raise UserError(f"{model_file}: no record of the params it was trained with ({lock} not found or unreadable): "
                        "train it with `dvc repro` first") from None
    except (KeyError, TypeError):
        raise UserError(f"{lock}: not a DVC lock file (no stages)") from None
    name = Path(os.path.relpath(model_file)).as_posix()
    for stage, record in (stages or {}).items():
        out = next((o for o in record.get("outs") or [] if o.get("path") == name), None)
        if out is not None:
            break
    else:
        raise UserError(f"{model_file}: no stage in {lock} wrote it, so the params it was trained with are unknown: "
                        "review the pipeline's model")
    digest = hashlib.md5(usedforsecurity=False)  # what DVC records
    with open(model_file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if out.get("md5") != digest.hexdigest():
        raise UserError(f"{model_file}: not the model {lock} records for the {stage} stage: run `dvc checkout` "
                        "(or `dvc repro`) first")
    raw = params.read_yaml(params.PARAMS_FILE)
    for key, value in ((record.get("params") or {}).get(params.PARAMS_FILE) or {}).items():
        *sections, leaf = key.split(".")  # a section ("data") or one key of it ("data.image_size")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return params.parse(raw, f"{params.PARAMS_FILE} with {lock}'s {stage} params")


def check_options(folds: int, epochs: int | None, max_distance: int) -> None:
    """The review's options, checked before any work."""
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs {epochs}: each fold's model needs at least 1 epoch")
    if not 0 <= max_distance <= HASH_BITS:
        raise UserError(f"--max-distance {max_distance}: a number of pHash bits, 0 to {HASH_BITS}")


def run(directory: Path, split_file: Path, classes_file: Path, predictions_file: Path, model_file: Path, out: Path,
        image_cache: Path | None, folds: int | None = None, epochs: int | None = None,
        max_distance: int | None = None, filter_metrics: Path | None = None) -> dict:
    """The whole review: writes out/candidates.csv, out/contact_sheet.png, out/summary.json."""
    from catsdogs import backend
    from catsdogs.data import imagecache

    folds = FOLDS if folds is None else folds
    max_distance = MAX_DISTANCE if max_distance is None else max_distance
    check_options(folds, epochs, max_distance)
    for package, name in (("cleanlab", "cleanlab"), ("imagehash", "ImageHash")):
        try:
            __import__(package)
        except ImportError:
            raise UserError(f"{name} is not installed: pip install -e '.[review]' (see README)") from None
    if not model_file.is_file():
        raise UserError(f"{model_file}: model not found (run `dvc repro` first)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder, and the report is one: pass another --out")
    p = trained_params(model_file)
    log.info("with the params %s was trained with (%s): %dx%d images, %d epochs", model_file, LOCK,
             *p.data.image_size, p.epochs)
    epochs = epochs or p.epochs
    timings = {}
    start = time.perf_counter()
    data = read_inputs(directory, split_file, classes_file, predictions_file)
    root = filter_root(filter_metrics) if filter_metrics is not None else ""
    backend.select(p.train.backend)
    array = imagecache.load(directory, data.paths, p.data.image_size, image_cache, p.data.cache_mode, data.digests)
    timings["read_and_decode"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info("cross-validating the training subset: %d folds, %d epochs each", folds, epochs)
    train_probs = cross_validated(array, data, p, folds, epochs, progress=log.info)
    timings["cross_validation"] = time.perf_counter() - start

    start = time.perf_counter()
    features, probs = embeddings(model_file, array, p.data.batch_size)
    inputs = Inputs(data, probs[data.val], root)
    timings["embeddings"] = time.perf_counter() - start

    start = time.perf_counter()
    hashes = perceptual_hashes(directory, inputs.data.paths)
    timings["hashing"] = time.perf_counter() - start

    start = time.perf_counter()
    rows, summary = find(directory, inputs, train_probs, features, hashes, max_distance)
    timings["cleanlab_and_pairs"] = time.perf_counter() - start

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(out / CANDIDATES_FILE, tables.CANDIDATES, ([r[c] for c in tables.CANDIDATES] for r in rows))
    contact_sheet(rows, directory, out / CONTACT_SHEET)
    timings["report"] = time.perf_counter() - start
    summary |= {"folds": folds, "epochs": epochs, "max_distance": max_distance,
                "seconds": {k: round(v, 2) for k, v in timings.items()}}
    summary["seconds_per_image"] = round(sum(timings.values()) / max(1, len(inputs.data.paths)), 5)
    atomic.write_json(out / SUMMARY_FILE, summary)
    return summary


# --- accepting candidates -------------------------------------------------------------------------------

def read_candidates(path: Path) -> list[dict]:
    try:
        return tables.read(path, tables.CANDIDATES, "run `catsdogs review` again")
    except FileNotFoundError:
        raise UserError(f"{path}: no review report (run `catsdogs review` first)") from None


def reason(row: dict) -> str:
    """The exclusion list's reason for an accepted candidate: its kind and the evidence."""
    if row["kind"] == DUPLICATE:
        return f"{DUPLICATE}: near-duplicate of {row['partner']} ({row['partner_subset']}, {row['distance']} bits)"
    return f"{row['kind']}: filed as {row['label']}, p({row['predicted']})={row['probability']}"


def accept(candidates: Path, exclude: Path, members: list[str], top: int | None, kinds: list[str] | None,
           who: str | None = None) -> tuple[list, list]:
    """Append the chosen candidates to the exclusion list: the named `members` (each must be in the report),
    and/or the first `top` of each of `kinds` (all kinds by default)."""
    rows = read_candidates(candidates)
    by_member = {}
    for row in rows:
        by_member.setdefault(row["member"], row)
    chosen = []
    for name in members:
        if name not in by_member:
            like = f" (members look like {rows[0]['member']})" if rows else ""
            raise UserError(f"{name} is not a candidate in {candidates}{like}; to exclude another image, add it "
                            f"to {exclude} by hand")
        chosen.append(by_member[name])
    if top is not None:
        wanted = kinds or list(tables.CANDIDATE_KINDS)
        chosen += [r for r in rows if r["kind"] in wanted and int(r["rank"]) <= top]
    who = who if who is not None else _user()
    today = datetime.date.today().isoformat()
    return exclusions.append(exclude, [exclusions.Exclusion(r["member"], reason(r), who, today) for r in chosen])


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return ""

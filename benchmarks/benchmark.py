"""Side-by-side training speed and memory, plus filter throughput and no-op `dvc repro` time.

    python benchmarks/benchmark.py [--photos TAR] [--images-per-class 1000] [--size 64]
                                   [--widths 16,32,64,128,256 | tutorial] [--batch-size 32] [--epochs 3]
                                   [--backend tensorflow|jax] [--precision auto]
                                   [--rss-images 0] [--dvc-images 0] [--skip-speed]

Training variants, one process each, on the same data and the same model size:
  (a) tutorial  the tutorial as written: image_dataset_from_directory decoding JPEGs every epoch,
                RandomFlip + RandomRotation mapped over the tf.data pipeline on the CPU, float32, a
                constant learning rate (skipped where TensorFlow is not installed: tf.data needs it)
  (b) project   this project's train stage, run as DVC runs it (decode once, augmentation in the model)
  (c) model     the model alone on one batch already on the device, no input pipeline, no augmentation,
                in the precision the train stage uses (`--precision auto`: bfloat16 on a GPU)
Images/s are steady state: the median epoch after the first (which compiles), timed up to the epoch's
validation pass. Compare them as ratios. (a) and (b) also print their final validation accuracy.

The defaults are the demo's sizes (configs/demo.yaml). `--widths tutorial` keeps the real model and
params.yaml's recipe; other widths take the demo's recipe (its `train` and `model.bn_momentum`). The GPU
measurement of the issue:
    python benchmarks/benchmark.py --photos PHOTOS_180.tar --size 180 \
        --widths tutorial --batch-size 128 --epochs 25 --backend jax

`--rss-images N` also runs the train stage on N images per class at 180x180 for one epoch and reports
its peak RSS (the memory target is about the data: the decoded uint8 array and the input pipeline).
`--dvc-images N` builds the whole pipeline on a synthetic archive of N images per class and times a no-op
`dvc repro` (median of three).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The demo's sizes and recipe are the defaults here, read from the demo's own file, never restated.
DEMO = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
DEMO_WIDTHS = ",".join(map(str, [DEMO["model"]["entry_width"], *DEMO["model"]["block_widths"],
                                 DEMO["model"]["exit_width"]]))
sys.path.insert(0, str(ROOT / "src"))
from catsdogs import history  # noqa: E402 - the project's sources, as for the runs below
sys.path.append(str(ROOT / "tests"))
from projectcopy import copy_project  # noqa: E402 - the tests' scratch repositories, made the same way
# the project's sources first, then whatever PYTHONPATH already holds (packages installed with --target)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", DVC_NO_ANALYTICS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def python(code_or_module: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_module], cwd=cwd, env=ENV, text=True, capture_output=True,
                          check=False)


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode:
        raise SystemExit(f"{' '.join(result.args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def photos_zip(source: Path, target: Path, copies: int = 1) -> Path:
    """A tar of real photos laid out like the archive (PetImages/<class>/N.jpg), as a zip the download stage copies;
    each photo `copies` times under other numbers, for epochs long enough to time (500 photos are 13 steps)."""
    with tarfile.open(source) as tar, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        photos = [(Path(m.name), tar.extractfile(m).read()) for m in tar if m.isfile()]
        for copy in range(copies):
            for name, data in photos:
                zf.writestr(str(name.with_stem(f"{name.stem}{copy:02d}" if copies > 1 else name.stem)), data)
    return target


def write_params(folder: Path, args, images_per_class: int, size: int, epochs: int, photos: Path | None = None):
    """params.yaml for a run: the given data, size and epochs, `--backend`/`--precision`, and either the
    tutorial's model and recipe (`--widths tutorial`) or narrower widths with the demo's recipe."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["epochs"] = epochs
    if photos:
        zipped = photos_zip(photos, folder / "photos.zip", args.photo_copies)
        p["download"].update(source="url", url=str(zipped), size=None, sha256=None)
    else:
        p["download"].update(source="synthetic")
    low, high = DEMO["download"]["synthetic"]["side_range"]  # the demo's range, moved up to at least `size`
    p["download"]["synthetic"].update(images_per_class=images_per_class,
                                      side_range=[max(size, low), max(size, low) + high - low])
    p["data"].update(image_size=[size, size], batch_size=args.batch_size)
    if args.widths != "tutorial":
        widths = [int(w) for w in args.widths.split(",")]
        p["model"].update(entry_width=widths[0], block_widths=widths[1:-1], exit_width=widths[-1],
                          bn_momentum=DEMO["model"]["bn_momentum"])
        p["train"].update(DEMO["train"])
    p["train"].update(backend=args.backend, precision=args.precision)
    (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def prepare(folder: Path, args, images_per_class: int, size: int, epochs: int, photos: Path | None = None) -> Path:
    """A synthetic archive (or the photos) through the real download and filter stages: the cleaned folder."""
    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder, args, images_per_class, size, epochs, photos)
    checked(python(["-m", "catsdogs.stages.download", "--out", "raw", "--partial-dir", "partial"], folder))
    checked(python(["-m", "catsdogs.stages.filter", "raw", "--out", "clean", "--metrics", "filter.json",
                    "--report", "dropped.csv"], folder))
    return folder / "clean"


TRAIN_ARGS = ["--model", "model.keras", "--classes", "classes.json", "--split", "split.csv",
              "--checkpoints", "checkpoints", "--live", "live", "--image-cache", "cache", "--work", "work",
              "--jax-cache", "jax"]


# Runs a module as `python -m` would, then reports the process's own peak RSS on stderr's last line.
MEASURED = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def run_measured(module: str, arguments: list[str], cwd: Path) -> tuple[str, float]:
    """Run `python -m module arguments`; return its stdout and its peak RSS in GB."""
    result = checked(python(["-c", MEASURED, module, *arguments], cwd))
    last = result.stderr.strip().splitlines()[-1].split()
    return result.stdout, int(last[1]) / 2**20


# The two variants that are not the train stage, as small programs run in their own process. Both time each
# epoch up to its validation pass, as the train stage's `train_seconds` does.
VARIANT = r'''
import json, resource, statistics, sys, time
from types import SimpleNamespace
import numpy as np
from catsdogs import backend
variant, folder, size, batch, epochs, widths, backend_name, precision = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
    [int(w) for w in sys.argv[6].split(",")], sys.argv[7], sys.argv[8])
backend.select(backend_name)
import keras
from catsdogs.training import model as model_lib
# the tutorial as written trains in float32; the model alone in the precision the train stage would pick
keras.mixed_precision.set_global_policy("float32" if variant == "tutorial" else backend.precision_policy(precision))
keras.utils.set_random_seed(1337)
shape = SimpleNamespace(entry_width=widths[0], block_widths=widths[1:-1], exit_width=widths[-1], dropout=0.25,
                        bn_momentum=float(sys.argv[9]))
no_augmentation = SimpleNamespace(flip=False, rotation=0.0)  # augmentation is in the input pipeline (a) or absent (c)
# the tutorial as written has Keras' own BatchNormalization; the project's builder a fused one
batch_norm = keras.layers.BatchNormalization if variant == "tutorial" else model_lib.FusedBatchNormalization
model = model_lib.build((size, size), 2, shape, no_augmentation, 1337, batch_norm=batch_norm)
model_lib.compile_for(model, 2, float(sys.argv[10]))
times = []
class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.start, self.trained = time.perf_counter(), None
    def on_test_begin(self, logs=None): self.trained = self.trained or time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): times.append((self.trained or time.perf_counter()) - self.start)
if variant == "tutorial":  # tf.data decoding every JPEG each epoch, augmentation mapped over it on the CPU
    try:
        import tensorflow as tf
    except ImportError:
        print(json.dumps({"skipped": "its tf.data input pipeline needs TensorFlow, which is not installed"}))
        sys.exit()
    train_ds, val_ds = keras.utils.image_dataset_from_directory(folder, validation_split=0.2, subset="both",
        seed=1337, image_size=(size, size), batch_size=batch, verbose=False)
    n = len(train_ds.file_paths)
    augmentation = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)]
    def augment(images):
        for layer in augmentation:
            images = layer(images)
        return images
    # the model here takes uint8, so the augmented floats are cast back (one cheap op)
    train_ds = train_ds.map(lambda img, label: (tf.cast(tf.clip_by_value(augment(img), 0, 255), tf.uint8), label),
                            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    val_ds = val_ds.map(lambda img, label: (tf.cast(img, tf.uint8), label)).prefetch(tf.data.AUTOTUNE)
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[Timer()], verbose=0)
    final = history.history["val_acc"][-1]
else:  # the model alone: one batch already on the device, repeated; no input pipeline, no augmentation
    class OneBatch(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.batch = (keras.ops.convert_to_tensor(rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)),
                          keras.ops.convert_to_tensor(rng.integers(0, 2, batch)))
        def __len__(self):
            return 100
        def __getitem__(self, i):
            return self.batch
    n, final = batch * 100, None  # 100 steps an epoch: shorter epochs swing with the machine's load
    data = OneBatch()
    if backend_name == "tensorflow":  # tf.data keeps the batch a tensor (Keras' PyDataset path would copy it)
        import tensorflow as tf
        data = tf.data.Dataset.from_tensors(data.batch).repeat(100)
    model.fit(data, epochs=epochs, callbacks=[Timer()], verbose=0)
steady = times[1:] or times
print(json.dumps({"images_per_second": n / statistics.median(steady), "seconds_per_epoch": statistics.median(steady),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "val_acc": final}))
'''


def run_variant(variant: str, work: Path, folder: Path) -> dict:
    """Variant (a) or (c) with the model and recipe of the train stage's params.yaml in `work`."""
    p = yaml.safe_load((work / "params.yaml").read_text())
    m, t = p["model"], p["train"]
    widths = ",".join(str(w) for w in [m["entry_width"], *m["block_widths"], m["exit_width"]])
    result = checked(python(["-c", VARIANT, variant, str(folder), str(p["data"]["image_size"][0]),
                             str(p["data"]["batch_size"]), str(p["epochs"]), widths, t["backend"], t["precision"],
                             str(m["bn_momentum"]), str(t["learning_rate"])], work))
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_train_stage(work: Path, folder: Path) -> dict:
    _, peak_rss = run_measured("catsdogs.stages.train", [str(folder), *TRAIN_ARGS], work)
    summary = history.read_summary(work / "live")
    seconds = [row["train_seconds"] for row in history.read_history(work / "live")]
    return {"images_per_second": summary["train_images_per_second"],
            "seconds_per_epoch": statistics.median(seconds[1:] or seconds), "peak_rss_gb": peak_rss,
            "val_acc": summary["final"]["val_acc"]}


def train_speed(args, tmp: Path) -> None:
    work = tmp / "speed"
    folder = prepare(work, args, args.images_per_class, args.size, args.epochs, args.photos)
    source = (f"{args.photos.name} x{args.photo_copies}" if args.photos
              else f"synthetic, {args.images_per_class} images per class")
    print(f"training: {source}, at {args.size}x{args.size}, widths {args.widths}, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.backend} backend, precision {args.precision}, {os.cpu_count()} cores")
    rows = {}
    for letter, variant in zip("abc", ("tutorial", "project", "model")):
        figures = run_train_stage(work, folder) if variant == "project" else run_variant(variant, work, folder)
        if "skipped" in figures:
            print(f"  ({letter}) {variant:8}  skipped: {figures['skipped']}")
            continue
        rows[variant] = figures
        # with copies of the photos, validation images have twins in training: no accuracy worth printing
        shown = figures["val_acc"] is not None and args.photo_copies == 1
        accuracy = f"  final val_acc {figures['val_acc']:.4f}" if shown else ""
        print(f"  ({letter}) {variant:8}  {figures['images_per_second']:8.1f} img/s  "
              f"{figures['seconds_per_epoch']:7.2f} s/epoch  peak RSS {figures['peak_rss_gb']:.2f} GB{accuracy}")
    speed = {variant: figures["images_per_second"] for variant, figures in rows.items()}
    if "tutorial" in speed:
        print(f"  project / tutorial: {speed['project'] / speed['tutorial']:.2f}x")
    print(f"  project / model alone: {speed['project'] / speed['model']:.2f}")


def train_rss(args, tmp: Path) -> None:
    """Peak RSS of the train stage on many images at the tutorial's 180x180, one epoch of a tiny model."""
    work = tmp / "rss"
    folder = prepare(work, args, args.rss_images, 180, 1)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["model"].update(entry_width=4, block_widths=[8], exit_width=8)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _, peak_rss = run_measured("catsdogs.stages.train", [str(folder), *TRAIN_ARGS], work)
    kept = json.loads((work / "filter.json").read_text())["kept"]
    print(f"train stage peak RSS, {kept} images at 180x180 (uint8 array {kept * 180 * 180 * 3 / 1e9:.2f} GB), "
          f"data.cache_mode={p['data']['cache_mode']}: {peak_rss:.2f} GB")


def noop_repro(args, tmp: Path) -> None:
    """A no-op `dvc repro` of the whole pipeline over a cleaned folder of 2 x N files."""
    repo = copy_project(tmp / "repo")
    write_params(repo, args, args.dvc_images, 32, 1)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["download"]["synthetic"]["side_range"] = [32, 48]
    p["model"].update(entry_width=4, block_widths=[8], exit_width=8)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        checked(subprocess.run(command, cwd=repo, env=ENV, capture_output=True, text=True))
    start = time.perf_counter()
    checked(python(["-m", "dvc", "repro"], repo))
    first = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = checked(python(["-m", "dvc", "repro"], repo))
        times.append(time.perf_counter() - start)
        assert "Running stage" not in result.stdout, result.stdout
    files = sum(1 for _ in (repo / "data/clean").rglob("*.jpg"))
    print(f"dvc repro, whole pipeline, {files} files in data/clean: first run {first:.0f} s; "
          f"no-op {statistics.median(times):.2f} s (median of {', '.join(f'{t:.2f}' for t in times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="a tar of real photos (PetImages/<class>/N.jpg) instead of "
                        "synthetic images (docs/speed.md: how to make one from the archive)")
    parser.add_argument("--photo-copies", type=int, default=1, help="each photo this many times (other names)")
    parser.add_argument("--images-per-class", type=int, default=DEMO["download"]["synthetic"]["images_per_class"])
    parser.add_argument("--size", type=int, default=DEMO["data"]["image_size"][0])
    parser.add_argument("--widths", default=DEMO_WIDTHS,
                        help="entry, blocks..., exit (with the demo's recipe), or 'tutorial' (the real model and recipe)")
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
    parser.add_argument("--precision", default="auto", help="train.precision of (b), and of (c); (a) is float32")
    parser.add_argument("--batch-size", type=int, default=DEMO["data"]["batch_size"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rss-images", type=int, default=0, help="images per class for the RSS run (0: skip)")
    parser.add_argument("--dvc-images", type=int, default=0, help="images per class for the DVC run (0: skip)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catsdogs-bench-") as tmp:
        if not args.skip_speed:
            train_speed(args, Path(tmp))
        if args.rss_images:
            train_rss(args, Path(tmp))
        if args.dvc_images:
            noop_repro(args, Path(tmp))


if __name__ == "__main__":
    main()

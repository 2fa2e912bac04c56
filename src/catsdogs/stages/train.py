"""Train stage: the tutorial's model on the tutorial's split, with a checkpoint per epoch and a CSV log.

Reads the cleaned folder, decodes every image once (cached across runs), trains with augmentation inside
the model, and writes the final model, per-epoch checkpoints, the per-epoch log and a summary metric file.

A run in progress lives in a work folder named after its params and data (Keras' BackupAndRestore state,
the checkpoints and the log so far). If the process is killed, the next `dvc repro` or `dvc exp run` with
the same params and data resumes from the last finished epoch; the outputs appear only when training is
complete, and the work folder is then removed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import shutil
import statistics
from pathlib import Path

from catsdogs import atomic, backend, params
from catsdogs.errors import UserError, run_main

log = logging.getLogger("train")


def read_log(path: Path) -> list[dict]:
    """The per-epoch rows, the last one of each epoch: an epoch killed after its row was written is run
    and written again after resuming."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows)]


def write_log(path: Path, rows: list[dict]) -> None:
    atomic.write_csv(path, list(rows[0]), [list(row.values()) for row in rows])


def summarize(rows: list[dict], train_images: int) -> dict:
    keys = ["loss", "acc", "val_loss", "val_acc"]
    best = max(rows, key=lambda row: float(row["val_acc"]))
    seconds = [float(row["seconds"]) for row in rows]
    training = [float(row["train_seconds"]) for row in rows]
    steady = training[1:] or training  # the first epoch compiles
    return {
        "epochs": len(rows),
        "final": {k: round(float(rows[-1][k]), 6) for k in keys},
        "best": {"epoch": int(best["epoch"]) + 1, **{k: round(float(best[k]), 6) for k in keys}},
        "seconds": round(sum(seconds), 2),
        "train_images_per_second": round(train_images / statistics.median(steady), 1),
    }


def work_folder(root: Path, p: params.Params, data_key: str) -> Path:
    """The run's own folder under `root`, named after everything that shapes training; any other folder
    there is an interrupted run with other params or data, which can never be resumed, and is removed."""
    shaping = p.model_dump(include={"epochs", "seed", "data", "model", "train"})
    key = hashlib.sha256(json.dumps([shaping, data_key], sort_keys=True).encode()).hexdigest()[:16]
    if root.is_dir():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    return root / key


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True, help="class names, in label order (JSON)")
    parser.add_argument("--split", type=Path, required=True, help="each image's subset and content hash (CSV)")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="per-epoch CSV")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="decoded-image cache folder")
    parser.add_argument("--work", type=Path, required=True, help="where a run in progress keeps its state")
    parser.add_argument("--jax-cache", type=Path, required=True, help="JAX's persistent compilation cache")
    args = parser.parse_args(argv)
    p = params.load()
    if not args.data.is_dir():
        raise UserError(f"{args.data}: cleaned image folder not found (run the filter stage first)")
    atomic.remove_leftovers(args.model, args.classes, args.split, args.checkpoints, args.log, args.metrics)

    backend.select(p.train.backend, jax_cache=args.jax_cache)
    import keras  # noqa: E402 - Keras and the modules using it come after the backend is chosen

    from catsdogs import augment, dataset, distribute, training
    from catsdogs import model as model_lib

    plan = distribute.setup(p.train.distribute, p.train.backend)  # first: before any tensor exists
    distribute.check_batch_size(plan, p.data.batch_size)
    # only the chief writes the outputs; every other process writes the same into a discarded folder
    args = distribute.redirect(args, plan, "model", "classes", "split", "checkpoints", "log", "metrics",
                               "work")
    policy = backend.precision_policy(p.train.precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(p.seed)
    data = dataset.split(args.data, p.data.validation_split, p.seed, p.data.split)
    num_classes = len(data.class_names)
    log.info("%d images of %d classes (%s): %d for training, %d for validation",
             len(data.paths), num_classes, ", ".join(data.class_names), len(data.train), len(data.val))
    array = dataset.load_images(args.data, data.paths, p.data.image_size, args.cache, p.data.cache)
    a = p.train.augment
    on_cpu = augment.on_cpu(a.flip, a.rotation, p.seed) if a.where == "cpu" else None
    train = dataset.Batches(array, data.labels, data.train, p.data.batch_size, shuffle=True, seed=p.seed,
                            transform=on_cpu)
    val = dataset.Batches(array, data.labels, data.val, p.data.batch_size, shuffle=False, seed=p.seed)
    # on several devices: the last training batch trimmed, the last validation batch padded to split evenly
    train, val = distribute.batches(train, plan, "drop"), distribute.batches(val, plan, "pad")

    in_model = a if a.where == "model" else a.model_copy(update={"flip": False, "rotation": 0.0})
    with plan.scope():
        model = model_lib.build(p.data.image_size, num_classes, p.model, in_model, p.seed)
        model_lib.compile_for(model, num_classes, training.learning_rate(p, len(train)))
        distribute.prepare(plan, model, train)
    log.info("Keras %s on %s, %s precision, augmentation in the %s, XLA %s", keras.__version__,
             p.train.backend, policy, "model" if a.where == "model" else "CPU input pipeline",
             "on" if model.jit_compile else "off (TensorFlow on a CPU: it runs slower there)")

    work = work_folder(args.work, p, dataset.fingerprint(args.data, data.paths))
    if plan.processes > 1:  # no resume across processes: all of them would have to restore the same epoch
        shutil.rmtree(work, ignore_errors=True)
    if (work / "backup").exists():
        log.info("resuming the interrupted run kept in %s", work)
    callbacks = [
        training.Interruptible(),
        training.EpochSeeds(train, p.seed),
        training.EpochStats(),
        *distribute.callbacks(plan, val),  # several replicas: in-sync statistics, val metrics without padding
        training.AtomicCheckpoint(work / "checkpoints"),
        keras.callbacks.CSVLogger(str(work / "train_log.csv"), append=True),
        # last, so that an epoch counts as done only once its checkpoint and log row are written
        keras.callbacks.BackupAndRestore(str(work / "backup"), double_checkpoint=True),
    ]
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    # shuffle=False: the batches shuffle themselves, by (seed, epoch) alone, not by a global RNG
    model.fit(train, validation_data=val, epochs=p.epochs, callbacks=callbacks, verbose=2, shuffle=False)

    rows = read_log(work / "train_log.csv")
    with atomic.atomic_dir(args.checkpoints) as tmp:
        for checkpoint in (work / "checkpoints").iterdir():
            checkpoint.rename(tmp / checkpoint.name)
    with atomic.atomic_path(args.model, suffix=".keras") as tmp:
        model.save(tmp)
    atomic.write_json(args.classes, data.class_names)
    dataset.write_split(args.split, args.data, data)
    write_log(args.log, rows)
    summary = summarize(rows, len(data.train))
    atomic.write_json(args.metrics, summary)
    shutil.rmtree(work)
    log.info("trained %d epochs in %.0f s (%.0f training images/s); final val_acc %.4f, best %.4f at epoch %d",
             summary["epochs"], summary["seconds"], summary["train_images_per_second"],
             summary["final"]["val_acc"], summary["best"]["val_acc"], summary["best"]["epoch"])


if __name__ == "__main__":
    main()

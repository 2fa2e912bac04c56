"""Train stage: the tutorial's model on the tutorial's split, with a checkpoint per epoch and a CSV log.

Reads the cleaned folder, decodes every image once (cached across runs), trains with augmentation inside
the model, and writes the final model, per-epoch checkpoints, the per-epoch log and a summary metric file.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import keras

from catsdogs import atomic, dataset, params
from catsdogs import model as model_lib
from catsdogs.errors import UserError, run_main

log = logging.getLogger("train")


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate and the epoch's seconds to the logs (before CSVLogger writes them)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = time.perf_counter() - self.start


class AtomicCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint("save_at_{epoch}.keras") written through a temporary file: a kill mid-save
    leaves the previous checkpoints intact and no truncated one."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        with atomic.atomic_path(self.folder / f"save_at_{epoch + 1}.keras", suffix=".keras") as tmp:
            self.model.save(tmp)


def learning_rate(p: params.Params, steps_per_epoch: int):
    t = p.train
    if t.lr_schedule == "constant":
        return t.learning_rate
    warmup = t.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else t.learning_rate,
        decay_steps=p.epochs * steps_per_epoch - warmup,
        warmup_target=t.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def summarize(history: dict, seconds: float, train_images: int) -> dict:
    epochs = len(history["loss"])
    keys = ["loss", "acc", "val_loss", "val_acc"]
    best = max(range(epochs), key=lambda e: history["val_acc"][e])
    steady = history["seconds"][1:] or history["seconds"]
    return {
        "epochs": epochs,
        "final": {k: round(float(history[k][-1]), 6) for k in keys},
        "best": {"epoch": best + 1, **{k: round(float(history[k][best]), 6) for k in keys}},
        "seconds": round(seconds, 2),
        "train_images_per_second": round(train_images / statistics.median(steady), 1),
    }


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True, help="class names, in label order (JSON)")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="per-epoch CSV")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="decoded-image cache folder")
    args = parser.parse_args(argv)
    p = params.load()
    if not args.data.is_dir():
        raise UserError(f"{args.data}: cleaned image folder not found (run the filter stage first)")

    keras.utils.set_random_seed(p.seed)
    data = dataset.split(args.data, p.data.validation_split, p.seed)
    num_classes = len(data.class_names)
    log.info("%d images of %d classes (%s): %d for training, %d for validation",
             len(data.paths), num_classes, ", ".join(data.class_names), len(data.train), len(data.val))
    array = dataset.load_images(args.data, data.paths, p.data.image_size, args.cache)
    batch_size = p.data.batch_size
    train = dataset.Batches(array, data.labels, data.train, batch_size, shuffle=True, seed=p.seed)
    val = dataset.Batches(array, data.labels, data.val, batch_size, shuffle=False, seed=p.seed)

    model = model_lib.build(p.data.image_size, num_classes, p.model, p.train.augment, p.seed)
    model_lib.compile_for(model, num_classes, learning_rate(p, len(train)))

    args.checkpoints.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with atomic.atomic_path(args.log) as log_tmp:
        callbacks = [EpochStats(), AtomicCheckpoint(args.checkpoints), keras.callbacks.CSVLogger(str(log_tmp))]
        history = model.fit(train, validation_data=val, epochs=p.epochs, callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - start

    with atomic.atomic_path(args.model, suffix=".keras") as tmp:
        model.save(tmp)
    atomic.write_json(args.classes, data.class_names)
    summary = summarize(history.history, seconds, len(data.train))
    atomic.write_json(args.metrics, summary)
    log.info("trained %d epochs in %.0f s (%.0f training images/s); final val_acc %.4f, best %.4f at epoch %d",
             summary["epochs"], seconds, summary["train_images_per_second"], summary["final"]["val_acc"],
             summary["best"]["val_acc"], summary["best"]["epoch"])


if __name__ == "__main__":
    main()

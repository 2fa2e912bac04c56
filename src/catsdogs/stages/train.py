"""Train stage: the tutorial's model on the tutorial's split, with a checkpoint and a log row per epoch.

Reads the cleaned folder, decodes every image once (cached per user for every run and experiment:
catsdogs.caches), trains with augmentation inside the model, and writes the final model and per-epoch
checkpoints. As each epoch ends, DVCLive logs its
metrics and the run's summary into the live folder (catsdogs.history), for `dvc exp show`, `dvc plots show`,
the VS Code extension and DVC Studio to follow; inside an epoch, catsdogs.training.callbacks shows progress.

A run in progress lives in a work folder named after its params and data (Keras' BackupAndRestore state,
the checkpoints and a copy of the live log). If the process is killed, the next `dvc repro` or `dvc exp run`
with the same params and data resumes from the last finished epoch; the model and checkpoints appear only
when training is complete, and the work folder is then removed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from catsdogs import atomic, backend, caches, compat, history, params
from catsdogs.data import imagecache, splits
from catsdogs.entry import run_main
from catsdogs.errors import UserError
from catsdogs.tuning import link

log = logging.getLogger("train")

OUTPUTS = ("model", "classes", "split", "checkpoints", "live")
PARAMS = params.TRAINING  # what shapes training is what this stage reads (dvc.yaml's train params equal it)


@run_main
def main(argv=None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    p = params.for_stage("train", PARAMS)
    if not args.data.is_dir():
        raise UserError(f"{args.data}: cleaned image folder not found (run the filter stage first)")
    # The split first: a class too small for either subset stops the stage before Keras loads
    data = splits.assign(args.data, p.data.validation_split, p.seed, p.data.split_method)
    data.digests = splits.content_digests(args.data, data.paths)  # the image cache's key, split.csv's hashes
    atomic.remove_leftovers(*(getattr(args, name) for name in OUTPUTS))
    backend.select(p.train.backend, jax_cache=args.jax_cache)
    compat.check_keras(p.train.backend)  # the Keras internals that distribute patches are the verified ones
    import keras

    from catsdogs.training import callbacks, distribute, run
    from catsdogs.training import model as model_lib

    plan = distribute.setup(p.train.distribute, p.train.backend)  # first: before any tensor exists
    plan.check_batch_size(p.data.batch_size)
    args = plan.redirect(args, *OUTPUTS, "work")  # only the chief writes the outputs
    policy = backend.precision_policy(p.train.precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(p.seed)

    # The data: the tutorial's split (assigned above), every image decoded once
    log.info("%d images of %d classes (%s): %d for training, %d for validation", len(data.paths),
             len(data.class_names), ", ".join(data.class_names), len(data.train), len(data.val))
    array = imagecache.load(args.data, data.paths, p.data.image_size, args.image_cache, p.data.cache_mode,
                            data.digests)
    train, val = plan.batches(*run.input_batches(array, data, p.data.batch_size, p.seed, p.train.augment))

    # The model: the tutorial's small Xception, compiled with its loss and metric
    with plan.scope():
        model = model_lib.build(p.data.image_size, len(data.class_names), p.model,
                                run.in_model_augmentation(p.train.augment), p.seed)
        rate = run.learning_rate(p.train.learning_rate, p.train.lr_schedule, p.train.warmup_epochs, p.epochs,
                                 len(train))
        model_lib.compile_for(model, len(data.class_names), rate)
        plan.prepare(model, train)
    log.info("Keras %s on %s, %s precision, augmentation in the %s, XLA %s", keras.__version__, p.train.backend,
             policy, "model" if p.train.augment.where == "model" else "CPU input pipeline",
             "on" if model.jit_compile else "off (TensorFlow on a CPU: it runs slower there)")

    # Fit, resuming an interrupted run with the same params and data
    work = run.work_folder(args.work, p.values(), imagecache.content_key(data.paths, data.digests))
    if not plan.resumable():
        shutil.rmtree(work, ignore_errors=True)
    if (work / "backup").exists():
        log.info("resuming the interrupted run kept in %s", work)
    # shuffle=False: the batches shuffle themselves, by (seed, epoch) alone, not by a global RNG
    trial = link.attached()  # a run of `catsdogs tune` reports each epoch to its study, which may stop it early
    logs = callbacks.live(args.live, work, len(data.train), p.data.batch_size, len(val), trial)
    model.fit(train, validation_data=val, epochs=p.epochs, verbose=2, shuffle=False,
              callbacks=callbacks.for_fit(work, train, p.seed, plan.callbacks(val), logs))

    # Save
    save(args, work, model, data)
    summary = history.read_summary(args.live)
    log.info("trained %d epochs in %.0f s (%.0f training images/s); final val_acc %.4f, best %.4f at epoch %d",
             summary["step"], summary["seconds"], summary["train_images_per_second"],
             summary["final"]["val_acc"], summary["best"]["val_acc"], summary["best"]["epoch"])
    if summary.get(history.PRUNED):
        log.info("stopped early by the tuner's pruner after epoch %d of %d", summary["step"], p.epochs)
    log.info("train stage: %.1f s in all (hashing, decoding, start-up and saving included)",
             time.perf_counter() - started)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="cleaned image folder with one subfolder per class")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--classes", type=Path, required=True, help="class names, in label order (JSON)")
    parser.add_argument("--split", type=Path, required=True, help="each image's subset and content hash (CSV)")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True, help="DVCLive's folder: per-epoch metrics, summary")
    parser.add_argument("--work", type=Path, required=True, help="where a run in progress keeps its state")
    parser.add_argument("--image-cache", type=Path, help=caches.IMAGES_OPTION_HELP)
    parser.add_argument("--jax-cache", type=Path, default=caches.path(caches.JAX),
                        help="JAX's persistent compilation cache (default: %(default)s, shared by every experiment)")
    return parser.parse_args(argv)


def save(args: argparse.Namespace, work: Path, model, data: splits.Split) -> None:
    """Move the finished run's checkpoints into place beside the model (its inference graph) and its records
    (the live log is in place already); the work folder goes."""
    with atomic.atomic_dir(args.checkpoints) as tmp:
        for checkpoint in (work / "checkpoints").iterdir():
            checkpoint.rename(tmp / checkpoint.name)
    from catsdogs.training import model as model_lib

    with atomic.atomic_path(args.model, suffix=".keras") as tmp:
        model_lib.inference_model(model).save(tmp)  # stock layers, float32, no augmentation: plain Keras loads it
    atomic.write_json(args.classes, data.class_names)
    splits.write(args.split, args.data, data)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

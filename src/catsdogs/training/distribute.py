"""Training on several devices and hosts (`train.distribute`), with each backend's own engine.

`none` trains on one device. `auto` trains data-parallel on every local accelerator — or, on a machine
without one, on every local logical CPU device when there are more than one — and across hosts when the
cluster is described in the environment:

| backend | one host | several hosts (processes) |
|---|---|---|
| tensorflow | `tf.distribute.MirroredStrategy` | `tf.distribute.MultiWorkerMirroredStrategy`, when `TF_CONFIG` lists more than one task |
| jax | `keras.distribution.DataParallel` | the same, after `keras.distribution.initialize()`, when `KERAS_DISTRIBUTION_JOB_ADDRESSES` or `KERAS_DISTRIBUTION_NUM_PROCESSES` is set |

`data.batch_size` is the GLOBAL batch: every step trains on that many images, split evenly across all
replicas; it must be a multiple of the replica count. The learning rate is never rescaled here.

A batch that does not split evenly — the last one of an epoch — is trimmed in training (at most
replicas - 1 images sit that epoch out; the order is reshuffled every epoch, so not the same ones) and padded
with copies of one image in validation, whose metrics `ExactValidation` then corrects: val_loss and val_acc
are the means over exactly the validation images, as on one device.

Only the chief (TensorFlow's chief or worker 0, JAX's process 0) writes the stage's outputs; every other
process runs the same saves into a temporary folder that is removed when it exits (TensorFlow's multi-worker
saving needs every worker to take part).

Imported only after `catsdogs.backend.select()` has chosen Keras' backend, and `setup()` must run before
anything creates a tensor: TensorFlow's multi-worker collectives and `jax.distributed` are configured at
start-up or never.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from catsdogs.errors import UserError

log = logging.getLogger("train")

JAX_CLUSTER_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES")


@dataclass
class Plan:
    """Where training runs: `replicas` model copies (devices, over every host) in `processes` processes,
    of which this one is `process_id`; `strategy` is TensorFlow's, None otherwise."""

    engine: str = "one device"
    replicas: int = 1
    processes: int = 1
    process_id: int = 0
    strategy: object | None = None

    @property
    def chief(self) -> bool:
        """The one process that writes the stage's outputs."""
        return self.process_id == 0

    @property
    def feeds_local_part(self) -> bool:
        """Whether each process must give only its own part of each global batch (JAX across processes);
        TensorFlow's strategies split the global batch themselves."""
        return self.strategy is None and self.processes > 1

    def scope(self):
        """Where the model is built and compiled: the TensorFlow strategy's scope. (JAX's distribution is
        global, set by `setup`.)"""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> str:
        if self.replicas == 1 and self.processes == 1:
            return "1 device (no distribution)"
        hosts = f" in {self.processes} processes, this is process {self.process_id}" if self.processes > 1 else ""
        return f"{self.engine} over {self.replicas} devices ({self.replicas} replicas){hosts}"

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.replicas:
            lower = batch_size // self.replicas * self.replicas
            choices = " or ".join(str(n) for n in (lower, lower + self.replicas) if n > 0)
            raise UserError(f"params.yaml: data.batch_size = {batch_size}: the global batch must split evenly "
                            f"across {self.replicas} replicas; use a multiple of {self.replicas}, e.g. {choices}")

    def redirect(self, args: argparse.Namespace, *names: str) -> argparse.Namespace:
        """The parsed arguments with the output paths `names` moved into a temporary folder on every process
        but the chief; the folder is removed when the process exits. On the chief, `args` unchanged."""
        if self.chief:
            return args
        tmp = Path(tempfile.mkdtemp(prefix=f"catsdogs-train-process{self.process_id}-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        log.info("process %d is not the chief: its outputs go to %s and are discarded", self.process_id, tmp)
        moved = {name: tmp / name / Path(getattr(args, name)).name for name in names}
        return argparse.Namespace(**{**vars(args), **moved})

    def batches(self, train, val):
        """The training and validation batches as they are on one device; on several, `EvenBatches`: the
        last training batch trimmed, the last validation batch padded, to split evenly."""
        if self.replicas == 1 and self.processes == 1:
            return train, val
        return EvenBatches(train, self, "drop"), EvenBatches(val, self, "pad")

    def callbacks(self, val) -> list:
        """The callbacks that several replicas need, or none (before the log and the checkpoints)."""
        needed = [SyncReplicaStatistics(self.strategy)] if self.strategy is not None else []
        if isinstance(val, EvenBatches) and val.padding:
            needed.append(ExactValidation(val))
        return needed

    def resumable(self) -> bool:
        """No resume across processes: all of them would have to restore the same epoch."""
        return self.processes == 1

    def prepare(self, model, batches) -> None:
        """Works around two bugs of Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy, which make
        `fit` fail on every multi-worker cluster (keras-team/keras#20585, tensorflow/tensorflow#72388: TensorFlow's
        own multi-worker Keras tutorial fails the same way). Nothing changes for any other strategy.

        1. Before training, `fit` and `evaluate` all-reduce a whole input batch across the workers only to learn
           its shapes (`Trainer._maybe_symbolic_build`), which the collective strategy cannot do for an
           (images, labels) pair. The model is built from one local batch here instead, and that step skipped.
        2. Each step's loss and metrics are averaged over the replicas with `strategy.reduce("MEAN", value,
           axis=0)`, which fails for a scalar; `axis=None` is the same average (the replicas' batches are equal).
        """
        if self.strategy is None:  # (and with jax, TensorFlow need not be installed)
            return
        import tensorflow as tf
        from keras.src.backend.tensorflow import trainer as tf_trainer

        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        with self.strategy.scope():
            model._symbolic_build(data_batch=batches[0])
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

        keras_reduce = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if strategy is self.strategy and reduction in ("auto", "mean"):
                return keras.tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
            return keras_reduce(values, strategy, reduction)

        tf_trainer.reduce_per_replica = reduce_per_replica


def setup(mode: str, backend: str) -> Plan:
    """The plan for `train.distribute` = `mode` on `backend`, with the backend configured for it."""
    found = [name for name in ("TF_CONFIG", *JAX_CLUSTER_ENV) if os.environ.get(name)]
    ignored = [name for name in found if (name == "TF_CONFIG") != (backend == "tensorflow")]
    if mode == "none" and found:
        log.warning("%s set, but train.distribute is none: this process trains alone, on one device",
                    " and ".join(found))
    elif ignored:
        log.warning("%s ignored: the %s backend reads %s", " and ".join(ignored), backend,
                    "TF_CONFIG" if backend == "tensorflow" else "KERAS_DISTRIBUTION_*")
    if mode == "none":
        plan = Plan()
    elif backend == "tensorflow":
        plan = _tensorflow()
    else:
        plan = _jax()
    log.info("training on %s", plan.describe())
    return plan


def tf_cluster() -> tuple[int, int]:
    """(processes, this process's id) from TF_CONFIG: the chief (or worker 0) is process 0; (1, 0) without it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, 0
    try:
        config = json.loads(raw)
        cluster, task = config.get("cluster", {}), config.get("task", {})
        tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        if not tasks:
            return 1, 0
        return len(tasks), tasks.index((task["type"], int(task["index"])))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"TF_CONFIG is not a usable cluster description ({exc}): see docs/scale-out.md, "
                        "'Training across hosts'") from None


def _tensorflow() -> Plan:
    import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not one INFO line per variable and step
    processes, process_id = tf_cluster()
    if processes > 1:
        # First, before any tensor exists: it configures the collectives of this process's runtime.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Plan("tf.distribute.MultiWorkerMirroredStrategy", strategy.num_replicas_in_sync, processes,
                    process_id, strategy)
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        return Plan()
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    return Plan("tf.distribute.MirroredStrategy", strategy.num_replicas_in_sync, 1, 0, strategy)


def _jax() -> Plan:
    import jax

    if any(os.environ.get(name) for name in JAX_CLUSTER_ENV):
        # reads KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID; before any JAX computation
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()  # every process's devices: the accelerators, or else the CPUs
    if len(devices) < 2:
        return Plan()
    # auto_shard_dataset=False: Keras only shards tf.data datasets; `batches()` gives each process its part
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return Plan("keras.distribution.DataParallel", len(devices), jax.process_count(), jax.process_index())


class EvenBatches(keras.utils.PyDataset):
    """A `batches.Batches` whose every batch splits evenly across the replicas, and of which this process
    gives only its own part where processes feed their own devices (JAX across processes).

    `remainder`: "drop" trims the last batch to a multiple of the replica count (and skips a last batch
    smaller than that): at most replicas - 1 training images sit out an epoch, other ones every epoch, as the
    order is reshuffled. "pad" fills the last batch up to a multiple with copies of its first image, so that
    every image is scored; `ExactValidation` then takes the copies back out of the metrics.
    """

    def __init__(self, batches, plan: Plan, remainder: str):
        super().__init__()
        self.batches, self.plan, self.remainder = batches, plan, remainder
        last = len(batches.indices) - (len(batches) - 1) * batches.batch_size
        replicas = plan.replicas
        self.last = last - last % replicas if remainder == "drop" else -(-last // replicas) * replicas
        self.steps = len(batches) - (1 if self.last == 0 else 0)
        self.images = len(batches.indices) - max(last - self.last, 0)  # per epoch, copies not counted
        self.padding = max(self.last - last, 0)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        x, y = self.batches[i]
        if len(y) % self.plan.replicas:
            if self.remainder == "drop":
                x, y = x[: self.last], y[: self.last]
            else:
                x, y = (np.concatenate([a, np.repeat(a[:1], self.last - len(a), axis=0)]) for a in (x, y))
        return self.local_part(x), self.local_part(y)

    def local_part(self, array):
        """This process's part of a global batch: all of it unless processes feed their own devices."""
        if not self.plan.feeds_local_part:
            return array
        part = len(array) // self.plan.processes
        return array[self.plan.process_id * part : (self.plan.process_id + 1) * part]

    def copies(self):
        """One batch of `replicas` copies of the padding image (this process's part of it)."""
        x, y = self.batches[len(self.batches) - 1]
        return tuple(self.local_part(np.repeat(a[:1], self.plan.replicas, axis=0)) for a in (x, y))

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()


class ExactValidation(keras.callbacks.Callback):
    """Takes the padding copies back out of the epoch's validation metrics, so that they are the means over
    exactly the validation images, as on one device (and as the evaluate stage computes them).

    Keras' validation loss and accuracy are means over every scored example, copies included. The copies
    are all the same image, so scoring one batch of them gives the value each copy added, and
    mean_images = (mean_scored * (images + copies) - copies * value_of_a_copy) / images.
    Every metric the model is compiled with (loss, accuracy) is such a mean.
    """

    def __init__(self, val: EvenBatches):
        super().__init__()
        self.val = val

    def on_epoch_end(self, epoch, logs=None):
        if not logs or "val_loss" not in logs:
            return
        x, y = self.val.copies()
        copy = self.model.evaluate(x, y, batch_size=len(y), verbose=0, return_dict=True)
        n, pad = self.val.images, self.val.padding
        for name, value in copy.items():
            if f"val_{name}" in logs:
                logs[f"val_{name}"] = (float(logs[f"val_{name}"]) * (n + pad) - pad * float(value)) / n


class SyncReplicaStatistics(keras.callbacks.Callback):
    """Averages the replicas' copies of the non-trainable float variables (BatchNormalization's moving mean
    and variance) before each validation and at the end, under a TensorFlow strategy.

    Keras 3 creates those variables without an aggregation, so under `tf.distribute` every replica updates
    its own copy from its own part of the batch and the copies drift apart: each replica would validate
    with other statistics, and the saved model would hold the first replica's. Their mean is what Keras 2
    kept (aggregation MEAN): for the moving mean exactly the moving mean of the global batches, for the
    moving variance the mean of the replicas' variances. (With JAX the statistics are the global batch's
    already, as on one device.)
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy, self.average = strategy, None

    def sync(self) -> None:
        import tensorflow as tf

        if self.average is None:
            variables = [v.value for v in self.model.non_trainable_variables
                         if "float" in str(v.dtype) and isinstance(v.value, tf.distribute.DistributedValues)]

            @tf.function
            def average():
                context = tf.distribute.get_replica_context()
                means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [v.read_value() for v in variables])
                for variable, mean in zip(variables, means):
                    variable.assign(mean)

            self.average = average if variables else (lambda: None)
        self.strategy.run(self.average)

    def on_test_begin(self, logs=None):
        self.sync()

    def on_train_end(self, logs=None):
        self.sync()

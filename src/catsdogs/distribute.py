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

A batch that does not split evenly — the last one of an epoch — is trimmed (training: at most
replicas − 1 images sit that epoch out; the order is reshuffled every epoch, so not the same ones) or padded
with zero-weight copies (validation: every validation image is scored once, the padding counts in neither
the accuracy nor the loss's sum, only in the loss's denominator).

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


def setup(mode: str, backend: str) -> Plan:
    """The plan for `train.distribute` = `mode` on `backend`, with the backend configured for it."""
    if mode == "none":
        found = [name for name in ("TF_CONFIG", *JAX_CLUSTER_ENV) if os.environ.get(name)]
        if found:
            log.warning("%s set, but train.distribute is none: this process trains alone, on one device",
                        " and ".join(found))
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
        raise UserError(f"TF_CONFIG is not a usable cluster description ({exc}): see the README's multi-host "
                        "section") from None


def _tensorflow() -> Plan:
    import tensorflow as tf

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


def check_batch_size(plan: Plan, batch_size: int) -> None:
    if batch_size % plan.replicas:
        lower = batch_size // plan.replicas * plan.replicas
        choices = " or ".join(str(n) for n in (lower, lower + plan.replicas) if n > 0)
        raise UserError(f"params.yaml: data.batch_size = {batch_size}: the global batch must split evenly "
                        f"across {plan.replicas} replicas; use a multiple of {plan.replicas}, e.g. {choices}")


class Split(keras.utils.PyDataset):
    """A `dataset.Batches` whose every batch splits evenly across the replicas, and of which this process
    gives only its own part when processes must feed their own devices (JAX across hosts).

    `remainder`: "drop" trims the last batch to a multiple of the replica count (a last batch smaller than
    that is skipped); "pad" pads it with copies of its first image and gives every batch sample weights,
    1 for images and 0 for padding, so that each image counts exactly once.
    """

    def __init__(self, batches, plan: Plan, remainder: str):
        super().__init__()
        self.batches, self.plan, self.remainder = batches, plan, remainder
        last = len(batches.indices) - (len(batches) - 1) * batches.batch_size
        self.last = last - last % plan.replicas if remainder == "drop" else -(-last // plan.replicas) * plan.replicas
        self.steps = len(batches) - (1 if self.last == 0 else 0)
        self.images = len(batches.indices) - max(last - self.last, 0)  # per epoch, padding not counted

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        x, y = self.batches[i]
        weights = np.ones(len(y), dtype="float32")
        if len(y) % self.plan.replicas:
            if self.remainder == "drop":
                x, y, weights = x[: self.last], y[: self.last], weights[: self.last]
            else:
                extra = self.last - len(y)
                x = np.concatenate([x, np.repeat(x[:1], extra, axis=0)])
                y = np.concatenate([y, np.repeat(y[:1], extra, axis=0)])
                weights = np.concatenate([weights, np.zeros(extra, dtype="float32")])
        if self.plan.feeds_local_part:
            part = len(y) // self.plan.processes
            mine = slice(self.plan.process_id * part, (self.plan.process_id + 1) * part)
            x, y, weights = x[mine], y[mine], weights[mine]
        return (x, y, weights) if self.remainder == "pad" else (x, y)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()


def batches(batches, plan: Plan, remainder: str):
    """`batches` as they are on one device; wrapped in `Split` on several."""
    return batches if plan.replicas == 1 and plan.processes == 1 else Split(batches, plan, remainder)


def redirect(args: argparse.Namespace, plan: Plan, *names: str) -> argparse.Namespace:
    """The parsed arguments with the output paths `names` moved into a temporary folder on every process
    but the chief; the folder is removed when the process exits. On the chief, `args` unchanged."""
    if plan.chief:
        return args
    tmp = Path(tempfile.mkdtemp(prefix=f"catsdogs-train-process{plan.process_id}-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    log.info("process %d is not the chief: its outputs go to %s and are discarded", plan.process_id, tmp)
    moved = {name: tmp / name / Path(getattr(args, name)).name for name in names}
    return argparse.Namespace(**{**vars(args), **moved})

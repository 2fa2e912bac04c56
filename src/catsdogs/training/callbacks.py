"""The train stage's Keras callbacks: DVCLive's log as each epoch ends, progress inside an epoch, the
checkpoints, the epoch's seeds and statistics, and Ctrl-C.

Imported only after `catsdogs.backend.select()` has chosen Keras' backend. Backend-neutral: DVCLive's own
Keras callback imports TensorFlow, which the jax backend must not need, so `LiveLog` is a small callback
around `dvclive.Live`.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
import weakref
from pathlib import Path

import keras
import numpy as np
import psutil

from catsdogs import atomic, history, tables
from catsdogs.entry import raise_if_interrupted
from catsdogs.training import batches
from catsdogs.training import model as model_lib

# Off a terminal (DVC's output in a file, CI, `dvc queue logs`), one progress line at most this often.
PROGRESS_SECONDS = 30.0
PROGRESS_SECONDS_VARIABLE = "CATSDOGS_PROGRESS_SECONDS"  # overrides it, e.g. 0 for a line every step


def live(live_dir: Path, work: Path, train_images: int, batch_size: int, validation_steps: int,
         trial=None) -> list:
    """Progress inside each epoch, a tuning trial's report (`trial`: catsdogs.tuning.link.Trial, or None), then
    the epoch's row in the live log (after EpochStats has added the learning rate and the seconds to the logs,
    before Keras' backup marks the epoch done)."""
    reports = [TrialReports(trial)] if trial is not None else []
    return [Progress(batch_size, validation_steps), *reports, LiveLog(live_dir, work / "live", train_images, trial)]


class LiveLog(keras.callbacks.Callback):
    """Logs each finished epoch through DVCLive into `live_dir` (catsdogs.history), with where its time went
    (tables.SYSTEM_METRICS), rewrites the summary, then copies the folder into the work folder's `copy`.

    The live folder starts as the copy has it (empty for a new run). The first `on_epoch_begin` is the first
    epoch this process trains, after Keras' BackupAndRestore has restored an interrupted run: the rows of
    that epoch and later ones go, so an epoch trained again replaces its earlier rows."""

    def __init__(self, live_dir: Path, copy: Path, train_images: int, trial=None):
        super().__init__()
        self.dir, self.copy, self.train_images, self.trial = Path(live_dir), Path(copy), train_images, trial
        self.live = None
        self.process = psutil.Process()

    def on_train_begin(self, logs=None):
        history.restore(self.copy, self.dir)

    def on_epoch_begin(self, epoch, logs=None):
        if self.live is None:
            history.prune(self.dir, history.epoch_number(epoch))
            self.live = history.open_live(self.dir)
        self.machine_start, self.process_start = psutil.cpu_times(), self._process_cpu()
        self.start = time.perf_counter()

    def _process_cpu(self) -> float:
        t = self.process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def system(self) -> dict:
        """The epoch's CPU use, on the whole machine and in this process (100 = every core busy), and this
        process's resident memory: cheap figures from psutil, taken at the epoch's ends."""
        machine = psutil.cpu_times()
        total = sum(machine) - sum(self.machine_start)
        idle = (machine.idle + getattr(machine, "iowait", 0.0)) - (
            self.machine_start.idle + getattr(self.machine_start, "iowait", 0.0))
        wall = (time.perf_counter() - self.start) * (psutil.cpu_count() or 1)
        return {
            "system/cpu_percent": 100.0 * (total - idle) / total if total > 0 else 0.0,
            "system/train_cpu_percent": 100.0 * (self._process_cpu() - self.process_start) / wall if wall else 0.0,
            "system/ram_gb": self.process.memory_info().rss / 2**30,
        }

    def on_epoch_end(self, epoch, logs=None):
        logs["images_per_second"] = self.train_images / logs["train_seconds"]
        values = {name: float(logs[name]) for name in tables.EPOCH_METRICS} | self.system()
        self.live.step = history.epoch_number(epoch)
        for name, value in values.items():
            self.live.log_metric(name, float(f"{value:.7g}"))  # 7 digits: a float32's
        rows = history.read_history(self.dir)
        self.live.summary = history.summarize(rows, self.train_images)
        if self.trial is not None:  # a tuning trial says whether it was stopped early, for the tuner and `best`
            self.live.summary[history.PRUNED] = self.trial.pruned_after is not None
        self.live.next_step()  # writes metrics.json with `step`, tells the VS Code extension and Studio
        history.copy_files(self.dir, self.copy)

    def on_train_end(self, logs=None):
        if self.live is not None:
            self.live.end()


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress(keras.callbacks.Callback):
    """Progress inside an epoch. On a terminal, a live bar (tqdm). Elsewhere, a line every PROGRESS_SECONDS
    (never more often), during training and during the validation pass, even while one step takes longer:

        epoch 3/25: step 120/146, 951 images/s, loss 0.4321; ETA 0:00:27 for the epoch, 0:05:13 for the run

    A line is printed at the end of a step once the interval has passed, or by a watchdog thread while a
    step runs on. The running loss is read only when shown (reading it waits for the device)."""

    def __init__(self, batch_size: int, validation_steps: int | None = None, stream=None,
                 interval: float | None = None):
        super().__init__()
        self.batch_size, self.validation_steps = batch_size, validation_steps
        self.stream = stream or sys.stderr
        self.interval = PROGRESS_SECONDS if interval is None else interval
        if interval is None and os.environ.get(PROGRESS_SECONDS_VARIABLE):
            self.interval = float(os.environ[PROGRESS_SECONDS_VARIABLE])
        self.bar = None
        self.epoch_seconds: list[float] = []
        self.lock = threading.Lock()
        self.done, self.logs, self.validating = 0, None, None

    def terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_train_begin(self, logs=None):
        self.last_line = time.monotonic()
        self.epoch, self.epochs, self.steps = 0, self.params["epochs"], self.params.get("steps")
        self.start = self.last_line
        self.first_step_end = None
        self.stop = threading.Event()
        if not self.terminal() and self.interval > 0:
            threading.Thread(target=watchdog, args=(weakref.ref(self), self.stop, min(self.interval, 1.0)),
                             name="progress", daemon=True).start()

    def on_train_end(self, logs=None):
        self.stop.set()

    def on_epoch_begin(self, epoch, logs=None):
        with self.lock:
            self.epoch, self.start, self.first_step_end = epoch, time.monotonic(), None
            self.done, self.logs, self.validating = 0, None, None
        if self.terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {history.epoch_number(epoch)}/{self.epochs}", unit="step",
                            leave=False, file=self.stream, dynamic_ncols=True)

    def seconds_per_step(self, done: int, now: float) -> float:
        """From the end of the first step on (the first step compiles), once there is more than one."""
        if done > 1 and self.first_step_end is not None and now > self.first_step_end:
            return (now - self.first_step_end) / (done - 1)
        return (now - self.start) / max(done, 1)

    def etas(self, done: int, now: float) -> tuple[float, float]:
        per_step = self.seconds_per_step(done, now)
        epoch_left = per_step * ((self.steps or done) - done)
        per_epoch = self.epoch_seconds[-1] if self.epoch_seconds else per_step * (self.steps or done)
        return epoch_left, epoch_left + per_epoch * (self.epochs - history.epoch_number(self.epoch))

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        with self.lock:
            self.done, self.logs = batch + 1, logs
            if self.first_step_end is None:
                self.first_step_end = now
        if self.bar is not None:
            self.bar.update(self.done - self.bar.n)
            if now - self.last_line >= 1.0:
                self.last_line = now
                self.bar.set_postfix_str(self.status(self.done, now, logs), refresh=False)
        elif now - self.last_line >= self.interval:
            self.line(now)

    def on_test_batch_end(self, batch, logs=None):
        with self.lock:
            self.validating = batch + 1
        now = time.monotonic()
        if self.bar is None and now - self.last_line >= self.interval:
            self.line(now)

    def line(self, now: float) -> None:
        """One progress line from the state the last step left (called by the training thread or the
        watchdog, never both at once)."""
        with self.lock:
            self.last_line = now
            epoch = f"epoch {history.epoch_number(self.epoch)}/{self.epochs}"
            if self.validating is not None:
                text = f"{epoch}: validation, step {self.validating}/{self.validation_steps or '?'}"
            elif self.done == 0:
                text = f"{epoch}: step 0/{self.steps or '?'}, waiting for the first step (it compiles)"
            else:
                epoch_left, run_left = self.etas(self.done, now)
                text = (f"{epoch}: step {self.done}/{self.steps or '?'}, {self.status(self.done, now, self.logs)}; "
                        f"ETA {duration(epoch_left)} for the epoch, {duration(run_left)} for the run")
        print(text, file=self.stream, flush=True)

    def status(self, done: int, now: float, logs) -> str:
        speed = self.batch_size / self.seconds_per_step(done, now)
        loss = f", loss {float(keras.ops.convert_to_numpy(logs['loss'])):.4f}" if logs and "loss" in logs else ""
        text = f"{speed:,.0f} images/s{loss}"
        if self.bar is not None:
            text += f", run ETA {duration(self.etas(done, now)[1])}"
        return text

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.monotonic() - self.start)
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def watchdog(progress_ref, stop: threading.Event, tick: float) -> None:
    """Prints a progress line whenever the interval has passed without one: while a long step runs. Ends
    with training, or once the callback is gone (a `fit` that raised)."""
    while not stop.wait(tick):
        progress = progress_ref()
        if progress is None:
            return
        now = time.monotonic()
        if now - progress.last_line >= progress.interval:
            try:
                progress.line(now)
            except Exception:  # noqa: BLE001 - progress must never disturb training
                pass
        del progress


def for_fit(work: Path, train, seed: int, replicas: list, logs: list) -> list:
    """Every callback of `fit`, in order: Ctrl-C, the epoch's seeds, its statistics, what several replicas
    need, then the checkpoint and `logs` (`live`: progress and the live log), and last the resume
    state, so that an epoch counts as done only once its checkpoint and log rows are written."""
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return [
        Interruptible(),
        EpochSeeds(train, seed),
        EpochStats(),
        *replicas,
        AtomicCheckpoint(work / "checkpoints"),
        *logs,
        keras.callbacks.BackupAndRestore(str(work / "backup"), double_checkpoint=True),
    ]


class TrialReports(keras.callbacks.Callback):
    """Reports each epoch's objective to the tuner's study (catsdogs.tuning.link) and ends training after
    an epoch the pruner rejects: the run then saves what it has, as a finished one does."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        number = history.epoch_number(epoch)
        if self.trial.report(number, float(logs[self.trial.metric]), last=number >= self.params["epochs"]):
            self.model.stop_training = True


class Interruptible(keras.callbacks.Callback):
    """Ends training at the next batch after Ctrl-C, even if the interrupt itself was swallowed."""

    def on_train_batch_end(self, batch, logs=None):
        raise_if_interrupted()

    on_test_batch_end = on_train_batch_end


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate, the epoch's seconds and its training seconds (up to the validation pass,
    what images/s figures are computed from) to the logs, before the log row is written."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.trained = time.perf_counter(), None

    def on_test_begin(self, logs=None):  # within fit: the epoch's validation pass starts
        self.trained = self.trained or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = now - self.start
        logs["train_seconds"] = (self.trained or now) - self.start


class EpochSeeds(keras.callbacks.Callback):
    """Ties each epoch's randomness to (seed, epoch) alone: the batch order, and the state of every layer's
    seed generator (augmentation, dropout), which BackupAndRestore does not save. So a resumed run
    repeats exactly what an uninterrupted one would have done."""

    def __init__(self, train: batches.Batches, seed: int):
        super().__init__()
        self.train, self.seed = train, seed

    def on_epoch_begin(self, epoch, logs=None):
        self.train.set_epoch(epoch)
        generators = [layer.seed_generator for layer in self.model.layers if hasattr(layer, "seed_generator")]
        for i, generator in enumerate(generators):
            generator.state.assign(np.array([epoch, self.seed + i], dtype=generator.state.dtype))


class AtomicCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint("save_at_{epoch}.keras") written through a temporary file: a kill mid-save
    leaves the previous checkpoints intact and no truncated one. Each holds the epoch's inference model
    (model.inference_model: plain Keras loads it); BackupAndRestore keeps the training model to resume."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        with atomic.atomic_path(self.folder / f"save_at_{history.epoch_number(epoch)}.keras", suffix=".keras") as tmp:
            model_lib.inference_model(self.model).save(tmp)

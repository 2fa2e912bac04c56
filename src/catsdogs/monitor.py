"""What the train stage shows while it trains: DVCLive's log as each epoch ends, and progress inside an epoch.

Imported only after `catsdogs.backend.select()` has chosen Keras' backend. Backend-neutral: DVCLive's own
Keras callback imports TensorFlow, which the jax backend must not need, so `LiveLog` is a small callback
around `dvclive.Live`.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from pathlib import Path

import keras
import psutil

from catsdogs import livelog, tables
from catsdogs.training import number

log = logging.getLogger("train")

# Off a terminal (DVC's output in a file, CI, `dvc queue logs`), one progress line at most this often.
PROGRESS_SECONDS = 30.0
PROGRESS_SECONDS_VARIABLE = "CATSDOGS_PROGRESS_SECONDS"  # overrides it, e.g. 0 for a line every step


def callbacks(live_dir: Path, work: Path, train_images: int, batch_size: int, validation_steps: int) -> list:
    """Progress inside each epoch, then the epoch's row in the live log (after EpochStats has added the
    learning rate and the seconds to the logs, before Keras' backup marks the epoch done)."""
    return [Progress(batch_size, validation_steps), LiveLog(live_dir, work / "live", train_images)]


class LiveLog(keras.callbacks.Callback):
    """Logs each finished epoch through DVCLive into `live_dir` (catsdogs.livelog), with where its time went
    (tables.SYSTEM_METRICS), rewrites the summary, then copies the folder into the work folder's `copy`.

    The live folder starts as the copy has it (empty for a new run). The first `on_epoch_begin` is the first
    epoch this process trains, after Keras' BackupAndRestore has restored an interrupted run: the rows of
    that epoch and later ones go, so an epoch trained again replaces its earlier rows."""

    def __init__(self, live_dir: Path, copy: Path, train_images: int):
        super().__init__()
        self.dir, self.copy, self.train_images = Path(live_dir), Path(copy), train_images
        self.live = None
        self.process = psutil.Process()

    def on_train_begin(self, logs=None):
        livelog.restore(self.copy, self.dir)

    def on_epoch_begin(self, epoch, logs=None):
        if self.live is None:
            livelog.prune(self.dir, number(epoch))
            self.live = livelog.open_live(self.dir)
        self.machine_start, self.process_start, self.start = psutil.cpu_times(), self._process_cpu(), time.perf_counter()

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
        self.live.step = number(epoch)
        for name, value in values.items():
            self.live.log_metric(name, round(value, 6))
        rows = livelog.read_history(self.dir)
        self.live.summary = livelog.summarize(rows, self.train_images)
        self.live.next_step()  # writes metrics.json with `step`, tells the VS Code extension and Studio
        livelog.copy_files(self.dir, self.copy)

    def on_train_end(self, logs=None):
        if self.live is not None:
            self.live.end()


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress(keras.callbacks.Callback):
    """Progress inside an epoch. On a terminal, a live bar (tqdm); elsewhere, a line at most every
    PROGRESS_SECONDS, during training and during the validation pass:

        epoch 3/25: step 120/146, 951 images/s, loss 0.4321; ETA 0:00:27 for the epoch, 0:05:13 for the run

    Reading the running loss waits for the device, so it is read only when shown."""

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

    def terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_train_begin(self, logs=None):
        self.last_line = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epochs, self.steps = epoch, self.params["epochs"], self.params.get("steps")
        self.start = time.monotonic()
        self.first_step_end = None
        if self.terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {number(epoch)}/{self.epochs}", unit="step",
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
        return epoch_left, epoch_left + per_epoch * (self.epochs - number(self.epoch))

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        done = batch + 1
        if self.first_step_end is None:
            self.first_step_end = now
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if now - self.last_line >= 1.0:
                self.last_line = now
                self.bar.set_postfix_str(self.status(done, now, logs), refresh=False)
        elif now - self.last_line >= self.interval:
            self.last_line = now
            epoch_left, run_left = self.etas(done, now)
            print(f"epoch {number(self.epoch)}/{self.epochs}: step {done}/{self.steps or '?'}, "
                  f"{self.status(done, now, logs)}; ETA {duration(epoch_left)} for the epoch, "
                  f"{duration(run_left)} for the run", file=self.stream, flush=True)

    def status(self, done: int, now: float, logs) -> str:
        speed = self.batch_size / self.seconds_per_step(done, now)
        loss = f", loss {float(keras.ops.convert_to_numpy(logs['loss'])):.4f}" if logs and "loss" in logs else ""
        text = f"{speed:,.0f} images/s{loss}"
        if self.bar is not None:
            text += f", run ETA {duration(self.etas(done, now)[1])}"
        return text

    def on_test_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self.bar is None and now - self.last_line >= self.interval:
            self.last_line = now
            print(f"epoch {number(self.epoch)}/{self.epochs}: validation, step {batch + 1}/"
                  f"{self.validation_steps or '?'}", file=self.stream, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.monotonic() - self.start)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""What the train stage shows while it trains: DVCLive's log as each epoch ends, and progress inside an epoch.

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
import psutil

from catsdogs import livelog, tables
from catsdogs.training import number

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
        self.live.step = number(epoch)
        for name, value in values.items():
            self.live.log_metric(name, float(f"{value:.7g}"))  # 7 digits: a float32's
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
            epoch = f"epoch {number(self.epoch)}/{self.epochs}"
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

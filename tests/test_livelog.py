"""The live log (catsdogs.history, callbacks.LiveLog) and the progress inside an epoch (callbacks.Progress), on a
real tiny Keras model: DVCLive's files, exactly-once history across an interrupted run, progress lines."""

from __future__ import annotations

import io
import re
import time

import keras
import numpy as np
import pytest

from catsdogs import history, tables
from catsdogs.errors import UserError
from catsdogs.training import callbacks

EPOCHS = 4
IMAGES = 64
BATCH = 16
SHAPING = [name for name in tables.EPOCH_METRICS if name not in ("seconds", "train_seconds", "images_per_second")]


class Crash(Exception):
    pass


class CrashAfterLogging(keras.callbacks.Callback):
    """Dies at the end of epoch `at` (from 1) after its log row is written, before Keras' backup of it:
    the worst moment for a kill."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if history.epoch_number(epoch) == self.at:
            raise Crash


def fit(work, live, extra=(), progress=None):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(IMAGES + 16, 8)).astype("float32"), rng.integers(0, 2, IMAGES + 16)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(name="acc", threshold=0.0)])
    every = [callbacks.EpochStats(), *(progress or []), callbacks.LiveLog(live, work / "live", IMAGES), *extra,
                 keras.callbacks.BackupAndRestore(str(work / "backup"), double_checkpoint=True)]
    model.fit(x[:IMAGES], y[:IMAGES], batch_size=BATCH, validation_data=(x[IMAGES:], y[IMAGES:]), epochs=EPOCHS,
              shuffle=False, verbose=0, callbacks=every)


def shaping(rows):
    return [{k: row[k] for k in ["epoch", *SHAPING]} for row in rows]


def test_writes_dvclive_files_each_epoch_and_the_summary(tmp_path):
    fit(tmp_path / "work", tmp_path / "live")
    rows = history.read_history(tmp_path / "live", tables.EPOCH_METRICS + tables.SYSTEM_METRICS)
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
    header = (tmp_path / "live/plots/metrics/val_acc.tsv").read_text().splitlines()[0]
    assert header.split("\t") == [history.STEP, "val_acc"]  # as DVCLive writes them
    summary = history.read_summary(tmp_path / "live")
    assert list(summary) == ["final", "train_images_per_second", "seconds", "best", "step"]
    assert list(summary["final"]) == ["val_acc", "val_loss", "acc", "loss"]  # what `dvc exp show` leads with
    assert summary["step"] == EPOCHS and summary["final"]["val_loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-6)
    assert summary == {**history.summarize(rows, IMAGES), "step": EPOCHS}
    assert all(row["images_per_second"] == pytest.approx(IMAGES / row["train_seconds"], rel=1e-3) for row in rows)
    assert all(0 < row["train_seconds"] <= row["seconds"] for row in rows)  # the epoch without its validation
    assert all(row["learning_rate"] == pytest.approx(1e-2) for row in rows)  # the optimizer's, as fit() set it
    assert all(0.05 < row["system/ram_gb"] < 1024 and 0 <= row["system/cpu_percent"] <= 100
               and 0 <= row["system/train_cpu_percent"] for row in rows)  # GB and percent, not bytes or fractions


def test_an_interrupted_run_resumes_with_each_epoch_once_and_the_same_numbers(tmp_path):
    fit(tmp_path / "a/work", tmp_path / "a/live")
    reference = history.read_history(tmp_path / "a/live")

    work, live = tmp_path / "b/work", tmp_path / "b/live"
    with pytest.raises(Crash):
        fit(work, live, [CrashAfterLogging(at=3)])
    # epoch 3 is in the log, not in Keras' backup: the resumed run trains it again
    assert [row["epoch"] for row in history.read_history(live)] == [1, 2, 3]
    assert [row["epoch"] for row in history.read_history(work / "live")] == [1, 2, 3]
    # what DVC does before it runs a stage: the outputs go; a stray file must not come back either
    for path in live.rglob("*.tsv"):
        path.unlink()
    (live / "stray.txt").write_text("x")

    fit(work, live)
    resumed = history.read_history(live)
    assert [row["epoch"] for row in resumed] == list(range(1, EPOCHS + 1))
    assert shaping(resumed) == shaping(reference)
    assert not (live / "stray.txt").exists()
    assert history.read_summary(live)["step"] == EPOCHS


def test_prune_keeps_the_epochs_before_the_first_one_trained_again(tmp_path):
    live = history.open_live(tmp_path / "live")
    for epoch in (1, 2, 3):
        live.step = epoch
        live.log_metric("loss", 1.0 / epoch)
        live.log_metric("system/ram_gb", 0.5)
        live.next_step()
    history.prune(tmp_path / "live", 2)
    assert history.read_history(tmp_path / "live", ["loss", "system/ram_gb"]) == [
        {"epoch": 1, "loss": 1.0, "system/ram_gb": 0.5}]
    history.prune(tmp_path / "live", 1)
    assert not list((tmp_path / "live").rglob("*.tsv"))


def test_the_summary_is_the_last_epoch_the_steady_speed_and_the_best_epoch_by_validation_accuracy():
    """Epoch 2 is the best, epoch 4 the last, epoch 1 the slowest (it compiles): each number from its own rule."""
    columns = ["epoch", "val_acc", "val_loss", "acc", "loss", "train_seconds", "seconds"]
    rows = [dict(zip(columns, values)) for values in [(1, 0.6, 0.9, 0.5, 1.0, 10.0, 12.0),
                                                       (2, 0.9, 0.3, 0.8, 0.4, 2.0, 3.0),
                                                       (3, 0.8, 0.4, 0.85, 0.35, 4.0, 5.0),
                                                       (4, 0.7, 0.5, 0.9, 0.3, 3.0, 4.5)]]
    assert history.summarize(rows, 300) == {
        "final": {"val_acc": 0.7, "val_loss": 0.5, "acc": 0.9, "loss": 0.3},
        "train_images_per_second": 100.0,  # 300 images / the median of 2, 4 and 3 seconds, not counting epoch 1
        "seconds": 24.5,
        "best": {"epoch": 2, "val_acc": 0.9, "val_loss": 0.3, "acc": 0.8, "loss": 0.4},
    }
    assert history.summarize(rows[:1], 300)["train_images_per_second"] == 30.0  # one epoch: its own speed


def test_an_epoch_missing_from_one_history_is_an_error_not_a_short_row(tmp_path):
    live = history.open_live(tmp_path)
    for epoch in (1, 2):
        live.step = epoch
        live.log_metric("loss", 0.5)
        if epoch == 1:
            live.log_metric("acc", 0.5)
        live.next_step()
    with pytest.raises(UserError, match=r"epoch\(s\) \[2\] lack some metrics: rerun the train stage"):
        history.read_history(tmp_path, ["loss", "acc"])


def test_a_damaged_history_file_names_the_file_and_the_line(tmp_path):
    path = history.history_file(tmp_path, "loss")
    path.parent.mkdir(parents=True)
    path.write_text("step\tval\n1\t0.5\n")
    with pytest.raises(UserError, match=r"loss.tsv: columns \['step', 'val'\] are not \['step', 'loss'\]: rerun"):
        history.read_history(tmp_path, ["loss"])
    path.write_text("step\tloss\n1\t0.5\n2\tnan?\n")
    with pytest.raises(UserError, match=r"loss.tsv, line 3: \['2', 'nan\?'\] are not an epoch and a number"):
        history.read_history(tmp_path, ["loss"])


class Terminal(io.StringIO):
    def isatty(self):
        return True


LINE = re.compile(r"^epoch (\d)/4: step (\d)/4, [\d,]+ images/s, loss \d\.\d{4}; "
                  r"ETA \d+:\d\d:\d\d for the epoch, \d+:\d\d:\d\d for the run$")


def test_off_a_terminal_progress_is_a_line_per_interval(tmp_path):
    stream = io.StringIO()
    fit(tmp_path / "work", tmp_path / "live", progress=[callbacks.Progress(BATCH, 1, stream=stream, interval=0)])
    lines = stream.getvalue().splitlines()
    train = [line for line in lines if "validation" not in line]
    assert [LINE.match(line).groups() for line in train] == [
        (str(e), str(s)) for e in range(1, EPOCHS + 1) for s in range(1, 5)], lines
    assert [line for line in lines if "validation" in line] == [
        f"epoch {e}/4: validation, step 1/1" for e in range(1, EPOCHS + 1)]

    quiet = io.StringIO()
    fit(tmp_path / "work2", tmp_path / "live2", progress=[callbacks.Progress(BATCH, 1, stream=quiet)])
    assert quiet.getvalue() == ""  # the default interval, 30 s, is longer than this whole run


def test_on_a_terminal_progress_is_a_bar(tmp_path):
    stream = Terminal()
    fit(tmp_path / "work", tmp_path / "live", progress=[callbacks.Progress(BATCH, 1, stream=stream, interval=0)])
    text = stream.getvalue()
    assert "epoch 4/4" in text and "4/4" in text and "\r" in text  # tqdm redraws one line
    assert not [line for line in text.splitlines() if LINE.match(line)]


def test_the_interval_comes_from_the_environment(monkeypatch):
    assert callbacks.Progress(BATCH).interval == callbacks.PROGRESS_SECONDS == 30
    monkeypatch.setenv(callbacks.PROGRESS_SECONDS_VARIABLE, "0.5")
    assert callbacks.Progress(BATCH).interval == 0.5


class SlowStep(keras.callbacks.Callback):
    """One step of the first epoch takes `seconds` longer, like a step of a large model on a CPU."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1 and not getattr(self, "done", False):
            self.done = True
            time.sleep(self.seconds)


def test_a_step_longer_than_the_interval_still_gets_its_lines(tmp_path):
    stream = io.StringIO()
    start = time.monotonic()
    fit(tmp_path / "work", tmp_path / "live",
        progress=[SlowStep(1.5), callbacks.Progress(BATCH, 1, stream=stream, interval=0.3)])
    seconds = time.monotonic() - start
    lines = stream.getvalue().splitlines()
    during = [line for line in lines if line.startswith("epoch 1/4: step 1/4,")]
    assert len(during) >= 3, lines  # printed by the watchdog while step 2 ran
    assert all(LINE.match(line) or "validation" in line or "waiting for the first step (it compiles)" in line
               for line in lines), lines
    assert len(lines) <= seconds / 0.3 + 1  # never more often than the interval

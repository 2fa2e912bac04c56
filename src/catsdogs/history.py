"""The train stage's live log: DVCLive's folder `metrics/train/`, written as each epoch ends.

DVCLive appends each epoch's metrics (tables.EPOCH_METRICS and SYSTEM_METRICS) to
`plots/metrics/<name>.tsv`, one row per epoch whose `step` is the epoch numbered from 1, and rewrites
`metrics.json`, the run's summary (`summarize`). `dvc exp show`, `dvc plots show`, the VS Code extension
and DVC Studio read those files while the stage still runs; the plot stage reads the history here too.

DVC deletes a stage's outputs before it runs it, so a run in progress keeps its history in its work folder
as well: after each epoch the live folder is copied there, file by file through temporary files. A resumed
run copies it back, drops the epochs it will train again (those after the last one Keras' backup holds) and
logs on from there, so the history holds each epoch exactly once.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

from catsdogs import atomic, tables
from catsdogs.errors import UserError

STEP = "step"  # DVCLive's name for the x of every history file: here the epoch, numbered from 1
SUMMARY = "metrics.json"
PRUNED = "pruned"  # a tuning trial's summary only: true when the tuner's pruner stopped it early


def history_file(live_dir: Path, name: str) -> Path:
    """Where DVCLive keeps metric `name`'s history: `system/ram_gb` is plots/metrics/system/ram_gb.tsv."""
    return Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"


def column(name: str) -> str:
    """The history file's value column: the name's last part, as DVCLive writes it."""
    return name.rsplit("/", 1)[-1]


def read_history(live_dir: Path, names=tables.EPOCH_METRICS) -> list[dict]:
    """One dict per epoch, in order: {"epoch": 1, "loss": 0.69, ...} for every metric in `names`."""
    epochs: dict[int, dict] = {}
    for name in names:
        path = history_file(live_dir, name)
        if not path.is_file():
            raise UserError(f"{path} not found: run the train stage first")
        for line, row in tables.read(path, [STEP, column(name)], "rerun the train stage", delimiter="\t",
                                     numbered=True):
            try:
                epoch, value = int(row[STEP]), float(row[column(name)])
            except ValueError:
                raise UserError(f"{path}, line {line}: {list(row.values())} are not an epoch and a number: "
                                "rerun the train stage") from None
            epochs.setdefault(epoch, {"epoch": epoch})[name] = value
    rows = [epochs[e] for e in sorted(epochs)]
    incomplete = [row["epoch"] for row in rows if len(row) != len(names) + 1]
    if incomplete:
        raise UserError(f"{live_dir}: epoch(s) {incomplete} lack some metrics: rerun the train stage")
    return rows


def summarize(rows: list[dict], train_images: int) -> dict:
    """The run's summary, as `dvc exp show` lists it: the last epoch's validation accuracy and loss first,
    then speed (training images/s, steady state: the median epoch after the first, which compiles, without
    its validation pass), the total seconds, and the best epoch by validation accuracy. DVCLive adds `step`,
    the last finished epoch."""
    keys = ["val_acc", "val_loss", "acc", "loss"]
    best = max(rows, key=lambda row: row["val_acc"])
    training = [row["train_seconds"] for row in rows]
    steady = training[1:] or training
    return {
        "final": {k: round(rows[-1][k], 6) for k in keys},
        "train_images_per_second": round(train_images / statistics.median(steady), 1),
        "seconds": round(sum(row["seconds"] for row in rows), 2),
        "best": {"epoch": best["epoch"], **{k: round(best[k], 6) for k in keys}},
    }


def read_summary(live_dir: Path) -> dict:
    return json.loads((Path(live_dir) / SUMMARY).read_text(encoding="utf-8"))


def prune(live_dir: Path, first_epoch: int) -> None:
    """Drop every history row of epoch `first_epoch` or later: the epochs a resumed run trains again."""
    for path in sorted(Path(live_dir).glob("plots/metrics/**/*.tsv")):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            kept = [row for row in reader if header and len(row) == len(header)
                    and int(row[header.index(STEP)]) < first_epoch]
        if header is None or not kept:
            path.unlink()
            continue
        atomic.write_csv(path, header, kept, delimiter="\t")


def copy_files(source: Path, target: Path) -> None:
    """Every file of `source` into `target`, each through a temporary file: a kill leaves whole files."""
    for path in sorted(Path(source).rglob("*")):
        if path.is_file():
            destination = Path(target) / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(destination, path.read_text(encoding="utf-8"))


def restore(copy: Path, live_dir: Path) -> None:
    """The live folder as the work folder's copy has it (empty for a new run): whatever was there goes."""
    shutil.rmtree(live_dir, ignore_errors=True)
    Path(live_dir).mkdir(parents=True)
    if Path(copy).is_dir():
        copy_files(copy, live_dir)


def open_live(live_dir: Path):
    """DVCLive's logger on `live_dir`, continuing what is there. It writes no dvc.yaml (the project's
    declares the outputs, metrics and plots: tables.py's names, checked by tests/test_dvc_yaml.py), saves
    no experiment of its own (`dvc exp run` does) and makes no report."""
    from dvclive import Live

    return Live(str(live_dir), resume=True, dvcyaml=False, save_dvc_exp=False, report=None)


def epoch_number(epoch_index: int) -> int:
    """Keras gives callbacks the epoch's index, from 0; the log, the checkpoints and the summary number
    epochs from 1, as Keras prints them. The one place where one becomes the other."""
    return epoch_index + 1

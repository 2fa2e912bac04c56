"""The columns of every CSV a stage writes for another stage, for DVC's plots or for the user, the names
of the metrics the train stage logs per epoch through DVCLive, and `read`, the one reader of those CSVs.

dvc.yaml's `plots:` name some of these columns too; tests/test_dvc_yaml.py checks that they exist here.

Words: a *probability* is a class's probability from the model (classes.probabilities); `positive_probability`
is that of class classes.POSITIVE, the two-class score of the ROC curve. A *score* is anything else that ranks
(the review's label quality, outlier score, hash distance). `acc` and `val_acc` are Keras' names for accuracy as
the train stage logs it per epoch (what `dvc exp show` lists as `final.val_acc`); the evaluate stage's
`accuracy` (metrics/metrics.json) is the same measure (the argmax, a probability of 0.5 for two classes) of
the same validation subset, computed once more from the saved model.
"""

from __future__ import annotations

import csv
from pathlib import Path

from catsdogs.errors import UserError

SPLIT = ["path", "class", "subset", "sha256"]  # models/split.csv: every image's subset and content hash
SUBSETS = ("train", "validation")  # the values of SPLIT's "subset"

# metrics/train/: the train stage's DVCLive folder, written as each epoch ends. Each metric has its history in
# plots/metrics/<name>.tsv, columns `step` (the epoch, numbered from 1 as Keras prints them and checkpoints are
# named) and the name's last part; metrics.json is the run's summary (catsdogs.history.summarize).
EPOCH_METRICS = ["loss", "acc", "val_loss", "val_acc", "learning_rate", "seconds", "train_seconds",
                 "images_per_second"]
# where the epoch's time went: CPU busy on the whole machine and in the train process (100 = every core),
# and the train process's resident memory at the epoch's end
SYSTEM_METRICS = ["system/cpu_percent", "system/train_cpu_percent", "system/ram_gb"]

# metrics/predictions.csv: one row per validation image; `probability` is the predicted class's,
# `positive_probability` that of class classes.POSITIVE (empty for more than two classes)
PREDICTIONS = ["path", "actual", "predicted", "probability", "positive_probability"]
ROC = ["fpr", "tpr", "threshold"]  # metrics/roc.csv
FILTER_REPORT = ["member", "reason", "detail"]  # metrics/filter_dropped.csv: every member not kept, and why

# data/exclude.csv, in git: archive members a reviewed commit drops from the data. `member` is the archive's
# name, as the filter's report names it (<root>/<class>/<file>: PetImages/Cat/12.jpg in the tutorial's), and
# `reason` why; `who` and `when` may be left empty.
EXCLUDE = ["member", "reason", "who", "when"]
# `catsdogs review`'s candidates (review/candidates.csv): one row per suspect image, ranked within its kind by
# `score`; `probability` is the predicted class's, as in PREDICTIONS.
CANDIDATES = ["rank", "kind", "member", "subset", "label", "predicted", "probability", "score", "partner",
              "partner_subset", "distance"]
CANDIDATE_KINDS = ("label", "non_pet", "duplicate")  # the values of CANDIDATES' "kind"

# The columns whose values come from a fixed set: `read` refuses any other value.
VALUES = {"subset": SUBSETS, "partner_subset": ("", *SUBSETS), "kind": CANDIDATE_KINDS}


def read(path, columns: list[str], fix: str, values: dict | None = None, delimiter: str = ",",
         numbered: bool = False) -> list:
    """The rows of a CSV with exactly `columns`, as dicts (with `numbered`, as (line number, dict) pairs).
    A wrong header, a row with too few or too many values, or a value outside VALUES (or `values`, e.g.
    {"class": names}) is a UserError naming the file, the line and `fix` (what to do: "rerun the train
    stage"). Rows with every value blank are skipped (a spreadsheet's). A missing file raises
    FileNotFoundError: the caller knows which stage writes it."""
    path = Path(path)
    allowed = {c: tuple(v) for c, v in (VALUES | (values or {})).items() if c in columns}
    with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet may add a BOM
        reader = csv.reader(f, delimiter=delimiter)
        header = [cell.strip() for cell in next(reader, [])]
        if header != list(columns):
            raise UserError(f"{path}: columns {header} are not {list(columns)}: {fix}")
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise UserError(f"{path}, line {reader.line_num}: {len(row)} values where {len(columns)} columns "
                                f"({', '.join(columns)}) are expected (quote a value that holds a comma)")
            record = dict(zip(columns, row))
            for column, choices in allowed.items():
                if record[column] not in choices:
                    raise UserError(f"{path}, line {reader.line_num}: {column} {record[column]!r} is not one of "
                                    f"{', '.join(map(repr, choices))}: {fix}")
            rows.append((reader.line_num, record) if numbered else record)
    return rows

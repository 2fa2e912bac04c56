"""The columns of every CSV a stage writes for another stage, for DVC's plots or for the user, and the names
of the metrics the train stage logs per epoch through DVCLive.

dvc.yaml's `plots:` name some of these columns too; tests/test_dvc_yaml.py checks that they exist here.
"""

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

PREDICTIONS = ["path", "actual", "predicted", "confidence", "score"]  # metrics/predictions.csv
ROC = ["fpr", "tpr", "threshold"]  # metrics/roc.csv
FILTER_REPORT = ["member", "reason", "detail"]  # metrics/filter_dropped.csv: every member not kept, and why

# data/exclude.csv, in git: archive members a reviewed commit drops from the data. `member` is the archive's
# name (PetImages/Cat/12.jpg) and `reason` why; `who` and `when` may be left empty.
EXCLUDE = ["member", "reason", "who", "when"]
# `catsdogs review`'s candidates (review/candidates.csv): one row per suspect image, ranked within its kind.
CANDIDATES = ["rank", "kind", "member", "subset", "label", "predicted", "probability", "score", "partner",
              "partner_subset", "distance"]
CANDIDATE_KINDS = ("label", "non_pet", "duplicate")  # the values of CANDIDATES' "kind"

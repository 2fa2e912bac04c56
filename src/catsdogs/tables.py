"""The columns of every CSV a stage writes for another stage, for DVC's plots or for the user.

dvc.yaml's `plots:` name some of these columns too; tests/test_tables.py checks that they exist here.
"""

SPLIT = ["path", "class", "subset", "sha256"]  # models/split.csv: every image's subset and content hash
SUBSETS = ("train", "validation")  # the values of SPLIT's "subset"

# metrics/train_log.csv: one row per epoch, numbered from 1 as Keras prints them and checkpoints are named
TRAIN_LOG = ["epoch", "loss", "acc", "val_loss", "val_acc", "learning_rate", "seconds", "train_seconds"]

PREDICTIONS = ["path", "actual", "predicted", "confidence", "score"]  # metrics/predictions.csv
ROC = ["fpr", "tpr", "threshold"]  # metrics/roc.csv
FILTER_REPORT = ["member", "reason", "detail"]  # metrics/filter_dropped.csv: every member not kept, and why

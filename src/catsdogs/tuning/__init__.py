"""The hyperparameter search behind `catsdogs tune`, on Optuna: the search space (space), the study and its
storage (study), the link through which a queued trial's train stage reports its epochs (link), and the
report (report). Imports the base only; Optuna is imported where it is used, never at import time."""

"""The study: Optuna's record of every trial, in a real database, and what it must agree on across runs.

By default a SQLite file inside the repository's `.dvc/tmp/` (not in git, not in any experiment's copy);
`--storage postgresql://...` lets several machines share one study, Optuna's own way to run on many hosts.
A study remembers the space, the objective and the direction it was started with (user attributes): a later
run with another space is refused rather than mixing two searches. Each trial records its experiment's name,
the clone that runs it and the commit it runs from, which is how a restarted tuner finds its trials again.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from catsdogs.errors import UserError
from catsdogs.tuning.link import EXPERIMENT_PREFIX, TUNE_DIR

DEFAULT_DB = TUNE_DIR / "optuna.db"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # part of a git ref: `tune-<study>-<n>`
SAMPLERS = ("tpe", "random")
STARTUP_TRIALS = 5  # trials sampled at random and never pruned before TPE and the median pruner act
FINISHED = ("COMPLETE", "PRUNED")


def default_url(root: Path) -> str:
    return f"sqlite:///{(Path(root) / DEFAULT_DB).resolve()}"


@dataclass(frozen=True)
class Objective:
    """What a trial is scored by: `key` of the metrics file `path` (DVC's "path:key"), written by `stage`."""

    path: str
    key: str
    direction: str  # "maximize" or "minimize"
    stage: str

    @property
    def name(self) -> str:
        return f"{self.path}:{self.key}"

    def per_epoch(self, epoch_metrics) -> str | None:
        """The train stage's per-epoch metric that tracks it (final.val_acc: val_acc), for pruning; None if none."""
        head, _, metric = self.key.partition(".")
        return metric if self.stage == "train" and head == "final" and metric in epoch_metrics else None


def check_name(study: str) -> str:
    if not NAME_PATTERN.match(study):
        raise UserError(f"--study {study!r}: a study's name is part of each trial's experiment name: letters, "
                        "digits, '.', '_' and '-', starting with a letter or digit, at most 64")
    return study


def experiment_name(study: str, number: int) -> str:
    return f"{EXPERIMENT_PREFIX}{study}-{number}"


def clone_id(root: Path) -> str:
    """This clone, as trials record it: a restarted tuner adopts only its own clone's trials."""
    return f"{socket.gethostname()}:{Path(root).resolve()}"


def sampler(name: str, seed: int | None, startup: int, parallel: bool):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad guesses, so parallel trials do not all pick one point
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=parallel)


def open_study(storage, name: str, space_text: str, space_file: str, objective: Objective, sampler_obj,
               pruner_obj):
    """The study `name`, created if new; UserError if it exists with another space, objective or direction."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction=objective.direction,
                                sampler=sampler_obj, pruner=pruner_obj, load_if_exists=True)
    recorded = study.user_attrs
    if not recorded:
        for key, value in {"space": space_text, "space_file": space_file, "objective": objective.name}.items():
            study.set_user_attr(key, value)
        return study
    if recorded.get("space") != space_text:
        raise UserError(f"study {name!r} was started with another search space than {space_file} has now: start a "
                        f"new study with --study NEW_NAME, or put back the space it was started with (`catsdogs tune "
                        f"--report --study {name}` prints it)")
    if recorded.get("objective") != objective.name or study.direction.name.lower() != objective.direction:
        raise UserError(f"study {name!r} {study.direction.name.lower()}s {recorded.get('objective')}, not "
                        f"{objective.direction} {objective.name}: start a new study with --study NEW_NAME")
    return study


def counts(study) -> dict[str, int]:
    """The study's trials by state: COMPLETE, PRUNED, RUNNING, WAITING, FAIL."""
    found: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        found[trial.state.name] = found.get(trial.state.name, 0) + 1
    return found

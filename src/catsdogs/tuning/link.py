"""The train stage's side of a tuning trial: report each epoch's objective to the study, ask whether to stop.

`catsdogs tune` queues each trial as a named DVC experiment and writes a link file for it in the repository
(catsdogs.tuning.study.Link). DVC runs a queued experiment in a copy elsewhere but tells its stages the
experiment's name and the repository it came from (DVC_EXP_NAME, DVC_ROOT), which is how the train stage
finds the link. No link (every run that is not a trial): nothing is reported and nothing changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from catsdogs import atomic
from catsdogs.errors import UserError, first_line

log = logging.getLogger("train")

TUNE_DIR = Path(".dvc") / "tmp" / "tune"  # the tuner's files, inside the repository: DVC git-ignores .dvc/tmp
LINKS = TUNE_DIR / "trials"  # one file per queued trial, named after its experiment
EXPERIMENT_PREFIX = "tune-"  # a trial's experiment: tune-<study>-<number>
PRUNERS = ("median", "none")
ADVISORY_LOCK = 0x6361_7473_646F_6773 >> 1  # "catsdogs" as a bigint: the key of the lock connect() holds


def quiet_optuna() -> None:
    """Optuna's own INFO lines and its ExperimentalWarning (TPE's constant liar) would read like problems in
    a command's output; the tuner prints what happened itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: its scheme is enough
        return url.split("://", 1)[0] + "://..."


def connect(url: str):
    """Optuna's RDBStorage on `url`, connected (its tables made if new); UserError if it cannot be reached."""
    quiet_optuna()
    import optuna
    import sqlalchemy.exc

    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # the tuner and its trials' train stages write at once
    elif url.startswith(("postgresql://", "postgresql+psycopg://")):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    try:
        with one_at_a_time(url, engine_kwargs):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=None)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        reason = first_line(getattr(exc, "orig", None) or exc)
        raise UserError(f"--storage {redacted(url)}: cannot use this database: {reason}") from None


@contextlib.contextmanager
def one_at_a_time(url: str, engine_kwargs: dict):
    """Optuna makes a new database's tables with no lock of its own (optuna/optuna#1092): two tuners starting at
    once on a new database, as two hosts of one study do, fail with "duplicate key value violates unique
    constraint". So each holds the database's lock while it opens the storage: a PostgreSQL advisory lock
    (held by the session, gone with it if the process dies), or a lock file beside a SQLite database."""
    if url.startswith("sqlite:///"):
        with open(url.removeprefix("sqlite:///") + ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when closed, or when the process ends
            yield
    elif url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **engine_kwargs)
        try:
            with engine.connect() as session:
                session.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK})
                yield  # the session's end releases the lock
        finally:
            engine.dispose()
    else:
        yield


@dataclass(frozen=True)
class Link:
    """What a queued trial's train stage needs to report to the study (catsdogs.tuning.link reads it)."""

    storage: str
    study: str
    trial_id: int
    number: int
    metric: str | None  # the per-epoch metric to report; None: nothing to report
    pruner: str
    startup: int

    def write(self, root: Path, experiment: str) -> None:
        atomic.write_json(link_path(root, experiment), self.__dict__)

    @classmethod
    def read(cls, path: Path) -> "Link":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def link_path(root: Path, experiment: str) -> Path:
    return Path(root) / LINKS / f"{experiment}.json"


def pruner(name: str, startup: int):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)




class Trial:
    """One trial's reports: `report(epoch, value, last)` is True when the pruner says stop. After the last epoch
    it is never asked: a trial that ran every epoch is finished, and its value ranks with the others."""

    def __init__(self, link: Link, experiment: str):
        self.link, self.experiment = link, experiment
        self.metric = link.metric
        self.pruned_after: int | None = None
        self._trial = None

    def _optuna_trial(self):
        if self._trial is None:
            quiet_optuna()
            import optuna

            storage = connect(self.link.storage)
            study = optuna.load_study(study_name=self.link.study, storage=storage,
                                      pruner=pruner(self.link.pruner, self.link.startup))
            self._trial = optuna.Trial(study, self.link.trial_id)
        return self._trial

    def report(self, epoch: int, value: float, last: bool = False) -> bool:
        import optuna

        try:
            trial = self._optuna_trial()
            trial.report(value, epoch)
            stop = not last and bool(trial.should_prune())  # Optuna's is numpy's bool
        except (optuna.exceptions.OptunaError, RuntimeError, ValueError) as exc:
            log.warning("trial %d of study %s: could not report epoch %d (%s); training goes on",
                        self.link.number, self.link.study, epoch, exc)
            return False
        if stop:
            self.pruned_after = epoch
            log.info("trial %d of study %s pruned after epoch %d: its %s (%.4g) is worse than the median of the "
                     "trials before it at that epoch", self.link.number, self.link.study, epoch, self.metric, value)
        return stop


def attached() -> Trial | None:
    """This run's trial, when it is one with a per-epoch metric to report; else None."""
    name, root = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_ROOT")
    if not name or not root or not name.startswith(EXPERIMENT_PREFIX):
        return None
    path = link_path(Path(root), name)
    if not path.is_file():
        return None
    link = Link.read(path)
    if link.metric is None:
        return None
    log.info("trial %d of study %s: reporting %s after each epoch (pruner: %s)", link.number, link.study,
             link.metric, link.pruner)
    return Trial(link, name)

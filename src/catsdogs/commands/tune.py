"""`catsdogs tune`: an Optuna search whose every trial is a named DVC experiment, run by DVC's queue.

The tuner asks Optuna for a trial, queues it as `dvc exp run --queue -n tune-<study>-<n> -S key=value ...
<stage>` (the objective's stage and what it needs), starts `--jobs` queue workers, and tells Optuna each
trial's metric from its experiment's commit once DVC has saved it. So every trial is in `dvc exp show`, can be
compared, applied, branched and pushed, and `catsdogs best` ranks them. The train stage of a trial reports
each epoch to the study itself (catsdogs.tuning.link), which is how the median pruner stops a trial early.

The study lives in a database (catsdogs.tuning.study), not in this process: kill the tuner, start it again,
and it adopts the trials of this clone that are still queued or running, tells those that finished while it
was away, and marks failed those whose run died. A clone's trials are only ever adopted by that clone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from catsdogs import history, params, tables
from catsdogs.commands import experiments
from catsdogs.errors import UserError
from catsdogs.tuning import link, memory, report, space as space_lib, study as study_lib

PIPELINE = "dvc.yaml"
DEFAULT_OBJECTIVE = "final.val_acc"  # the train stage's last validation accuracy: trials need train alone
POLL_SECONDS = 2.0
LOCK_TRIES = 8  # `dvc exp run --queue` refuses at once while a worker holds DVC's experiments lock: wait and retry
# A trial is asked for, then given its clone (milliseconds later): one still without a clone after this long was
# asked for by a tuner that died in between, and never ran. Any tuner of the study fails it.
ORPHAN_SECONDS = 10.0
# Running in DVC's queue with no process behind it for this long (while a queue worker lives; with none, at once):
# lost by the queue. DVC's queue workers stop when the queue looks empty, and one stopping can take with it a task
# it has just received: the task then counts as running for ever, with no process (and no record of a run, which
# breaks `dvc exp show` until it is marked failed).
STALL_SECONDS = 60.0
# Git-ignored (a study is no revision) and not in dvc.yaml's plots (where a missing folder is an error on every
# `dvc plots show`): `dvc plots show metrics/tune` shows them.
REPORT_DIR = Path("metrics") / "tune"


@dataclass
class Flight:
    """A trial of this clone, queued or running in DVC's queue."""

    number: int
    name: str
    params: dict


def run(args) -> int:
    root = Path.cwd()
    if not (root / PIPELINE).is_file():
        raise UserError(f"no {PIPELINE} here: run `catsdogs tune` from the repository's root")
    name = study_lib.check_name(args.study or Path(args.space).stem)
    url = args.storage or study_lib.default_url(root)
    if args.report:  # what the study holds, whatever the space file and params say now
        return show_report(link.connect(url), name, root / REPORT_DIR)
    base = params.read_yaml(root / params.PARAMS_FILE)
    params.parse(base)
    space = space_lib.load(args.space, base)
    objective = resolve_objective(root, args.objective, args.direction)
    storage = link.connect(url)
    check_arguments(args)
    check_workspace(root)
    check_memory(args.jobs, base, space, root)
    parallel = args.jobs > 1 or args.storage is not None
    study = study_lib.open_study(storage, name, space_lib.canonical(space), args.space, objective,
                                 study_lib.sampler(args.sampler, args.seed, args.startup_trials, parallel),
                                 link.pruner(args.pruner, args.startup_trials))
    per_epoch = objective.per_epoch(tables.EPOCH_METRICS) if args.pruner != "none" else None
    if args.pruner != "none" and per_epoch is None:
        print(f"pruning off: {objective.name} has no per-epoch history to judge a trial by before it ends "
              "(the train stage's final.* metrics have)")
    os.environ["PATH"] = experiments.this_python_first(os.environ.get("PATH"))  # for the queue workers it starts
    with exclusive(root, name):
        tuner = Tuner(root, study, space, objective, url, args, per_epoch)
        print(f"study {name} in {link.redacted(url)}: {args.trials} finished trials wanted, {args.jobs} at a time, "
              f"{args.sampler} sampler, {args.pruner if per_epoch else 'no'} pruner; objective: "
              f"{objective.direction} {objective.name} (trials run `dvc exp run ... {objective.stage}`)")
        tuner.reconcile()
        try:
            tuner.loop()
        except KeyboardInterrupt:
            if tuner.flights:
                print(f"stopped: {len(tuner.flights)} trial(s) still queued or running in DVC's queue go on; the same "
                      "command again collects them (or `dvc queue kill` them)", file=sys.stderr)
            raise
        return tuner.summary()


def check_arguments(args) -> None:
    for flag, value, least in (("--trials", args.trials, 1), ("--jobs", args.jobs, 1),
                               ("--startup-trials", args.startup_trials, 0)):
        if value < least:
            raise UserError(f"{flag} {value}: at least {least}")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: seconds after which no new trial starts, above 0")


def pipeline(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / PIPELINE).read_text(encoding="utf-8"))


def resolve_objective(root: Path, given: str, direction: str | None) -> study_lib.Objective:
    """The objective as "path:key" of one of dvc.yaml's metrics files (a bare key: the file that has it, as
    `catsdogs best` resolves it), its direction, and the stage that writes it."""
    declared = pipeline(root)
    files = declared.get("metrics") or []
    known = {}
    for path in files:
        try:
            known.update({f"{path}:{key}": value for key, value in
                          experiments.flatten(json.loads((root / path).read_text(encoding="utf-8"))).items()})
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    if ":" not in given and not known:
        raise UserError(f"--objective {given}: no metrics in this workspace to find it in: run the pipeline once "
                        "(`dvc repro` or `catsdogs demo`), or give it as path:key")
    full = experiments.resolve([experiments.Experiment("workspace", "", "success", known)], given)
    path, key = full.split(":", 1)
    if path not in files:
        raise UserError(f"--objective {given}: {path} is not one of dvc.yaml's metrics files ({', '.join(files)})")
    stage = next((name for name in declared["stages"] for out in outputs(declared, name)
                  if path == out or path.startswith(out + "/")), None)
    if stage is None:
        raise UserError(f"--objective {given}: no stage of dvc.yaml writes {path}")
    if direction is None:
        direction = "minimize" if experiments.lower_is_better(full) else "maximize"
    return study_lib.Objective(path, key, direction, stage)


def outputs(declared: dict, stage: str) -> list[str]:
    """The paths dvc.yaml's `stage` writes."""
    return [next(iter(out)) if isinstance(out, dict) else out for out in declared["stages"][stage].get("outs") or []]


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    return result


def check_workspace(root: Path) -> None:
    """Queued experiments run from the last commit plus the workspace's changes to files git tracks; a file git
    does not know stays behind. Refuse, rather than run trials on other code than the user sees."""
    untracked = [line[3:] for line in git(root, "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
                 if line.startswith("??")]
    if untracked:
        more = f" (and {len(untracked) - 1} more)" if len(untracked) > 1 else ""
        raise UserError(f"{untracked[0]}{more}: not in git, so the queued trials would run without it: `git add` "
                        "(or commit) it, or remove it, then tune")


def check_memory(jobs: int, base: dict, space: dict, root: Path) -> None:
    import psutil

    declared = pipeline(root)
    counts = [out for out in outputs(declared, "filter") if out in (declared.get("metrics") or [])]
    try:  # the images the filter kept, as its metrics file says (none yet: the runtime and the model alone)
        images = json.loads((root / counts[0]).read_text(encoding="utf-8"))["kept"]
    except (IndexError, FileNotFoundError, KeyError, TypeError, json.JSONDecodeError):
        images = 0
    each = memory.worker_bytes(memory.largest(base, space), images)
    available = psutil.virtual_memory().available
    if jobs * each > available:
        fits = max(1, int(available // each))
        raise UserError(f"--jobs {jobs}: each trial needs about {each / memory.GIB:.1f} GiB at these params "
                        f"(docs/workflows.md#experiments), {jobs} need {jobs * each / memory.GIB:.1f} GiB, and "
                        f"{available / memory.GIB:.1f} GiB are available: use --jobs {fits}"
                        + ("" if fits * each <= available else " and smaller params"))


@contextlib.contextmanager
def exclusive(root: Path, name: str):
    """One tuner per study and clone: a second would adopt the first one's trials (released on any exit, even
    kill -9, as the lock is the open file's)."""
    path = root / link.TUNE_DIR / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `catsdogs tune` runs study {name!r} in this clone: wait for it, or stop it "
                            "(its trials are kept)") from None
        yield


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return experiments.dvc(*args, cwd=root)


class Tuner:
    def __init__(self, root: Path, study, space: dict, objective: study_lib.Objective, url: str, args,
                 per_epoch: str | None):
        self.root, self.study, self.space, self.objective, self.url = root, study, space, objective, url
        self.args, self.per_epoch = args, per_epoch
        self.clone = study_lib.clone_id(root)
        self.baseline = git(root, "rev-parse", "HEAD").stdout.strip()
        self.distributions = space_lib.distributions(space)
        self.flights: dict[int, Flight] = {}
        self.started = time.monotonic()
        self.workers_at = -math.inf  # when workers were last started
        self.stalled: dict[int, float] = {}  # trial number: since when DVC says running with no process

    # --- what DVC knows of each experiment ---------------------------------------------------------------

    def states(self, refs: dict[str, str]) -> dict[str, str]:
        """{experiment name: queued, running, success or failed} for the trials in DVC's queue, and success for
        every experiment in `refs` (this clone's saved experiments: also after `dvc queue remove`). A trial that DVC
        counts as running with no live process is "taken" (by a worker, its run not started yet), "dropped" (taken,
        and no queue worker is left to start it) or "dead" (its run ended without a result)."""
        from dvc.repo import Repo

        found = {}
        with Repo(str(self.root)) as repo:
            queue = repo.experiments.celery_queue
            workers = any_alive(Path(queue.wdir).glob("dvc-exp-worker-*.json"))  # dvc_task's record of each
            with contextlib.suppress(Exception):  # a done entry whose record is damaged: its ref decides below
                for done in queue.iter_done():
                    result = done.result
                    found[done.entry.name] = "success" if result and result.exp_hash and result.ref_info else "failed"
            for entry in queue.iter_active():  # after the done ones: a trial queued again outranks its lost entry
                info = queue.proc.get(entry.stash_rev)
                found[entry.name] = ("running" if alive(info) else "dead" if info is not None else
                                     "taken" if workers else "dropped")
            for entry in queue.iter_queued():
                found[entry.name] = "queued"
        for name in refs:
            found[name] = "success"
        return found

    def refs(self) -> dict[str, str]:
        """{experiment name: its ref} for every experiment saved in this clone (refs/exps/<baseline>/<name>; a
        trial's name is unique in its study, whichever commit it ran from)."""
        shown = git(self.root, "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
        return {ref.rsplit("/", 1)[1]: ref for ref in shown if ref.count("/") == 4}

    # --- the trials of an earlier run -------------------------------------------------------------------

    def reconcile(self) -> None:
        """Adopt this clone's trials that an earlier tuner left running: tell those that finished, keep waiting
        for those still queued or running, fail those whose run is gone (retried with --retry-failed)."""
        mine = [t for t in self.study.get_trials(deepcopy=False, states=[_state("RUNNING")])
                if t.user_attrs.get("clone") == self.clone]
        if not mine:
            return
        refs = self.refs()
        states = self.states(refs)
        adopted = told = failed = 0
        for trial in mine:
            name = trial.user_attrs.get("experiment", study_lib.experiment_name(self.study.study_name, trial.number))
            state = states.get(name, "lost")
            flight = Flight(trial.number, name, dict(trial.params))
            if state in ("queued", "running", "taken", "dropped", "dead"):  # the last three: decided by collect()
                self.flights[trial.number] = flight
                adopted += 1
            elif state == "success":
                self.finish(flight, refs.get(flight.name))
                told += 1
            else:
                self.fail(flight, "its run failed" if state == "failed" else "it was never queued (the tuner stopped "
                          "first)" if not trial.user_attrs.get("queued") else "its run is gone from DVC's queue")
                failed += 1
        print(f"an earlier run left {len(mine)} trial(s) of this clone: {told} finished meanwhile, {adopted} still "
              f"queued or running (waiting for them), {failed} failed")

    # --- the loop ---------------------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            if self.flights:
                self.collect()
            running = self.running()
            counts = study_lib.counts(self.study)
            finished = sum(counts.get(state, 0) for state in study_lib.FINISHED)
            wanted = self.args.trials - finished - len(running)
            queued = 0
            while wanted > 0 and len(self.flights) < self.args.jobs and not self.timed_out():
                self.launch()
                wanted -= 1
                queued += 1
            if queued:
                self.start_workers()
            if not self.flights:
                if running and finished < self.args.trials:
                    print(f"{len(running)} trial(s) of other clones still running: their tuners tell them")
                return
            time.sleep(POLL_SECONDS)

    def running(self) -> list:
        """The study's running trials, every clone's; failing on the way those whose tuner died before it gave
        them a clone (they never ran)."""
        import datetime

        found = []
        for trial in self.study.get_trials(deepcopy=False, states=[_state("RUNNING")]):
            if "clone" in trial.user_attrs:
                found.append(trial)
                continue
            age = (datetime.datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else 0
            if age < ORPHAN_SECONDS:
                found.append(trial)  # being launched this moment
                continue
            with contextlib.suppress(RuntimeError, ValueError):  # another tuner failed it first
                self.study.tell(trial.number, state=_state("FAIL"))
                print(f"trial {trial.number} failed: its tuner stopped before it was queued", file=sys.stderr)
        return found

    def start_workers(self) -> None:
        """`dvc queue start -j N`, in this process: only the workers missing are started (a worker stops when
        the queue is empty)."""
        import logging

        from dvc.repo import Repo

        logging.getLogger("kombu").setLevel(logging.ERROR)  # "No hostname was supplied": DVC's queue is local
        with Repo(str(self.root)) as repo:
            repo.experiments.celery_queue.start_workers(self.args.jobs)
        self.workers_at = time.monotonic()

    def timed_out(self) -> bool:
        return self.args.timeout is not None and time.monotonic() - self.started >= self.args.timeout

    def launch(self) -> None:
        trial = self.study.ask(self.distributions)
        name = study_lib.experiment_name(self.study.study_name, trial.number)
        for key, value in {"clone": self.clone, "experiment": name, "baseline": self.baseline,
                           "space": space_lib.fingerprint(self.space)}.items():  # the clone first: see running()
            trial.set_user_attr(key, value)
        link.Link(self.url, self.study.study_name, trial._trial_id, trial.number, self.per_epoch, self.args.pruner,
                  self.args.startup_trials).write(self.root, name)
        flight = Flight(trial.number, name, dict(trial.params))
        self.enqueue(flight)
        trial.set_user_attr("queued", True)
        print(f"trial {trial.number} queued as {name}: {describe(trial.params)}", flush=True)

    def enqueue(self, flight: Flight) -> None:
        """`dvc exp run --queue` for the trial, under its name; a trial that cannot be queued is failed."""
        overrides = [arg for key, value in flight.params.items() for arg in ("-S", space_lib.override(key, value))]
        message = f"catsdogs tune: study {self.study.study_name}, trial {flight.number}"
        for attempt in range(1, LOCK_TRIES + 1):
            try:
                dvc(self.root, "exp", "run", "--queue", "-n", flight.name, "-m", message, *overrides,
                    self.objective.stage)
                break
            except UserError as exc:
                if "lock" not in str(exc) or attempt == LOCK_TRIES:
                    self.study.tell(flight.number, state=_state("FAIL"))
                    raise UserError(f"trial {flight.number}: could not queue it: {exc}") from None
                time.sleep(attempt)  # a queue worker saving a finished experiment holds DVC's lock for a moment
        self.flights[flight.number] = flight

    def release(self, name: str, drop: bool) -> None:
        """Mark a task DVC's queue lost as failed, as `dvc queue kill` does with a task whose process is gone (else
        DVC lists it as running for ever, and `dvc exp show` fails on it); with `drop`, remove it from the queue."""
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        with Repo(str(self.root)) as repo:
            queue = repo.experiments.celery_queue
            with contextlib.suppress(DvcException):
                queue.kill([name], force=True)
            for _ in range(2 if drop else 0):  # one taken before its run was set up is in DVC's stash still:
                try:                            # the first removal takes it from there, the second from the queue
                    queue.remove([name])
                except DvcException:
                    break

    def collect(self) -> None:
        refs = self.refs()
        states = self.states(refs)
        now = time.monotonic()
        for number, flight in list(self.flights.items()):
            state = states.get(flight.name, "lost")
            if state not in ("taken", "dead"):
                self.stalled.pop(number, None)
            if state == "success":
                self.finish(flight, refs.get(flight.name))
            elif state in ("failed", "lost"):
                self.fail(flight, "its run failed" if state == "failed" else "its run is gone from DVC's queue")
            elif state == "dropped" or (state in ("taken", "dead")
                                        and now - self.stalled.setdefault(number, now) > STALL_SECONDS):
                self.stalled.pop(number, None)
                self.release(flight.name, drop=state != "dead")
                if state != "dead":  # it never ran, so nothing of it runs twice: the same trial, queued again
                    self.flights.pop(number)
                    self.enqueue(flight)
                    print(f"trial {number} ({flight.name}): DVC's queue took it but its queue worker stopped before "
                          "it ran; queued again", file=sys.stderr, flush=True)
                else:
                    self.fail(flight, "its run ended without a result (its queue worker stopped)")
        if any(states.get(f.name) == "queued" for f in self.flights.values()) and now - self.workers_at > 10:
            self.start_workers()  # queued with no worker left (they stop when the queue looks empty)

    def metrics(self, ref: str, path: str) -> dict:
        shown = git(self.root, "show", f"{ref}:{path}", check=False)
        try:
            return json.loads(shown.stdout) if shown.returncode == 0 else {}
        except json.JSONDecodeError:
            return {}

    def finish(self, flight: Flight, ref: str | None) -> None:
        found = self.metrics(ref, self.objective.path) if ref else {}
        value = experiments.flatten(found).get(self.objective.key)
        pruned = self.per_epoch is not None and found.get(history.PRUNED) is True
        self.flights.pop(flight.number, None)
        link.link_path(self.root, flight.name).unlink(missing_ok=True)
        if pruned:
            self.study.tell(flight.number, state=_state("PRUNED"))
            print(f"trial {flight.number} ({flight.name}): pruned after epoch {found.get('step')}, at "
                  f"{self.objective.key} {value:.4g}" + self.best_so_far(), flush=True)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            self.study.tell(flight.number, float(value))
            print(f"trial {flight.number} ({flight.name}): {self.objective.key} {value:.4g}" + self.best_so_far(),
                  flush=True)
        else:
            self.fail(flight, f"its experiment has no {self.objective.name}")

    def fail(self, flight: Flight, why: str) -> None:
        self.flights.pop(flight.number, None)
        link.link_path(self.root, flight.name).unlink(missing_ok=True)
        self.study.tell(flight.number, state=_state("FAIL"))
        retry = self.args.retry_failed and "retry_of" not in self.study.trials[flight.number].user_attrs
        if retry:
            self.study.enqueue_trial(flight.params, user_attrs={"retry_of": flight.number})
        print(f"trial {flight.number} ({flight.name}) failed: {why}; `dvc queue logs {flight.name}` shows its output"
              + ("; its params are queued again (--retry-failed)" if retry else ""), file=sys.stderr, flush=True)

    def best_so_far(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return ""
        return f"; best so far: trial {best.number}, {best.value:.4g}"

    def summary(self) -> int:
        counts = study_lib.counts(self.study)
        finished = sum(counts.get(state, 0) for state in study_lib.FINISHED)
        print(f"study {self.study.study_name}: {finished} finished ({counts.get('COMPLETE', 0)} complete, "
              f"{counts.get('PRUNED', 0)} pruned), {counts.get('FAIL', 0)} failed")
        print_best(self.study, self.objective.name)
        return 0


def alive(info) -> bool:
    """Whether DVC's record of an experiment's process (dvc_task's ProcessInfo) is a process still running, or one
    that ended normally and is being collected."""
    if info is None:
        return False
    if info.returncode is not None:
        return True
    import psutil

    try:
        return psutil.Process(info.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def any_alive(records) -> bool:
    """Whether any of these dvc_task process records (JSON files) is of a process still running."""
    from dvc_task.proc.process import ProcessInfo

    for path in records:
        try:
            info = ProcessInfo.load(str(path))
        except (OSError, ValueError, TypeError):  # being written, or gone
            continue
        if info.returncode is None and alive(info):
            return True
    return False


def describe(values: dict) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in values.items())


def _state(name: str):
    import optuna

    return optuna.trial.TrialState[name]


def print_best(study, objective: str) -> None:
    try:
        best = study.best_trial
    except ValueError:
        print("no trial has finished yet")
        return
    print(f"best: trial {best.number} ({best.user_attrs.get('experiment')}), {objective} {best.value:.6g}: "
          f"{describe(best.params)}")
    metric = objective.split(":", 1)[-1] if objective != experiments.DEFAULT_METRIC else None  # best resolves a key
    print(f"bring it into the workspace: catsdogs best{f' --metric {metric}' if metric else ''} --apply "
          f"(or dvc exp apply {best.user_attrs.get('experiment')})")


def show_report(storage, name: str, out: Path) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(f"no study {name!r} in this storage" + (f" (it has {', '.join(known)})" if known else
                                                                 ": run `catsdogs tune` first")) from None
    counts = study_lib.counts(study)
    print(f"study {name}: {sum(counts.values())} trials ({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}); "
          f"objective {study.direction.name.lower()} {study.user_attrs.get('objective')}")
    print(f"space ({study.user_attrs.get('space_file')}): {study.user_attrs.get('space')}")
    objective = study.user_attrs.get("objective", "objective")
    print_best(study, objective)
    written, skipped = report.figures(study, out, objective.rsplit(":", 1)[-1])
    if written:
        print(f"wrote {', '.join(str(p.relative_to(Path.cwd())) for p in written)} (`dvc plots show {out.relative_to(Path.cwd())}` shows them)")
    for file, why in skipped.items():
        print(f"no {file}: {why}")
    return 0


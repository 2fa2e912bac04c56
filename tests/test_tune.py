"""`catsdogs tune`: its checks (one line, exit 2, before anything runs), then real searches through the `dvc` CLI
and DVC's queue on tiny params: a trial pruned before its last epoch, and 8 trials by two tuners in two clones
sharing one study on a real PostgreSQL server, one of them with --jobs 2, killed with SIGKILL after 3 trials and
started again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import ENV, TINY_DATA, TINY_TRAINING, dvc, make_repo, run, set_params

from catsdogs import params
from catsdogs.commands import tune
from catsdogs.tuning import link, memory, report, space as space_lib, study as study_lib

EPOCHS = 2
SPACE = {"train.learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True}}
SPACE_FILE = "configs/tiny-search.yaml"
OBJECTIVE = "metrics/train/metrics.json:final.val_acc"


def catsdogs(*args, cwd, check=False):
    return run(sys.executable, "-m", "catsdogs.commands.cli", *args, cwd=cwd, check=check)


def tuner(*args) -> list[str]:
    return [sys.executable, "-m", "catsdogs.commands.cli", "tune", "--space", SPACE_FILE, *args]


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def write_space(repo: Path, entries: dict, name: str = SPACE_FILE) -> None:
    (repo / name).write_text(yaml.safe_dump(entries, sort_keys=False))


def load_study(repo: Path, name: str, url: str | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=link.connect(url or study_lib.default_url(repo)))



def states(study) -> dict[str, int]:
    return study_lib.counts(study)


def tune_experiments(repo: Path) -> dict[str, dict]:
    """{name: its data in `dvc exp show --json`} for every finished experiment named tune-... (not a queue entry
    that DVC still lists as queued or running)"""
    found = {}
    for baseline in json.loads(dvc("exp", "show", "--json", cwd=repo).stdout):
        for exp_range in baseline.get("experiments") or []:
            if ((exp_range.get("executor") or {}).get("state") or "success") != "success":
                continue
            for rev in exp_range.get("revs") or []:
                name = rev.get("name") or exp_range.get("name")
                if name and name.startswith(link.EXPERIMENT_PREFIX):
                    assert name not in found, f"{name} twice in dvc exp show"
                    found[name] = rev["data"]
    return found


# --- the space ---------------------------------------------------------------------------------------------

@pytest.fixture
def base():
    from conftest import committed_params

    return committed_params()


def test_the_space_file_becomes_optuna_distributions(tmp_path, base):
    import optuna

    path = tmp_path / "s.yaml"
    write_space(tmp_path, {"train.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                           "train.warmup_epochs": {"type": "int", "low": 0, "high": 2},
                           "train.lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]}}, "s.yaml")
    space = space_lib.load(path, base)
    assert space_lib.distributions(space) == {
        "train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "train.warmup_epochs": optuna.distributions.IntDistribution(0, 2),
        "train.lr_schedule": optuna.distributions.CategoricalDistribution(["constant", "cosine"])}
    # the same space written otherwise is the same study's space
    write_space(tmp_path, {"train.lr_schedule": {"choices": ["constant", "cosine"], "type": "categorical"},
                           "train.warmup_epochs": {"high": 2, "low": 0, "type": "int", "step": 1},
                           "train.learning_rate": {"log": True, "type": "float", "low": 1.0e-4, "high": 1.0e-2}},
                "s.yaml")
    assert space_lib.canonical(space_lib.load(path, base)) == space_lib.canonical(space)


@pytest.mark.parametrize("entries, message", [
    ({"train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2}},
     "unknown params key 'train.lr' (params.yaml has no 'lr' in train; there: backend, precision, learning_rate"),
    ({"train.learning_rate": {"type": "float", "low": -1.0, "high": 1.0e-2}},
     "train.learning_rate: low -1.0 is outside what params.yaml allows (train.learning_rate = -1.0: input should be "
     "greater than 0)"),
    ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}},
     "model.dropout: high 1.0 is outside what params.yaml allows (model.dropout = 1.0: input should be less than 1)"),
    ({"train.lr_schedule": {"type": "categorical", "choices": ["cosine", "linear"]}},
     "train.lr_schedule: choice 'linear' is outside what params.yaml allows"),
    ({"train.lr_schedule": {"type": "categorical", "choices": []}}, "train.lr_schedule: choices = []"),
    ({"epochs": {"type": "float", "low": 1.0, "high": 5.0}},
     "epochs: low 1.0 is outside what params.yaml allows (epochs = 1.0: input should be a valid integer)"),
    ({"epochs": {"type": "int", "low": 5, "high": 2}}, "epochs: low (5) is above high (2)"),
    ({"train.learning_rate": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
     "train.learning_rate: log: true needs low above 0"),
    ({"model": {"type": "int", "low": 1, "high": 2}}, "model is a section of params.yaml, not one param"),
    ({"epochs": 3}, "epochs: 3 is not a distribution"),
    ({"epochs": {"type": "int", "low": 1, "high": 3, "lgo": True}}, "epochs: unknown key 'lgo'; a int allows type"),
])
def test_a_bad_space_is_one_line_naming_the_key(tmp_path, base, entries, message):
    write_space(tmp_path, entries, "s.yaml")
    with pytest.raises(space_lib.SpaceError) as error:
        space_lib.load(tmp_path / "s.yaml", base)
    assert str(error.value).startswith(f"{tmp_path / 's.yaml'}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", [1e-05, 2.5e-4, 0.0123, 3, True, False, "cosine", "with space", "it's"])
def test_an_override_reaches_params_yaml_as_the_same_value(tmp_path, value):
    """What `-S` gives DVC (Hydra's parser, then DVC's YAML writer) is read back by params.yaml's loader as is."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  learning_rate: 1.0\n")
    apply_overrides(str(path), [space_lib.override("train.learning_rate", value)])
    assert params.read_yaml(path) == {"train": {"learning_rate": value}}


def test_a_trials_memory_follows_the_measured_figures(base):
    from conftest import params_with

    tiny = params_with(TINY_TRAINING)
    demo = params_with(yaml.safe_load(Path(__file__).parent.parent.joinpath("configs/demo.yaml").read_text()))
    gib = memory.GIB
    assert 1.0 * gib < memory.worker_bytes(tiny, 114) < 1.05 * gib  # the tests' runs: 1.0 GiB measured
    assert 1.05 * gib < memory.worker_bytes(demo, 1940) < 1.2 * gib  # the demo: 1.1 GiB measured
    assert 14.2 * gib < memory.worker_bytes(base, 0) < 14.4 * gib  # the tutorial's model, images aside: 14.3
    assert 16.4 * gib < memory.worker_bytes(base, 23410) < 16.6 * gib  # and the real archive's images: 16.5
    sized = {"data.batch_size": space_lib.Choices(type="categorical", choices=[32, 256]),
             "train.learning_rate": space_lib.FloatRange(type="float", low=1e-4, high=1e-2)}
    largest = memory.largest(base, sized)
    assert largest["data"]["batch_size"] == 256 and largest["train"]["learning_rate"] == base["train"]["learning_rate"]


# --- the checks before anything runs -----------------------------------------------------------------------

@pytest.fixture
def project(repo) -> Path:
    write_space(repo, SPACE)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "space", cwd=repo)
    return repo


def test_bad_input_is_one_line_and_exit_2_before_anything_runs(project):
    objective = ("--objective", OBJECTIVE)
    unreachable = one_line_error(catsdogs("tune", "--space", SPACE_FILE, *objective, "--storage",
                                          "postgresql://tuner:secret@127.0.0.1:9/optuna", cwd=project))
    assert unreachable.startswith("error: --storage postgresql://tuner:***@127.0.0.1:9/optuna: cannot use this "
                                  "database: ") and "secret" not in unreachable
    assert "objective" in one_line_error(catsdogs("tune", "--space", SPACE_FILE, cwd=project))  # no metrics yet
    assert one_line_error(catsdogs("tune", "--space", SPACE_FILE, *objective, "--jobs", "0", cwd=project)) == (
        "error: --jobs 0: at least 1")
    assert "a study's name is part of each trial's experiment name" in one_line_error(
        catsdogs("tune", "--space", SPACE_FILE, *objective, "--study", "no spaces", cwd=project))
    # the committed params are the tutorial's: 14.3 GiB a trial, and no machine here has 1,000 times that
    many = one_line_error(catsdogs("tune", "--space", SPACE_FILE, *objective, "--jobs", "1000", cwd=project))
    assert many.startswith("error: --jobs 1000: each trial needs about 14.3 GiB at these params "
                           "(docs/workflows.md#experiments), 1000 need 14300.0 GiB, and ")
    (project / "notes.py").write_text("print('not in git')\n")
    untracked = one_line_error(catsdogs("tune", "--space", SPACE_FILE, *objective, cwd=project))
    assert untracked == ("error: notes.py: not in git, so the queued trials would run without it: `git add` (or "
                         "commit) it, or remove it, then tune")
    (project / "notes.py").unlink()
    # a study started with another space: refused, with how to start a new one
    storage = link.connect(study_lib.default_url(project))
    other = space_lib.canonical(space_lib.load(project / SPACE_FILE, params.read_yaml(project / "params.yaml"))) + " "
    study_lib.open_study(storage, "tiny-search", other, SPACE_FILE,
                         tune.resolve_objective(project, OBJECTIVE, None), None, None)
    changed = one_line_error(catsdogs("tune", "--space", SPACE_FILE, *objective, cwd=project))
    assert changed == (f"error: study 'tiny-search' was started with another search space than {SPACE_FILE} has now: "
                       "start a new study with --study NEW_NAME, or put back the space it was started with "
                       "(`catsdogs tune --report --study tiny-search` prints it)")
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""  # nothing written that git sees
    assert not list((project / ".dvc" / "tmp").glob("exps/*"))  # and nothing queued


# --- real searches ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searchable(tmp_path_factory) -> Path:
    """The tiny project with its data cleaned and one model trained (the baseline the trials start from), the
    space committed: what a user has before `catsdogs tune`."""
    repo = make_repo(tmp_path_factory.mktemp("tune") / "repo")
    set_params(repo, TINY_DATA | TINY_TRAINING | {"epochs": EPOCHS})
    write_space(repo, SPACE)
    dvc("repro", "train", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "tiny baseline", cwd=repo)
    return repo


def copy_of(searchable: Path, target: Path) -> Path:
    shutil.copytree(searchable, target, symlinks=True)
    dvc("checkout", "--relink", "--with-deps", "train", cwd=target)  # copytree copied each cache link as a file
    return target


def wait_for(condition, timeout: float, what: str, processes=()):
    """condition()'s first truthy value; fails at once, with its output, if one of `processes` ends meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args} ended ({process.returncode}) before {what}:\n"
                                     f"{process.communicate()[0]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def running_after(name: str, url: str, count: int, clone: str) -> list[int]:
    """Once the study has `count` finished trials: the numbers of `clone`'s trials then queued (or running) in
    DVC's queue; else [] (also while the study is not there yet)."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=link.connect(url))
    except KeyError:
        return []
    trials = study.get_trials()
    if sum(t.state.name in study_lib.FINISHED for t in trials) < count:
        return []
    return [t.number for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("clone") == clone
            and t.user_attrs.get("queued")]


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_before_its_last_epoch(searchable, tmp_path):
    import optuna

    repo = copy_of(searchable, tmp_path / "repo")
    set_params(repo, {"epochs": 3})
    run("git", "commit", "-qam", "three epochs", cwd=repo)
    # two earlier trials that were perfect at every epoch: the median the next one is judged by
    space = space_lib.load(repo / SPACE_FILE, params.read_yaml(repo / "params.yaml"))
    study = study_lib.open_study(link.connect(study_lib.default_url(repo)), "tiny-search", space_lib.canonical(space),
                                 SPACE_FILE, tune.resolve_objective(repo, OBJECTIVE, None), None, None)
    for rate in (1e-3, 2e-3):
        study.add_trial(optuna.trial.create_trial(
            params={"train.learning_rate": rate}, distributions=space_lib.distributions(space), value=1.0,
            intermediate_values={1: 1.0, 2: 1.0, 3: 1.0}))
    done = run(*tuner("--trials", "3", "--startup-trials", "2"), cwd=repo, timeout=600)
    [trial] = [t for t in load_study(repo, "tiny-search").get_trials() if t.number == 2]
    assert trial.state.name == "PRUNED", done.stdout
    assert "trial 2 (tune-tiny-search-2): pruned after epoch 1, at final.val_acc" in done.stdout
    summary = tune_experiments(repo)["tune-tiny-search-2"]["metrics"]["metrics/train/metrics.json"]["data"]
    assert summary["pruned"] is True and summary["step"] == 1  # of 3 epochs
    assert trial.intermediate_values == {1: pytest.approx(summary["final"]["val_acc"], abs=1e-6)}
    logs = dvc("queue", "logs", "tune-tiny-search-2", cwd=repo).stdout
    assert "stopped early by the tuner's pruner after epoch 1 of 3" in logs
    shown = dvc("exp", "show", "--no-pager", "--drop", ".*", "--keep", "Experiment|pruned", cwd=repo).stdout
    assert any("tune-tiny-search-2" in line and "True" in line for line in shown.splitlines()), shown
    ranked = catsdogs("best", "--metric", "final.val_acc", cwd=repo)  # the only experiment, and not finished
    assert "not ranked: tune-tiny-search-2 (pruned)" in ranked.stdout
    assert one_line_error(ranked) == "error: no finished experiment to rank yet"


def test_the_pruner_is_asked_after_every_epoch_but_the_last(tmp_path):
    """A trial as bad as can be, after two perfect ones: stopped after its first epoch; but after its last one it
    has run every epoch, so it finishes (and ranks) with its value, even that bad."""
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=link.connect(url), direction="maximize",
                                pruner=link.pruner("median", 2))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0}))

    def reporter(epochs: dict[int, bool]) -> tuple[link.Trial, list[bool], bool]:
        """A new trial's reports of 0.0 at these epochs (each: is it the last?); what they said and what the
        pruner itself says of the trial then."""
        trial = study.ask()
        reports = link.Trial(link.Link(url, "s", trial._trial_id, trial.number, "val_acc", "median", 2), "tune-s")
        said = [reports.report(epoch, 0.0, last=last) for epoch, last in epochs.items()]
        return reports, said, optuna.Trial(study, trial._trial_id).should_prune()

    early, said, judged = reporter({1: False})
    assert said == [True] and judged and early.pruned_after == 1
    late, said, judged = reporter({2: True})
    assert said == [False] and judged and late.pruned_after is None  # the pruner would stop it, but it has run
    assert study.trials[3].intermediate_values == {2: 0.0}  # reported all the same


def test_the_report_draws_a_param_every_trial_shares_without_a_warning(tmp_path):
    """Two trials with the same warm-up: Optuna's parallel coordinates would warn of "identical low and high
    ylims", which reads like a problem in `catsdogs tune --report`'s output; the figures are drawn all the same."""
    import warnings

    import optuna

    study = optuna.create_study(direction="maximize")
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "warmup": optuna.distributions.IntDistribution(0, 2)}
    for lr, value in ((1e-3, 0.9), (3e-3, 0.95)):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr, "warmup": 1}, distributions=space, value=value,
                                                  intermediate_values={1: value}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        link.quiet_optuna()  # as `catsdogs tune --report` does, opening the storage
        written, skipped = report.figures(study, tmp_path, "final.val_acc")
    assert {p.name for p in written} == set(report.FIGURES) and not skipped


@pytest.fixture
def postgres():
    """A real PostgreSQL server (pgserver's binaries), in a short temporary folder: its socket lives there."""
    pgserver = pytest.importorskip("pgserver")  # in the dev extra: installed in CI
    folder = tempfile.mkdtemp(prefix="pg")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_tuners_opening_a_new_database_at_the_same_moment_all_get_it(tmp_path, request, database):
    """Optuna makes a new database's tables with no lock (optuna/optuna#1092): without link.connect's lock, about
    half of the processes opening a new PostgreSQL database at once failed here, and 1 in 8 on SQLite."""
    url = (request.getfixturevalue("postgres") if database == "postgresql"
           else f"sqlite:///{tmp_path / 'tune' / 'optuna.db'}")
    go = tmp_path / "go"
    code = ("import sys, time\nfrom pathlib import Path\nfrom catsdogs.tuning import link\n"
            "while not Path(sys.argv[1]).exists():\n    time.sleep(0.01)\n"
            "link.connect(sys.argv[2])\n")
    openers = [subprocess.Popen([sys.executable, "-c", code, str(go), url], env=ENV, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
    time.sleep(3)  # all four have imported what they need and wait for the same moment
    go.touch()
    outputs = [opener.communicate(timeout=120)[0] for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0, 0, 0], outputs
    import optuna

    assert optuna.get_all_study_summaries(link.connect(url)) == []  # one working storage, its tables made once


@pytest.mark.slow
def test_two_clones_share_one_study_on_postgresql_through_a_kill_and_every_trial_meets_in_one_exp_show(
        searchable, tmp_path, postgres):
    """The must-shows in one search, 8 trials: two tuners in two clones share a study on a real PostgreSQL server
    (one with --jobs 2), the first is killed with SIGKILL once 3 trials have finished and started again; then
    exactly 8 finished or pruned trials, each run once, and after `dvc exp push`/`pull` all 8 in one
    `dvc exp show`."""
    origin = tmp_path / "origin.git"
    run("git", "clone", "-q", "--bare", str(searchable), str(origin), cwd=tmp_path)
    clones = [copy_of(searchable, tmp_path / name) for name in ("host-a", "host-b")]
    for clone in clones:
        run("git", "remote", "add", "origin", str(origin), cwd=clone)
    common = ("--trials", "8", "--study", "shared", "--storage", postgres, "--startup-trials", "3")
    commands = [tuner(*common, "--jobs", "2", "--seed", "0"), tuner(*common, "--jobs", "1", "--seed", "1")]

    def start(i):
        return subprocess.Popen(commands[i], cwd=clones[i], env=ENV, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    tuners = [start(0), start(1)]
    try:
        # kill the first tuner once 3 trials have finished and one of its own is queued or running
        left = wait_for(lambda: running_after("shared", postgres, 3, study_lib.clone_id(clones[0])), 600,
                        "3 finished trials and one of the first clone's in DVC's queue", tuners)
        tuners[0].send_signal(signal.SIGKILL)
        killed_output = tuners[0].communicate()[0]
        tuners[0] = start(0)  # the same command again
        outputs = [t.communicate(timeout=900)[0] for t in tuners]
    finally:
        for t in tuners:
            if t.poll() is None:
                t.kill()
    assert [t.returncode for t in tuners] == [0, 0], outputs
    assert left and "an earlier run left " in outputs[0], (left, outputs)  # and adopted them

    study = load_study(clones[0], "shared", postgres)
    trials = study.get_trials()
    finished = [t for t in trials if t.state.name in study_lib.FINISHED]
    assert len(finished) == 8 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")], \
        (states(study), killed_output, outputs)
    by_clone = {clone: {t.user_attrs["experiment"] for t in finished if t.user_attrs["clone"] ==
                        study_lib.clone_id(clone)} for clone in clones}
    assert all(by_clone.values()), outputs  # both tuners ran trials
    shown = {clone: tune_experiments(clone) for clone in clones}
    for clone in clones:  # each trial ran once, in one clone, as one experiment of its name (each name once)
        assert set(shown[clone]) == by_clone[clone], (killed_output, outputs)
    for output in (killed_output + outputs[0], outputs[1]):
        queued = [line.split(" queued as ")[1].split(":")[0] for line in output.splitlines() if " queued as " in line]
        assert len(queued) == len(set(queued)), output

    for trial in finished:  # the study's record is the experiment's: params, value, pruned or not
        name = trial.user_attrs["experiment"]
        data = shown[clones[0]].get(name) or shown[clones[1]][name]
        summary = data["metrics"]["metrics/train/metrics.json"]["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == trial.params["train.learning_rate"]
        if trial.state.name == "COMPLETE":
            assert summary["final"]["val_acc"] == trial.value and summary["pruned"] is False
        else:
            assert summary["pruned"] is True and summary["step"] < EPOCHS

    for clone in clones:
        dvc("exp", "push", "--no-cache", "--all-commits", "origin", cwd=clone)
    dvc("exp", "pull", "--no-cache", "--all-commits", "origin", cwd=clones[0])
    assert set(tune_experiments(clones[0])) == {t.user_attrs["experiment"] for t in finished}

    # the winner by the tuner's objective; pruned trials are never ranked; the figures, git-ignored
    ranked = catsdogs("best", "--metric", "final.val_acc", cwd=clones[0], check=True).stdout
    assert all(f"not ranked: {t.user_attrs['experiment']} (pruned)" in ranked for t in finished
               if t.state.name == "PRUNED"), ranked
    reported = catsdogs("tune", "--space", SPACE_FILE, "--study", "shared", "--storage", postgres, "--report",
                        cwd=clones[0], check=True).stdout
    assert f"best: trial {study.best_trial.number} ({study.best_trial.user_attrs['experiment']})" in reported
    assert {p.name for p in (clones[0] / "metrics" / "tune").glob("*.png")} >= {
        "history.png", "importances.png", "parallel_coordinates.png"}
    assert run("git", "status", "--porcelain", cwd=clones[0]).stdout == ""


@pytest.mark.slow
def test_a_trial_killed_in_dvcs_queue_fails_and_with_retry_failed_runs_again_with_its_params(searchable, tmp_path):
    """`dvc queue kill` on a running trial (what a user does to stop one, and what a dead run looks like to the
    tuner): the trial is failed, and with --retry-failed its params are asked for once more, as a new trial. The
    tuner runs as `.venv/bin/catsdogs tune` does without the environment activated: no `dvc` or `python` of it on
    PATH, which the queue workers and the stages need."""
    repo = copy_of(searchable, tmp_path / "repo")
    assert shutil.which("dvc", path=os.defpath) is None  # else this would not show it
    search = subprocess.Popen(tuner("--trials", "1", "--retry-failed"), cwd=repo, env=dict(ENV, PATH=os.defpath),
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        logs = ("queue", "logs", "tune-tiny-search-0")  # none until a worker takes it
        wait_for(lambda: "Running stage 'train'" in dvc(*logs, cwd=repo, check=False).stdout, 300,
                 "trial 0's train stage to start in DVC's queue", [search])
        dvc("queue", "kill", "tune-tiny-search-0", cwd=repo)
        output = search.communicate(timeout=600)[0]
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, output
    assert ("trial 0 (tune-tiny-search-0) failed: its run failed; `dvc queue logs tune-tiny-search-0` shows its "
            "output; its params are queued again (--retry-failed)") in output
    killed, again = load_study(repo, "tiny-search").get_trials()
    assert killed.state.name == "FAIL" and again.state.name == "COMPLETE", output
    assert again.params == killed.params and again.user_attrs["retry_of"] == 0
    assert set(tune_experiments(repo)) == {"tune-tiny-search-1"}  # the killed one saved nothing


def a_tuner(project: Path) -> tune.Tuner:
    """The tuner of `catsdogs tune --space SPACE_FILE --trials 1` in `project`, its study opened, nothing queued."""
    import argparse

    space = space_lib.load(project / SPACE_FILE, params.read_yaml(project / "params.yaml"))
    objective = tune.resolve_objective(project, OBJECTIVE, None)
    url = study_lib.default_url(project)
    study = study_lib.open_study(link.connect(url), "tiny-search", space_lib.canonical(space), SPACE_FILE, objective,
                                 None, None)
    options = argparse.Namespace(pruner="median", startup_trials=5, jobs=1, trials=1, timeout=None, retry_failed=False)
    return tune.Tuner(project, study, space, objective, url, options, "val_acc")


def queue_status(project: Path) -> list[str]:
    """`dvc queue status`'s rows of tuning trials."""
    return [line for line in dvc("queue", "status", cwd=project).stdout.splitlines() if link.EXPERIMENT_PREFIX in line]


def test_queueing_a_trial_waits_while_a_queue_worker_holds_dvcs_lock(project):
    """`dvc exp run --queue` refuses at once while another DVC process holds the experiments' lock (a queue worker
    saving a finished experiment): the tuner waits and tries again instead of failing the trial."""
    import threading

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = project / ".dvc" / "tmp" / "exps" / "rwlock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"write": {"workspace": {"pid": holder.pid, "cmd": "dvc exp queue-worker"}},
                                "read": {}}))
    threading.Timer(5, lambda: (holder.kill(), holder.wait())).start()  # the worker ends: DVC drops its claim
    try:
        searcher = a_tuner(project)
        started = time.monotonic()
        searcher.launch()
        assert time.monotonic() - started > 5  # it waited for the lock (DVC starts in well under 5 s)
    finally:
        holder.kill()
    assert "tune-tiny-search-0" in queue_status(project)[0]  # queued, not failed
    assert states(load_study(project, "tiny-search")) == {"RUNNING": 1}


def test_a_trial_a_stopping_worker_took_but_never_ran_is_queued_again_and_dvc_exp_show_works(project, monkeypatch):
    """A DVC queue worker stopping just as it takes a task (they stop when the queue looks empty; seen in CI) leaves
    the task counted as running for ever, with no process and no record of a run, on which `dvc exp show` fails.
    The tuner marks it failed in DVC's queue, removes it, and queues the same trial again under its name: it never
    ran, so nothing runs twice. At once when no queue worker is left; while one lives, after tune.STALL_SECONDS."""
    from dvc.repo import Repo

    def taken_by_a_worker() -> Path:
        """What DVC's broker does as a worker takes the task: its message moves; the queue's folder."""
        with Repo(str(project)) as repo:
            queue = repo.experiments.celery_queue
            with queue.celery.connection_for_read() as connection, connection.channel() as channel:
                [message] = os.listdir(channel.data_folder_in)
                shutil.move(os.path.join(channel.data_folder_in, message), channel.processed_folder)
            return Path(queue.wdir)

    def queued_again() -> None:
        [row] = queue_status(project)
        assert "tune-tiny-search-0" in row and "Queued" in row
        assert dvc("exp", "show", "--json", cwd=project).stdout
        assert list(searcher.flights) == [0] and states(load_study(project, "tiny-search")) == {"RUNNING": 1}

    searcher = a_tuner(project)
    searcher.launch()
    taken_by_a_worker()
    assert "Running" in queue_status(project)[0]
    assert dvc("exp", "show", "--json", cwd=project, check=False).returncode != 0  # DVC's own failure, shown
    searcher.collect()  # no queue worker left: nobody will ever run it
    queued_again()

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a live worker, as dvc_task records it: it may be setting the run up, so the tuner waits
        (taken_by_a_worker() / "dvc-exp-worker-1.json").write_text(json.dumps(
            {"pid": worker.pid, "stdin": None, "stdout": None, "stderr": None, "returncode": None}))
        searcher.collect()
        assert "Running" in queue_status(project)[0]
        monkeypatch.setattr(tune, "STALL_SECONDS", -1.0)  # a minute later
        searcher.collect()
        queued_again()
    finally:
        worker.kill()


def test_a_trial_dvc_calls_running_counts_as_alive_only_with_a_live_process_behind_it():
    """DVC's queue can count a task as running after the worker that took it stopped (the tuner then queues the
    trial again, or fails it if its run had started): what DVC records of the process decides."""
    from dvc_task.proc.process import ProcessInfo

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tune.alive(ProcessInfo(os.getpid(), None, None, None, None))
    assert tune.alive(ProcessInfo(gone.pid, None, None, None, 0))  # ended normally: being collected
    assert not tune.alive(ProcessInfo(gone.pid, None, None, None, None))  # died without a return code
    assert not tune.alive(None)  # taken by a worker, never started

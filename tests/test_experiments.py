"""`catsdogs best`'s ranking (catsdogs.commands.experiments); the real sweep is in tests/test_workflows.py."""

from __future__ import annotations

import sys

import pytest
from conftest import dvc, run

from catsdogs.commands import experiments
from catsdogs.errors import UserError
from catsdogs.commands.experiments import Experiment

ACC, LOSS = experiments.DEFAULT_METRIC, experiments.TIE_BREAK


def exp(name, state="success", acc=None, loss=None, **params):
    metrics = {k: v for k, v in {ACC: acc, LOSS: loss, "metrics/train/metrics.json:final.val_acc": acc}.items()
               if v is not None}
    return Experiment(name, name * 5, state, metrics, {"epochs": 10, **params})


FOUND = [
    exp("tied-worse-loss", acc=0.9, loss=0.3, **{"train.learning_rate": 1e-3}),
    exp("running", "running", acc=0.99, loss=0.01),
    exp("best", acc=0.95, loss=0.5, **{"train.learning_rate": 3e-4}),
    exp("failed", "failed"),
    exp("tied-better-loss", acc=0.9, loss=0.2, **{"train.learning_rate": 1e-3}),
    exp("queued", "queued"),
    exp("no-metrics"),
]


def test_ranks_finished_experiments_best_first_ties_by_the_lower_loss():
    ranked, unranked = experiments.rank(FOUND, ACC)
    assert [e.name for e in ranked] == ["best", "tied-better-loss", "tied-worse-loss"]
    assert [(e.name, reason) for e, reason in unranked] == [
        ("running", "running"), ("failed", "failed"), ("queued", "queued"), ("no-metrics", f"no {ACC}")]


def test_a_loss_ranks_lowest_first_unless_told_otherwise():
    assert [e.name for e in experiments.rank(FOUND, LOSS)[0]] == ["tied-better-loss", "tied-worse-loss", "best"]
    assert [e.name for e in experiments.rank(FOUND, LOSS, lower=False)[0]][0] == "best"


def test_a_bare_key_names_the_one_file_that_has_it():
    assert experiments.resolve(FOUND, "final.val_acc") == "metrics/train/metrics.json:final.val_acc"
    assert experiments.resolve(FOUND, "loss") == LOSS
    with pytest.raises(UserError, match="no experiment has a metric 'f1'"):
        experiments.resolve(FOUND, "f1")


@pytest.mark.parametrize("metric, line", [
    ("val_acc", "no experiment has a metric 'val_acc': did you mean metrics/train/metrics.json:final.val_acc? "
                "(5 metrics in all: `dvc exp show` lists them)"),
    ("acuracy", "no experiment has a metric 'acuracy': did you mean metrics/metrics.json:accuracy? "
                "(5 metrics in all: `dvc exp show` lists them)"),
    ("metrics/metrics.json:acuracy", "no experiment has a metric 'metrics/metrics.json:acuracy': did you mean "
                                     "metrics/metrics.json:accuracy? (5 metrics in all: `dvc exp show` lists them)"),
])
def test_an_unknown_metric_suggests_the_nearest(metric, line):
    """Issue 17: `--metric val_acc` answered with a list of 40 names; a path:key typo ranked nothing."""
    found = FOUND + [Experiment("summary", "s" * 5, "success", {"metrics/train/metrics.json:best.val_acc": 0.9,
                                                               "metrics/train/metrics.json:best.epoch": 3,
                                                               "metrics/train/metrics.json:final.val_acc": 0.9})]
    with pytest.raises(UserError) as info:
        experiments.resolve(found, metric)
    assert str(info.value) == line


def test_the_table_shows_the_params_that_differ():
    ranked, _ = experiments.rank(FOUND, ACC)
    lines = experiments.table(ranked, ACC, top=2).splitlines()
    assert lines[0].split() == ["rank", "experiment", "accuracy", "loss", "train.learning_rate"]  # not epochs
    assert lines[1].split() == ["1", "best", "0.95", "0.5", "0.0003"]
    assert len(lines) == 3


def test_parses_dvc_exp_show_json():
    shown = [
        {"rev": "workspace", "name": None, "data": {"metrics": {}}, "error": None, "experiments": None},
        {"rev": "a" * 40, "name": "main", "data": {}, "error": None, "experiments": [
            {"revs": [{"rev": "b" * 40, "name": "lr-high", "error": None, "experiments": None, "data": {
                "metrics": {"metrics/metrics.json": {"data": {"accuracy": 0.9, "per_class_accuracy": {"Cat": 1.0}}}},
                "params": {"params.yaml": {"data": {"epochs": 3, "train": {"learning_rate": 0.003}}}}}}],
             "executor": {"state": "success", "name": None, "local": None}, "name": "lr-high"},
            {"revs": [{"rev": "c" * 40, "name": "lr-bad", "error": None, "experiments": None, "data": {}}],
             "executor": {"state": "failed", "name": None, "local": None}, "name": "lr-bad"}]},
    ]
    found = experiments.parse(shown)
    assert found == [
        Experiment("lr-high", "b" * 40, "success",
                   {"metrics/metrics.json:accuracy": 0.9, "metrics/metrics.json:per_class_accuracy.Cat": 1.0},
                   {"epochs": 3, "train.learning_rate": 0.003}),
        Experiment("lr-bad", "c" * 40, "failed", {}, {})]


def test_best_without_experiments_says_so(repo):
    dvc("exp", "show", cwd=repo)  # a repository with a commit and a pipeline, never run
    result = run(sys.executable, "-m", "catsdogs.commands.cli", "best", cwd=repo, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no experiments to rank: run some with `dvc exp run` (docs/workflows.md#sweeps-and-the-best-run)")


def test_the_metrics_of_three_classes_rank_by_their_macro_and_per_class_keys():
    """What the evaluate stage writes for three classes, as `dvc exp show --json` nests it."""
    def shown(name, macro_f1, tabby_f1, loss):
        return {"rev": name * 8, "name": name, "error": None, "experiments": None, "data": {"metrics": {
            "metrics/metrics.json": {"data": {"accuracy": 0.8, "f1": macro_f1, "loss": loss,
                                              "macro": {"precision": 0.7, "recall": 0.8, "f1": macro_f1,
                                                        "roc_auc": 0.9},
                                              "per_class_f1": {"Lynx": 0.5, "Tabby": tabby_f1},
                                              "per_class_roc_auc": {"Lynx": None, "Tabby": 0.9}}}}}}
    found = experiments.parse([{"rev": "a" * 40, "name": "main", "data": {}, "error": None, "experiments": [
        {"revs": [shown(name, *values)], "executor": {"state": "success"}, "name": name}
        for name, values in {"macro-best": (0.9, 0.6, 0.3), "tabby-best": (0.8, 0.95, 0.2)}.items()]}])
    assert "metrics/metrics.json:per_class_roc_auc.Lynx" not in found[0].metrics  # null: no such metric
    metric = experiments.resolve(found, "macro.f1")
    assert metric == "metrics/metrics.json:macro.f1"
    assert [e.name for e in experiments.rank(found, metric)[0]] == ["macro-best", "tabby-best"]
    metric = experiments.resolve(found, "per_class_f1.Tabby")
    assert [e.name for e in experiments.rank(found, metric)[0]] == ["tabby-best", "macro-best"]

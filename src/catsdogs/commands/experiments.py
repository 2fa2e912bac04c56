"""The experiments of the current commit ranked by a metric: what `catsdogs best` prints, applies or branches.

Reads them with `dvc exp show --json` and acts with `dvc exp apply` / `dvc exp branch`, the DVC CLI of the
environment this runs in. Only finished experiments are ranked; queued, running and failed ones, tuning trials
that the tuner's pruner stopped early, and any without the metric, are listed as such.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from catsdogs import history
from catsdogs.errors import UserError


def this_python_first(path: str | None) -> str:
    """PATH with this interpreter's folder first. Stages run `python -m catsdogs...` and DVC's queue starts its
    workers as `dvc`: both must be this environment's, whether or not the user activated it."""
    return os.pathsep.join([str(Path(sys.executable).parent), path or ""])


DEFAULT_METRIC = "metrics/metrics.json:accuracy"  # the evaluate stage's validation accuracy
TIE_BREAK = "metrics/metrics.json:loss"  # then the lower validation loss, then the name
TOP = 5


@dataclass
class Experiment:
    name: str
    rev: str
    state: str  # DVC's: success, queued, running or failed; or pruned (a tuning trial stopped early)
    metrics: dict[str, float] = field(default_factory=dict)  # "path:key.subkey": value
    params: dict[str, object] = field(default_factory=dict)  # "key.subkey" of params.yaml: value


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def parse(shown: list) -> list[Experiment]:
    """The experiments in `dvc exp show --json`'s output (not the workspace, not the baseline commits)."""
    found = []
    for baseline in shown:
        for exp_range in baseline.get("experiments") or []:
            state = (exp_range.get("executor") or {}).get("state") or "success"
            for rev in exp_range.get("revs") or []:
                data = rev.get("data") or {}
                metrics = {f"{path}:{key}": value
                           for path, result in (data.get("metrics") or {}).items()
                           for key, value in flatten((result or {}).get("data") or {}).items()
                           if isinstance(value, (int, float)) and not isinstance(value, bool)}
                params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
                pruned = any(((result or {}).get("data") or {}).get(history.PRUNED) is True
                             for result in (data.get("metrics") or {}).values())
                found.append(Experiment(rev.get("name") or exp_range.get("name") or rev["rev"][:7], rev["rev"],
                                        "failed" if rev.get("error") else "pruned" if pruned else state, metrics,
                                        params))
    return found


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1].removeprefix("ERROR: ") if lines else f"exit code {result.returncode}"
        raise UserError(f"dvc {' '.join(args)} failed: {last}")
    return result


def show(repo: Path) -> list[Experiment]:
    return parse(json.loads(dvc("exp", "show", "--json", cwd=repo).stdout or "[]"))


def resolve(experiments: list[Experiment], metric: str) -> str:
    """The metric's full name, "path:key": as given, or the one file's that has a key of that name."""
    known = sorted({name for exp in experiments for name in exp.metrics})
    if metric in known or (":" in metric and not known):
        return metric
    matches = [name for name in known if name.split(":", 1)[1] == metric]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"metric {metric!r} is in several files: choose one of {', '.join(matches)}")
    if not known:
        raise UserError(f"no experiment has a metric {metric!r}; they have none")
    raise UserError(f"no experiment has a metric {metric!r}: did you mean {nearest(metric, known)}? "
                    f"({len(known)} metrics in all: `dvc exp show` lists them)")


def nearest(metric: str, known: list[str]) -> str:
    """The known metric `metric` most likely means: one whose key ends with it ("val_acc": the run's final value
    before its best epoch's, as the model kept is the final one), else the closest by difflib."""
    key = metric.rsplit(":", 1)[-1]
    ending = [name for name in known if name.endswith("." + key) or name.endswith(":" + key)]
    if ending:
        return min(ending, key=lambda name: (not name.split(":", 1)[1].startswith("final."), name))
    return difflib.get_close_matches(metric, known, n=1, cutoff=0)[0]


def lower_is_better(metric: str) -> bool:
    """A loss, or a time: lower is better; anything else (accuracy, AUC, images/s): higher."""
    key = metric.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return "loss" in key or "seconds" in key


def rank(experiments: list[Experiment], metric: str, lower: bool | None = None):
    """(ranked, unranked): finished experiments with the metric, best first (ties: the lower TIE_BREAK,
    then the name); the others with the reason, in their order."""
    lower = lower_is_better(metric) if lower is None else lower
    ranked, unranked = [], []
    for exp in experiments:
        value = exp.metrics.get(metric)
        if exp.state != "success":
            unranked.append((exp, exp.state))
        elif value is None or not math.isfinite(value):
            unranked.append((exp, f"no {metric}"))
        else:
            ranked.append(exp)

    def key(exp: Experiment):
        value = exp.metrics[metric]
        tie = exp.metrics.get(TIE_BREAK, math.inf)
        return (value if lower else -value, tie if math.isfinite(tie) else math.inf, exp.name)

    return sorted(ranked, key=key), unranked


def differing_params(experiments: list[Experiment]) -> list[str]:
    names = sorted({name for exp in experiments for name in exp.params})
    return [name for name in names if len({json.dumps(exp.params.get(name)) for exp in experiments}) > 1]


def table(ranked: list[Experiment], metric: str, top: int) -> str:
    shown = ranked[:top]
    columns = [metric.split(":", 1)[1]] + ([TIE_BREAK.split(":", 1)[1]] if TIE_BREAK != metric else [])
    params = differing_params(ranked)
    header = ["rank", "experiment", *columns, *params]
    rows = [[str(i), exp.name,
             *(f"{exp.metrics[m]:.4g}" if m in exp.metrics else "-" for m in [metric, TIE_BREAK][:len(columns)]),
             *(str(exp.params.get(p, "-")) for p in params)]
            for i, exp in enumerate(shown, 1)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def best(repo: Path, metric: str = DEFAULT_METRIC, lower: bool | None = None, top: int = TOP,
         apply: bool = False, branch: str | None = None) -> int:
    """`catsdogs best`: print the ranking; `dvc exp apply` or `dvc exp branch` the best. Exit code 0."""
    found = show(repo)
    if not found:
        raise UserError("no experiments to rank: run some with `dvc exp run` "
                        "(docs/workflows.md#sweeps-and-the-best-run)")
    metric = resolve(found, metric)
    lower = lower_is_better(metric) if lower is None else lower
    ranked, unranked = rank(found, metric, lower)
    if ranked:
        print(f"{len(ranked)} experiment(s) ranked by {metric} ({'lower' if lower else 'higher'} is better), "
              f"ties by the lower {TIE_BREAK}; the top {min(top, len(ranked))}:")
        print(table(ranked, metric, top))
    for exp, reason in unranked:
        print(f"not ranked: {exp.name} ({reason})")
    if not ranked:
        raise UserError("no finished experiment to rank yet")
    winner = ranked[0]
    print(f"best: {winner.name}")
    if apply:
        dvc("exp", "apply", winner.name, cwd=repo)
        print(f"applied {winner.name} to the workspace (dvc exp apply)")
    if branch:
        dvc("exp", "branch", winner.name, branch, cwd=repo)
        print(f"branch {branch} holds {winner.name} (dvc exp branch)")
    return 0

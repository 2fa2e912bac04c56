"""What a study found: the best trial, and Optuna's matplotlib figures of the search as PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path

FIGURES = {  # file name: (Optuna's plot function in optuna.visualization.matplotlib, what it shows)
    "history.png": ("plot_optimization_history", "the objective of each trial, and the best so far"),
    "importances.png": ("plot_param_importances", "how much each param explains the objective (fANOVA)"),
    "parallel_coordinates.png": ("plot_parallel_coordinate", "each finished trial's params and objective"),
    "intermediate_values.png": ("plot_intermediate_values", "each trial's per-epoch reports, pruned ones cut short"),
}


def figures(study, out: Path, objective_name: str) -> tuple[list[Path], dict[str, str]]:
    """Writes FIGURES into `out`; returns the files written and, for each one Optuna could not draw (too few
    trials, one param), why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, (function, _) in FIGURES.items():
        plt.close("all")
        try:
            kwargs = {} if function == "plot_intermediate_values" else {"target_name": objective_name}
            with warnings.catch_warnings():  # a param every trial has the same value of: drawn all the same
                warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
                axes = getattr(vis, function)(study, **kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        target = out / name
        tmp = target.with_name(f".{name}.tmp.png")
        figure.savefig(tmp, dpi=100)
        tmp.replace(target)
        written.append(target)
    plt.close("all")
    return written, skipped

"""dvc.yaml checked against the code: each stage's code dependencies and params, and the columns its plots read."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from catsdogs import history, params, tables
from conftest import ROOT
from importgraph import PACKAGE, transitive_files

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_the_package_inits_hold_no_code():
    """Every import runs src/catsdogs/__init__.py and its sub-package's; they are no dependency only while they
    hold nothing but a docstring."""
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert len(inits) >= 7
    for init in inits:
        tree = ast.parse(init.read_text())
        assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body), init


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_code_dependencies_are_exactly_the_stage_imports(stage):
    spec = DVC_YAML["stages"][stage]
    module = spec["cmd"].split()[2]
    assert spec["cmd"].split()[:2] == ["python", "-m"] and module.startswith("catsdogs.stages.")
    listed = {dep for dep in spec["deps"] if dep.startswith("src/")}
    needed = transitive_files(module)
    assert listed == needed, (f"dvc.yaml's {stage} stage: add {sorted(needed - listed)}, "
                              f"remove {sorted(listed - needed)}")


def declared(stage: str) -> tuple[str, ...]:
    """The stage module's PARAMS (no stage imports Keras when it loads)."""
    return importlib.import_module(f"catsdogs.stages.{stage}").PARAMS


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_params_are_exactly_what_the_stage_declares(stage):
    assert DVC_YAML["stages"][stage]["params"] == list(declared(stage)), \
        f"dvc.yaml's {stage} params differ from PARAMS in catsdogs.stages.{stage}"


def test_what_shapes_training_is_the_train_stage_declaration_and_export_records_it():
    """The resume key and the export's metadata use params.TRAINING: a section the train stage read but
    TRAINING lacked would resume a run trained with other params."""
    assert declared("train") is params.TRAINING
    assert declared("export") == params.TRAINING + ("export",)


def stage_params_tables(text: str) -> dict[str, list[str]]:
    """{stage: the params its row names in backticks} from the Markdown table whose header is
    `| stage | ...params... |` (the README's "reads (params)" column, docs/params.md's "params")."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "stage" and len(cells) > 1 and "params" in cells[1]:
            rows = {}
            for row in lines[n + 2:]:
                if not row.startswith("|"):
                    break
                stage, keys = [cell.strip() for cell in row.strip().strip("|").split("|")][:2]
                rows[stage] = re.findall(r"`([^`]+)`", keys)
            return rows
    raise AssertionError("no | stage | params | table")


@pytest.mark.parametrize("doc", ["README.md", "docs/params.md"])
def test_the_docs_list_each_stage_params_as_dvc_yaml_does(doc):
    table = stage_params_tables((ROOT / doc).read_text())
    assert table == {stage: spec["params"] for stage, spec in DVC_YAML["stages"].items()}


def test_a_docs_table_that_drifts_is_caught():
    text = "| stage | reads (params) | writes |\n|---|---|---|\n| evaluate | `data.batch_size`, `seed` | x |\n\nafter"
    assert stage_params_tables(text) == {"evaluate": ["data.batch_size", "seed"]}


def test_the_check_follows_imports_inside_functions(tmp_path):
    """The derivation itself: a deferred `from catsdogs import x as y` counts, like a top-level import."""
    assert "src/catsdogs/training/model.py" in transitive_files("catsdogs.stages.evaluate")
    assert "src/catsdogs/training/augment.py" in transitive_files("catsdogs.stages.evaluate")  # through model.py


def test_plots_read_columns_the_stages_write():
    live = DVC_YAML["stages"]["train"]["cmd"].split("--live ")[1].split()[0]
    assert {live: {"cache": False}} in DVC_YAML["stages"]["train"]["outs"]
    written = {"metrics/predictions.csv": tables.PREDICTIONS, "metrics/roc.csv": tables.ROC}
    for name in tables.EPOCH_METRICS + tables.SYSTEM_METRICS:  # DVCLive's history files
        written[history.history_file(Path(live), name).as_posix()] = [history.STEP, history.column(name)]
    for plot in DVC_YAML["plots"]:
        if isinstance(plot, str):
            continue
        (name, spec), = plot.items()
        for path, columns in spec["y"].items():
            columns = [columns] if isinstance(columns, str) else columns
            assert set(columns) | {spec["x"]} <= set(written[path]), f"plot {name} reads a column {path} lacks"


def test_metrics_lead_with_the_training_summary_then_evaluation_then_exports_then_the_filter():
    """`dvc exp show` lists metric files in the order DVC collects them: the stages' own `metrics:` first,
    then the top-level list. The stages declare none, so the top-level order is the table's."""
    assert not [name for name, stage in DVC_YAML["stages"].items() if "metrics" in stage]
    live = DVC_YAML["stages"]["train"]["cmd"].split("--live ")[1].split()[0]
    assert DVC_YAML["metrics"] == [f"{live}/{history.SUMMARY}", "metrics/metrics.json", "metrics/export.json",
                                   "metrics/filter.json"]

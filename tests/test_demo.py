"""The offline demo, as a user runs it: `catsdogs demo` in a fresh clone."""

import json
import sys

import pytest
import yaml

from conftest import ROOT, dvc, run


@pytest.mark.slow
def test_demo_runs_the_pipeline_through_dvc_and_learns_the_synthetic_shapes(repo):
    result = run(sys.executable, "-m", "catsdogs.cli", "demo", cwd=repo)
    assert "dvc exp run -S epochs=" in result.stdout

    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["epochs"] == demo["epochs"] and params["download"]["source"] == "synthetic"

    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.95, metrics  # learnable, as the demo promises
    filtered = json.loads((repo / "metrics/filter.json").read_text())
    assert filtered["dropped"] > 0  # the odd files were there, and were dropped
    assert '"accuracy"' in dvc("exp", "show", "--json", cwd=repo).stdout
    assert "up to date" in dvc("status", cwd=repo).stdout


def test_demo_refuses_a_bad_configuration_before_running_anything(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\n")
    result = run(sys.executable, "-m", "catsdogs.cli", "demo", "--config", str(bad), cwd=repo, check=False)
    assert result.returncode == 2
    assert "epochs = 0" in result.stderr and "greater than 0" in result.stderr
    assert not (repo / "data/raw").exists()

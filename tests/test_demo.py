"""The offline demo, as a user runs it: `catsdogs demo` in a fresh clone."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, dvc, run


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_through_dvc_exp_run(repo, tmp_path):
    """The demo's mechanism, on a configuration a quarter of the demo's size (the full demo takes about
    1.5 minutes: its accuracy is reported in the README, not re-measured here)."""
    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    demo["epochs"] = 2
    demo["download"]["synthetic"]["images_per_class"] = 100
    demo["data"]["image_size"] = [32, 32]
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(demo))

    result = run(sys.executable, "-m", "catsdogs.commands.cli", "demo", "--config", str(config), cwd=repo)
    assert result.stdout.startswith("$ dvc exp run -S ") and " -S epochs=2 " in result.stdout
    assert "WARNING" not in result.stderr, result.stderr  # a quiet first screen in a fresh clone

    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["epochs"] == 2 and params["download"]["source"] == "synthetic"
    assert params["model"] == params["model"] | demo["model"]
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["images"] > 0
    assert json.loads((repo / "metrics/filter.json").read_text())["dropped"] > 0  # odd files, dropped
    assert '"accuracy"' in dvc("exp", "show", "--json", cwd=repo).stdout
    assert "up to date" in dvc("status", cwd=repo).stdout


def test_demo_refuses_a_bad_configuration_before_running_anything(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\n")
    result = run(sys.executable, "-m", "catsdogs.commands.cli", "demo", "--config", str(bad), cwd=repo, check=False)
    assert result.returncode == 2
    assert "epochs = 0" in result.stderr and "greater than 0" in result.stderr
    assert not (repo / "data/raw").exists()


def test_the_demo_drops_only_dvcs_nothing_to_restore_warnings(tmp_path):
    """What `dvc exp run` says of each output a fresh clone has not made yet goes; any other warning, and a
    progress bar's "\r", pass through unchanged."""
    from catsdogs import backend
    from catsdogs.commands.demo import NOTHING_TO_RESTORE

    lines = ("WARNING: No file hash info found for '/x/models/split.csv'. It won't be created.\n"
             "Checkout  50%|#####     |\r                    \rWARNING: No file hash info found for '/x/data/clean'."
             " It won't be created.\n"
             "WARNING: Output 'models/model.keras' is missing.\n"
             "step  50%|#####     |\rstep 100%|##########|\n")
    out = tmp_path / "stderr"
    with out.open("wb") as f:
        quiet = backend.forwarder(NOTHING_TO_RESTORE, out=f.fileno())
        # written in pieces, as a pipe may deliver them: a piece that may start the warning waits for the rest
        second = lines.index("\rWARNING") + 12
        pieces = [lines[:20], lines[20:second], lines[second:]]
        program = f"import sys, time\nfor p in {pieces!r}:\n    sys.stderr.write(p); sys.stderr.flush(); time.sleep(0.2)"
        subprocess.run([sys.executable, "-c", program], stderr=quiet.stdin, check=True)
        quiet.stdin.close()
        quiet.wait(timeout=30)
    assert out.read_bytes().decode() == ("WARNING: Output 'models/model.keras' is missing.\n"
                                         "step  50%|#####     |\rstep 100%|##########|\n")

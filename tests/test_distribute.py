"""train.distribute: the train stage on two devices per backend and in two processes over loopback, on CPUs.

Two logical CPU devices stand in for two accelerators: TensorFlow's are configured in-process by a small
`python -c` wrapper before TensorFlow initialises its devices (then the stage's own `main` runs, unchanged),
JAX's by XLA_FLAGS. The tiny image folder is chosen so that the validation images (11) do not split evenly
across two devices: the last validation batch is padded, and the validation metrics must still be exactly
the evaluate stage's, over exactly those 11 images.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ENV, ROOT, TINY_TRAINING, committed_params, stage_command
from PIL import Image

from catsdogs import history, tables
from catsdogs.errors import UserError

EXPECTED = sorted(["metrics/train/metrics.json", "models/checkpoints/save_at_1.keras",
                  "models/checkpoints/save_at_2.keras", "models/classes.json", "models/model.keras", "models/split.csv",
                  *(history.history_file(Path("metrics/train"), name).as_posix()
                    for name in tables.EPOCH_METRICS + tables.SYSTEM_METRICS)])
IMAGES = {"Cat": 30, "Dog": 29}  # 59 images: 48 for training (3 batches of 16), 11 for validation
TWO_TF_DEVICES = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from catsdogs.stages.train import main
main(sys.argv[1:])
"""
# the stages' environment, without anything that would describe another cluster or device count
BASE_ENV = {key: value for key, value in ENV.items()
            if key not in {"TF_CONFIG", "XLA_FLAGS", "KERAS_BACKEND"} and not key.startswith("KERAS_DISTRIBUTION_")}
BASE_ENV["PYTHONPATH"] = str(ROOT / "src")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images") / "PetImages"
    rng = np.random.default_rng(0)
    for name, count in IMAGES.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(folder / name / f"{i}.jpg")
    return folder


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax-cache")


def workdir(parent: Path, name: str, backend: str, distribute: str) -> Path:
    folder = parent / name
    folder.mkdir()
    params = committed_params()
    for key, value in TINY_TRAINING.items():
        params[key] = params[key] | value if isinstance(value, dict) else value
    params["train"] |= {"backend": backend, "distribute": distribute}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def command(images: Path, jax_cache: Path, wrapper: str | None = None) -> list[str]:
    train = stage_command("train", images, jax_cache=jax_cache)
    return [sys.executable, "-c", wrapper, *train[3:]] if wrapper else train


def run_at_once(runs: list[tuple[Path, str | None, dict]], images: Path, jax_cache: Path) -> list[str]:
    """Train in every (folder, wrapper, environment) at the same time (the machine's cores are shared);
    the logs, once all succeeded."""
    logs = [folder / f"train{i}.log" for i, (folder, _, _) in enumerate(runs)]
    processes = [subprocess.Popen(command(images, jax_cache, wrapper), cwd=folder, env=BASE_ENV | env,
                                  stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
                 for (folder, wrapper, env), log in zip(runs, logs)]
    try:
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0] * len(runs), "\n\n".join(text[-3000:] for text in texts)
    return texts


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for d in ("models", "metrics") for p in (folder / d).rglob("*")
                  if p.is_file())


def summary(folder: Path) -> dict:
    return history.read_summary(folder / "metrics/train")


def assert_valid(folder: Path) -> None:
    s = summary(folder)
    assert s["step"] == 2 and s["train_images_per_second"] > 0
    for key in ("final", "best"):
        assert 0 <= s[key]["acc"] <= 1 and 0 <= s[key]["val_acc"] <= 1
        assert 0 < s[key]["loss"] < 10 and 0 < s[key]["val_loss"] < 10
    assert json.loads((folder / "models/classes.json").read_text()) == ["Cat", "Dog"]
    assert [row["epoch"] for row in history.read_history(folder / "metrics/train")] == [1, 2]
    assert not any((folder / ".cache/train").iterdir())  # the finished run's work folder is gone


def assert_same_metrics(a: Path, b: Path, tolerance: float) -> None:
    for key in ("final", "best"):
        for name, value in summary(a)[key].items():
            assert summary(b)[key][name] == pytest.approx(value, abs=tolerance), (key, name)


def evaluate(folder: Path, images: Path) -> dict:
    subprocess.run(stage_command("evaluate", images), cwd=folder, env=BASE_ENV, check=True, capture_output=True,
                   timeout=300)
    return json.loads((folder / "metrics/metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(images, jax_cache, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """One device (jax), two devices (jax, tensorflow): their folders and logs."""
    parent = tmp_path_factory.mktemp("runs")
    todo = {"one": ("jax", "none", None, {}),
            "jax": ("jax", "auto", None, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
            "tensorflow": ("tensorflow", "auto", TWO_TF_DEVICES, {})}
    folders = {name: workdir(parent, name, backend, distribute) for name, (backend, distribute, _, _) in todo.items()}
    logs = run_at_once([(folders[name], wrapper, env) for name, (_, _, wrapper, env) in todo.items()],
                       images, jax_cache)
    return {name: (folders[name], log) for name, log in zip(todo, logs)}


def test_one_device_is_the_default_and_says_so(runs):
    folder, log = runs["one"]
    assert "training on 1 device (no distribution)" in log
    assert outputs(folder) == EXPECTED
    assert_valid(folder)


def test_tensorflow_mirrored_on_two_devices_writes_what_one_device_writes(runs, images):
    folder, log = runs["tensorflow"]
    assert "training on tf.distribute.MirroredStrategy over 2 devices (2 replicas)" in log
    assert outputs(folder) == outputs(runs["one"][0]) == EXPECTED
    assert_valid(folder)
    # the padded validation batch is taken back out: the log's validation metrics are the evaluate stage's,
    # over exactly the 11 validation images (this also needs the replicas' BatchNormalization statistics
    # averaged: the saved model is the one that was validated)
    metrics = evaluate(folder, images)
    assert metrics["images"] == 11
    assert metrics["accuracy"] == pytest.approx(summary(folder)["final"]["val_acc"], abs=1e-5)
    assert metrics["loss"] == pytest.approx(summary(folder)["final"]["val_loss"], abs=1e-4)


def test_jax_data_parallel_on_two_devices_trains_as_one_device(runs):
    folder, log = runs["jax"]
    assert "training on keras.distribution.DataParallel over 2 devices (2 replicas)" in log
    assert outputs(folder) == outputs(runs["one"][0]) == EXPECTED
    assert_valid(folder)
    # the global batch is split, not changed: the same training up to float rounding, and the same
    # validation metrics over the 11 images although the second device scored a padding copy
    assert_same_metrics(runs["one"][0], folder, tolerance=1e-4)


def test_tensorflow_two_workers_over_loopback(runs, images, jax_cache, tmp_path):
    """MultiWorkerMirroredStrategy from TF_CONFIG: two processes with one CPU each train exactly as two devices
    in one process do; only the chief writes outputs, the other worker's go to a temporary folder, removed."""
    folder = workdir(tmp_path, "cluster", "tensorflow", "auto")
    (tmp_path / "tmp").mkdir()
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    envs = [{"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
             "TMPDIR": str(tmp_path / "tmp")} for i in range(2)]
    logs = run_at_once([(folder, None, env) for env in envs], images, jax_cache)
    for i, log in enumerate(logs):
        assert (f"training on tf.distribute.MultiWorkerMirroredStrategy over 2 devices (2 replicas) "
                f"in 2 processes, this is process {i}") in log
    assert "process 1 is not the chief" in logs[1] and "not the chief" not in logs[0]
    assert outputs(folder) == EXPECTED
    assert_valid(folder)
    assert_same_metrics(runs["tensorflow"][0], folder, tolerance=1e-5)
    assert not list((tmp_path / "tmp").glob("catsdogs-train-*"))


@pytest.mark.slow
def test_jax_two_processes_over_loopback(runs, images, jax_cache, tmp_path):
    """keras.distribution.initialize() from KERAS_DISTRIBUTION_*: two processes with one CPU each, each
    feeding its half of every global batch, train as two devices in one process do."""
    folder = workdir(tmp_path, "cluster", "jax", "auto")
    (tmp_path / "tmp").mkdir()
    [port] = free_ports(1)
    envs = [{"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
             "KERAS_DISTRIBUTION_PROCESS_ID": str(i), "TMPDIR": str(tmp_path / "tmp")} for i in range(2)]
    logs = run_at_once([(folder, None, env) for env in envs], images, jax_cache)
    for i, log in enumerate(logs):
        assert f"keras.distribution.DataParallel over 2 devices (2 replicas) in 2 processes, this is process {i}" in log
    assert "process 1 is not the chief" in logs[1]
    assert outputs(folder) == EXPECTED
    assert_valid(folder)
    assert_same_metrics(runs["jax"][0], folder, tolerance=1e-4)
    assert not list((tmp_path / "tmp").glob("catsdogs-train-*"))


# The pieces, without training.

class FakeBatches:
    """What `distribute.EvenBatches` uses of `batches.Batches`: indices, batch_size, len, getitem, epochs."""

    def __init__(self, count: int, batch_size: int):
        self.indices, self.batch_size, self.epochs = np.arange(count), batch_size, []

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, i):
        batch = self.indices[i * self.batch_size : (i + 1) * self.batch_size]
        return batch[:, None] * 10, batch

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def on_epoch_end(self):
        self.epochs.append("end")


def test_last_training_batch_is_trimmed_and_last_validation_batch_padded():
    from catsdogs.training import distribute

    two = distribute.Plan("test", replicas=2)
    train = distribute.EvenBatches(FakeBatches(37, 16), two, "drop")
    assert len(train) == 3 and [len(train[i][1]) for i in range(3)] == [16, 16, 4] and train.images == 36
    val = distribute.EvenBatches(FakeBatches(9, 16), two, "pad")
    x, y = val[0]
    assert len(val) == 1 and y.tolist() == [*range(9), 0] and x[:, 0].tolist() == [*range(0, 90, 10), 0]
    assert (val.images, val.padding) == (9, 1)
    assert [a.tolist() for a in val.copies()] == [[[0], [0]], [0, 0]]
    # a last training batch smaller than the replica count is skipped
    four = distribute.Plan("test", replicas=4)
    assert len(distribute.EvenBatches(FakeBatches(35, 16), four, "drop")) == 2
    # epochs are passed through to the batches' own (seed, epoch) order
    train.set_epoch(3)
    train.on_epoch_end()
    assert train.batches.epochs == [3, "end"]


def test_each_process_gives_its_own_part_of_every_global_batch():
    from catsdogs.training import distribute

    parts = [distribute.EvenBatches(FakeBatches(37, 16), distribute.Plan("test", 4, 2, i), "drop") for i in range(2)]
    assert [p[0][1].tolist() for p in parts] == [list(range(8)), list(range(8, 16))]
    assert [p[2][1].tolist() for p in parts] == [[32, 33], [34, 35]]
    val = [distribute.EvenBatches(FakeBatches(9, 16), distribute.Plan("test", 4, 2, i), "pad") for i in range(2)]
    assert [v[0][1].tolist() for v in val] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 0, 0, 0]]
    assert [len(v.copies()[1]) for v in val] == [2, 2]
    # one device in one process: the batches are used as they are
    train, val = FakeBatches(9, 4), FakeBatches(5, 4)
    assert distribute.Plan().batches(train, val) == (train, val)
    wrapped = distribute.Plan("test", replicas=2).batches(train, val)
    assert [(b.remainder, b.batches) for b in wrapped] == [("drop", train), ("pad", val)]


def test_global_batch_must_split_evenly():
    from catsdogs.training import distribute

    distribute.Plan("test", replicas=4).check_batch_size(128)
    with pytest.raises(UserError) as info:
        distribute.Plan("test", replicas=3).check_batch_size(128)
    assert str(info.value) == ("params.yaml: data.batch_size = 128: the global batch must split evenly across "
                               "3 replicas; use a multiple of 3, e.g. 126 or 129")


@pytest.mark.parametrize("config, expected", [
    (None, (1, 0)),
    ({"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 2}}, (3, 2)),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}, (2, 0)),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}, (2, 1)),
])
def test_tf_config_names_the_chief_process_0(monkeypatch, config, expected):
    from catsdogs.training import distribute

    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.tf_cluster() == expected


def test_bad_tf_config_is_a_user_error(monkeypatch):
    from catsdogs.training import distribute

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(UserError, match="TF_CONFIG"):
        distribute.tf_cluster()


def test_none_ignores_a_cluster_description_and_says_so(monkeypatch, caplog):
    from catsdogs.training import distribute

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    with caplog.at_level(logging.INFO, logger="train"):
        plan = distribute.setup("none", "tensorflow")
    assert (plan.replicas, plan.processes, plan.chief) == (1, 1, True)
    assert "TF_CONFIG set, but train.distribute is none" in caplog.text
    assert "training on 1 device (no distribution)" in caplog.text


def test_params_accept_none_and_auto_only():
    from catsdogs import params

    raw = committed_params()
    assert params.parse(raw).train.distribute == "none"
    raw["train"]["distribute"] = "auto"
    assert params.parse(raw).train.distribute == "auto"
    raw["train"]["distribute"] = "mirrored"
    with pytest.raises(params.ParamsError, match=r"train.distribute = 'mirrored': input should be 'none' or 'auto'"):
        params.parse(raw)

"""catsdogs.backend: TensorFlow's C++ notices hidden from a stage's output, unless the user asks for them; the
precision policy; the backend to read a model with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from catsdogs import backend
from catsdogs.errors import UserError
from conftest import ENV, ROOT

pytest.importorskip("tensorflow")

# A program run like a stage: run_main without argv. It imports TensorFlow (which prints its notices), makes
# Grappler's remapper give up on a graph (the known-harmless ERROR line), and prints a progress bar and a
# real error line of the same format, both of which must come through.
PROGRAM = textwrap.dedent("""
    import sys
    from catsdogs.entry import run_main

    @run_main
    def main():
        import tensorflow as tf
        print("decode:  50%|#####     |\\rdecode: 100%|##########|", file=sys.stderr)
        print("E0000 00:00:1796119311.649999    4271 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: "
              "Mutation::Apply error", file=sys.stderr)
        print("E0000 00:00:1796119311.649999    4271 other.cc:12] a real failure", file=sys.stderr)
        print("done")

    main()
""")
NOTICES = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on", "remapper failed")


def run(env: dict) -> subprocess.CompletedProcess:
    """The program's output as bytes decoded without newline translation, so that a "\r" stays one."""
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, capture_output=True, timeout=120)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def test_a_stage_prints_no_tensorflow_notice_but_everything_else():
    env = {k: v for k, v in ENV.items() if not k.startswith(("TF_CPP_", "CATSDOGS_"))}
    result = run(env)
    assert result.returncode == 0 and result.stdout == "done\n"
    for notice in NOTICES:
        assert notice not in result.stderr, result.stderr
    assert "decode:  50%|#####     |\rdecode: 100%|##########|\n" in result.stderr  # a bar's "\r" kept as is
    assert "other.cc:12] a real failure" in result.stderr


def test_a_user_who_sets_tf_cpp_min_log_level_sees_what_tensorflow_prints():
    env = {k: v for k, v in ENV.items() if not k.startswith("CATSDOGS_")} | {"TF_CPP_MIN_LOG_LEVEL": "0"}
    result = run(env)
    assert result.returncode == 0
    # (TensorFlow's oneDNN notice is printed on some CPUs only: not on an AMD EPYC without AVX-512)
    assert NOTICES[0] in result.stderr and "remapper failed" in result.stderr


def test_the_stages_children_do_not_take_the_quieting_for_the_users_choice():
    """The quieting sets TF_CPP_MIN_LOG_LEVEL for its own process, and says so: a stage started from a quieted
    process (the demo runs dvc, which runs the stages) quiets its own output again."""
    env = {k: v for k, v in ENV.items() if not k.startswith("TF_CPP_")} | {
        "TF_CPP_MIN_LOG_LEVEL": "2", "CATSDOGS_QUIETED_NATIVE_LOGS": "1"}
    result = run(env)
    assert "All log messages before absl::InitializeLog()" not in result.stderr
    assert os.environ.get("CATSDOGS_QUIETED_NATIVE_LOGS") is None  # this test process was never quieted


# --- the dtype policy of `train.precision` ------------------------------------------------------------

@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_the_policy(precision):
    assert backend.precision_policy(precision) == precision


@pytest.mark.parametrize("kind, bfloat16, policy", [
    (None, False, "float32"),  # a CPU: float32, bit-for-bit repeatable
    ("tpu", False, "mixed_bfloat16"),
    ("gpu", True, "mixed_bfloat16"),  # Ampere and later
    ("gpu", False, "mixed_float16"),
])
def test_auto_precision_follows_the_accelerator(monkeypatch, kind, bfloat16, policy):
    monkeypatch.setattr(backend, "accelerator", lambda: kind)
    monkeypatch.setattr(backend, "_gpu_supports_bfloat16", lambda: bfloat16)
    assert backend.precision_policy("auto") == policy


def test_auto_precision_on_this_machine():
    expected = "float32" if backend.accelerator() is None else ("mixed_bfloat16", "mixed_float16")
    assert backend.precision_policy("auto") in expected


def test_the_backend_to_read_a_model_with_is_the_users_choice_before_what_is_installed():
    program = "import sys; from catsdogs import backend; print(backend.available(), 'keras' in sys.modules)"
    env = {k: v for k, v in ENV.items() if k != "KERAS_BACKEND"}
    chosen = subprocess.run([sys.executable, "-c", program], env=env | {"KERAS_BACKEND": "jax"}, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert chosen.stdout.split() == ["jax", "False"], chosen.stderr  # and Keras not imported to find out
    found = subprocess.run([sys.executable, "-c", program], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert found.stdout.split()[0] == "tensorflow", found.stderr  # TensorFlow first when installed


def test_a_backend_other_than_the_one_keras_was_imported_with_is_refused():
    import keras

    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    before = os.environ.get("KERAS_BACKEND")
    with pytest.raises(UserError, match=f"Keras was already imported with the {keras.backend.backend()} backend, "
                                        f"not {other}: choose the backend before importing Keras"):
        backend.select(other)
    assert os.environ.get("KERAS_BACKEND") == before  # refused before anything changed

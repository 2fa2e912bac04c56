"""Choosing Keras' backend and precision from params, before Keras is imported.

Keras reads KERAS_BACKEND once, when it is first imported, so a stage calls `select()` first and imports
the modules that use Keras after it. Nothing here imports Keras or TensorFlow at module level: with
`backend: jax` a stage must run where TensorFlow is not installed at all.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from pathlib import Path

from catsdogs.errors import UserError

log = logging.getLogger(__name__)


def select(backend: str, jax_cache: str | os.PathLike | None = None) -> None:
    """Make `backend` Keras' backend; with jax, keep compiled programs in `jax_cache` across runs."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise UserError(f"Keras was already imported with the {keras.backend.backend()} backend, "
                            f"not {backend}: choose the backend before importing Keras")
    os.environ["KERAS_BACKEND"] = backend
    try:
        import keras  # noqa: F401 - the import is what applies the choice
    except ImportError as exc:
        extra = {"tensorflow": "cpu] or .[gpu", "jax": "jax"}[backend]
        raise UserError(f"backend {backend} is not installed ({exc}); pip install -e '.[{extra}]'") from None
    if backend == "jax" and jax_cache is not None:
        import jax

        # A cold compile of the full model takes minutes on a GPU; later runs and experiments reuse it.
        jax.config.update("jax_compilation_cache_dir", str(Path(jax_cache).resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def available() -> str:
    """The backend to read a model with outside the pipeline: KERAS_BACKEND if set, else TensorFlow if it
    imports, else JAX (`catsdogs predict` with only the jax extra installed)."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    for name in ("tensorflow", "jax"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    raise UserError("reading a .keras file needs TensorFlow or JAX: pip install 'catsdogs[cpu]' (or [jax]), "
                    "or pass the ONNX export (pip install 'catsdogs[lite]')")


# The forwarder of `quiet_native_logs`, a separate process so that it outlives a crash of the stage and
# still passes on what the crash printed. It drops absl's INFO and WARNING lines (what TF_CPP_MIN_LOG_LEVEL=2
# hid before TensorFlow logged through absl, which prints them before its logging is initialized whatever
# that variable says), absl's preamble about it, and one known-harmless ERROR: Grappler's remapper giving up
# on a graph (it then runs the graph unoptimized by that one pass; the results are the same). A partial line
# that may become one of them waits for its end; any other output passes at once (progress bars use "\r").
# A caller may name one more pattern of whole lines to drop (its first argument) and how they start (its second:
# a partial line that may become one waits for its end too).
_FORWARDER = r"""
import os, re, sys
EXTRA = re.compile(sys.argv[1].encode()) if len(sys.argv) > 1 else None
HEAD = sys.argv[2].encode() if len(sys.argv) > 2 else b""  # how an EXTRA line starts, after any "\r"
NOISE = re.compile(rb"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                   rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
                   rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ meta_optimizer\.cc:\d+\] remapper failed: .*)\r?$")
PREAMBLE = b"WARNING: All log messages"

def may_be_noise(partial):
    tail = partial.rsplit(b"\r", 1)[-1]
    if HEAD and tail and tail[:len(HEAD)] == HEAD[:len(tail)]:
        return True
    if partial[:1] in (b"I", b"W", b"E") and (len(partial) == 1 or partial[1:2].isdigit()):
        return True
    return PREAMBLE.startswith(partial[:len(PREAMBLE)]) and partial[:1] == b"W"

def noise(line):
    return NOISE.fullmatch(line) or (EXTRA and EXTRA.fullmatch(line))

def write(data):
    while data:
        data = data[os.write(1, data):]

pending = b""
while chunk := os.read(0, 1 << 16):
    *lines, pending = (pending + chunk).split(b"\n")
    write(b"".join(line + b"\n" for line in lines if not noise(line)))
    if pending and not may_be_noise(pending):
        write(pending)
        pending = b""
if pending and not noise(pending):
    write(pending)
"""


_QUIETED = "CATSDOGS_QUIETED_NATIVE_LOGS"  # says that TF_CPP_MIN_LOG_LEVEL was set here, not by the user


def forwarder(extra_noise: tuple[str, str] | None = None, out: int = 2) -> subprocess.Popen:
    """A forwarding process (above) that writes what it is given to `out`, less the noise and any whole line
    matching `extra_noise`'s pattern (which starts with its literal head): give a child process its `stdin` as
    stderr, then close it and wait."""
    return subprocess.Popen([sys.executable, "-S", "-c", _FORWARDER, *(extra_noise or ())],
                            stdin=subprocess.PIPE, stdout=out, start_new_session=True)


def quiet_native_logs() -> None:
    """Hide TensorFlow's (and XLA's) C++ INFO and WARNING notices, unless the user set TF_CPP_MIN_LOG_LEVEL
    to choose what to see. This process's stderr then goes through a small forwarding process."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ and _QUIETED not in os.environ:
        return
    os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "2", _QUIETED: "1"})  # hides what TensorFlow logs once set up
    sys.stderr.flush()
    original = os.dup(2)
    forwarding = forwarder(out=original)  # its own session: Ctrl-C in a terminal does not end it first
    os.dup2(forwarding.stdin.fileno(), 2)
    forwarding.stdin.close()

    def restore() -> None:
        """At exit: give the forwarder its end of input and let it pass on the last lines before we go."""
        sys.stderr.flush()
        os.dup2(original, 2)
        try:
            forwarding.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child process still holds the pipe open: don't wait for it
            pass

    atexit.register(restore)


def accelerator() -> str | None:
    """The kind of the first local accelerator ("gpu", "tpu"), or None on a CPU-only machine."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        kinds = {device.platform for device in jax.devices()}
        return next((k for k in ("gpu", "tpu") if k in kinds), None)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else None
    return None


def _gpu_supports_bfloat16() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        capability = getattr(jax.devices()[0], "compute_capability", "0")
    else:
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        capability = ".".join(map(str, details.get("compute_capability", (0, 0))))
    return float(capability) >= 8.0  # Ampere and later


def precision_policy(precision: str) -> str:
    """The Keras dtype policy for a `train.precision` value.

    `auto` is mixed bfloat16 on a TPU or a GPU from Ampere on, mixed float16 on older GPUs, and float32 on
    a CPU: measured on the project's 2-core CPUs, mixed precision did not train faster there, and float32
    keeps CPU runs bit-for-bit repeatable.
    """
    if precision != "auto":
        return precision
    kind = accelerator()
    if kind == "tpu" or (kind == "gpu" and _gpu_supports_bfloat16()):
        return "mixed_bfloat16"
    if kind == "gpu":
        return "mixed_float16"
    return "float32"

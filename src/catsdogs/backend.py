"""Choosing Keras' backend and precision from params, before Keras is imported.

Keras reads KERAS_BACKEND once, when it is first imported, so a stage calls `select()` first and imports
the modules that use Keras after it. Nothing here imports Keras or TensorFlow at module level: with
`backend: jax` a stage must run where TensorFlow is not installed at all.
"""

from __future__ import annotations

import logging
import os
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
    if backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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

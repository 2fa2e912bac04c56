"""The trained model outside the pipeline: its three formats, the metadata file beside them, and one way to
run any of them on a batch of images.

`models/export/` (the export stage) holds the plain-Keras file, a TensorFlow SavedModel, an ONNX file and
`metadata.json`. `load()` opens any of the three with the least it needs: the `.keras` file with Keras (on
TensorFlow, or JAX where TensorFlow is absent), the SavedModel with TensorFlow alone, the ONNX file with
onnxruntime alone. Nothing here imports Keras, TensorFlow or onnxruntime at module level: `catsdogs predict`
on an ONNX file runs where only numpy, Pillow and onnxruntime are installed.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from catsdogs import classes
from catsdogs.data import images
from catsdogs.errors import UserError, first_line

METADATA_FILE = "metadata.json"
METADATA_FORMAT = "catsdogs-export/1"  # bump when the metadata's keys change
# Each format's file or folder name in the export folder.
FILES = {"keras": "model.keras", "savedmodel": "savedmodel", "onnx": "model.onnx"}
EXPORTED = ("savedmodel", "onnx")  # the formats the export stage writes besides the .keras file
INPUT_NAME = "image"
BATCH = 64  # images per call of a runtime

PREPROCESSING = images.PREPROCESSING  # what a caller does to an image file before the model sees it
OUTPUTS = {
    "keras": "logits: one column for two classes (sigmoid gives the probability of the second class), "
             "otherwise one per class (softmax gives the probabilities)",
    "savedmodel": "class probabilities (N, classes), in the order of `classes`; serving signature "
                  "'serving_default', input 'image', output 'output_0'",
    "onnx": "class probabilities (N, classes), in the order of `classes`; input 'image', first output",
}

# Which packages each runtime needs, and the install extra that brings them.
NEEDS = {
    "keras": "TensorFlow or JAX: pip install 'catsdogs[cpu]' (or [jax])",
    "savedmodel": "TensorFlow: pip install 'catsdogs[cpu]'",
    "onnx": "onnxruntime: pip install 'catsdogs[lite]'",
}
EXPORT_PACKAGES = {"savedmodel": ("tensorflow",), "onnx": ("tensorflow", "tf2onnx", "onnx", "onnxruntime")}
EXPORT_EXTRA = "pip install 'catsdogs[cpu,export]'"


def missing_for_export(fmt: str) -> list[str]:
    """The packages that writing and checking `fmt` needs and this environment cannot import."""
    missing = []
    for name in EXPORT_PACKAGES[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def describe(classes: list[str], image_size, files: list[str], trained_on: dict, checked: dict) -> dict:
    """The metadata file's contents: everything a caller needs besides the model file itself."""
    height, width = image_size
    return {
        "format": METADATA_FORMAT,
        "classes": list(classes),
        "input": {"name": INPUT_NAME, "shape": [None, height, width, 3], "dtype": "uint8",
                  "preprocessing": PREPROCESSING},
        "outputs": {fmt: OUTPUTS[fmt] for fmt in files},
        "files": {fmt: FILES[fmt] for fmt in files},
        "trained_on": trained_on,
        "checked": checked,
    }


@dataclass(frozen=True)
class Metadata:
    path: Path
    classes: list[str]
    image_size: tuple[int, int]


def read_metadata(path: Path) -> Metadata:
    """The metadata file's class names and input size; UserError naming the file if it is not one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: metadata not found (the export stage writes it beside the exports; it holds "
                        "the class names)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable metadata ({exc})") from None
    try:
        classes, shape = raw["classes"], raw["input"]["shape"]
        usable = (raw["format"] == METADATA_FORMAT and isinstance(classes, list) and len(classes) >= 2
                  and all(isinstance(c, str) for c in classes) and raw["input"]["dtype"] == "uint8"
                  and isinstance(shape, list) and len(shape) == 4 and shape[3] == 3
                  and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in shape[1:3]))
    except (KeyError, TypeError, IndexError):
        usable = False
    if not usable:
        raise UserError(f"{path}: not a metadata file of format {METADATA_FORMAT} (rerun the export stage)")
    size = (shape[1], shape[2])
    return Metadata(path, classes, size)


@dataclass
class Runner:
    """A loaded model of any format: class probabilities for a uint8 batch (N, height, width, 3)."""

    path: Path
    kind: str
    image_size: tuple[int, int]
    outputs: int  # columns of the raw output (one logit for two classes in the .keras file)
    run: Callable[[np.ndarray], np.ndarray]  # one batch -> probabilities

    @property
    def num_classes(self) -> int:
        return classes.count(self.outputs) if self.kind == "keras" else self.outputs

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        height, width = self.image_size
        if batch.dtype != np.uint8 or batch.shape[1:] != (height, width, 3):
            raise UserError(f"{self.path}: takes uint8 images of {height}x{width}x3 (height x width x channels), "
                            f"got {batch.dtype} {'x'.join(map(str, batch.shape[1:]))}")
        return np.concatenate([np.asarray(self.run(batch[i:i + BATCH]), dtype=np.float64)
                               for i in range(0, len(batch), BATCH)]) if len(batch) else np.zeros((0, self.num_classes))


def kind_of(path: Path) -> str:
    """Which format `path` holds, from its name: UserError if it names none of them or does not exist."""
    if not path.exists():
        raise UserError(f"{path}: model not found (run the pipeline first, or pass --model)")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise UserError(f"{path}: a folder without saved_model.pb: not a SavedModel")
    if path.suffix == ".keras":
        return "keras"
    if path.suffix == ".onnx":
        return "onnx"
    raise UserError(f"{path}: not a model file this command reads (a .keras file, a SavedModel folder or an .onnx file)")


def _keras(path: Path) -> Runner:
    from catsdogs import backend

    backend.select(backend.available())
    from catsdogs.training import model as model_lib

    model = model_lib.load(path)
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3:
        raise UserError(f"{path}: takes inputs of shape {shape}, not a batch of RGB images")
    return Runner(path, "keras", shape[1:3], model.output_shape[-1],
                  lambda batch: classes.probabilities(model.predict(batch, batch_size=BATCH, verbose=0)))


def _savedmodel(path: Path) -> Runner:
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(f"{path}: reading a SavedModel needs {NEEDS['savedmodel']}") from None
    try:
        loaded = tf.saved_model.load(str(path))  # kept referenced: the function needs its variables
        serve = loaded.signatures["serving_default"]
        (name, spec), = serve.structured_input_signature[1].items()
        (output, out_spec), = serve.structured_outputs.items()
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many kinds of errors for a bad folder
        raise UserError(f"{path}: not a loadable SavedModel with one image input ({first_line(exc)})") from None
    shape = tuple(spec.shape)
    if spec.dtype != tf.uint8 or len(shape) != 4 or None in shape[1:] or shape[3] != 3:
        raise UserError(f"{path}: its serving function takes {spec.dtype.name} {shape}, not uint8 RGB images")
    return Runner(path, "savedmodel", shape[1:3], int(out_spec.shape[-1]),
                  lambda batch, keep=loaded: serve(**{name: tf.constant(batch)})[output].numpy())


def _onnx(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"{path}: reading an ONNX file needs {NEEDS['onnx']}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        [given], output = session.get_inputs(), session.get_outputs()[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds of errors for a bad file
        raise UserError(f"{path}: not a loadable ONNX model with one image input ({first_line(exc)})") from None
    shape = tuple(given.shape)
    if given.type != "tensor(uint8)" or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) \
            or shape[3] != 3 or not isinstance(output.shape[-1], int):
        raise UserError(f"{path}: takes {given.type} {list(shape)}, not uint8 RGB images of a fixed size")
    return Runner(path, "onnx", shape[1:3], output.shape[-1],
                  lambda batch: session.run([output.name], {given.name: batch})[0])


LOADERS = {"keras": _keras, "savedmodel": _savedmodel, "onnx": _onnx}


def load(path) -> Runner:
    """The model at `path` (a .keras file, a SavedModel folder or an .onnx file), ready to run."""
    path = Path(path)
    return LOADERS[kind_of(path)](path)


def metadata_beside(path: Path) -> Path:
    """Where the metadata of the model at `path` is: in the folder that holds the file or the SavedModel."""
    return Path(path).parent / METADATA_FILE


def class_names(runner: Runner, classes_path=None) -> list[str]:
    """The class names of the model's outputs: from `classes_path` if given, else from the metadata file
    beside the model, else (for a .keras file) from the train stage's classes.json beside it. A metadata
    file beside the model is always checked against it."""
    metadata_path = metadata_beside(runner.path)
    meta = read_metadata(metadata_path) if metadata_path.exists() else None
    if meta:
        if meta.image_size != tuple(runner.image_size):
            raise UserError(f"{metadata_path}: says {meta.image_size[0]}x{meta.image_size[1]} images, but "
                            f"{runner.path} takes {runner.image_size[0]}x{runner.image_size[1]}")
        if len(meta.classes) != runner.num_classes:
            raise UserError(f"{metadata_path}: names {len(meta.classes)} classes, but {runner.path} "
                            f"has {runner.num_classes}")
    if classes_path is None and meta:
        return meta.classes
    if classes_path is None and runner.kind != "keras":
        read_metadata(metadata_path)  # raises: an export's class names are in its metadata
    path = Path(classes_path) if classes_path is not None else runner.path.parent / "classes.json"
    return classes.read_checked(path, runner.num_classes, runner.path)

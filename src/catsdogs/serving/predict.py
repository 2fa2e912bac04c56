"""Predictions on new photos: "This image is 94.30% cat and 5.70% dog." for two classes, in label order; for
more, the TOP most likely, most likely first: "This image is 81.20% tabby, 12.00% tiger and 4.10% lynx."

Every input is checked with the filter's own check before decoding, so a bad file is reported with the
same reason the pipeline would give, and the good files are still predicted. The model may be the `.keras`
file, the SavedModel folder or the ONNX file (catsdogs.serving.exports): on an ONNX file this needs neither
TensorFlow nor JAX.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.data import images
from catsdogs.serving import exports
from catsdogs.errors import UserError

TOP = 3  # the classes a sentence names when there are more than two



@dataclass
class Result:
    path: str
    probabilities: dict[str, float] | None = None
    error: str | None = None

    def sentence(self, top: int | None = None) -> str:
        """Both classes of two in label order, as the tutorial says it; else (or with `top`) the `top` (default
        TOP) most likely, most likely first (ties in label order)."""
        if self.error:
            return f"{self.path}: skipped: {self.error}"
        shown = list(self.probabilities.items())
        if top is not None or len(shown) > 2:
            shown = sorted(shown, key=lambda item: -item[1])[: top or TOP]
        rounded = hundredths(self.probabilities)
        parts = [f"{rounded[name] // 100}.{rounded[name] % 100:02d}% {name.lower()}" for name, _ in shown]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{self.path}: This image is {listed}."

    def as_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        best = max(self.probabilities, key=self.probabilities.get)
        return {"path": self.path, "predicted": best, "probabilities": self.probabilities}


def hundredths(probabilities: dict[str, float]) -> dict[str, int]:
    """Each class's percentage in hundredths of a percent, rounded so that all add up to exactly 100.00% (largest
    remainders first, ties in label order): rounded one by one, 99.9950% and 0.0050% printed as 100.00% and
    0.01%."""
    total = sum(probabilities.values())
    exact = {name: 10_000 * p / total for name, p in probabilities.items()}
    rounded = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: rounded[n] - exact[n])[: 10_000 - sum(rounded.values())]:
        rounded[name] += 1
    return rounded


def expand(paths) -> list[Path]:
    """Files as given, and every non-hidden file inside the given folders (recursively, sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                Path(root, name)
                for root, dirs, names in os.walk(path)
                for name in names
                if not name.startswith(".")
            )
            if not any(images.is_image_name(f.name) for f in found):
                raise UserError(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.exists():  # a file, or something else that predict() reports as not a regular file
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def _read(file: Path, max_pixels: int) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why they are not read: not a regular file (a FIFO would block), unreadable, or
    too large to be an image of at most `max_pixels` pixels (never read into memory)."""
    try:
        if not file.is_file():
            return None, "not a regular file"
        if file.stat().st_size > images.max_file_bytes(max_pixels):
            return None, f"too_large: {images.REASONS['too_large']}"
        return file.read_bytes(), None
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"


def predict(paths, model_path, classes_path=None, max_pixels: int | None = None,
            top: int | None = None) -> list[Result]:
    """One Result per file, in input order; unreadable files carry an error instead of probabilities.
    `model_path`: a .keras file, a SavedModel folder or an .onnx file; `classes_path`: the class names
    (default: the metadata file beside the model, else classes.json beside it). `max_pixels`: larger images
    are refused as decompression bombs (default: Pillow's own limit). `top`, the classes each sentence will name,
is checked against the model's classes before any image is read."""
    max_pixels = max_pixels or images.MAX_PIXELS
    files = expand(paths)
    runner = exports.load(model_path)
    class_names = exports.class_names(runner, classes_path)
    if top is not None and not 1 <= top <= len(class_names):
        raise UserError(f"--top {top}: how many classes each sentence names, 1 to {len(class_names)} (the model's "
                        "classes)")
    size = runner.image_size

    results, good, arrays = [], [], []
    for file in files:
        data, problem = _read(file, max_pixels)
        if problem:
            results.append(Result(str(file), error=problem))
            continue
        reason = images.check(data, "decode", max_pixels)
        if reason:
            results.append(Result(str(file), error=f"{reason}: {images.REASONS[reason]}"))
            continue
        results.append(Result(str(file)))
        good.append(results[-1])
        arrays.append(images.decode(data, size))
    if good:
        for result, probs in zip(good, runner.probabilities(np.stack(arrays))):
            result.probabilities = {name: round(float(p), 6) for name, p in zip(class_names, probs)}
    return results

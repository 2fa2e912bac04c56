"""The one loader and validator of params.yaml.

Every stage calls `load()` before it does any work, so a typo or a bad value stops the pipeline with one
line that names the key, the value and what is allowed, instead of failing an hour into training.
Validation is strict (no "5" for 5, no true for 1): DVC hashes the raw values, so silently coercing
them would hide real changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from catsdogs.errors import UserError

PARAMS_FILE = "params.yaml"


class ParamsError(UserError):
    """A params file that cannot be used; the message is one line meant for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Size2 = Annotated[list[PositiveInt], Len(min_length=2, max_length=2)]


class Synthetic(_Section):
    images_per_class: Annotated[int, Field(ge=1)]
    image_size: Size2
    pathology_rate: Annotated[float, Field(ge=0, lt=1)]
    seed: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered_range(self):
        if self.image_size[0] > self.image_size[1]:
            raise ValueError(f"image_size must be [smallest, largest] side, got {self.image_size}")
        if self.image_size[0] < 16:
            raise ValueError(f"image_size must allow at least 16 pixels per side, got {self.image_size}")
        return self


class Download(_Section):
    source: Literal["url", "synthetic"]
    url: Annotated[str, Field(min_length=1)]
    size: Annotated[int, Field(gt=0)] | None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None
    timeout: Annotated[float, Field(gt=0)]
    retries: Annotated[int, Field(ge=0)]
    synthetic: Synthetic


class Filter(_Section):
    method: Literal["decode", "jfif"]
    workers: Annotated[int, Field(ge=0)]
    max_pixels: PositiveInt


class Data(_Section):
    image_size: Size2
    validation_split: Annotated[float, Field(gt=0, lt=1)]
    split: Literal["keras", "hash"]
    batch_size: PositiveInt
    cache: Literal["memory", "mmap"]


class Model(_Section):
    entry_width: PositiveInt
    block_widths: Annotated[list[PositiveInt], Len(min_length=1)]
    exit_width: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    bn_momentum: Annotated[float, Field(gt=0, lt=1)]


class Augment(_Section):
    flip: bool
    rotation: Annotated[float, Field(ge=0, le=0.5)]
    where: Literal["model", "cpu"]


class Train(_Section):
    backend: Literal["tensorflow", "jax"]
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
    learning_rate: Annotated[float, Field(gt=0)]
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: Annotated[int, Field(ge=0)]
    augment: Augment
    distribute: Literal["none", "auto"] = "none"


class Params(_Section):
    epochs: PositiveInt
    seed: Annotated[int, Field(ge=0)]
    download: Download
    filter: Filter
    data: Data
    model: Model
    train: Train

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.train.warmup_epochs >= self.epochs:
            raise ValueError(
                f"train.warmup_epochs ({self.train.warmup_epochs}) must be smaller than epochs ({self.epochs})"
            )
        return self


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the key at `loc`, for listing the keys it allows."""
    model: type[BaseModel] = Params
    for key in loc[:-1]:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _one_line(error: dict, path: str) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(part) for part in loc) or "(top level)"
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = ", ".join(model.model_fields) if model else "none"
        return f"{path}: unknown key '{key}' (value {value!r}); allowed here: {allowed}"
    if kind == "missing":
        return f"{path}: missing required key '{key}'"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    hint = ""
    if isinstance(value, str) and kind in {"float_type", "int_type"}:
        try:
            float(value)
            hint = " (YAML read it as text: write numbers like 3.0e-4, with a dot and a signed exponent)"
        except ValueError:
            pass
    return f"{path}: {key} = {value!r}: {message.lower() if message[:1].isupper() else message}{hint}"


def parse(raw: object, path: str = PARAMS_FILE) -> Params:
    """Validate an already-loaded params mapping."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = _one_line(errors[0], path)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ParamsError(first + more) from None


def read_yaml(path: str | Path) -> object:
    """A YAML file's contents; ParamsError with the line and column when it is missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}") from None


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ParamsError with one line for the user."""
    return parse(read_yaml(path), str(path))

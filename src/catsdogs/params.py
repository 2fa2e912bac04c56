"""The one loader and validator of params.yaml.

Every stage calls `load()` before it does any work, so a typo or a bad value stops the pipeline with one
line that names the key, the value and what is allowed, instead of failing an hour into training.
Validation is strict (no "5" for 5, no true for 1): DVC hashes the raw values, so silently coercing
them would hide real changes.
A stage then reads only the keys its module declares (PARAMS, which dvc.yaml's `params:` for it equals),
through `for_stage`'s View: reading any other key is a programming error, not a param DVC does not see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from catsdogs.errors import UserError

PARAMS_FILE = "params.yaml"

# Keys that were renamed, and their new names: an old key is one clear error, not "unknown key".
RENAMED = {
    "download.synthetic.image_size": "download.synthetic.side_range",
    "data.split": "data.split_method",
    "data.cache": "data.cache_mode",
}


# What shapes training: the train stage's declaration (catsdogs.stages.train's PARAMS is this tuple, and
# dvc.yaml's train params equal it). An interrupted run resumes only with the same values, and the export
# stage declares them too, to record them in its metadata.
TRAINING = ("epochs", "seed", "data", "model", "train")


# The tutorial's archive (params.yaml holds these values; a test checks they agree): keeping its size and
# SHA-256 while `download.url` points at other data would only fail after the download, as a mismatch.
TUTORIAL_URL = ("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                "kagglecatsanddogs_5340.zip")
TUTORIAL_SIZE = 824887076
TUTORIAL_SHA256 = "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"


class ParamsError(UserError):
    """A params file that cannot be used; the message is one line meant for the user."""


SYNTHETIC_MIN_SIDE = 16  # pixels: the smallest side the synthetic figures are still drawn recognisably at
SYNTHETIC_MAX_SIDE = 4096  # pixels: each image is drawn in memory, in float32 (about 200 MB at this side)
# The synthetic archive's layout by default: the real archive's (its bytes are the same as before these existed).
SYNTHETIC_CLASSES = ("Cat", "Dog")
SYNTHETIC_TOP_FOLDER = "PetImages"
SYNTHETIC_FORMATS = ("zip", "tar.gz")
SYNTHETIC_MAX_CLASSES = 12  # the generator draws this many distinct figures (catsdogs.data.synthetic)


def synthetic_count(rate: float, images_per_class: int, num_classes: int = 2) -> int:
    """How many of the synthetic archive's num_classes * images_per_class images a rate stands for (rounded)."""
    return int(rate * num_classes * images_per_class + 0.5)


def _folder_name(name) -> bool:
    """A name that is one visible folder on every file system, which the filter does not skip."""
    return (isinstance(name, str) and name.strip() == name and name not in ("", ".", "..", "__MACOSX")
            and not name.startswith(".") and not any(c in name for c in '/\\:*?"<>|') and name.isprintable())


def _check_layout(classes, format, top_folder) -> int:
    """The synthetic archive's layout (classes, container, top folder); returns the number of classes."""
    if (not isinstance(classes, (list, tuple)) or not 2 <= len(classes) <= SYNTHETIC_MAX_CLASSES
            or not all(_folder_name(c) for c in classes)):
        raise ValueError(f"classes must be a list of 2 to {SYNTHETIC_MAX_CLASSES} folder names (no '/', '\\', "
                         f"':' or leading '.'), got {classes!r}")
    if len({c.casefold() for c in classes}) < len(classes):
        raise ValueError(f"classes must differ in more than case (they are folders), got {list(classes)!r}")
    if format not in SYNTHETIC_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SYNTHETIC_FORMATS)}, got {format!r}")
    if top_folder is not None and not _folder_name(top_folder):
        raise ValueError(f"top_folder must be one folder name (no '/', '\\', ':' or leading '.') or null, "
                         f"got {top_folder!r}")
    return len(classes)


def check_synthetic(images_per_class, side_range, pathology_rate, seed, flipped_rate=0.0, non_pet_rate=0.0,
                    duplicate_rate=0.0, *, classes=SYNTHETIC_CLASSES, format=SYNTHETIC_FORMATS[0],
                    top_folder=SYNTHETIC_TOP_FOLDER) -> tuple[int, int]:
    """What the synthetic archive's generator accepts (download.synthetic; catsdogs.data.synthetic checks its
    arguments with it too); ValueError naming the argument otherwise. Returns the smallest and largest side."""
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class must be an integer >= 1, got {images_per_class!r}")
    n = _check_layout(classes, format, top_folder)
    try:
        low, high = side_range
    except (TypeError, ValueError):
        low = high = None
    if not all(isinstance(side, int) and not isinstance(side, bool) for side in (low, high)):
        raise ValueError(f"side_range must be [smallest, largest] side in whole pixels, got {side_range!r}")
    if low > high:
        raise ValueError(f"side_range must be [smallest, largest] side, got {list(side_range)}")
    if low < SYNTHETIC_MIN_SIDE:
        raise ValueError(f"side_range must allow at least {SYNTHETIC_MIN_SIDE} pixels per side, got {list(side_range)}")
    if high > SYNTHETIC_MAX_SIDE:
        raise ValueError(f"side_range must stay within {SYNTHETIC_MAX_SIDE} pixels per side, got {list(side_range)}")
    if isinstance(pathology_rate, bool) or not isinstance(pathology_rate, (int, float)) or not 0 <= pathology_rate < 1:
        raise ValueError(f"pathology_rate must be a number in [0, 1), got {pathology_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rates = {"flipped_rate": flipped_rate, "non_pet_rate": non_pet_rate, "duplicate_rate": duplicate_rate}
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 0.5:
            raise ValueError(f"{name} must be a number in [0, 0.5), got {rate!r}")
    # Every fault takes a good image of its own, and each duplicate a good original of its class besides. G good
    # images left for D duplicates hold D pairs of one class whatever the classes' shares when 2D <= G - (N - 1)
    # (at most N classes have an odd one out); for two classes that is 2D < G.
    total = n * images_per_class
    taken = sum(synthetic_count(rate, images_per_class, n) for rate in (pathology_rate, flipped_rate, non_pet_rate))
    duplicates = synthetic_count(duplicate_rate, images_per_class, n)
    if taken > total:
        raise ValueError(f"pathology_rate, flipped_rate and non_pet_rate take {taken} of the {total} images: "
                         "lower them")
    if duplicates and 2 * duplicates > total - taken - (n - 1):
        raise ValueError(f"duplicate_rate {duplicate_rate:g} asks for {duplicates} duplicates of the {total} images, "
                         f"each with a good original of its class besides; {total - taken} are left by the other "
                         f"rates, room for {max(0, (total - taken - n + 1) // 2)}: lower the rates")
    return low, high


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Size2 = Annotated[list[PositiveInt], Len(min_length=2, max_length=2)]


class Synthetic(_Section):
    images_per_class: int
    side_range: list[int]  # [smallest, largest] side of each image, in pixels
    pathology_rate: float
    seed: int
    # Faults a data review should find (catsdogs.data.synthetic.faults records which images have them); 0: none
    flipped_rate: float = 0.0  # share of images filed under the other class
    non_pet_rate: float = 0.0  # share of images with no figure in them
    duplicate_rate: float = 0.0  # share of images that are a re-encoded, resized, cropped copy of another
    # The layout: class folders (one figure each), the container, the folder above the classes (None: none)
    classes: list[str] = list(SYNTHETIC_CLASSES)
    format: Literal[SYNTHETIC_FORMATS] = SYNTHETIC_FORMATS[0]
    top_folder: str | None = SYNTHETIC_TOP_FOLDER

    @model_validator(mode="after")
    def _generator_accepts(self):
        check_synthetic(self.images_per_class, self.side_range, self.pathology_rate, self.seed, self.flipped_rate,
                        self.non_pet_rate, self.duplicate_rate, classes=self.classes, format=self.format,
                        top_folder=self.top_folder)
        return self


class Download(_Section):
    source: Literal["url", "synthetic"]
    url: Annotated[str, Field(min_length=1)]
    size: Annotated[int, Field(gt=0)] | None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None
    timeout: Annotated[float, Field(gt=0)]
    retries: Annotated[int, Field(ge=0)]
    synthetic: Synthetic

    @model_validator(mode="after")
    def _not_the_tutorials_checks(self):
        """A mirror of the tutorial's archive keeps its file name, and its size and SHA-256 hold; any other
        URL with them is the user's data, checked against the tutorial's figures."""
        mirror = self.url.rstrip("/").rsplit("/", 1)[-1] == TUTORIAL_URL.rsplit("/", 1)[-1]
        if self.source != "url" or mirror:
            return self
        kept = [key for key, value, tutorial in (("size", self.size, TUTORIAL_SIZE),
                                                  ("sha256", self.sha256, TUTORIAL_SHA256)) if value == tutorial]
        if kept:
            keys = " and ".join(f"download.{key}" for key in kept)
            raise ValueError(f"download.url is {self.url}, not the tutorial's archive, but {keys} "
                             f"{'are' if len(kept) > 1 else 'is'} still the tutorial archive's: set "
                             f"{'them' if len(kept) > 1 else 'it'} to null (or to your archive's)")
        return self


class Filter(_Section):
    method: Literal["decode", "jfif"]
    workers: Annotated[int, Field(ge=0)]
    max_pixels: PositiveInt | None  # None: Pillow's own limit (catsdogs.data.images.MAX_PIXELS)
    root: Annotated[str, Field(min_length=1)] | None = None  # None: found (catsdogs.data.sources.find_root)


class Data(_Section):
    image_size: Size2
    validation_split: Annotated[float, Field(gt=0, lt=1)]
    split_method: Literal["keras", "hash"]
    batch_size: PositiveInt
    cache_mode: Literal["memory", "mmap"]


class Model(_Section):
    entry_width: PositiveInt
    block_widths: Annotated[list[PositiveInt], Len(min_length=1)]
    exit_width: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    bn_momentum: Annotated[float, Field(gt=0, lt=1)]


class Augmentation(_Section):
    flip: bool
    rotation: Annotated[float, Field(ge=0, le=0.5)]
    where: Literal["model", "cpu"]


class Train(_Section):
    backend: Literal["tensorflow", "jax"]
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
    learning_rate: Annotated[float, Field(gt=0)]
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: Annotated[int, Field(ge=0)]
    augment: Augmentation
    distribute: Literal["none", "auto"] = "none"


class Export(_Section):
    backend: Literal["tensorflow", "jax"]  # Keras' backend for reading the model and exporting it
    formats: list[Literal["savedmodel", "onnx"]]
    tolerance: Annotated[float, Field(gt=0, lt=1)]

    @model_validator(mode="after")
    def _formats_need_tensorflow(self):
        if self.formats and self.backend != "tensorflow":
            raise ValueError(f"formats {', '.join(self.formats)} need backend: tensorflow (SavedModel and ONNX are "
                             f"TensorFlow's exports); with backend: {self.backend}, set formats: []")
        return self


class Params(_Section):
    epochs: PositiveInt
    seed: Annotated[int, Field(ge=0)]
    download: Download
    filter: Filter
    data: Data
    model: Model
    train: Train
    export: Export

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
    if isinstance(value, dict):  # a rule across fields: its message names them; the section is no value
        where = f"{key}: " if loc else ""
        return f"{path}: {where}{_message(error)}"
    return f"{path}: {key} = {value!r}: {_message(error)}{_hint(value, kind)}"


def _message(error: dict) -> str:
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message[:1].lower() + message[1:]


def _hint(value, kind: str) -> str:
    if isinstance(value, str) and kind in {"float_type", "int_type"}:
        try:
            float(value)
            return " (quoted, so YAML reads it as text: write the number without quotes)"
        except ValueError:
            pass
    return ""


def _renamed_key(raw: dict) -> tuple[str, str] | None:
    """The first old key in `raw`, and its new name."""
    for old, new in RENAMED.items():
        *sections, leaf = old.split(".")
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            return old, new
    return None


def parse(raw: object, path: str = PARAMS_FILE) -> Params:
    """Validate an already-loaded params mapping."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    renamed = _renamed_key(raw)
    if renamed:
        raise ParamsError(f"{path}: {renamed[0]} was renamed to {renamed[1]}: rename the key (its values are "
                          "unchanged)")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = _one_line(errors[0], path)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ParamsError(first + more) from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-05` as the number YAML 1.2 says it is: DVC (ruamel) reads it so, and
    writes small `-S` values that way (`-S train.learning_rate=0.00001`), which PyYAML alone takes for text."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def read_yaml(path: str | Path) -> object:
    """A YAML file's contents; ParamsError with the line and column when it is missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}") from None


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ParamsError with one line for the user."""
    return parse(read_yaml(path), str(path))


class UndeclaredParam(AttributeError):
    """A stage read a params key it does not declare: a programming error (dvc.yaml would not re-run the
    stage when that key changes), never the user's."""


class View:
    """The keys of validated params that a stage declares, read-only: `view.data.batch_size` when the stage
    declares `data.batch_size` (or `data`); any other key raises UndeclaredParam naming the key and the
    declaration. A declared section comes back as its (frozen) section model."""

    __slots__ = ("_section", "_tree", "_stage", "_declared", "_prefix")

    def __init__(self, validated: BaseModel, declared: Sequence[str], stage: str, _tree=None, _prefix=""):
        for name, value in (("_section", validated), ("_stage", stage), ("_declared", tuple(declared)),
                            ("_tree", _key_tree(declared, stage) if _tree is None else _tree), ("_prefix", _prefix)):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # no params key starts so: a dunder probed by copy or pickle, or a slot not set
            raise AttributeError(name)
        if name not in self._tree:
            raise self._undeclared(self._prefix + name)
        value = getattr(self._section, name)
        below = self._tree[name]
        return value if below is True else View(value, self._declared, self._stage, below, f"{self._prefix}{name}.")

    def __setattr__(self, name, value):
        raise AttributeError(f"the {self._stage} stage's params are read-only")

    def __repr__(self) -> str:
        return f"View({self._stage}: {', '.join(self._declared)})"

    def values(self, keys: Sequence[str] | None = None) -> dict:
        """The declared keys' values (or those of `keys`, each declared) as plain data nested like
        params.yaml, in the file's order: for hashing and for recording. `keys` only on a stage's whole view."""
        if keys is not None and self._prefix:
            raise ValueError(f"values({keys!r}) of params section {self._prefix.rstrip('.')}: ask the whole view")
        wanted = self._tree if keys is None else _key_tree(keys, self._stage)
        for key in _leaves(wanted):
            if not any(key == d or key.startswith(d + ".") for d in _leaves(self._tree)):
                raise self._undeclared(key)
        return self._section.model_dump(include=wanted)

    def _undeclared(self, key: str) -> UndeclaredParam:
        return UndeclaredParam(f"the {self._stage} stage reads params key '{key}', which it does not declare: add "
                               f"it to PARAMS in catsdogs.stages.{self._stage} and to the stage's params in dvc.yaml "
                               f"(declared: {', '.join(self._declared)})")


def _key_tree(keys: Sequence[str], stage: str) -> dict:
    """{"data": {"batch_size": True}, "seed": True} for ("data.batch_size", "seed"); ValueError for a key
    params.yaml has no place for, or one declared twice (or inside a section declared whole)."""
    tree: dict = {}
    for key in keys:
        *sections, leaf = key.split(".")
        model = Params
        for part in [*sections, leaf]:
            if model is None or part not in model.model_fields:
                raise ValueError(f"the {stage} stage declares params key '{key}', which params.yaml has no place for")
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
            if node is True:
                break
        if node is True or leaf in node:
            raise ValueError(f"the {stage} stage declares params key '{key}' twice (or inside a section it declares)")
        node[leaf] = True
    return tree


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    """The dotted keys of a key tree: ["data.batch_size", "seed"]."""
    return [leaf for name, below in tree.items()
            for leaf in ([prefix + name] if below is True else _leaves(below, f"{prefix}{name}."))]


def for_stage(stage: str, declared: Sequence[str], path: str | Path = PARAMS_FILE) -> View:
    """What a stage reads its params through: the whole file validated (`load`), then the view of the keys
    the stage declares (its module's PARAMS, which dvc.yaml's `params:` for it equals)."""
    return View(load(path), declared, stage)

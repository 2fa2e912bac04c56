"""The search space: a YAML file in git (configs/search.yaml) that maps params.yaml keys to Optuna distributions.

    train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    train.warmup_epochs: {type: int, low: 0, high: 2}
    train.lr_schedule:   {type: categorical, choices: [constant, cosine]}

Each entry is checked twice before a trial is asked for: by its own shape (strict, as params.yaml is), and
against the params schema, by validating params.yaml with each bound or choice put in. So a range outside what
the params allow fails here, in one line, not as a failed trial an hour later.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal, Union

from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from catsdogs import params
from catsdogs.errors import UserError

DEFAULT_FILE = "configs/search.yaml"


class SpaceError(UserError):
    """A search space that cannot be used; one line for the user."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FloatRange(_Entry):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntRange(_Entry):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: Annotated[int, Field(gt=0)] = 1

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self


class Choices(_Entry):
    type: Literal["categorical"]
    choices: Annotated[list[Union[bool, int, float, str]], Len(min_length=1)]

    @model_validator(mode="after")
    def _distinct(self):
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices: each choice once")
        return self


def _check_range(low, high, log, step) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low above 0 (low is {low})")
    if log and step is not None:
        raise ValueError("log: true and step cannot be combined (Optuna's rule)")


Entry = Annotated[Union[FloatRange, IntRange, Choices], Field(discriminator="type")]
_ENTRY = TypeAdapter(Entry)


def load(path: str | Path, base: dict) -> dict[str, FloatRange | IntRange | Choices]:
    """The space in `path`, checked by shape and against `base` (params.yaml as read, itself valid)."""
    raw = params.read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path}: expected a mapping of params keys to distributions, e.g. "
                         "'train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}'")
    space = {}
    for key, value in raw.items():
        try:
            space[key] = _ENTRY.validate_python(value)
        except ValidationError as exc:
            raise SpaceError(f"{path}: {key}: {_entry_message(exc, value)}") from None
        check_against(path, key, space[key], base)
    return space


def _entry_message(exc: ValidationError, value) -> str:
    if not isinstance(value, dict) or value.get("type") not in ("float", "int", "categorical"):
        return (f"{value!r} is not a distribution: give a mapping with type: float, int or categorical "
                "(docs/tune.md#the-search-space)")
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"][1:])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        model = {"float": FloatRange, "int": IntRange, "categorical": Choices}[value["type"]]
        return f"unknown key '{where}'; a {value['type']} allows {', '.join(model.model_fields)}"
    if error["type"] == "missing":
        return f"missing '{where}'"
    if where:
        return f"{where} = {error.get('input')!r}: {message[:1].lower()}{message[1:]}"
    return message


def values_to_check(entry) -> list:
    """What params.yaml must accept for the whole range to be usable: the bounds, or every choice."""
    return list(entry.choices) if isinstance(entry, Choices) else [entry.low, entry.high]


def check_against(path, key: str, entry, base: dict) -> None:
    node = base
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the top level"
            allowed = ", ".join(node) if isinstance(node, dict) else "none (not a section)"
            raise SpaceError(f"{path}: unknown params key '{key}' (params.yaml has no '{part}' in {where}; there: "
                             f"{allowed})")
        node = node[part]
    if isinstance(node, dict):
        raise SpaceError(f"{path}: {key} is a section of params.yaml, not one param: tune its keys "
                         f"({', '.join(f'{key}.{k}' for k in node)})")
    for value in values_to_check(entry):
        candidate = with_value(base, key, value)
        try:
            params.parse(candidate)
        except params.ParamsError as exc:
            what = "choice" if isinstance(entry, Choices) else ("low" if value == entry.low else "high")
            reason = str(exc).removeprefix(f"{params.PARAMS_FILE}: ")
            raise SpaceError(f"{path}: {key}: {what} {value!r} is outside what params.yaml allows ({reason})") \
                from None


def with_value(tree: dict, key: str, value) -> dict:
    """A copy of the nested `tree` with the dotted `key` set to `value`."""
    tree = copy.deepcopy(tree)
    *sections, leaf = key.split(".")
    node = tree
    for section in sections:
        node = node[section]
    node[leaf] = value
    return tree


def distributions(space: dict) -> dict:
    """Optuna's distributions for `study.ask`."""
    import optuna

    found = {}
    for key, entry in space.items():
        if isinstance(entry, FloatRange):
            found[key] = optuna.distributions.FloatDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
        elif isinstance(entry, IntRange):
            found[key] = optuna.distributions.IntDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
        else:
            found[key] = optuna.distributions.CategoricalDistribution(entry.choices)
    return found


def canonical(space: dict) -> str:
    """The space as one JSON text, the same for the same space however the file is written: what a study
    records, and what a later run's file is compared with."""
    return json.dumps({key: entry.model_dump() for key, entry in sorted(space.items())}, sort_keys=True)


def fingerprint(space: dict) -> str:
    return hashlib.sha256(canonical(space).encode()).hexdigest()[:12]


def override(key: str, value) -> str:
    """One `dvc exp run -S` argument that puts `value` at `key`, written so that both DVC's (Hydra's) parser and
    params.yaml's YAML read it back as the same type and value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    else:
        text = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{key}={text}"

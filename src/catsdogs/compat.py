"""Whether the installed Keras is one that catsdogs' patches of Keras internals were verified with.

`catsdogs.training.distribute` replaces private parts of Keras' TensorFlow trainer (`reduce_per_replica`,
`Model._symbolic_build` and `_maybe_symbolic_build`) to work around Keras bugs; any Keras release may rename
or change them, and "same params + same data → same metrics" holds only for the same library versions. So
the train stage checks first, and stops with one line instead of failing deep inside `fit` or training
differently.

The verified range has one definition: the `keras` requirement in pyproject.toml, read back from the
installed catsdogs package's metadata (a changed range takes effect on reinstalling, which every install
command in docs/environment.md does). requirements.lock pins a Keras within it. Keras is not imported at
module level: the version check must not choose Keras' backend.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from catsdogs.errors import UserError

EXTRA = "pipeline"  # pyproject.toml's extra that holds the pipeline's Keras

INSTALL = "install the locked environment: pip install --require-hashes -r requirements.lock (see docs/environment.md)"

# What catsdogs.training.distribute patches, by backend: (module, attribute path). Nothing is patched for jax.
PATCHED = {
    "tensorflow": [
        ("keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
        ("keras", "Model._symbolic_build"),
        ("keras", "Model._maybe_symbolic_build"),
    ],
}


def installed_keras() -> str:
    """The installed Keras' version, from its metadata (without importing it)."""
    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        raise UserError(f"Keras is not installed: {INSTALL}") from None


def verified_range(distribution: str = "catsdogs") -> SpecifierSet:
    """The Keras versions that `distribution` declares it works with: its `keras` requirement (in the
    `pipeline` extra: a lean install for predicting with onnxruntime has no Keras)."""
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        raise UserError(f"{distribution} is not installed, so the Keras versions it supports are unknown: "
                        f"{INSTALL}, then pip install --no-deps --no-build-isolation -e .") from None
    for line in requires:
        requirement = Requirement(line)
        applies = requirement.marker is None or requirement.marker.evaluate({"extra": EXTRA})
        if requirement.name.lower() == "keras" and applies:
            return requirement.specifier
    raise LookupError(f"{distribution}'s metadata declares no keras requirement")


def describe(specifiers: SpecifierSet) -> str:
    """`>=3.10,<3.16`: the lower bounds first (packaging sorts them the other way)."""
    return ",".join(sorted(map(str, specifiers), key=lambda s: (not s.startswith(">"), s)))


def check_keras(backend: str) -> None:
    """Raise UserError unless the installed Keras is within the verified range and, with `backend`, has
    every internal that catsdogs.training.distribute patches. The train stage calls it first, after
    `catsdogs.backend.select(backend)`."""
    installed, verified = installed_keras(), verified_range()
    try:
        inside = verified.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        inside = False
    if not inside:
        raise UserError(f"keras {installed} is installed, but catsdogs' patches of Keras internals are "
                        f"verified only with keras{describe(verified)}; {INSTALL}")
    missing = [f"{module}.{path}" for module, path in PATCHED.get(backend, []) if not _exists(module, path)]
    if missing:
        raise UserError(f"keras {installed} has no {', '.join(missing)}, which catsdogs patches (verified with "
                        f"keras{describe(verified)}); {INSTALL}")


def _exists(module: str, path: str) -> bool:
    try:
        value = importlib.import_module(module)
    except ImportError:
        return False
    for name in path.split("."):
        if not hasattr(value, name):
            return False
        value = getattr(value, name)
    return True

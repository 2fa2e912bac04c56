"""Where the caches live that every workspace and experiment of a user shares: decoded images and JAX's
compiled programs.

A queued experiment (`dvc exp run --queue`) runs in a fresh copy of the repository, so a cache inside the
workspace is empty there: each run would decode every image again and compile from cold. These caches are
per user instead, where the XDG Base Directory spec puts caches: `$CATSDOGS_CACHE_DIR`, else
`$XDG_CACHE_HOME/catsdogs`, else `~/.cache/catsdogs`. Their keys are content (catsdogs.data.imagecache), so
one folder serves every copy. The root holds a CACHEDIR.TAG, so backup tools skip it and `catsdogs cache
--clear` removes only folders this project made.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from catsdogs.errors import UserError

ENV = "CATSDOGS_CACHE_DIR"  # the one setting: where the caches go (tests point it at a temporary folder)
IMAGES, JAX = "images", "jax"  # the decoded-image cache, JAX's persistent compilation cache
KINDS = (IMAGES, JAX)
# the stages' and `catsdogs review`'s --image-cache: without it, catsdogs.data.imagecache uses path(IMAGES)
IMAGES_OPTION_HELP = "folder of the decoded-image cache (default: the one every experiment shares, `catsdogs cache`)"
TAG = "CACHEDIR.TAG"
TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"  # https://bford.info/cachedir/
            "# catsdogs' caches (decoded images, JAX's compiled programs): safe to delete; `catsdogs cache --clear`\n")


def root() -> Path:
    """The folder of every cache, from the environment (above); a relative CATSDOGS_CACHE_DIR is refused, as
    it would name another folder in every experiment's copy."""
    given = os.environ.get(ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_absolute():
            raise UserError(f"{ENV}={given}: not an absolute path; each experiment runs in another folder, so "
                            "the cache would be another each time: give an absolute one")
        return path
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # the spec ignores a relative one
    return base / "catsdogs"


def path(kind: str) -> Path:
    """The folder of one cache (IMAGES or JAX), which may not exist yet."""
    return root() / kind


def folder(kind: str) -> Path:
    """The folder of one cache, created (and the root tagged) if need be: a stage's default."""
    where = path(kind)
    try:
        where.mkdir(parents=True, exist_ok=True)
        tag = where.parent / TAG
        if not tag.exists():
            tag.write_text(TAG_TEXT, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{where}: cannot hold the {kind} cache ({exc.strerror or exc}): set {ENV} to a "
                        "folder of yours") from None
    return where


def usage(where: Path) -> tuple[int, int]:
    """(files, bytes) under `where`, (0, 0) if it does not exist."""
    files = size = 0
    for dirpath, _, names in os.walk(where):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:  # removed meanwhile (a run replacing a cache file)
                pass
    return files, size


def clear() -> list[tuple[str, Path, int, int]]:
    """Remove every cache folder; (kind, folder, files, bytes) of each removed. A folder whose root lacks the
    tag was not made here (a mistaken CATSDOGS_CACHE_DIR): it is left, and that is the user's to fix."""
    present = [(kind, path(kind)) for kind in KINDS if path(kind).exists()]
    if present and not (root() / TAG).is_file():
        raise UserError(f"{root()}: no {TAG}, so not a folder of catsdogs' caches: nothing removed (check {ENV}, "
                        f"or remove {', '.join(str(p) for _, p in present)} yourself)")
    removed = []
    for kind, where in present:
        files, size = usage(where)
        shutil.rmtree(where)
        removed.append((kind, where, files, size))
    return removed


def human(size: int) -> str:
    """Bytes as people read them: 0 B, 512 B, 3.4 MB, 1.2 GB (decimal units, as `du -h --si` and file managers)."""
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"

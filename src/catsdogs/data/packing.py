"""A folder of class folders packed into a deterministic zip: its SHA-256, the data version, changes
exactly when a file in it does, never with timestamps, permissions, owners or the machine that packed it.

Kept apart from catsdogs.data.sources and light on imports: the download stage packs, and whatever it
imports is a dependency of the stage (dvc.yaml), whose change would download the real archive again.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

from catsdogs.atomic import atomic_path
from catsdogs.errors import UserError

# Zip's fixed metadata for every member: the earliest date zip can store, a regular file with mode 0644,
# made on "Unix" (zip's name for the system, whatever system this is).
DATE = (1980, 1, 1, 0, 0, 0)
MODE = (stat.S_IFREG | 0o644) << 16
UNIX = 3


def pack(folder: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Pack the files under `folder` into the zip `dest`; return the hidden files left out.

    Names are relative to `folder` (its own name is not part of the data), sorted by code point, stored
    uncompressed (images are compressed already), with DATE, MODE and UNIX for every member. Hidden files
    and folders (.DS_Store, .git) are left out: a file browser rewrites them when it shows the folder.
    A symlink, or anything but a regular file or folder, is an error: the packed data would not be what the
    folder shows.
    """
    folder = Path(folder)
    files, hidden = _walk(folder)
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in files:
            info = zipfile.ZipInfo(name, DATE)
            info.create_system, info.external_attr = UNIX, MODE
            path = folder / name
            try:
                info.file_size = path.stat().st_size  # zipfile decides ZIP64 from it, as writestr would
                with open(path, "rb") as src, zf.open(info, "w") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            except OSError as exc:
                raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return hidden


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files to pack, hidden files and folders left out), relative to `folder` with '/', sorted."""

    def refuse(exc: OSError):
        raise UserError(f"{exc.filename}: folder cannot be read ({exc.strerror or exc})")

    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files, hidden = [], []
    for root, dirs, names in os.walk(folder, onerror=refuse):
        for name in sorted(dirs + names):
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if name.startswith("."):
                hidden.append(rel)
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise UserError(f"{path}: a symlink; put the file itself in the folder (packed data must be "
                                "what the folder holds)")
            if stat.S_ISREG(mode):
                files.append(rel)
            elif not stat.S_ISDIR(mode):
                raise UserError(f"{path}: not a regular file (a device, FIFO or socket); remove it")
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(files), sorted(hidden)

"""Reading the Cats vs Dogs zip safely: which members are class images, and which must never be written.

The archive is untrusted input. A member's name decides where it is written, so names that are absolute,
climb out with '..', or belong to symlink entries are refused here, before anything touches the disk.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from catsdogs.errors import UserError
from catsdogs.images import is_image_name

IMAGES_ROOT = "PetImages"


class ArchiveError(UserError):
    pass


@dataclass
class Members:
    """The archive's members sorted into class images and everything else (with why it is ignored)."""

    images: list[tuple[str, str]] = field(default_factory=list)  # (member name, class name)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)

    @property
    def classes(self) -> list[str]:
        return sorted({cls for _, cls in self.images})


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink entry"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path escapes the archive ('..')"
    return None


def open_zip(path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: archive not found (run the download stage first)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None


def list_members(archive: zipfile.ZipFile) -> Members:
    """Sort members: `PetImages/<class>/<image>` are images, the rest is ignored with a reason."""
    members = Members()
    infos = archive.infolist()
    last = {info.filename: i for i, info in enumerate(infos)}  # reading a name gives its last entry
    for i, info in enumerate(infos):
        if info.is_dir():
            continue
        reason = _unsafe(info)
        if reason is None and last[info.filename] != i:
            reason = "duplicate member name (a later entry of the same name is used)"
        parts = PurePosixPath(info.filename).parts
        if reason is None:
            if len(parts) != 3 or parts[0] != IMAGES_ROOT:
                reason = f"outside {IMAGES_ROOT}/<class>/"
            elif parts[1].startswith("."):
                reason = "hidden folder"
            elif not is_image_name(parts[2]):
                reason = "not an image file name"
        if reason is None:
            members.images.append((info.filename, parts[1]))
        else:
            members.ignored.append((info.filename, reason))
    if len(members.classes) < 2:
        found = ", ".join(members.classes) or "none"
        raise ArchiveError(
            f"{archive.filename}: expected image folders {IMAGES_ROOT}/<class>/ for at least two classes, "
            f"found {found}"
        )
    return members

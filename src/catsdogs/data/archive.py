"""Reading a zip safely: which members must never be written, and how the cleaned files are named.

The archive is untrusted input. A member's name decides where it is written, so names that are absolute,
climb out with '..', or belong to symlink entries are refused here, before anything touches the disk.
"""

from __future__ import annotations

import stat
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from catsdogs.errors import UserError


class ArchiveError(UserError):
    pass


@dataclass
class Members:
    """The archive's members sorted into class images and everything else (with why it is ignored)."""

    images: list[tuple[str, str]] = field(default_factory=list)  # (member name, class name)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)
    root: str = ""  # the folder holding the class folders ("" for the archive's top level)

    @property
    def classes(self) -> list[str]:
        return sorted({cls for _, cls in self.images})


SYMLINK = "symlink entry"
DUPLICATE = "duplicate member name (a later entry of the same name is used)"
HIDDEN = "hidden folder"
NOT_AN_IMAGE = "not an image file name"


def is_absolute(name: str) -> bool:
    """A name rooted anywhere but in the archive (/etc/x, a Windows share, C:x): the one rule, for the
    archive's members and the exclusion list's."""
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def climbs_out(name: str) -> bool:
    """A name with a '..' part, with either slash as the separator (zip tools on Windows write '\\')."""
    return ".." in PurePosixPath(name.replace("\\", "/")).parts


def unsafe_name(name: str) -> str | None:
    """Why a member's name must never be written (absolute, or climbing out with '..'), or None.
    Zip and tar members alike (catsdogs.data.sources)."""
    if is_absolute(name):
        return "absolute path"
    if climbs_out(name):
        return "path escapes the archive ('..')"
    return None


def unsafe_entry(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return SYMLINK
    return unsafe_name(info.filename)


def open_zip(path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: archive not found (run the download stage first)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None


def name_key(folder: Path):
    """How the file system holding `folder` compares names: a function from a name to what it really stores
    it under. On a case-insensitive one (macOS, Windows) "a.jpg" and "A.jpg" are one file."""
    probe = folder / ".Probe-\u00e9"
    probe.touch()
    try:
        folds_case = (folder / ".pROBE-\u00e9").exists()
        folds_unicode = (folder / ".Probe-e\u0301").exists()  # the same name, decomposed (NFD)
    finally:
        probe.unlink()

    def key(name: str) -> str:
        name = unicodedata.normalize("NFC", name) if folds_unicode else name
        return name.casefold() if folds_case else name

    return key


def separate_clashes(members: Members, key) -> Members:
    """Members whose cleaned files would land on the same path under `key` (e.g. "a.jpg" and "A.jpg" on a
    case-insensitive file system): the first one is kept, later ones are ignored with the reason. Class
    folders that would merge are an error."""
    classes: dict[str, str] = {}
    for cls in members.classes:
        if key(cls) in classes:
            raise UserError(f"class folders {classes[key(cls)]} and {cls} differ only in case or Unicode form: "
                            "this file system cannot hold both; rename one in the archive")
        classes[key(cls)] = cls
    seen: dict[tuple[str, str], str] = {}
    kept = Members(ignored=list(members.ignored), root=members.root)
    for name, cls in members.images:
        target = (key(cls), key(Path(name).name))
        if target in seen:
            kept.ignored.append((name, f"same file name as {seen[target]} on this file system "
                                       "(it does not tell case or Unicode forms apart)"))
        else:
            seen[target] = name
            kept.images.append((name, cls))
    return kept

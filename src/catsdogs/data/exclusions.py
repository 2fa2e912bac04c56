"""The exclusion list (data/exclude.csv, in git): archive members that reviewed commits drop from the data.

The filter stage depends on the file: a listed member is dropped with reason `excluded`, without being read.
The list is hand-edited or appended to by `catsdogs review --accept`, so it is read as untrusted input:
exactly the columns of `tables.EXCLUDE`, member names relative to the archive (no absolute path, no `..`),
a reason for each, and every listed member must be a class image of the archive (a typo is an error).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from catsdogs import atomic, tables
from catsdogs.data import archive
from catsdogs.errors import UserError


@dataclass(frozen=True)
class Exclusion:
    member: str  # the archive member, <root>/<class>/<file>, as metrics/filter_dropped.csv names it
    reason: str
    who: str = ""
    when: str = ""

    def row(self) -> list[str]:
        return [self.member, self.reason, self.who, self.when]


def unsafe(member: str) -> str | None:
    """Why a listed name can never be an archive member's, or None (archive.py's rules, and no backslash:
    the filter lists members by their '/' names)."""
    if archive.is_absolute(member):
        return "is an absolute path"
    if "\\" in member:
        return "contains a backslash (archive members use '/')"
    if archive.climbs_out(member):
        return "climbs out with '..'"
    return None


def read(path: str | Path) -> list[Exclusion]:
    """The list's entries, in file order (a member listed twice counts once). A missing file lists nothing:
    in the pipeline DVC itself stops when a dependency is missing."""
    path = Path(path)
    try:
        if not path.stat().st_size:
            return []
        rows = tables.read(path, tables.EXCLUDE, "member and reason are required, who and when may be empty",
                           numbered=True)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable exclusion list ({exc})") from None
    entries, seen = [], set()
    for number, row in rows:
        entry = Exclusion(*(cell.strip() for cell in row.values()))
        if not entry.member:
            raise UserError(f"{path}, line {number}: empty member")
        why = unsafe(entry.member)
        if why:
            raise UserError(f"{path}, line {number}: {entry.member!r} {why}: list archive members as "
                            "metrics/filter_dropped.csv names them (<root>/<class>/<file>)")
        if not entry.reason:
            raise UserError(f"{path}, line {number}: {entry.member} has no reason: say why it is excluded")
        if entry.member not in seen:
            seen.add(entry.member)
            entries.append(entry)
    return entries


def check_listed(entries: list[Exclusion], images: set[str], path, archive) -> None:
    """Every listed member must be one of the archive's class images: a typo must not pass silently."""
    missing = [e.member for e in entries if e.member not in images]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{path}: {missing[0]}{more} is not a class image of {archive}: fix or remove the line")


def append(path: str | Path, new: list[Exclusion]) -> tuple[list[Exclusion], list[Exclusion]]:
    """Add `new` entries to the list (created with its header if missing), skipping members it already
    lists; the file is rewritten whole through a temporary file, its existing lines untouched.
    Returns (added, already listed)."""
    path = Path(path)
    listed = {e.member for e in read(path)}  # also refuses to add to a list that is already broken
    added, already = [], []
    for entry in new:
        why = unsafe(entry.member)
        if why:
            raise UserError(f"{entry.member!r} {why}: cannot be excluded")
        if entry.member in listed:
            already.append(entry)
        else:
            listed.add(entry.member)
            added.append(entry)
    if added or not path.exists():
        text = path.read_text(encoding="utf-8-sig") if path.exists() else ""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not text.strip():
            text = ""
            writer.writerow(tables.EXCLUDE)
        elif not text.endswith("\n"):
            text += "\n"
        writer.writerows(entry.row() for entry in added)
        atomic.write_text(path, text + buffer.getvalue())
    return added, already

"""The one kind of error a user can fix: `catsdogs.entry` reports it as one line and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, failed download); the message says how."""


def first_line(exc: Exception) -> str:
    """A library's exception in one line for a UserError: its message's first line, or its type's name."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]

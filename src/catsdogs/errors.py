"""The one kind of error a user can fix: `catsdogs.entry` reports it as one line and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, failed download); the message says how."""

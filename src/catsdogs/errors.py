"""The one way a stage or command reports a user's mistake: one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, failed download); the message says how."""


def run_main(main):
    """Wrap a stage's or command's main(): user errors and Ctrl-C end it cleanly, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: nothing half-written was left behind", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper

"""The one way a stage or command reports a user's mistake: one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import logging
import signal
import sys


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, failed download); the message says how."""


_interrupted = False


def _on_sigint(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """A Ctrl-C swallowed in a callback is not an error to print: raise_if_interrupted() handles it."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def raise_if_interrupted() -> None:
    """Raise the Ctrl-C that arrived earlier. Python delivers it in whatever Python code runs next, and
    when that is a garbage-collector callback (JAX installs one) the exception is swallowed; long loops
    call this so that the interrupt still ends the stage."""
    if _interrupted:
        raise KeyboardInterrupt


def run_main(main):
    """Wrap a stage's or command's main(): user errors and Ctrl-C end it cleanly, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
            sys.unraisablehook = _unraisable
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: nothing half-written was left behind", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper

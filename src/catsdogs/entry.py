"""How every stage and command starts and ends: logging, quiet native logs, Ctrl-C and exit codes.

A user's mistake (`UserError`) ends the program with one line on stderr and exit code 2, Ctrl-C with one
line and exit code 130; neither prints a traceback.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys

from catsdogs import backend
from catsdogs.errors import UserError

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
    """Wrap a stage's or command's `main(argv=None)`. Run as a program (no `argv`), it also hides
    TensorFlow's C++ start-up notices (`backend.quiet_native_logs`)."""

    @functools.wraps(main)
    def wrapper(argv=None):
        if argv is None:
            backend.quiet_native_logs()
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        # TensorFlow's own INFO lines (a SavedModel's "Assets written to" a temporary folder) are not news
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
            sys.unraisablehook = _unraisable
        try:
            return main() if argv is None else main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: nothing half-written was left behind", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper

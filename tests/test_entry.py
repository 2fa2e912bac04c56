"""catsdogs.entry: how a stage or command ends on a user's mistake or on Ctrl-C (exit codes, one line)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from catsdogs import entry, errors
from conftest import ENV, ROOT

# Programs run in their own process: run_main installs a SIGINT handler, which a test must not leave behind.
CHILD_ENV = dict(ENV, PYTHONPATH=str(ROOT / "src"))


@pytest.fixture(autouse=True)
def restore_process_state(monkeypatch):
    """run_main replaces the SIGINT handler and sys.unraisablehook: put both back after each test."""
    handler, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    monkeypatch.setattr(entry, "_interrupted", False)
    yield
    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = hook


def test_the_result_passes_through_and_the_function_keeps_its_name():
    @entry.run_main
    def main(argv=None):
        """Doc."""
        return sum(argv)

    assert main([2, 3]) == 5
    assert (main.__name__, main.__doc__) == ("main", "Doc.")


def test_a_user_error_is_one_line_on_stderr_and_exit_code_2(capsys):
    @entry.run_main
    def main():
        raise errors.UserError("data/x.zip: archive not found (run the download stage first)")

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: data/x.zip: archive not found (run the download stage first)\n"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback


def test_subclasses_of_user_error_are_user_errors_too(capsys):
    from catsdogs.params import ParamsError

    @entry.run_main
    def main():
        raise ParamsError("params.yaml: epochs = 0: input should be greater than 0")

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: params.yaml: epochs = 0: input should be greater than 0\n"


def test_ctrl_c_is_exit_code_130_with_one_line(capsys):
    @entry.run_main
    def main():
        raise KeyboardInterrupt

    try:
        main()
    except SystemExit as exit:
        code = exit.code
    except KeyboardInterrupt:  # not left to propagate: it would stop the whole test session
        pytest.fail("the KeyboardInterrupt went through run_main")
    assert code == 130
    assert capsys.readouterr().err == "interrupted: nothing half-written was left behind\n"


def test_other_exceptions_and_exit_codes_are_not_touched(capsys):
    @entry.run_main
    def crash():
        raise ValueError("a bug")

    @entry.run_main
    def exits():
        raise SystemExit(3)

    with pytest.raises(ValueError, match="a bug"):  # a bug keeps its traceback
        crash()
    with pytest.raises(SystemExit) as info:
        exits()
    assert info.value.code == 3
    assert capsys.readouterr().err == ""


def test_the_sigint_handler_is_installed_only_over_python_default():
    @entry.run_main
    def main():
        return signal.getsignal(signal.SIGINT), sys.unraisablehook

    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert main() == (entry._on_sigint, entry._unraisable)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. started in the background by a shell: left alone
    sys.unraisablehook = sys.__unraisablehook__
    assert main() == (signal.SIG_IGN, sys.__unraisablehook__)


def test_the_handler_remembers_the_interrupt_for_raise_if_interrupted():
    entry.raise_if_interrupted()  # nothing happened: nothing raised
    with pytest.raises(KeyboardInterrupt):
        entry._on_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # and again later, wherever the first one was swallowed
        entry.raise_if_interrupted()
    with pytest.raises(KeyboardInterrupt):
        entry.raise_if_interrupted()


def test_only_swallowed_interrupts_are_kept_quiet(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "__unraisablehook__", seen.append)
    quiet = type("Unraisable", (), {"exc_value": KeyboardInterrupt()})()
    loud = type("Unraisable", (), {"exc_value": ValueError("in a __del__")})()
    entry._unraisable(quiet)
    entry._unraisable(loud)
    assert seen == [loud]


def run_program(body: str) -> subprocess.CompletedProcess:
    program = "import os, signal, sys\nfrom catsdogs.entry import raise_if_interrupted, run_main\nfrom catsdogs.errors import UserError\n"
    return subprocess.run([sys.executable, "-c", program + textwrap.dedent(body)], env=CHILD_ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_a_real_sigint_ends_the_process_with_130_and_no_traceback():
    result = run_program("""
        @run_main
        def main():
            print("started", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**8):
                pass
            print("not interrupted")

        signal.signal(signal.SIGINT, signal.default_int_handler)
        main()
    """)
    assert result.returncode == 130, result.stderr
    assert result.stdout == "started\n"
    assert result.stderr == "interrupted: nothing half-written was left behind\n"


def test_an_interrupt_swallowed_in_a_finalizer_still_ends_the_process_with_130():
    """Python runs a SIGINT's handler in whatever code runs next; in a __del__ (a garbage-collector callback)
    its KeyboardInterrupt is swallowed. It must not print a traceback, and the next check must stop."""
    result = run_program("""
        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10**6):  # the handler runs here, in the finalizer
                    pass

        @run_main
        def main():
            Finalized()  # collected at once: the KeyboardInterrupt is raised in __del__ and swallowed
            print("swallowed", flush=True)
            raise_if_interrupted()
            print("not interrupted")

        signal.signal(signal.SIGINT, signal.default_int_handler)
        main()
    """)
    assert result.returncode == 130, result.stderr
    assert result.stdout == "swallowed\n"
    assert result.stderr == "interrupted: nothing half-written was left behind\n"  # no "Exception ignored in"


def test_a_real_user_error_ends_the_process_with_2_and_one_line():
    result = run_program("""
        @run_main
        def main():
            raise UserError("params.yaml: file not found (run from the repository root)")

        main()
    """)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: params.yaml: file not found (run from the repository root)\n"


def test_a_program_logs_its_own_info_lines_but_not_tensorflows():
    """A stage's log lines are INFO and are printed; TensorFlow's INFO (a SavedModel's "Assets written to" a
    temporary folder) is not; its warnings still are."""
    program = textwrap.dedent("""
        import logging
        from catsdogs.entry import run_main

        @run_main
        def main():
            logging.getLogger("export").info("exported to models/export")
            logging.getLogger("tensorflow").info("Assets written to: models/.export.tmp/savedmodel/assets")
            logging.getLogger("tensorflow").warning("a real warning")

        main()
    """)
    result = subprocess.run([sys.executable, "-c", program], env=CHILD_ENV, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "exported to models/export" in result.stderr and "a real warning" in result.stderr
    assert "Assets written" not in result.stderr

"""Run a Typer app so that every known error becomes one line and a documented exit code.

Shared by ``kiosk`` and ``kiosk-cloud``: each passes its table of exit codes
(``cloud_sync.exits``). The traceback is shown only with ``--debug``; an error line is cut
at ``MAX_LINE`` characters, anything that is not text shown as U+FFFD. Every command runs
with umask 077, so nothing it writes is readable by group or others
(``cloud_sync.private_files``).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import typer

from cloud_sync.exits import INTERRUPTED, UNEXPECTED, USAGE, ExitCode, exit_code_for
from cloud_sync.private_files import private_umask_for_call
from cloud_sync.wire_values import printable

#: An error line is cut here, so that an argument of a megabyte is not echoed whole.
MAX_LINE = 400


def run_app(
    app: typer.Typer,
    prog: str,
    exit_codes: Sequence[ExitCode],
    argv: Sequence[str] | None = None,
) -> int:
    """Invoke ``app`` (with umask 077) and return the process exit code."""
    with private_umask_for_call():
        return _run(app, prog, tuple(exit_codes), argv)


def _run(
    app: typer.Typer, prog: str, exit_codes: tuple[ExitCode, ...], argv: Sequence[str] | None
) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    known = tuple(row.error for row in exit_codes)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return INTERRUPTED
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", USAGE))
    except known as exc:
        if debug:
            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"{prog}: error: {printable(line, MAX_LINE)}", file=sys.stderr)
        return exit_code_for(exc, exit_codes)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc} (run again with --debug for details)",
            file=sys.stderr,
        )
        return UNEXPECTED
    if result == INTERRUPTED:  # Typer answers a Ctrl-C with this code, and says nothing
        print(f"{prog}: interrupted", file=sys.stderr)
    return result if isinstance(result, int) else 0

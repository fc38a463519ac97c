"""The command boundary: every error of a subcommand becomes one line and an exit code.

Subcommands raise :class:`CommandError` (or let a library error escape); a
command built with ``cls=OneLineErrors`` turns it, click's own usage errors
included, into ``cds-service: <what is wrong and what to do>`` on standard
error. A user never sees a traceback.
"""

from __future__ import annotations

from typing import Any

import click

from cds_service.commands import fail

#: Exit codes shared by the client commands.
EXIT_INVALID = 1  # a document or response violates CDS Hooks, or a check failed
EXIT_USAGE = 2  # the command line or an input file is wrong
EXIT_SERVICE = 3  # the service answered with an HTTP error or could not be reached


class CommandError(Exception):
    """What went wrong, phrased for the user, and the exit code it deserves."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class OneLineErrors(click.Command):
    """A click command whose every failure is a one-line message, never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str] | None:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            fail(f"{exc.format_message()} (see 'cds-service {self.name} --help')", EXIT_USAGE)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CommandError as exc:
            fail(exc.message, exc.code)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            fail(exc.format_message(), EXIT_USAGE)
        except RecursionError:
            fail("the input is nested too deeply to be processed; send FHIR and CDS Hooks "
                 "JSON of ordinary depth", EXIT_USAGE)
        except Exception as exc:  # the last line of defence: still one line
            first = (str(exc).splitlines() or [""])[0][:300]
            fail(f"internal error ({type(exc).__name__}: {first}); please report it with the "
                 "command line that caused it", EXIT_USAGE)

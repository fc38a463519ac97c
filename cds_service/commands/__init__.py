"""The subcommands of ``cds-service``, one module each."""

from __future__ import annotations

import sys

import click


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error (no traceback) and exit."""
    click.echo(f"cds-service: {message}", err=True)
    sys.exit(code)

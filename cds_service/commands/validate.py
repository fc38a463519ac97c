"""``cds-service validate``: check CDS Hooks 2.0 documents with the service's own validator.

Prints ``valid <kind>`` (exit 0) or every violation as ``<pointer>: <message>``
(exit 1). A file that cannot be read, is not JSON, or whose kind cannot be
told gets a one-line error (exit 2). With several files each line starts with
the file's name, and the exit code is the worst of them.
"""

from __future__ import annotations

import click

from cds_service.commands.boundary import EXIT_INVALID, CommandError, OneLineErrors
from cds_service.commands.record_files import STDIN, read_json
from cds_service.protocol.validation import KINDS, validate_document


def validate_file(path: str, kind: str | None, prefix: str) -> int:
    """Validate one file, print the verdict, and return its exit code."""
    document = read_json(path, "file")
    try:
        found, violations = validate_document(document, kind)
    except ValueError as exc:  # the kind cannot be detected
        raise CommandError(f"{prefix}{exc} with --kind") from None
    if not violations:
        click.echo(f"{prefix}valid {found}")
        return 0
    for violation in violations:
        click.echo(f"{prefix}{violation.pointer or '(document)'}: {violation.message}")
    return EXIT_INVALID


@click.command(cls=OneLineErrors)
@click.argument("files", nargs=-1, required=True, metavar="FILE.json...")
@click.option("--kind", type=click.Choice(KINDS), default=None,
              help="The document kind (default: detected from its fields).")
def validate(files: tuple[str, ...], kind: str | None) -> None:
    """Validate CDS Hooks 2.0 documents (discovery, request, response, feedback).

    FILE.json may be '-' for standard input. Exit 0: valid; 1: violations
    listed as '<JSON pointer>: <message>'; 2: unreadable, not JSON, or kind
    unknown.
    """
    if files.count(STDIN) > 1:
        raise CommandError("standard input ('-') can be read only once")
    worst = 0
    for path in files:
        prefix = f"{path}: " if len(files) > 1 else ""
        try:
            code = validate_file(path, kind, prefix)
        except CommandError as exc:
            if len(files) == 1:
                raise
            click.echo(f"cds-service: {exc.message}", err=True)
            code = exc.code
        worst = max(worst, code)
    if worst:
        raise click.exceptions.Exit(worst)

"""The ``cds-service`` command: a group of subcommands, each in ``cds_service/commands``."""

from __future__ import annotations

import click

from cds_service.commands.check import check
from cds_service.commands.fire import fire
from cds_service.commands.rules_doc import rules_doc
from cds_service.commands.serve import serve
from cds_service.commands.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cds-service")
def main() -> None:
    """CDS Hooks 2.0 service for post-operative spine care."""


main.add_command(serve)
main.add_command(rules_doc)
main.add_command(fire)
main.add_command(validate)
main.add_command(check)

if __name__ == "__main__":  # pragma: no cover
    main()

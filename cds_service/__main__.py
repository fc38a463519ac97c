"""``python -m cds_service``: the same as the ``cds-service`` command."""

from cds_service.cli import main

main()

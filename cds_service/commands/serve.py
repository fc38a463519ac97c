"""``cds-service serve``: the production server (gunicorn).

The settings and hooks live in ``cds_service.server``, shared with the
container's ``gunicorn -c deploy/gunicorn.conf.py``.
"""

from __future__ import annotations

import click

from cds_service.commands import fail
from cds_service.logs import configure_logging
from cds_service.server import (
    SERVER_KEYS,
    STARTUP_ERRORS,
    gunicorn_settings,
    startup_error_message,
)

_KEYS = {key.name: key for key in SERVER_KEYS}


def _option(name: str, kind: click.ParamType | type) -> click.Option:
    key = _KEYS[name]
    return click.option(f"--{name.lower().replace('_', '-')}", type=kind, default=None,
                        help=f"{key.help.capitalize()} [default: CDS_{name} or {key.default}].")


@click.command()
@_option("HOST", str)
@_option("PORT", click.IntRange(1, 65535))
@_option("WORKERS", click.IntRange(1, 64))
@_option("THREADS", click.IntRange(1, 64))
@_option("TIMEOUT", click.IntRange(1, 600))
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None,
          timeout: int | None) -> None:
    """Run the service with gunicorn (configuration from CDS_* environment variables)."""
    from gunicorn.app.base import BaseApplication

    from cds_service import create_app

    try:
        configure_logging()  # LOG_FORMAT: JSON lines or text, on stderr
        settings = gunicorn_settings(host=host, port=port, workers=workers, threads=threads,
                                     timeout=timeout)
        application = create_app()
    except STARTUP_ERRORS as exc:
        fail(startup_error_message(exc))

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                if key in self.cfg.settings:  # as gunicorn does for a config file
                    self.cfg.set(key, value)

        def load(self):
            return application

    Server().run()

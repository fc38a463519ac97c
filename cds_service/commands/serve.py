"""``cds-service serve``: the production server (gunicorn)."""

from __future__ import annotations

import gc
import logging
import os

import click

from cds_service.commands import fail
from cds_service.config import ConfigError


@click.command()
@click.option("--host", default=lambda: os.environ.get("CDS_HOST", "127.0.0.1"),
              show_default="127.0.0.1 (CDS_HOST)", help="Interface to listen on.")
@click.option("--port", type=int, default=lambda: int(os.environ.get("CDS_PORT", "8080")),
              show_default="8080 (CDS_PORT)", help="Port to listen on.")
@click.option("--workers", type=click.IntRange(1, 64),
              default=lambda: int(os.environ.get("CDS_WORKERS", "2")),
              show_default="2 (CDS_WORKERS)", help="Worker processes.")
@click.option("--threads", type=click.IntRange(1, 64),
              default=lambda: int(os.environ.get("CDS_THREADS", "4")),
              show_default="4 (CDS_THREADS)", help="Threads per worker.")
@click.option("--timeout", type=click.IntRange(1, 600),
              default=lambda: int(os.environ.get("CDS_TIMEOUT", "30")),
              show_default="30 (CDS_TIMEOUT)", help="Seconds before a stuck worker is restarted.")
def serve(host: str, port: int, workers: int, threads: int, timeout: int) -> None:
    """Run the service with gunicorn (configuration from CDS_* environment variables)."""
    from gunicorn.app.base import BaseApplication

    from cds_service import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        application = create_app()
    except (ConfigError, ValueError) as exc:
        fail(str(exc))

    class Server(BaseApplication):
        def load_config(self) -> None:
            settings = {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
                        "timeout": timeout, "graceful_timeout": 20, "keepalive": 5,
                        "worker_class": "gthread" if threads > 1 else "sync",
                        "accesslog": None, "post_fork": _after_fork}
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            return application

    click.echo(f"cds-service listening on http://{host}:{port}/cds-services", err=True)
    Server().run()


def _after_fork(_server, _worker) -> None:
    """Keep the garbage collector out of the request path: the start-up objects are
    frozen, and young-generation collections are made rarer (see PERFORMANCE.md)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)

"""The ``cds-service`` command."""

from __future__ import annotations

import gc
import logging
import os
import sys

import click

from cds_service.config import ConfigError


def _fail(message: str) -> None:
    click.echo(f"cds-service: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cds-service")
def main() -> None:
    """CDS Hooks 2.0 service for post-operative spine care."""


@main.command()
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
        _fail(str(exc))

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


@main.command("rules-doc")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of standard output.")
def rules_doc(output: str | None) -> None:
    """Print the clinical rules, criteria, thresholds and evidence as Markdown."""
    from cds_service.engine.knowledge import KnowledgeError, load_knowledge
    from cds_service.engine.ruledoc import render_rules_markdown

    try:
        text = render_rules_markdown(load_knowledge(os.environ.get("CDS_KNOWLEDGE_DIR")))
    except KnowledgeError as exc:
        _fail(str(exc))
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


def _after_fork(_server, _worker) -> None:
    """Keep the garbage collector out of the request path: the start-up objects are
    frozen, and young-generation collections are made rarer (see PERFORMANCE.md)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


if __name__ == "__main__":  # pragma: no cover
    main()

"""gunicorn configuration for the container entrypoint:

    gunicorn -c deploy/gunicorn.conf.py "cds_service:create_app()"

Every setting comes from ``cds_service.server.gunicorn_settings``, the function
``cds-service serve`` uses too, so both start the same server. Change the
settings there or through the CDS_* environment variables (CDS_HOST, CDS_PORT,
CDS_WORKERS, CDS_THREADS, CDS_TIMEOUT, CDS_GRACEFUL_TIMEOUT, CDS_KEEPALIVE),
not here.
"""

from cds_service.config import ConfigError
from cds_service.logs import configure_logging
from cds_service.server import gunicorn_settings, report_startup_errors_in_one_line

report_startup_errors_in_one_line()
try:
    configure_logging()  # as cds-service serve does: LOG_FORMAT, JSON lines or text
    globals().update(gunicorn_settings())
except ConfigError as exc:
    raise SystemExit(f"cds-service: {exc}") from None

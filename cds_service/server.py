"""The process server: gunicorn settings and hooks, in one place.

Both ways of starting the service read their settings from
:func:`gunicorn_settings`, so they behave the same:

- ``cds-service serve [--host H] [--port P] ...`` (``commands/serve.py``);
- ``gunicorn -c deploy/gunicorn.conf.py "cds_service:create_app()"`` (the container).

Settings come from ``CDS_*`` environment variables (below), command-line
options winning. The application is built once in the master process
(``preload_app``) and forked into the workers, so a bad configuration stops the
start with one line instead of a crash loop of workers, and the workers share
the loaded knowledge copy-on-write.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from cds_service import metrics
from cds_service.config import ENV_PREFIX, ConfigError
from cds_service.logs import GunicornLogger


@dataclass(frozen=True)
class ServerKey:
    name: str
    default: int | str
    low: int = 0
    high: int = 0
    help: str = ""


SERVER_KEYS: tuple[ServerKey, ...] = (
    ServerKey("HOST", "127.0.0.1", help="interface to listen on (0.0.0.0 in a container)"),
    ServerKey("PORT", 8080, 1, 65535, "port to listen on"),
    ServerKey("WORKERS", 2, 1, 64, "worker processes"),
    ServerKey("THREADS", 4, 1, 64, "threads per worker (1: sync workers)"),
    ServerKey("TIMEOUT", 30, 1, 600, "seconds before a stuck worker is killed and replaced"),
    ServerKey("GRACEFUL_TIMEOUT", 20, 1, 600,
              "seconds that running requests get to finish after SIGTERM"),
    ServerKey("KEEPALIVE", 5, 0, 600,
              "seconds an idle keep-alive connection stays open (above the load balancer's)"),
)
_KEYS_BY_NAME = {key.name.lower(): key for key in SERVER_KEYS}

#: What a bad configuration raises while the application is built; reported in one line.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, ModuleNotFoundError, SQLAlchemyError)


def _setting(key: ServerKey, option: Any, environ: Mapping[str, str]) -> int | str:
    env_name = ENV_PREFIX + key.name
    value = option if option is not None else environ.get(env_name, key.default)
    if isinstance(key.default, str):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{env_name} must not be empty")
        return value.strip()
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not key.low <= number <= key.high:
        raise ConfigError(f"{env_name} must be a whole number from {key.low} to {key.high}, "
                          f"not {value!r}")
    return number


def bind_address(host: str, port: int) -> str:
    """gunicorn's ``bind`` for a host and port (IPv6 literals in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def gunicorn_settings(environ: Mapping[str, str] | None = None, **options: Any) -> dict[str, Any]:
    """Every gunicorn setting the service runs with.

    ``options`` are ``host``, ``port``, ``workers``, ``threads``, ``timeout``,
    ``graceful_timeout`` and ``keepalive`` from the command line; ``None`` means
    not given, so the ``CDS_*`` variable in ``environ`` (default: the process
    environment) or the default applies. Raises :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    unknown = set(options) - set(_KEYS_BY_NAME)
    if unknown:
        raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
    values = {name: _setting(key, options.get(name), environ)
              for name, key in _KEYS_BY_NAME.items()}
    return {
        "bind": [bind_address(values["host"], values["port"])],
        "workers": values["workers"],
        "threads": values["threads"],
        "worker_class": "gthread" if values["threads"] > 1 else "sync",
        "timeout": values["timeout"],
        "graceful_timeout": values["graceful_timeout"],
        "keepalive": values["keepalive"],
        "preload_app": True,
        "accesslog": None,
        "logger_class": GunicornLogger,  # gunicorn's messages in the LOG_FORMAT of the service
        # gunicorn >= 25 opens a control socket under $HOME by default; the
        # service does not use it, and $HOME is read-only in the container.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "when_ready": when_ready,
        "post_fork": post_fork,
    }


def startup_error_message(exc: BaseException) -> str:
    """One line saying what is wrong with the configuration or the environment."""
    if isinstance(exc, ArgumentError) and not isinstance(exc, NoSuchModuleError):
        # The message would repeat the URL, password included.
        return (f"{ENV_PREFIX}DATABASE_URL is not a valid SQLAlchemy URL "
                "(dialect+driver://user:password@host:port/database)")
    if isinstance(exc, SQLAlchemyError):
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"database: {first_line}"
    return " ".join(str(exc).split()) or type(exc).__name__


def report_startup_errors_in_one_line() -> None:
    """Print :data:`STARTUP_ERRORS` that escape to the top level as one line, no traceback.

    For the ``gunicorn -c deploy/gunicorn.conf.py`` entrypoint, where gunicorn
    itself builds the application; ``cds-service serve`` catches them directly.
    Any other exception keeps its traceback.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException,
             traceback: TracebackType | None) -> None:
        if isinstance(exc, STARTUP_ERRORS):
            print(f"cds-service: {startup_error_message(exc)}", file=sys.stderr, flush=True)
        else:
            previous(kind, exc, traceback)

    sys.excepthook = hook


# -- gunicorn hooks ------------------------------------------------------------------
# ``arbiter`` is gunicorn's master process object; ``arbiter.app.wsgi()`` is the
# Flask application, already built because ``preload_app`` is on.


def on_starting(arbiter: Any) -> None:
    """In the master, before it listens and forks: refuse a taken port, warn about an
    open allowlist, and let the workers share one ``/metrics``.

    The metrics hooks are added here, not in :func:`gunicorn_settings`, because
    setting them up makes a folder and changes the environment: computing the
    settings stays free of side effects.
    """
    _refuse_unavailable_addresses(arbiter.cfg.address)
    application = arbiter.app.wsgi()
    if not application.config.get("FHIR_SERVERS"):
        arbiter.log.warning(
            "FHIR_SERVERS is not set: a request may name any fhirServer, and the service "
            "will send it the request's access token. Set CDS_FHIR_SERVERS in production.")
    for name, hook in metrics.gunicorn_settings(arbiter.cfg.workers).items():
        arbiter.cfg.set(name, hook)


def when_ready(arbiter: Any) -> None:
    for address in arbiter.cfg.address:
        if isinstance(address, tuple):
            arbiter.log.info("cds-service listening on http://%s/cds-services",
                             bind_address(*address))


def post_fork(_arbiter: Any, _worker: Any) -> None:
    """Keep the garbage collector out of the request path: the start-up objects are
    frozen, and young-generation collections are made rarer (see PERFORMANCE.md)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _refuse_unavailable_addresses(addresses: list[Any]) -> None:
    """Exit with one line when a TCP address cannot be listened on.

    gunicorn would retry for five seconds and log each attempt. Inherited
    sockets (a USR2 upgrade, systemd socket activation) are not checked: they
    are bound by design.
    """
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return
    for address in addresses:
        if isinstance(address, tuple):
            problem = _bind_problem(address[0], address[1])
            if problem:
                raise SystemExit(f"cds-service: {problem}")


def _bind_problem(host: str, port: int) -> str | None:
    shown = bind_address(host, port)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {shown}: {exc.strerror}"
    family, kind, proto, _name, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use; stop what is listening "
                        f"there or choose another port (--port or CDS_PORT)")
            return f"cannot listen on {shown}: {exc.strerror}"
    return None


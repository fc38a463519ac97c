"""CDS Hooks 2.0 service for post-operative spine care.

``create_app`` is imported on first use, so that the command line (``validate``,
``rules-doc``...) starts without loading the web stack, storage and migrations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

__all__ = ["create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask application (see ``cds_service.app.create_app``)."""
    from cds_service.app import create_app as build

    return build(config)

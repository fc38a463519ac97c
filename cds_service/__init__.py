"""CDS Hooks 2.0 service for post-operative spine care."""

from cds_service.app import create_app

__all__ = ["create_app"]

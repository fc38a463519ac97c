"""Application factory (placeholder until the web layer lands)."""
from flask import Flask


def create_app(config=None) -> Flask:
    return Flask(__name__)

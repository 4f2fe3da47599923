"""The HTTP API of shuyu (FastAPI). ``create_app(domain)`` builds it; ``shuyu serve`` runs it.

The only package that imports the web framework: domain code raises ``ShuyuError`` with a
kind, and :mod:`shuyu.api.errors` maps kinds to HTTP in one handler.
"""

from shuyu.api.app import create_app

__all__ = ["create_app"]

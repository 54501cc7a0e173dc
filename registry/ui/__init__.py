"""``memo ui``: the registry as web pages (read-only)."""

from registry.ui.app import create_app, listen, serve, server

__all__ = ["create_app", "listen", "serve", "server"]

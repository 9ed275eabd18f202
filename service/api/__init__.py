"""The HTTP and WebSocket API: `create_app(settings)` builds the FastAPI application."""

from .app import create_app

__all__ = ["create_app"]

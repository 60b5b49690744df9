"""The embedded ClearML-compatible API server (SQLite-backed) for one machine and for the tests."""

from notebook_agent.server.app import DEFAULT_DATA_DIR, EmbeddedServer

__all__ = ["DEFAULT_DATA_DIR", "EmbeddedServer"]

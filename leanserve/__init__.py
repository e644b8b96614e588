"""leanserve: serve one model under a named compression profile over an OpenAI-compatible API."""

__version__ = "0.1.0"

"""Accuracy evaluations that talk to a server over HTTP only (any OpenAI-compatible one)."""

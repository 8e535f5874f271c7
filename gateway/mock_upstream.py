"""The fake Anthropic and OpenAI API, by its first name; ``gateway.mock`` holds it and
documents its routes, headers and ``/mock/log``."""

from __future__ import annotations

from gateway.mock import MockConfig, MockStats, create_mock_app, serve_mock

__all__ = ["MockConfig", "MockStats", "create_mock_app", "serve_mock"]

"""Wire formats: one module per API the gateway meters; ``base`` holds what they share.

``FORMATS`` maps each metered route kind (``gateway.policy.routes.Meter``) to the format
that reads its bodies; ``FAMILIES`` maps an API family to the format whose error shape and
rate-limit headers its routes use.
"""

from __future__ import annotations

from gateway.apis.anthropic import ANTHROPIC
from gateway.apis.anthropic_batches import ANTHROPIC_BATCHES
from gateway.apis.anthropic_complete import ANTHROPIC_COMPLETE
from gateway.apis.base import ApiShape, ErrorKind, WireFormat, load_body
from gateway.apis.openai import OPENAI
from gateway.apis.openai_completions import OPENAI_COMPLETIONS
from gateway.apis.openai_embeddings import OPENAI_EMBEDDINGS
from gateway.apis.openai_responses import OPENAI_RESPONSES
from gateway.apis.sse import StreamMeter
from gateway.policy.routes import errors_for_path

__all__ = [
    "ANTHROPIC",
    "FAMILIES",
    "FORMATS",
    "OPENAI",
    "ApiShape",
    "ErrorKind",
    "StreamMeter",
    "WireFormat",
    "error_format_for",
    "load_body",
]

FORMATS: dict[str, WireFormat] = {
    fmt.meter: fmt
    for fmt in (
        ANTHROPIC,
        ANTHROPIC_BATCHES,
        ANTHROPIC_COMPLETE,
        OPENAI,
        OPENAI_RESPONSES,
        OPENAI_COMPLETIONS,
        OPENAI_EMBEDDINGS,
    )
}

FAMILIES: dict[str, ApiShape] = {"anthropic": ANTHROPIC, "openai": OPENAI}


def error_format_for(path: str) -> ApiShape:
    """The shape errors take on a path no route names: Anthropic's under its own routes."""
    return FAMILIES[errors_for_path(path.partition("?")[0])]

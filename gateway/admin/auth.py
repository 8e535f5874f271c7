"""Who may use the admin API: bearer tokens, known by name, stored as SHA-256 digests.

Tokens come from ``GATEWAY_ADMIN_TOKEN`` (one token, named ``admin``) and from
``admin_tokens_file``, a YAML file of names and digests (re-read when it changes):

    tokens:
      alice: 3f2a...   # sha256 hex of alice's token: python -m gateway.admin.auth <token>

A presented token is hashed and compared with every digest in constant time, so neither
the comparison nor the loop tells a caller how close a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.errors import error_response
from gateway.errors import ConfigError

log = logging.getLogger("gateway.admin")

_DIGEST = re.compile(r"[0-9a-f]{64}")
DISABLED = (
    "The admin API is off: set GATEWAY_ADMIN_TOKEN or GATEWAY_ADMIN_TOKENS_FILE (see "
    "docs/admin.md) and restart the gateway to enable it."
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens_file(path: str | Path) -> dict[str, str]:
    """name → digest from a tokens file; ConfigError says what is wrong and where."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data: Any = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Admin tokens file {path}: cannot read it: {exc}") from exc
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict) or not tokens:
        raise ConfigError(f"Admin tokens file {path}: expected 'tokens: {{name: sha256 hex}}'.")
    found: dict[str, str] = {}
    for name, digest in tokens.items():
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest.lower()):
            raise ConfigError(
                f"Admin tokens file {path}: tokens.{name} is not a SHA-256 hex digest; "
                "store digests, never tokens (python -m gateway.admin.auth TOKEN prints one)."
            )
        found[str(name)] = digest.lower()
    return found


class AdminTokens:
    def __init__(self, token: str | None = None, tokens_file: str | None = None) -> None:
        self._token = {"admin": hash_token(token)} if token else {}
        self._file = Path(tokens_file) if tokens_file else None
        self._from_file: dict[str, str] = {}
        self._mtime = 0.0
        if self._file is not None:
            self._mtime = self._file.stat().st_mtime if self._file.exists() else 0.0
            self._from_file = read_tokens_file(self._file)

    @property
    def configured(self) -> bool:
        return bool(self._token) or self._file is not None

    def who(self, presented: str) -> str | None:
        """The name of the token presented, or None."""
        self._refresh()
        digest = hash_token(presented)
        name = None
        for candidate, known in {**self._from_file, **self._token}.items():
            if hmac.compare_digest(digest, known):
                name = candidate
        return name

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
            if mtime != self._mtime:
                self._from_file, self._mtime = read_tokens_file(self._file), mtime
        except (OSError, ConfigError) as exc:
            log.warning("keeping the admin tokens read before: %s", exc)


class AdminAuth:
    """Plain ASGI: every path but ``open_paths`` and those under ``open_prefix`` (the
    dashboard's files, which hold no data) needs ``Authorization: Bearer <token>``; the
    token's name goes to ``request.state.actor`` for the audit."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: AdminTokens,
        open_paths: frozenset[str],
        open_prefix: str | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths
        self.open_prefix = open_prefix

    def _open(self, path: str) -> bool:
        if path in self.open_paths:
            return True
        return self.open_prefix is not None and path.startswith(self.open_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not self.tokens.configured:
            await error_response(403, DISABLED)(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        actor = self.tokens.who(token.strip()) if scheme.lower() == "bearer" else None
        if actor is None:
            message = (
                "Missing admin token; send Authorization: Bearer <token>."
                if not token
                else "The admin token is not valid; nothing was changed."
            )
            response = error_response(401, message, headers={"www-authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)


if __name__ == "__main__":
    # python -m gateway.admin.auth TOKEN: the digest to put in the tokens file.
    if len(sys.argv) != 2:
        print("usage: python -m gateway.admin.auth TOKEN", file=sys.stderr)
        sys.exit(2)
    print(hash_token(sys.argv[1]))

"""Process settings: every one is a flag and a GATEWAY_* variable, gathered into one frozen value.

Policy files are separate (``gateway.policy``): settings say where things are and how
the process runs; policies say who may spend what.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.errors import ConfigError
from gateway.tarpit import MAX_HELD

MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str
    policies: str | None = None
    storage: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    workers: int = 1
    max_body_bytes: int = 10 * MIB
    upstream_timeout: float = 600.0  # read timeout; a long generation may take minutes
    upstream_connect_timeout: float = 5.0
    storage_timeout: float = 0.5
    # Store calls at once per process, and how many more may wait for a turn (each at most
    # storage_wait seconds) before a request is shed with 503: busy is not down.
    storage_connections: int = 64
    storage_queue: int = 2048
    storage_wait: float = 1.0
    # How long a reservation outlives an exchange that stopped extending it (a stalled
    # store); running exchanges are extended every few seconds, whatever their length.
    reservation_ttl: float = 60.0
    # Replicas the outage fallback divides each limit by, at least (it also counts the
    # replicas it saw heartbeat before the outage).
    expected_replicas: int = 1
    # Link data (signal values, cluster memberships) unused this long expires, so rotated
    # identifiers do not grow the store forever; links made by files or the admin do not.
    link_retention_days: float = 30.0
    # Requests ``action: slow`` policies may hold at once per process; past it, refused.
    max_held: int = MAX_HELD
    decision_log: str | None = None
    log_format: str = "text"  # text | json
    log_level: str = "info"  # debug | info | warning | error
    admin_token: str | None = field(default=None, repr=False)
    admin_tokens_file: str | None = None
    replica_name: str | None = None  # in audit entries; None: host/pid
    upstream_client: str = (
        "aiohttp"  # aiohttp | httpx (kept for comparison, see docs/performance.md)
    )
    loop: str = "uvloop"  # uvloop | asyncio: the event loop ``gateway serve`` runs on

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ConfigError(
                f"Upstream {self.upstream!r} is not an http:// or https:// URL; "
                "set --upstream or GATEWAY_UPSTREAM to the model API's base URL."
            )
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {self.workers}.")
        if self.workers > 1 and self.storage.startswith("memory://"):
            raise ConfigError(
                f"--workers {self.workers} with memory:// storage would give each worker its own "
                f"counters, so every limit would admit {self.workers} times its amount; use "
                "--storage redis://… or --workers 1."
            )
        if self.max_body_bytes < 1:
            raise ConfigError("--max-body-bytes must be a positive number of bytes.")
        if self.upstream_timeout <= 0 or self.upstream_connect_timeout <= 0:
            raise ConfigError("--upstream-timeout must be a positive number of seconds.")
        if self.reservation_ttl < 10:
            raise ConfigError(
                f"--reservation-ttl must be at least 10 seconds (reservations are extended "
                f"every 5 s), not {self.reservation_ttl}."
            )
        if self.storage_connections < 1 or self.storage_queue < 0 or self.storage_wait <= 0:
            raise ConfigError(
                "--storage-connections must be at least 1, --storage-queue at least 0 and "
                "--storage-wait a positive number of seconds."
            )
        if self.link_retention_days <= 0:
            raise ConfigError("--link-retention-days must be a positive number of days.")
        if self.expected_replicas < 1:
            raise ConfigError(
                f"--expected-replicas must be at least 1, not {self.expected_replicas}."
            )
        if self.max_held < 0:
            raise ConfigError(f"--max-held must be 0 or more, not {self.max_held}.")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be text or json, not {self.log_format!r}.")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level must be debug, info, warning or error, not {self.log_level!r}."
            )
        if self.port == self.admin_port != 0 and _overlap(self.host, self.admin_host):
            raise ConfigError(
                f"--port and --admin-port are both {self.port} on {self.host} and "
                f"{self.admin_host}; give the proxy and the admin listener different ports."
            )
        if self.upstream_client not in ("aiohttp", "httpx"):
            raise ConfigError(
                f"--upstream-client must be aiohttp or httpx, not {self.upstream_client!r}."
            )
        if self.loop not in ("uvloop", "asyncio"):
            raise ConfigError(f"--loop must be uvloop or asyncio, not {self.loop!r}.")


# An address that listens on every interface shares its port with any one of them.
_EVERY = ("0.0.0.0", "::", "")


def _overlap(a: str, b: str) -> bool:
    return a == b or a in _EVERY or b in _EVERY


def env_name(field_name: str) -> str:
    return "GATEWAY_" + field_name.upper()


def settings_from(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from flag values (None = not given), falling back to GATEWAY_* variables."""
    environ = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        value = values.get(f.name)
        if value is None and env_name(f.name) in environ:
            value = _convert(f.name, f.type, environ[env_name(f.name)])
        if value is not None:
            kwargs[f.name] = value
    if not kwargs.get("upstream"):
        raise ConfigError(
            "No upstream: set --upstream or GATEWAY_UPSTREAM to the model API's base URL, "
            "e.g. https://api.anthropic.com."
        )
    return Settings(**kwargs)


def _convert(name: str, type_name: object, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{env_name(name)}={raw!r} is not a number.") from None
    return raw

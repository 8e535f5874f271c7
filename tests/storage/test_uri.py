"""Store URIs in error sentences: the shape is shown, the passwords never are."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.storage.connection import open_redis
from gateway.storage.uri import masked


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://app:hunter2@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://app@h:6379/0", "redis://app@h:6379/0"),
        (
            "redis+sentinel://u:hunter2@h1:1,h2:2/m?db=1&sentinel_password=hunter2",
            "redis+sentinel://u:***@h1:1,h2:2/m?db=1&sentinel_password=***",
        ),
    ],
)
def test_a_uri_is_shown_without_its_passwords(uri: str, shown: str) -> None:
    assert masked(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        "redis+cluster://u:hunter2@h1:1,h2/",
        "redis+sentinel://u:hunter2@h1:1,h2/m",
        "redis+sentinel://u:hunter2@h1:1/m?db=x",
        "redis+sentinel://u:hunter2@h1:1/m?sentinel_password=hunter2&nope=1",
        "memcached://u:hunter2@h:1",
    ],
)
def test_a_bad_uri_is_refused_without_echoing_its_password(uri: str) -> None:
    with pytest.raises(ConfigError) as refused:
        open_redis(uri)
    assert "hunter2" not in str(refused.value) and "***" in str(refused.value)

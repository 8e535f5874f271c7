"""Process settings: flags over GATEWAY_* variables, and one clear sentence for each mistake."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, settings_from


def test_flags_win_over_environment_and_environment_over_defaults() -> None:
    settings = settings_from(
        {"upstream": "http://flag", "port": None, "storage": None},
        {"GATEWAY_UPSTREAM": "http://env", "GATEWAY_PORT": "9999", "GATEWAY_STORAGE_TIMEOUT": "2"},
    )
    assert settings.upstream == "http://flag"
    assert settings.port == 9999
    assert settings.storage_timeout == 2.0
    assert settings.storage == "memory://"


def test_missing_upstream_says_what_to_set() -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from({}, {})
    assert str(raised.value) == (
        "No upstream: set --upstream or GATEWAY_UPSTREAM to the model API's base URL, "
        "e.g. https://api.anthropic.com."
    )


def test_a_variable_that_is_not_a_number_is_named() -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY_PORT='eighty' is not a number\."):
        settings_from({}, {"GATEWAY_UPSTREAM": "http://u", "GATEWAY_PORT": "eighty"})


def test_several_workers_on_memory_counters_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(upstream="http://u", workers=4)
    assert "every limit would admit 4 times its amount" in str(raised.value)
    assert Settings(upstream="http://u", workers=4, storage="redis://r:6379/0").workers == 4


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"upstream": "api.example.com"}, "is not an http:// or https:// URL"),
        ({"upstream": "http://u", "log_format": "xml"}, "--log-format must be text or json"),
        ({"upstream": "http://u", "upstream_client": "curl"}, "must be aiohttp or httpx"),
        ({"upstream": "http://u", "upstream_timeout": 0}, "--upstream-timeout must be a positive"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_proxy_and_admin_on_one_port_are_refused_where_they_would_collide() -> None:
    with pytest.raises(ConfigError, match=r"both 9000 on 0\.0\.0\.0 and 127\.0\.0\.1"):
        Settings(upstream="http://u", host="0.0.0.0", port=9000, admin_port=9000)
    with pytest.raises(ConfigError, match="give the proxy and the admin listener different"):
        Settings(upstream="http://u", port=9000, admin_port=9000)
    apart = Settings(upstream="http://u", port=9000, admin_host="10.0.0.1", admin_port=9000)
    assert apart.port == apart.admin_port  # two addresses: no collision


def test_log_level_is_one_of_four() -> None:
    assert settings_from({"upstream": "http://u"}, {"GATEWAY_LOG_LEVEL": "debug"}).log_level == (
        "debug"
    )
    with pytest.raises(ConfigError, match="--log-level must be debug, info, warning or error"):
        Settings(upstream="http://u", log_level="loud")

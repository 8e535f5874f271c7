"""A decision-log line's top-level fields, read without parsing it, as json.loads reads them."""

from __future__ import annotations

import json

import pytest

from gateway.log_fields import fields

KEYS = ("time", "duration_s", "account", "organization", "signals", "decision")
LINE = {
    "time": 1776816001.328,
    "duration_s": 9.967,
    "request_id": "r0",
    "account": "acct-7",
    "organization": None,
    "attributes": {"tier": "free"},
    "signals": [["header:x-device-id", "ab12"]],
    "decision": "refused",
    "scope": "account",
}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(LINE, separators=(",", ":")),  # as the gateway writes it
        json.dumps(LINE),  # spaces after colons: parsed whole, same answer
        json.dumps({**LINE, "attributes": {"account": "x", "signals": "y"}}),  # nested names
        json.dumps({**LINE, "request_id": 'say "account": no'}),  # the name inside a string
        json.dumps({k: v for k, v in LINE.items() if k != "account"}),  # no account at all
        json.dumps({**LINE, "account": 'caf\u00e9 \\ "q"'}),  # escapes
    ],
)
def test_fields_read_what_the_parser_reads(text: str) -> None:
    parsed = json.loads(text)
    assert fields(text, KEYS) == {key: parsed[key] for key in KEYS if key in parsed}

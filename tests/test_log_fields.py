"""A decision-log line's top-level fields, read without parsing it, as json.loads reads them."""

from __future__ import annotations

import json

import pytest

from gateway.log_fields import account_of, fields

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


TEXTS = [
    json.dumps(LINE, separators=(",", ":")),  # as the gateway writes it
    json.dumps(LINE),  # spaces after colons: parsed whole, same answer
    json.dumps({**LINE, "attributes": {"account": "x", "signals": "y"}}),  # nested names
    json.dumps({**LINE, "request_id": 'say "account": no'}),  # the name inside a string
    json.dumps({k: v for k, v in LINE.items() if k != "account"}),  # no account at all
    json.dumps({**LINE, "account": 'caf\u00e9 \\ "q"'}),  # escapes
    json.dumps({**LINE, "account": "caf\u00e9"}, ensure_ascii=False),  # UTF-8 as is
    json.dumps({**LINE, "account": 7}),  # not a string: no account
]


@pytest.mark.parametrize("text", TEXTS)
def test_fields_read_what_the_parser_reads(text: str) -> None:
    parsed = json.loads(text)
    assert fields(text, KEYS) == {key: parsed[key] for key in KEYS if key in parsed}


@pytest.mark.parametrize("text", TEXTS)
def test_the_account_of_an_undecoded_line_is_the_parsers(text: str) -> None:
    account = json.loads(text).get("account")
    assert account_of(text.encode()) == (account if isinstance(account, str) else None)

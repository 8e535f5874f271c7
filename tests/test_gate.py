"""The gate, attacked over real sockets: no request target, method or route gets an
unidentified or uncounted exchange to the upstream.

Request lines are written by hand: HTTP client libraries normalise paths before sending,
which would hide exactly the tricks under test. The scripted upstream's own record of what
it received (``fake.seen``) is the proof that nothing got through.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet, Scope
from gateway.settings import Settings
from tests.servers import running
from tests.upstreams import Script, ScriptedUpstream

BODY = b'{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}'
ANSWER = b'{"usage": {"input_tokens": 3, "output_tokens": 4}}'


def policy_set(tmp_path: Path, limits: str, extra: str = "", *, keys: str = "") -> PolicySet:
    """One account policy with ``limits`` (and ``keys``, e.g. "action: cap"); ``extra``
    YAML sections are appended to the file."""
    path = tmp_path / "p.yaml"
    policy_keys = "".join(f"    {line.strip()}\n" for line in keys.strip().splitlines())
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            policies:
              - name: per-account
                scope: account
                limits: {limits}
            """
        ).format(limits=limits)
        + policy_keys
        + textwrap.dedent(extra)
    )
    return load_policy_set(path)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    upstream = ScriptedUpstream()
    upstream.script = Script(headers=[(b"content-type", b"application/json")], chunks=[ANSWER])
    async with running(upstream) as url:
        yield upstream, url


async def raw(
    base_url: str,
    target: bytes,
    *,
    method: bytes = b"POST",
    headers: dict[str, str] | None = None,
    body: bytes = BODY,
) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte; (status, headers, body) of the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [method + b" " + target + b" HTTP/1.1", b"host: gateway", b"connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode())
    if body or method == b"POST":
        lines += [b"content-type: application/json", b"content-length: %d" % len(body)]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, content


ACCOUNT = {"x-account-id": "acct-1"}

# Targets the upstream could read as a metered route while the gateway reads another thing.
TWO_WAY_TARGETS = [
    b"/v1/messages#x",
    b"/v1/messages#/../../v1/models",
    b"/v1/messages;x=1",
    b"/v1;/messages",
    b"/v1\\messages",
    b"/v1/messages%00",
    b"/v1/messages%2F",
    b"/v1%2Fmessages",
    b"/v1%2fmessages",
    b"/v1%5Cmessages",
    b"/v1/messages%23x",
    b"/v1/messages%3Bx",
    b"/v1/%2e/messages",
    b"/v1/%2E%2E/v1/messages",
    b"/v1/x/../messages",
    b"/v1/./messages",
    b"/v1//messages",
    b"/v1/messages/",
    b"/v1/messages%",
    b"/v1/messages%zz",
    b"/v1/m%C3%A9ssages",
    b"/v1/messages?x=1#frag",
    b"http://upstream.example/v1/messages",
    b"*",
]


@pytest.mark.parametrize("target", TWO_WAY_TARGETS)
async def test_a_target_that_reads_two_ways_is_refused_and_never_forwarded(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], target: bytes
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 0/day}"))
    async with running(app) as gateway:
        unidentified = await raw(gateway, target)
        spent = await raw(gateway, target, headers=ACCOUNT)
    for status, headers, body in (unidentified, spent):
        assert status == 400, (target, status, body)
        assert json.loads(body)["error"]["message"]  # the API's shape, not a traceback
        assert headers["content-type"] == "application/json"
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    [b"/V1/MESSAGES", b"/v1/Messages", b"/v2/messages", b"/v1/messagesx", b"/v1/audio/speech"],
)
async def test_an_undeclared_route_is_404_and_never_forwarded(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], target: bytes
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/day}"))
    async with running(app) as gateway:
        status, _, body = await raw(gateway, target, headers=ACCOUNT)
    assert status == 404
    assert "No route POST" in json.loads(body)["error"]["message"]
    assert upstream.seen == []


async def test_unreserved_escapes_are_decoded_then_metered_and_forwarded_canonical(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str]
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 1/day}"))
    async with running(app) as gateway:
        first = await raw(gateway, b"/v1/%6D%65ssages?beta=true", headers=ACCOUNT)
        second = await raw(gateway, b"/v1/messages", headers=ACCOUNT)
    assert first[0] == 200
    assert second[0] == 429  # the escaped form spent the same budget
    assert [(seen.path, seen.query) for seen in upstream.seen] == [("/v1/messages", b"beta=true")]


@pytest.mark.parametrize("method", [b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])
async def test_other_methods_on_a_metered_route_are_405_and_never_forwarded(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], method: bytes
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 0/day}"))
    async with running(app) as gateway:
        status, headers, body = await raw(gateway, b"/v1/messages", method=method, headers=ACCOUNT)
    assert status == 405
    assert headers["allow"] == "POST"
    if method != b"HEAD":
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert upstream.seen == []


# Every route the shipped table forwards, with a concrete path.
FORWARDED = [
    (b"POST", b"/v1/messages"),
    (b"POST", b"/v1/messages/count_tokens"),
    (b"POST", b"/v1/messages/batches"),
    (b"GET", b"/v1/messages/batches"),
    (b"GET", b"/v1/messages/batches/msgbatch_1"),
    (b"DELETE", b"/v1/messages/batches/msgbatch_1"),
    (b"GET", b"/v1/messages/batches/msgbatch_1/results"),
    (b"POST", b"/v1/messages/batches/msgbatch_1/cancel"),
    (b"POST", b"/v1/complete"),
    (b"POST", b"/v1/chat/completions"),
    (b"POST", b"/v1/responses"),
    (b"GET", b"/v1/responses/resp_1"),
    (b"DELETE", b"/v1/responses/resp_1"),
    (b"POST", b"/v1/responses/resp_1/cancel"),
    (b"GET", b"/v1/responses/resp_1/input_items"),
    (b"POST", b"/v1/completions"),
    (b"POST", b"/v1/embeddings"),
    (b"GET", b"/v1/models"),
    (b"GET", b"/v1/models/claude-test"),
]


@pytest.mark.parametrize(("method", "target"), FORWARDED)
async def test_no_route_forwards_a_caller_without_identity(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], method: bytes, target: bytes
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/day}"))
    async with running(app) as gateway:
        status, _, body = await raw(gateway, target, method=method, body=b"")
        forged = await raw(gateway, target, method=method, headers={"x-account-id": ""}, body=b"")
    assert status == 401, body
    assert forged[0] == 401
    assert upstream.seen == []


@pytest.mark.parametrize("header", ["x-account-id", "x-organization-id"])
async def test_an_id_longer_than_256_characters_is_refused_with_a_sentence(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], header: str
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/day}"))
    ids = {"x-account-id": "acct-1", header: "a" * 257}
    async with running(app) as gateway:
        status, _, body = await raw(gateway, b"/v1/messages", headers=ids)
        fine = await raw(gateway, b"/v1/messages", headers={**ids, header: "a" * 256})
    assert status == 401
    assert f"The {header} header is longer than 256 characters".encode() in body
    assert fine[0] == 200
    assert len(upstream.seen) == 1


async def test_a_caller_without_identity_never_makes_the_gateway_read_its_body(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str]
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/day}"))
    async with running(app) as gateway:
        host, port = gateway.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        # A promised 5 MB body that never comes: the answer must not wait for it.
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n"
            b"content-length: 5000000\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 401")
    assert upstream.seen == []


@pytest.mark.parametrize("api", ["messages", "chat/completions"])
async def test_deeply_nested_json_is_a_400_not_a_500(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], api: str
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/day}"))
    deep = b'{"model":"m","max_tokens":5,"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with running(app) as gateway:
        status, _, body = await raw(gateway, f"/v1/{api}".encode(), headers=ACCOUNT, body=deep)
        nested_content = (
            b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":'
            + b'{"a":' * 5000
            + b"1"
            + b"}" * 5000
            + b"}]}"
        )
        status2, _, body2 = await raw(
            gateway, f"/v1/{api}".encode(), headers=ACCOUNT, body=nested_content
        )
    assert status == 400
    assert "nests too deeply" in json.loads(body)["error"]["message"]
    assert status2 == 400, body2
    assert upstream.seen == []


async def test_routes_whose_cost_is_unseen_are_refused_until_an_operator_opts_in(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str]
) -> None:
    upstream, url = fake
    closed = policy_set(tmp_path, "{requests: 1/day}")
    async with running(create_app(Settings(upstream=url), policies=closed)) as gateway:
        status, _, body = await raw(gateway, b"/v1/batches", headers=ACCOUNT)
    assert status == 403
    assert "requests-only" in json.loads(body)["error"]["message"]
    assert upstream.seen == []

    opted_in = policy_set(
        tmp_path,
        "{requests: 1/day}",
        """
        routes:
          - {path: /v1/batches, meter: requests-only}
        """,
    )
    async with running(create_app(Settings(upstream=url), policies=opted_in)) as gateway:
        first = await raw(gateway, b"/v1/batches", headers=ACCOUNT)
        second = await raw(gateway, b"/v1/batches", headers=ACCOUNT)
    assert (first[0], second[0]) == (200, 429)  # identified, and counted as a request
    assert len(upstream.seen) == 1


async def test_a_shipped_route_can_be_taken_away(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str]
) -> None:
    upstream, url = fake
    policies = policy_set(
        tmp_path,
        "{requests: 9/day}",
        """
        routes:
          - {path: /v1/completions, meter: "off"}
        """,
    )
    async with running(create_app(Settings(upstream=url), policies=policies)) as gateway:
        status, _, _ = await raw(gateway, b"/v1/completions", headers=ACCOUNT)
    assert status == 404
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("target", "body"),
    [
        (b"/v1/messages", BODY),
        (b"/v1/chat/completions", b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
        (b"/v1/responses", b'{"model":"m","input":"hi"}'),
        (b"/v1/completions", b'{"model":"m","prompt":"hi"}'),
        (b"/v1/complete", b'{"model":"m","prompt":"\\n\\nHuman: hi\\n\\nAssistant:"}'),
        (b"/v1/embeddings", b'{"model":"m","input":"hi"}'),
        (
            b"/v1/messages/batches",
            b'{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":5,'
            b'"messages":[{"role":"user","content":"hi"}]}}]}',
        ),
    ],
)
async def test_a_spent_account_reaches_no_metered_route(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], target: bytes, body: bytes
) -> None:
    upstream, url = fake
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 0/day}"))
    async with running(app) as gateway:
        status, _, answer = await raw(gateway, target, headers=ACCOUNT, body=body)
    assert status == 429, answer
    assert upstream.seen == []


async def test_a_compressed_answer_is_never_metered_as_free(tmp_path: Path) -> None:
    """The gateway asks for plain bytes; an upstream (or a CDN) that compresses anyway
    cannot be metered as the answer passes, so the reservation is charged."""
    events = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":1}}\n\n'
    upstream = ScriptedUpstream()
    upstream.script = Script(
        headers=[(b"content-type", b"text/event-stream"), (b"content-encoding", b"gzip")],
        chunks=[gzip.compress(events * 50)],
    )
    policies = policy_set(tmp_path, "{tokens: 10k/day}")
    async with running(upstream) as url:
        app = create_app(Settings(upstream=url), policies=policies)
        async with running(app) as gateway:
            status, _, _ = await raw(
                gateway,
                b"/v1/messages",
                headers={**ACCOUNT, "accept-encoding": "gzip"},
                body=b'{"model":"m","max_tokens":3000,"stream":true,"messages":[]}',
            )
            (state,) = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
    assert status == 200
    sent = {name.decode(): value.decode() for name, value in upstream.seen[0].headers}
    assert sent["accept-encoding"] == "identity"
    assert state.remaining <= 10_000 - 3000  # the whole cap, not the one token it says


@pytest.mark.parametrize("header", ["x-account-tier", "x-payment-fingerprint", "x-account-id"])
async def test_a_repeated_identity_attribute_or_signal_header_is_refused(
    tmp_path: Path, fake: tuple[ScriptedUpstream, str], header: str
) -> None:
    upstream, url = fake
    policies = policy_set(
        tmp_path,
        "{requests: 9/day}",
        """
        identity:
          attribute_headers: {tier: x-account-tier}
        clusters:
          link_by: [{header: x-payment-fingerprint}]
        """,
    )
    async with running(create_app(Settings(upstream=url), policies=policies)) as gateway:
        host, port = gateway.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: g\r\nconnection: close\r\n"
            + (b"x-account-id: acct-1\r\n" if header != "x-account-id" else b"")
            + f"{header}: one\r\n{header}: two\r\n".encode()
            + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
            + BODY
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401")
    assert b"came more than once" in answer
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("target", "body", "field", "each"),
    [
        (b"/v1/messages", b'{"model":"m","max_tokens":3000,"messages":[]}', "max_tokens", 1000),
        (
            b"/v1/chat/completions",
            b'{"model":"m","n":2,"max_completion_tokens":1500,"messages":[]}',
            "max_completion_tokens",
            500,
        ),
    ],
)
async def test_a_capping_policy_forwards_the_lower_cap_and_says_so(
    tmp_path: Path,
    fake: tuple[ScriptedUpstream, str],
    target: bytes,
    body: bytes,
    field: str,
    each: int,
) -> None:
    """1,000 output tokens are left today; the request asks for 3,000 (Anthropic) or
    2 x 1,500 (OpenAI, n=2): it is admitted, and the upstream is asked for no more than fits."""
    upstream, url = fake
    policies = policy_set(
        tmp_path, "{output_tokens: 1000/day}", keys="action: cap\nmin_output_tokens: 200"
    )
    async with running(create_app(Settings(upstream=url), policies=policies)) as gateway:
        status, headers, _ = await raw(gateway, target, headers=ACCOUNT, body=body)
    assert status == 200
    assert headers["x-gateway-output-capped"] == "1000"
    forwarded = json.loads(upstream.seen[0].body)
    assert forwarded[field] == each

"""The upstream HTTP client, behind one small interface.

aiohttp is the default: measured on this kind of machine it proxies about six times the
requests per second of httpx 0.28 at 64 concurrent (httpx's pool scans every connection
on each request, httpx issue #3215; see docs/performance.md). The httpx client is kept
behind the same interface so the benchmark can measure both in the same run.

Both pass bytes through untouched: no automatic decompression and no default headers
added, so a response reaches the client byte for byte as the upstream sent it.

At most once: a request is never sent twice. Once a connection exists, any byte of the
request may have reached the upstream, which may then generate (and bill) an answer the
gateway never sees; a retry would get a second one, and refunding the failed first would
make both free. So only a failure to connect (nothing written) is ``UpstreamUnreachable``;
every other failure is an ``UpstreamError`` with ``sent`` true, and the proxy keeps the
input charged. aiohttp itself drops a pooled connection that it finds closed before
writing on it, which is the one retry that is safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import yarl

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable

Headers = Sequence[tuple[str, str]]


class UpstreamBroke(UpstreamError):
    """The upstream's response body failed mid-way."""


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamBroke or UpstreamTimeout mid-way."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def send(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> UpstreamResponse:
        """Send a request; ``target`` is the path and query. Raises UpstreamError."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float


def open_upstream(kind: str, base_url: str, timeouts: Timeouts) -> Upstream:
    if kind == "httpx":
        return HttpxUpstream(base_url, timeouts)
    return AiohttpUpstream(base_url, timeouts)


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = list(response.raw_headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(
                "The upstream stopped sending before the response ended."
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroke(f"The upstream response broke off: {exc}.") from exc

    async def aclose(self) -> None:
        # release() would drain and reuse the connection; a cut-short body must not be reused.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpUpstream:
    def __init__(self, base_url: str, timeouts: Timeouts) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_read=timeouts.read
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so that it binds to the running loop, not the one at import.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped before the common 5 s server keep-alive
                # (uvicorn's default) so a request rarely meets one the server just closed.
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, keepalive_timeout=4.0),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> UpstreamResponse:
        session = self._get_session()
        # encoded=True: forward the path exactly as metered, without yarl normalizing it.
        url = yarl.URL(self._base_url + target, encoded=True)
        try:
            response = await session.request(
                method, url, headers=list(headers), data=body or None, allow_redirects=False
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamUnreachable(f"The upstream could not be reached: {exc}.") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("The upstream did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"The upstream connection failed: {exc}.") from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = list(response.headers.raw)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                "The upstream stopped sending before the response ended."
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamBroke(f"The upstream response broke off: {exc}.") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    def __init__(self, base_url: str, timeouts: Timeouts) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            follow_redirects=False,
        )

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> UpstreamResponse:
        request = self._client.build_request(method, target, headers=list(headers), content=body)
        # httpx adds these when absent; the gateway forwards only what the client sent.
        for name in ("accept-encoding", "accept", "user-agent"):
            if not any(key.lower() == name for key, _ in headers):
                request.headers.pop(name, None)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamUnreachable(f"The upstream could not be reached: {exc}.") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("The upstream did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"The upstream connection failed: {exc}.") from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = ["Upstream", "UpstreamBroke", "UpstreamResponse", "open_upstream"]

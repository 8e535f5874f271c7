"""Server-sent events, read off a byte stream that arrives in arbitrary pieces.

The meter never delays what it does not change: unless it must remove an event,
``feed`` hands back the very chunk it was given and parses a copy.

With a ``limit`` (the output the admission reserved), the meter also counts output as it
passes and cuts the stream where it would pass the limit: ``feed`` then returns the bytes
up to that event (withheld when it began in this chunk, else sent whole and counted), sets
``cut``, and ``ending(usage)`` gives the events that close the stream as the API would.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gateway.metering import Usage

_EOL = re.compile(rb"\r\n|\r|\n")

# The cut's count of output: text deltas, or the text at this many bytes a token if that
# is more. Ordinary text runs 3 to 5 bytes a token, so the count stays at or below the
# real one, and an upstream that honours its cap ends before the gateway would cut it.
CUT_BYTES_PER_TOKEN = 6


class EventSplitter:
    """Cuts a byte stream into whole events (ended by a blank line), keeping their raw bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for line ends
        self._line_start = 0

    @property
    def pending(self) -> int:
        """Bytes of an event begun but not yet ended (already handed on by a pass-through)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        return self._take(final=False)

    def flush(self) -> list[bytes]:
        """Whole events still buffered, then the unterminated rest (if any) as a last piece."""
        events = self._take(final=True)
        if self._buf:
            events.append(bytes(self._buf))
            self._buf.clear()
        self._scan = self._line_start = 0
        return events

    def _take(self, final: bool) -> list[bytes]:
        buf = self._buf
        events: list[bytes] = []
        start, pos, line_start = 0, self._scan, self._line_start
        while (match := _EOL.search(buf, pos)) is not None:
            if match.end() == len(buf) and match.group() == b"\r" and not final:
                pos = match.start()  # a CR at the end may be the first half of CRLF
                break
            if match.start() == line_start:
                events.append(bytes(buf[start : match.end()]))
                start = match.end()
            pos = line_start = match.end()
        else:
            pos = len(buf)
        del buf[:start]
        self._scan, self._line_start = pos - start, line_start - start
        return events


def event_data(raw: bytes) -> bytes | None:
    """The ``data`` of one raw event (several data lines joined by LF), or None if it has none."""
    lines = [line for line in _EOL.split(raw) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


class StreamMeter(Protocol):
    """Reads a streamed answer as it passes; see docs/metering.md for what it forwards."""

    cut: bool  # the output reached the meter's limit: the relay stops and ends the stream

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send to the client now."""
        ...

    def flush(self) -> bytes:
        """The bytes still held, at the end of the upstream body."""
        ...

    def result(self) -> tuple[Usage, bool]:
        """Usage so far, and whether the upstream reported it (False: partly estimated)."""
        ...

    def ending(self, usage: Usage) -> bytes:
        """What ends a stream that was cut, reporting ``usage``."""
        ...


class SSEMeter(ABC):
    """Counts usage from a stream; with ``filtering``, may drop events the client must not
    see; with ``limit``, cuts the stream where its output would pass it. Subclasses report
    the text the model wrote with ``wrote``."""

    def __init__(self, filtering: bool = False, limit: int | None = None) -> None:
        self._splitter = EventSplitter()
        self._filtering = filtering
        self.limit = limit
        self.cut = False  # the output reached ``limit``: nothing more is forwarded
        self.text_bytes = 0  # text the model wrote, as forwarded
        self.deltas = 0  # events that carried some of it

    def wrote(self, size: int) -> None:
        if size > 0:
            self.text_bytes += size
            self.deltas += 1

    @property
    def output_so_far(self) -> int:
        """The cut's count: never above the real output of ordinary text."""
        return max(self.deltas, math.ceil(self.text_bytes / CUT_BYTES_PER_TOKEN))

    def feed(self, chunk: bytes) -> bytes:
        if self.cut:
            return b""
        end = -self._splitter.pending  # where the next event starts, in ``chunk``
        events = self._splitter.feed(chunk)
        kept: list[bytes] = []
        for raw in events:
            start, end = end, end + len(raw)
            counted = (self.text_bytes, self.deltas)
            keep = self._read(raw)
            if self.limit is not None and self.output_so_far > self.limit:
                self.cut = True
                if self._filtering or start >= 0:
                    # Begun in this chunk: withheld whole, and not counted as delivered.
                    self.text_bytes, self.deltas = counted
                    return b"".join(kept) if self._filtering else chunk[:start]
                return chunk[:end]  # its first bytes went out with an earlier chunk
            if keep:
                kept.append(raw)
        return b"".join(kept) if self._filtering else chunk

    def flush(self) -> bytes:
        if self.cut:
            return b""
        pieces = self._splitter.flush()
        kept = [raw for raw in pieces if self._read(raw)]
        return b"".join(kept) if self._filtering else b""

    def _read(self, raw: bytes) -> bool:
        data = event_data(raw)
        return True if data is None else self.on_data(data)

    @abstractmethod
    def on_data(self, data: bytes) -> bool:
        """Reads one event's data; False drops the event (honoured only when filtering)."""

    @abstractmethod
    def result(self) -> tuple[Usage, bool]: ...

    def ending(self, usage: Usage) -> bytes:
        """The events that end a stream cut at its limit, reporting ``usage``; a format
        without a clear ending closes after the last whole event."""
        return b""


def sse_event(event: str | None, data: object) -> bytes:
    """One event as the APIs write it: an optional ``event:`` line, compact JSON data."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def text_size(fields: Mapping[str, Any], keys: Iterable[str]) -> int:
    """UTF-8 bytes of the strings ``fields`` holds under ``keys``."""
    return sum(len(text.encode()) for key in keys if isinstance(text := fields.get(key), str))

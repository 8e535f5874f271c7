"""Server-sent events, read off a byte stream that arrives in arbitrary pieces.

The meter never delays what it does not change: unless it must remove an event,
``feed`` hands back the very chunk it was given and parses a copy.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from gateway.metering import Usage

_EOL = re.compile(rb"\r\n|\r|\n")


class EventSplitter:
    """Cuts a byte stream into whole events (ended by a blank line), keeping their raw bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for line ends
        self._line_start = 0

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


class SSEMeter(ABC):
    """Counts usage from a stream; with ``filtering``, may drop events the client must not see."""

    def __init__(self, filtering: bool = False) -> None:
        self._splitter = EventSplitter()
        self._filtering = filtering

    def feed(self, chunk: bytes) -> bytes:
        events = self._splitter.feed(chunk)
        if not self._filtering:
            for raw in events:
                self._read(raw)
            return chunk
        return b"".join(raw for raw in events if self._read(raw))

    def flush(self) -> bytes:
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

"""What an image, a file or a recording in a prompt may cost, read from its own bytes.

Both APIs charge media by content: an image by its pixels, a PDF by its pages, audio by
its length. Base64 data sent inline is measured here; media sent by URL or file id is
unseen and costs a flat bound. Nothing here raises on bad data: what cannot be read
costs the flat bound, and the upstream refuses it if it really is broken.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

IMAGE_TOKENS = 1600  # an image whose pixels are unseen: the most either rule below gives
DOCUMENT_TOKENS = 3000  # a file whose bytes are unseen (URL, file id): one PDF page

# Anthropic (vision guide): an image is scaled so that its long edge is at most 1568 px
# and its area about 1.15 MP (~1,600 tokens), then costs width * height / 750 tokens.
ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_PIXELS_PER_TOKEN = 750
ANTHROPIC_MAX_IMAGE_TOKENS = 1600
# OpenAI (images and vision guide, GPT-4o): high detail fits the image in 2048 x 2048,
# scales its short side down to 768, then costs 170 a 512-px tile plus 85; low is 85.
OPENAI_MAX_EDGE = 2048
OPENAI_SHORT_EDGE = 768
OPENAI_TILE = 512
OPENAI_TILE_TOKENS = 170
OPENAI_BASE_TOKENS = 85

# Each PDF page is sent as its text (Anthropic's PDF guide: 1,500 to 3,000 tokens a page)
# and as an image; 3,000 covers a typical page. Both APIs refuse PDFs over 100 pages.
PDF_PAGE_TOKENS = 3000
PDF_MAX_PAGES = 100
DOCUMENT_MAX_TOKENS = PDF_PAGE_TOKENS * PDF_MAX_PAGES

# OpenAI counts one audio token per 100 ms of input (realtime costs guide). Without a WAV
# header giving the byte rate, 16 kbit/s is assumed: a low speech bitrate, so a long guess.
AUDIO_TOKENS_PER_SECOND = 10
AUDIO_MIN_BYTES_PER_SECOND = 2000

_HEAD_CHARS = 64  # 48 bytes: PNG, GIF, WebP and WAV state their sizes within the first 32
_SLACK_BYTES = 1024  # read past a JPEG segment, so that short ones (tables) take no extra pass
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![^\s()<>\[\]{}/%])")  # not /Pages, /PageLabel
_PDF_COUNT = re.compile(rb"/Count\s+(\d+)")
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length follows


class _Truncated(Exception):
    """The bytes decoded so far end before the dimensions do; ``needed`` bytes would do."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


def image_part_tokens(part: Mapping[str, Any]) -> int:
    """An image part of either API: by its pixels when they are inline, else IMAGE_TOKENS.

    Anthropic ``{"source": {"type": "base64", "data": ...}}``; OpenAI chat ``{"image_url":
    {"url": "data:...", "detail": ...}}``; Responses ``{"image_url": "data:...", "detail": ...}``.
    """
    source = part.get("source")
    image = part.get("image_url")
    url, detail = image, part.get("detail")
    if isinstance(image, Mapping):
        url, detail = image.get("url"), image.get("detail")
    if isinstance(source, Mapping):
        data = source.get("data") if source.get("type") == "base64" else None
    else:
        inline = split_data_url(url)
        data = None if inline is None else inline[1]
    size = image_size(data) if isinstance(data, str) else None
    if size is None:
        return IMAGE_TOKENS
    return image_tokens(*size, low_detail=detail == "low")


def file_part_tokens(part: Mapping[str, Any], text_tokens: Callable[[int], int]) -> int:
    """A file or audio part of either API: by its bytes when they are inline, else
    DOCUMENT_TOKENS. ``text_tokens`` is the prompt's bytes-to-tokens rule."""
    audio = part.get("input_audio")
    if isinstance(audio, Mapping):
        data = audio.get("data")
        return audio_tokens(data) if isinstance(data, str) else DOCUMENT_TOKENS
    inline = _file_data(part)
    if inline is None:
        return DOCUMENT_TOKENS
    return document_tokens(inline[1], inline[0], text_tokens)


def _file_data(part: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """Media type and base64 data: Anthropic ``{"source": {"type": "base64", ...}}``, OpenAI
    chat ``{"file": {"file_data": ...}}``, Responses ``{"file_data": ...}``."""
    source = part.get("source")
    if isinstance(source, Mapping):
        media_type, data = source.get("media_type"), source.get("data")
        if source.get("type") != "base64" or not isinstance(data, str):
            return None
        return (media_type if isinstance(media_type, str) else None), data
    nested = part.get("file")
    data = (nested if isinstance(nested, Mapping) else part).get("file_data")
    if not isinstance(data, str):
        return None
    return split_data_url(data) or (None, data)  # OpenAI also takes bare base64


def split_data_url(url: object) -> tuple[str, str] | None:
    """Media type and data of a ``data:<type>;base64,<data>`` URL; None for anything else."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0:
        return None
    kind, *params = url[5:comma].split(";")
    if "base64" not in params:
        return None
    return kind.strip().lower(), url[comma + 1 :]


def decode_base64(data: str) -> bytes | None:
    """The bytes of standard base64 (line breaks allowed), or None if it is not that."""
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        return None


def image_tokens(width: int, height: int, *, low_detail: bool = False) -> int:
    """The larger of Anthropic's and OpenAI's charge for an image of this size.

    ``low_detail`` (OpenAI's ``detail: "low"``) makes OpenAI's charge its flat 85; the
    result stays at least Anthropic's, which ignores detail, so it bounds either API.
    """
    openai = OPENAI_BASE_TOKENS if low_detail else _openai_tiles_tokens(width, height)
    return max(_anthropic_image_tokens(width, height), openai)


def _anthropic_image_tokens(width: int, height: int) -> int:
    scale = min(1.0, ANTHROPIC_MAX_EDGE / max(width, height))
    tokens = math.ceil(width * height * scale * scale / ANTHROPIC_PIXELS_PER_TOKEN)
    return min(tokens, ANTHROPIC_MAX_IMAGE_TOKENS)  # the area cap, in tokens


def _openai_tiles_tokens(width: int, height: int) -> int:
    scale = min(1.0, OPENAI_MAX_EDGE / max(width, height))
    scale *= min(1.0, OPENAI_SHORT_EDGE / (min(width, height) * scale))
    across = math.ceil(max(1, round(width * scale)) / OPENAI_TILE)
    down = math.ceil(max(1, round(height * scale)) / OPENAI_TILE)
    return OPENAI_TILE_TOKENS * across * down + OPENAI_BASE_TOKENS


def image_size(data: str) -> tuple[int, int] | None:
    """Width and height of base64 PNG, JPEG, GIF or WebP data; None if unreadable.

    Only a prefix is decoded. A JPEG states its size in a frame header that may follow
    large EXIF segments: the prefix grows to just past each segment it must step over.
    """
    chars = _HEAD_CHARS
    while True:
        head = _decode_prefix(data, chars)
        if head is None:
            return None
        try:
            return _dimensions(head)
        except _Truncated as short:
            if chars >= len(data):
                return None
            wanted = math.ceil((short.needed + _SLACK_BYTES) / 3) * 4
            chars = max(chars + _HEAD_CHARS, wanted)


def _decode_prefix(data: str, chars: int) -> bytes | None:
    if chars >= len(data):
        return decode_base64(data)
    prefix = "".join(data[:chars].split())
    return decode_base64(prefix[: len(prefix) - len(prefix) % 4])


def _dimensions(head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        _need(head, 24)
        if head[12:16] != b"IHDR":
            return None
        width, height = struct.unpack_from(">II", head, 16)
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        _need(head, 10)
        width, height = struct.unpack_from("<HH", head, 6)
    elif head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    else:
        return None
    return _positive(width, height)


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """Walks the segments after SOI to the first frame header (SOFn)."""
    at = 2
    while True:
        _need(head, at + 2)
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
        elif marker in _JPEG_STANDALONE:
            at += 2
        elif marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame
            return None
        elif marker in _JPEG_SOF:
            _need(head, at + 9)
            height, width = struct.unpack_from(">HH", head, at + 5)
            return _positive(width, height)
        else:
            _need(head, at + 4)
            length = int.from_bytes(head[at + 2 : at + 4], "big")
            if length < 2:
                return None
            at += 2 + length


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        _need(head, 30)
        if head[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", head, 26)
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":  # lossless: a 0x2F signature, then 14-bit sizes minus one
        _need(head, 25)
        if head[20] != 0x2F:
            return None
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        _need(head, 30)
        width = int.from_bytes(head[24:27], "little") + 1
        return width, int.from_bytes(head[27:30], "little") + 1
    return None


def _need(head: bytes, size: int) -> None:
    if len(head) < size:
        raise _Truncated(size)


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def document_tokens(data: str, media_type: str | None, text_tokens: Callable[[int], int]) -> int:
    """Base64 file data: a PDF by its pages, text by ``text_tokens`` (bytes to tokens),
    other bytes by that rule up to a long PDF's cost; DOCUMENT_TOKENS if not base64."""
    raw = decode_base64(data)
    if raw is None:
        return DOCUMENT_TOKENS
    if media_type == "application/pdf" or b"%PDF-" in raw[:1024]:
        return pdf_tokens(raw, text_tokens)
    if media_type is not None and media_type.startswith("text/"):
        return text_tokens(len(raw))
    return min(text_tokens(len(raw)), DOCUMENT_MAX_TOKENS)


def pdf_tokens(raw: bytes, text_tokens: Callable[[int], int]) -> int:
    """PDF_PAGE_TOKENS a page, up to PDF_MAX_PAGES. Pages are ``/Type /Page`` objects; in a
    PDF that compresses its objects into streams, the page tree's ``/Count`` if it shows,
    else the size by ``text_tokens``, at least one page and at most the cap."""
    pages = sum(1 for _ in _PDF_PAGE.finditer(raw))
    if not pages:
        pages = max((int(count) for count in _PDF_COUNT.findall(raw)), default=0)
    if pages:
        return min(pages, PDF_MAX_PAGES) * PDF_PAGE_TOKENS
    return max(PDF_PAGE_TOKENS, min(text_tokens(len(raw)), DOCUMENT_MAX_TOKENS))


def audio_tokens(data: str) -> int:
    """Base64 audio by its length in seconds: from a WAV header's byte rate, else from
    AUDIO_MIN_BYTES_PER_SECOND. DOCUMENT_TOKENS if the data does not start as base64."""
    head = _decode_prefix(data, _HEAD_CHARS)
    if head is None:
        return DOCUMENT_TOKENS
    byte_rate = AUDIO_MIN_BYTES_PER_SECOND
    if head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and len(head) >= 32:
        byte_rate = int.from_bytes(head[28:32], "little") or byte_rate
    size = len(data) * 3 / 4  # decoded bytes, rounded up by any padding and line breaks
    return math.ceil(size / byte_rate * AUDIO_TOKENS_PER_SECOND)

from __future__ import annotations

import base64
import math
import struct
import zlib

import pytest

from gateway.apis.base import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    PromptTally,
    tokens_for_bytes,
)
from gateway.apis.media import (
    AUDIO_MIN_BYTES_PER_SECOND,
    AUDIO_TOKENS_PER_SECOND,
    DOCUMENT_MAX_TOKENS,
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    PDF_PAGE_TOKENS,
    audio_tokens,
    document_tokens,
    file_part_tokens,
    image_part_tokens,
    image_size,
    image_tokens,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def data_url(media_type: str, raw: bytes) -> str:
    return f"data:{media_type};base64,{b64(raw)}"


def png(width: int, height: int) -> bytes:
    """A real, decodable RGB PNG of black pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + b"\x00" * 3 * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def riff(chunk: bytes, body: bytes) -> bytes:
    payload = b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def webp_lossy(width: int, height: int) -> bytes:
    return riff(b"VP8 ", b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(8))


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14
    return riff(b"VP8L", b"\x2f" + bits.to_bytes(4, "little") + bytes(8))


def webp_extended(width: int, height: int) -> bytes:
    sizes = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(b"VP8X", bytes(4) + sizes)


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(width: int, height: int, exif: int = 0) -> bytes:
    """SOI, JFIF, an EXIF segment of ``exif`` bytes, a quantization table, SOF0, then
    4 KB standing in for the Huffman tables and the scan."""
    parts = [b"\xff\xd8", segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")]
    if exif:
        parts.append(segment(0xE1, b"Exif\x00\x00" + bytes(exif)))
    parts.append(segment(0xDB, b"\x00" + bytes(64)))
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    parts.append(segment(0xC0, frame))
    parts.append(segment(0xC4, bytes(4096)))
    parts.append(b"\xff\xd9")
    return b"".join(parts)


def wav(seconds: float, rate: int = 24_000) -> bytes:
    samples = bytes(int(seconds * rate) * 2)  # 16-bit mono
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pdf(pages: int, *, compressed: bool = False) -> bytes:
    """A small PDF written by hand: a catalog, a page tree and ``pages`` page objects
    (spelled with varied whitespace). ``compressed`` hides the page objects, as an
    object stream would, leaving only the page tree's ``/Count``."""
    kids = " ".join(f"{3 + n} 0 R" for n in range(pages))
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
    ]
    spellings = ["/Type /Page", "/Type/Page", "/Type\n  /Page"]
    for n in range(pages):
        kind = "/Subtype /Hidden" if compressed else spellings[n % len(spellings)]
        objects.append(f"<< {kind} /Parent 2 0 R /MediaBox [0 0 612 792] >>")
    body = "".join(f"{n} 0 obj\n{text}\nendobj\n" for n, text in enumerate(objects, 1))
    return f"%PDF-1.7\n{body}trailer\n<< /Root 1 0 R >>\n%%EOF\n".encode()


def anthropic_part(kind: str, media_type: str, raw: bytes) -> dict[str, object]:
    return {"type": kind, "source": {"type": "base64", "media_type": media_type, "data": b64(raw)}}


def chat_image(url: str, detail: str = "auto") -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def tally_of(*messages: dict[str, object]) -> int:
    tally = PromptTally()
    for message in messages:
        tally.add_message(message)
    return tally.tokens()


@pytest.mark.parametrize(
    "image",
    [png, gif, webp_lossy, webp_lossless, webp_extended, jpeg],
    ids=["png", "gif", "webp-vp8", "webp-vp8l", "webp-vp8x", "jpeg"],
)
def test_image_size_reads_each_format(image: object) -> None:
    assert callable(image)
    assert image_size(b64(image(300, 200))) == (300, 200)


def test_image_size_finds_a_jpeg_frame_after_a_large_exif_segment() -> None:
    assert image_size(b64(jpeg(1920, 1080, exif=60_000))) == (1920, 1080)


def test_image_size_decodes_only_the_prefix_it_needs() -> None:
    # what follows the header (the pixels) is never decoded, so garbage there cannot matter
    garbage = "!" * 1_000_000
    assert image_size(b64(png(16, 16)) + garbage) == (16, 16)
    head = b64(jpeg(640, 480, exif=30_000))
    assert image_size(head + garbage) == (640, 480)


@pytest.mark.parametrize(
    "data",
    [
        "not base64 at all!",
        b64(b"plain words, not an image"),
        b64(jpeg(640, 480)[:40]),  # cut off before its frame header
        b64(png(16, 16))[:20],  # too short to hold a size
        b64(gif(0, 10)),
        "",
    ],
    ids=["not-base64", "not-an-image", "jpeg-without-frame", "short-png", "zero-width", "empty"],
)
def test_image_size_is_none_when_unreadable(data: str) -> None:
    assert image_size(data) is None


def test_image_tokens_follow_the_documented_rules() -> None:
    # OpenAI's is the larger for a panorama: fit to 2048x256, four tiles, 4 * 170 + 85
    assert image_tokens(4096, 512) == 4 * 170 + 85
    # Anthropic's is the larger for a 1000x1000 image: 1e6 / 750 tokens
    assert image_tokens(1000, 1000) == math.ceil(1_000_000 / 750)
    # and reaches its cap once the area passes about 1.2 MP (1568 px long edge first)
    assert image_tokens(2048, 4096) == IMAGE_TOKENS
    # low detail lowers only OpenAI's charge; Anthropic's still bounds it
    assert image_tokens(1000, 1000, low_detail=True) == math.ceil(1_000_000 / 750)
    assert image_tokens(16, 16, low_detail=True) == 85


def test_small_images_cost_far_less_than_large_and_none_passes_the_cap() -> None:
    small, large = image_tokens(16, 16), image_tokens(2000, 2000)
    assert small * 5 < large <= IMAGE_TOKENS
    shapes = [(1, 1), (768, 2048), (4096, 512), (512, 8000), (1568, 1568), (10_000, 10_000)]
    for width, height in shapes:
        assert 0 < image_tokens(width, height) <= IMAGE_TOKENS


def test_image_parts_of_each_api_are_measured() -> None:
    for side in (16, 2000):
        raw = png(side, side)
        parts = [
            anthropic_part("image", "image/png", raw),
            chat_image(data_url("image/png", raw)),
            {"type": "input_image", "image_url": data_url("image/png", raw)},
        ]
        assert [image_part_tokens(part) for part in parts] == [image_tokens(side, side)] * 3
    low = chat_image(data_url("image/png", png(16, 16)), detail="low")
    assert image_part_tokens(low) == image_tokens(16, 16, low_detail=True)


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "image", "source": {"type": "base64", "data": "%%% corrupt %%%"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}},
        {"type": "input_image", "file_id": "file_1", "detail": "low"},
        {"type": "input_image", "image_url": 42},
    ],
    ids=["url", "file", "corrupt", "chat-url", "chat-corrupt", "responses-file", "wrong-type"],
)
def test_unseen_or_unreadable_images_keep_the_flat_estimate(part: dict[str, object]) -> None:
    assert image_part_tokens(part) == IMAGE_TOKENS


def test_pdf_pages_are_counted() -> None:
    one, three = (document_tokens(b64(pdf(n)), "application/pdf", tokens_for_bytes) for n in (1, 3))
    assert one == PDF_PAGE_TOKENS  # /Pages, the tree, is not a page
    assert three == 3 * one


def test_pdf_without_visible_pages_uses_the_page_tree_count_then_its_size() -> None:
    assert document_tokens(b64(pdf(7, compressed=True)), None, tokens_for_bytes) == 7 * 3000
    opaque = b"%PDF-1.7\n" + bytes(range(256)) * 40
    tokens = document_tokens(b64(opaque), "application/pdf", tokens_for_bytes)
    assert tokens == max(PDF_PAGE_TOKENS, tokens_for_bytes(len(opaque)))


def test_long_pdfs_and_unknown_bytes_are_capped_but_text_is_not() -> None:
    assert document_tokens(b64(pdf(150)), "application/pdf", tokens_for_bytes) == (
        DOCUMENT_MAX_TOKENS
    )
    blob = bytes(range(256)) * 4000  # 1 MB of no known kind
    assert document_tokens(b64(blob), "application/zip", tokens_for_bytes) == DOCUMENT_MAX_TOKENS
    small = bytes(range(256)) * 4
    assert document_tokens(b64(small), None, tokens_for_bytes) == tokens_for_bytes(len(small))
    text = b"line of text\n" * 100_000
    assert document_tokens(b64(text), "text/plain", tokens_for_bytes) == tokens_for_bytes(len(text))


def test_file_parts_of_each_api_are_measured() -> None:
    three = 3 * PDF_PAGE_TOKENS
    raw = pdf(3)
    url = data_url("application/pdf", raw)
    parts = [
        anthropic_part("document", "application/pdf", raw),
        {"type": "file", "file": {"file_data": url, "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": b64(raw)}},  # bare base64, known by its header
        {"type": "input_file", "file_data": url, "filename": "a.pdf"},
    ]
    assert [file_part_tokens(p, tokens_for_bytes) for p in parts] == [three] * 4


@pytest.mark.parametrize(
    "part",
    [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "base64", "data": "%%% corrupt"}},
        {"type": "file", "file": {"file_id": "file_1"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,@@@"}},
        {"type": "input_file", "file_url": "https://example.com/a.pdf"},
        {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}},
    ],
    ids=["url", "file", "corrupt", "chat-file-id", "chat-corrupt", "responses-url", "audio-bad"],
)
def test_unseen_or_unreadable_files_keep_the_flat_estimate(part: dict[str, object]) -> None:
    assert file_part_tokens(part, tokens_for_bytes) == DOCUMENT_TOKENS


def test_audio_costs_its_length() -> None:
    two, four = audio_tokens(b64(wav(2))), audio_tokens(b64(wav(4)))
    assert two == pytest.approx(2 * AUDIO_TOKENS_PER_SECOND, abs=1)
    assert four == pytest.approx(2 * two, abs=1)
    mp3 = b"ID3\x04\x00" + bytes(AUDIO_MIN_BYTES_PER_SECOND * 30 - 5)  # no byte rate to read
    assert audio_tokens(b64(mp3)) == pytest.approx(30 * AUDIO_TOKENS_PER_SECOND, abs=1)
    part = {"type": "input_audio", "input_audio": {"data": b64(wav(2)), "format": "wav"}}
    assert file_part_tokens(part, tokens_for_bytes) == two


def test_a_whole_anthropic_message_is_tallied() -> None:
    icon = anthropic_part("image", "image/png", png(16, 16))
    report = anthropic_part("document", "application/pdf", pdf(3))
    notes = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "abc"},
    }
    blocks = [{"type": "text", "text": "de"}, icon]
    bundle = {"type": "document", "source": {"type": "content", "content": blocks}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [icon]}
    content = [
        {"type": "text", "text": "Compare these."},
        icon,
        report,
        notes,
        bundle,
        linked,
        result,
    ]
    tokens = tally_of({"role": "user", "content": content})

    tool_json = len(b'{"type":"tool_result","tool_use_id":"t1"}')
    text = len("Compare these.") + len("abc") + len("de") + tool_json
    media = 3 * image_tokens(16, 16) + 3 * PDF_PAGE_TOKENS + IMAGE_TOKENS
    overhead = MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
    assert tokens == tokens_for_bytes(text) + media + overhead
    assert tokens < 4 * IMAGE_TOKENS + 3 * PDF_PAGE_TOKENS  # the icons were not 1,600 each


def test_a_whole_openai_message_is_tallied() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        chat_image(data_url("image/jpeg", jpeg(2000, 2000, exif=20_000)), detail="high"),
        chat_image(data_url("image/gif", gif(16, 16)), detail="low"),
        {"type": "file", "file": {"file_data": data_url("application/pdf", pdf(2))}},
        {"type": "input_audio", "input_audio": {"data": b64(wav(3)), "format": "wav"}},
        chat_image("https://example.com/a.png"),
    ]
    tokens = tally_of({"role": "user", "content": content})

    media = image_tokens(2000, 2000) + image_tokens(16, 16, low_detail=True)
    media += 2 * PDF_PAGE_TOKENS + audio_tokens(b64(wav(3))) + IMAGE_TOKENS
    overhead = MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
    assert tokens == tokens_for_bytes(len("What is in these?")) + media + overhead


def test_responses_input_parts_are_tallied() -> None:
    tally = PromptTally()
    tally.add_content(
        [
            {"type": "input_image", "image_url": data_url("image/webp", webp_lossy(64, 64))},
            {"type": "input_file", "file_data": data_url("application/pdf", pdf(4))},
            {"type": "input_file", "file_id": "file_1"},
        ]
    )
    media = image_tokens(64, 64) + 4 * PDF_PAGE_TOKENS + DOCUMENT_TOKENS
    assert tally.tokens() == media + REQUEST_OVERHEAD_TOKENS

import os

import pytest

from sealdump.archive import format as fmt
from sealdump.errors import IntegrityError

DEK = bytes(range(32))
SEG = fmt.MIN_SEGMENT_SIZE
FULL = SEG + fmt.TAG_SIZE
PLAIN = os.urandom(3 * SEG + 100)  # random: zstd cannot shrink it, so 4 segments


def stored(
    plain: bytes = PLAIN, name: str = "o/abc", backup: str = "b1", compress: bool = False
) -> bytes:
    return b"".join(fmt.encrypt([plain], DEK, backup, name, compress=compress, segment_size=SEG))


def opened(
    data: bytes, name: str = "o/abc", backup: str = "b1", dek: bytes = DEK, piece: int = 1000
) -> bytes:
    return b"".join(
        fmt.decrypt([data[i : i + piece] for i in range(0, len(data), piece)], dek, backup, name)
    )


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    header = fmt.parse_header(data)
    body = data[len(header.raw) :]
    return header.raw, [body[i : i + FULL] for i in range(0, len(body), FULL)]


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 100])
def test_round_trip_at_every_boundary(size: int, compress: bool) -> None:
    plain = PLAIN[:size]
    assert opened(stored(plain, compress=compress)) == plain


def test_compression_happens_before_encryption() -> None:
    text = b"INSERT INTO t VALUES (1,'aaaa');\n" * 10_000
    assert len(stored(text, compress=True)) < len(text) // 20
    assert opened(stored(text, compress=True)) == text


def test_layout_is_header_then_full_segments_then_a_short_last_one() -> None:
    data = stored()
    _header, segments = split(data)
    assert len(segments) == 4
    assert [len(s) for s in segments[:3]] == [FULL] * 3
    assert len(segments[3]) == 100 + fmt.TAG_SIZE


@pytest.mark.parametrize("position", ["header", "segment0", "segment2", "tag", "last"])
def test_any_flipped_bit_is_detected(position: str) -> None:
    data = bytearray(stored())
    header_length = len(fmt.parse_header(bytes(data)).raw)
    offsets = {
        "header": 12,  # segment size field
        "segment0": header_length + 5,
        "segment2": header_length + 2 * FULL + 77,
        "tag": header_length + FULL - 1,
        "last": len(data) - 1,
    }
    data[offsets[position]] ^= 0x01
    with pytest.raises(IntegrityError):
        opened(bytes(data))


def test_every_single_header_byte_is_protected() -> None:
    data = stored(PLAIN[:50])
    header_length = len(fmt.parse_header(data).raw)
    for offset in range(header_length):
        damaged = bytearray(data)
        damaged[offset] ^= 0x80
        with pytest.raises(IntegrityError):
            opened(bytes(damaged))


@pytest.mark.parametrize(
    "cut", [1, 15, 16, 17, FULL - 1, FULL, FULL + 1, 2 * FULL, 3 * FULL, 3 * FULL + 50]
)
def test_truncation_is_detected_at_and_between_segment_boundaries(cut: int) -> None:
    data = stored()
    header_length = len(fmt.parse_header(data).raw)
    with pytest.raises(IntegrityError, match=r"truncated|authentication"):
        opened(data[: header_length + cut])


def test_truncation_inside_the_header() -> None:
    with pytest.raises(IntegrityError, match="header"):
        opened(stored()[:40])


@pytest.mark.parametrize(
    ("variant", "first_bad_segment"),
    [("swapped", 0), ("duplicated", 1), ("appended", 3), ("dropped middle", 1), ("extra bytes", 3)],
)
def test_reordered_duplicated_and_appended_segments_are_detected(
    variant: str, first_bad_segment: int
) -> None:
    """Each segment's nonce carries its index and a last-segment flag, so the first segment
    out of place (or the short one no longer last) is the one refused."""
    header, segments = split(stored())
    body = {
        "swapped": [segments[1], segments[0], *segments[2:]],
        "duplicated": [segments[0], segments[0], *segments[1:]],
        "appended": [*segments, segments[-1]],
        "dropped middle": [segments[0], *segments[2:]],
        "extra bytes": [*segments, b"x"],
    }[variant]
    with pytest.raises(IntegrityError, match=f"segment {first_bad_segment} failed authentication"):
        opened(header + b"".join(body))


def test_object_from_another_position_or_backup_is_refused() -> None:
    data = stored(name="o/first")
    with pytest.raises(IntegrityError, match="swapped or moved"):
        opened(data, name="o/second")
    with pytest.raises(IntegrityError, match="swapped or moved"):
        opened(data, backup="b2")


def test_header_claiming_the_expected_place_still_fails() -> None:
    # Rewrite the name in the header to the expected one: the key derivation uses the
    # reader's expectation, so the commitment no longer matches.
    data = stored(name="o/aaa")
    forged = data.replace(b"o/aaa", b"o/bbb", 1)
    with pytest.raises(IntegrityError):
        opened(forged, name="o/bbb")


def test_wrong_key_is_refused_before_any_plaintext() -> None:
    stream = fmt.decrypt([stored()], bytes(32), "b1", "o/abc", "local:feedfacecafebeef")
    with pytest.raises(IntegrityError, match="wrong key"):
        next(stream)  # the very first item: no plaintext was ever produced
    with pytest.raises(IntegrityError, match=r"expected data key of local:feedfacecafebeef"):
        list(fmt.decrypt([stored()], bytes(32), "b1", "o/abc", "local:feedfacecafebeef"))


def test_any_segment_decrypts_alone() -> None:
    data = stored()
    header = fmt.parse_header(data[: fmt.HEADER_PROBE])
    cipher = fmt.open_header(header, DEK, "b1", "o/abc")
    count = header.segment_count(len(data))
    assert count == 4
    for index in range(count):
        start = header.segment_offset(index)
        segment = data[start : start + FULL]
        plain = fmt.decrypt_segment(header, cipher, index, segment, last=index == count - 1)
        assert plain == PLAIN[index * SEG : (index + 1) * SEG]
    with pytest.raises(IntegrityError):  # a middle segment presented as the last one
        fmt.decrypt_segment(header, cipher, 1, data[header.segment_offset(1) :][:FULL], last=True)


def test_not_a_sealdump_object() -> None:
    with pytest.raises(IntegrityError, match="bad magic"):
        opened(b"PK\x03\x04" + bytes(200))

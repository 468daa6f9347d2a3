import stat
from pathlib import Path

import pytest

from sealdump.errors import IntegrityError, KeyProviderError, UsageError
from sealdump.keys.base import Wrapping
from sealdump.keys.local import LocalKeyProvider, fingerprint, generate_key_file, read_key_file


def test_generate_writes_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    key_id = generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id == fingerprint(read_key_file(path))
    before = path.read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        generate_key_file(path)
    assert path.read_bytes() == before


def test_raw_32_byte_key_files_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "raw").write_bytes(bytes(range(32)))
    assert read_key_file(tmp_path / "raw") == bytes(range(32))


def test_a_file_that_is_not_a_key_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("hello")
    with pytest.raises(KeyProviderError, match="sealdump keys generate"):
        read_key_file(tmp_path / "bad")


def test_wrap_unwrap_and_the_key_ring_after_rotation(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "old.key")
    generate_key_file(tmp_path / "new.key")
    dek = bytes(range(32))
    before = LocalKeyProvider("k", tmp_path / "old.key").wrap(dek)
    rotated = LocalKeyProvider("k", tmp_path / "new.key", (tmp_path / "old.key",))
    after = rotated.wrap(dek)
    assert after.key_id != before.key_id
    assert rotated.owns(before)
    assert rotated.owns(after)
    assert rotated.unwrap(before) == dek == rotated.unwrap(after)
    forgetful = LocalKeyProvider("k", tmp_path / "new.key")
    assert not forgetful.owns(before)
    with pytest.raises(KeyProviderError, match="old_key_files"):
        forgetful.unwrap(before)


def test_tampered_wrapped_key_is_an_integrity_error(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "k")
    provider = LocalKeyProvider("k", tmp_path / "k")
    wrapping = provider.wrap(bytes(32))
    damaged = Wrapping(
        wrapping.provider,
        wrapping.key_id,
        wrapping.algorithm,
        bytes([wrapping.wrapped_key[0] ^ 1]) + wrapping.wrapped_key[1:],
    )
    with pytest.raises(IntegrityError):
        provider.unwrap(damaged)


def test_fingerprint_reveals_nothing_obvious() -> None:
    key = bytes(range(32))
    assert fingerprint(key).startswith("local:")
    assert key.hex()[:16] not in fingerprint(key)

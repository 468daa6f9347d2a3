"""The contract every storage implementation meets: filesystem, and Azure Blob on Azurite."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from sealdump.config.model import AzureBlobStorage
from sealdump.config.secrets import SecretFile
from sealdump.errors import StorageError
from sealdump.storage.azure_blob import AzureBlobStore
from sealdump.storage.base import Storage
from sealdump.storage.filesystem import FilesystemStore


@pytest.fixture(params=["filesystem", pytest.param("azure-blob", marks=pytest.mark.azurite)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "root")
    container = request.getfixturevalue("blob_container")
    ca = request.getfixturevalue("test_ca")
    config = AzureBlobStorage(
        name="blob",
        account_url=container["url"],
        container=container["name"],
        prefix="pre/fix/",
        sas_token_file=SecretFile(str(container["sas_file"]), tmp_path),
        ca_file=ca.cert_path,
    )
    return AzureBlobStore(config)


def test_write_read_size_exists(storage: Storage) -> None:
    data = bytes(range(256)) * 10_000
    assert storage.write("s/j/b/o/x", [data[:1000], data[1000:]]) == len(data)
    assert b"".join(storage.read("s/j/b/o/x")) == data
    assert storage.size("s/j/b/o/x") == len(data)
    assert storage.exists("s/j/b/o/x")
    assert not storage.exists("s/j/b/o/y")


def test_ranged_reads(storage: Storage) -> None:
    storage.write("a/b", [bytes(range(100))])
    assert b"".join(storage.read("a/b", 10, 5)) == bytes(range(10, 15))
    assert b"".join(storage.read("a/b", 95)) == bytes(range(95, 100))


def test_overwrite_is_atomic_replacement(storage: Storage) -> None:
    storage.write("k", [b"one"])
    storage.write("k", [b"two"])
    assert b"".join(storage.read("k")) == b"two"


def test_failed_write_leaves_nothing_and_keeps_the_old_object(storage: Storage) -> None:
    storage.write("k", [b"old"])

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        storage.write("k", broken())
    with pytest.raises(RuntimeError):
        storage.write("new", broken())
    assert b"".join(storage.read("k")) == b"old"
    assert sorted(storage.list()) == ["k"]
    assert storage.sizes() == {"k": 3}


def test_list_by_prefix_and_delete(storage: Storage) -> None:
    for name in ("s1/j/b1/manifest", "s1/j/b1/o/1", "s2/j/b2/manifest"):
        storage.write(name, [b"x"])
    assert sorted(storage.list("s1/")) == ["s1/j/b1/manifest", "s1/j/b1/o/1"]
    storage.delete("s1/j/b1/o/1")
    storage.delete("s1/j/b1/o/1")  # absent: not an error
    assert sorted(storage.list()) == ["s1/j/b1/manifest", "s2/j/b2/manifest"]


def test_sizes_lists_every_name_under_a_prefix_with_its_size(storage: Storage) -> None:
    storage.write("s/j/b1/keys.json", [b"k" * 10])
    storage.write("s/j/b1/o/1", [b"x" * 1000, b"y" * 24])
    storage.write("s/j/b1/o/empty", [])
    storage.write("s/j/b10/o/1", [b"not under s/j/b1/"])
    storage.write("s/j/b2/o/1", [b"z"])
    assert storage.sizes("s/j/b1/") == {
        "s/j/b1/keys.json": 10,
        "s/j/b1/o/1": 1024,
        "s/j/b1/o/empty": 0,
    }
    assert storage.sizes("s/j/b2/o/") == {"s/j/b2/o/1": 1}
    assert storage.sizes("nothing/here/") == {}
    everything = storage.sizes()
    assert sorted(everything) == sorted(storage.list())
    assert everything["s/j/b10/o/1"] == len(b"not under s/j/b1/")
    storage.write("s/j/b1/o/1", [b"shorter"])
    storage.delete("s/j/b1/o/empty")
    assert storage.sizes("s/j/b1/") == {"s/j/b1/keys.json": 10, "s/j/b1/o/1": 7}


def test_missing_object_is_a_storage_error(storage: Storage) -> None:
    with pytest.raises(StorageError, match="not in storage"):
        b"".join(storage.read("nope"))
    with pytest.raises(StorageError):
        storage.size("nope")


@pytest.mark.parametrize("name", ["", "../escape", "a//b", "a/./b", "/abs"])
def test_filesystem_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="invalid object name"):
        FilesystemStore(tmp_path).write(name, [b"x"])


def test_empty_object(storage: Storage) -> None:
    assert storage.write("empty", []) == 0
    assert b"".join(storage.read("empty")) == b""
    assert storage.size("empty") == 0

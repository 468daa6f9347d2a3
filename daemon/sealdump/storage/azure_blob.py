"""Backups in Azure Blob Storage, over HTTPS only.

Objects are uploaded as block blobs of unknown size with bounded memory: blocks are staged
(``stage_block``, MD5-validated by the service, retried by azure-core on timeouts and 5xx)
with at most ``max_concurrency`` in flight, then committed in one ``commit_block_list``
carrying the tier and, when configured, an immutability policy and a legal hold. A blob
exists only once committed, so a failed upload leaves no partial object; its uncommitted
blocks are discarded by the service after seven days. Block sizes grow with the object so
one object can pass 1 TiB within the 50,000-block limit.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobBlock, ContainerClient, ImmutabilityPolicy, StandardBlobTier

from sealdump.config.model import AzureBlobStorage
from sealdump.errors import StorageError
from sealdump.log import get_logger

log = get_logger(__name__)

SMALL_BLOCK = 4 << 20
LARGE_BLOCK = 64 << 20
SMALL_BLOCKS = 4096  # 16 GiB in small blocks, then 64 MiB blocks: about 2.8 TiB in all
TIERS = {
    "hot": StandardBlobTier.HOT,
    "cool": StandardBlobTier.COOL,
    "cold": StandardBlobTier.COLD,
    "archive": StandardBlobTier.ARCHIVE,
}
# SAS permission letters, by what sealdump was doing when the service said no.
_PERMISSIONS = {
    "write": "w (write)",
    "read": "r (read)",
    "list": "l (list)",
    "delete": "d (delete)",
}
# azure-storage's own exponential retry (timeouts, 5xx, throttling): 15 s, then x3 each time.
_RETRY = {"retry_total": 5}


def block_size(index: int) -> int:
    """The size of block ``index``: small first, so small objects stay cheap."""
    return SMALL_BLOCK if index < SMALL_BLOCKS else LARGE_BLOCK


def block_id(index: int) -> str:
    """Deterministic, equal-length block ids, as the service requires (the SDK base64s them)."""
    return f"sealdump-{index:08d}"


def _container_client(config: AzureBlobStorage, options: dict[str, Any]) -> ContainerClient:
    """A client for the configured container; the first configured credential wins."""
    if config.account_url.startswith("http://"):
        log.warning(
            "using plain HTTP to blob storage (allow_insecure_http: true): emulators only",
            storage=config.name,
        )
    if config.ca_file is not None:
        options["connection_verify"] = str(config.ca_file)
    if config.sas_token_file is not None:
        log.info("blob storage authentication", storage=config.name, method="SAS token")
        token = config.sas_token_file.read().reveal().lstrip("?")
        return ContainerClient(config.account_url, config.container, credential=token, **options)
    if config.account_key_file is not None:
        log.info("blob storage authentication", storage=config.name, method="account key")
        account = _account_name(config.account_url)
        key = config.account_key_file.read().reveal()
        credential = {"account_name": account, "account_key": key}
        return ContainerClient(
            config.account_url, config.container, credential=credential, **options
        )
    if config.connection_string_file is not None:
        log.info("blob storage authentication", storage=config.name, method="connection string")
        text = config.connection_string_file.read().reveal()
        return ContainerClient.from_connection_string(text, config.container, **options)
    from azure.identity import DefaultAzureCredential

    log.info(
        "blob storage authentication",
        storage=config.name,
        method="default credential (managed identity)",
    )
    identity = DefaultAzureCredential(managed_identity_client_id=config.managed_identity_client_id)
    return ContainerClient(config.account_url, config.container, credential=identity, **options)


def _account_name(account_url: str) -> str:
    """The storage account of an endpoint: the host's first label, or Azurite's path segment."""
    from urllib.parse import urlparse

    parsed = urlparse(account_url)
    path = parsed.path.strip("/")
    host = parsed.hostname or ""
    if path and (host.replace(".", "").isdigit() or host == "localhost"):
        return path.split("/")[0]
    return host.split(".")[0]


class AzureBlobStore:
    """A blob container (and prefix) holding sealdump objects."""

    def __init__(self, config: AzureBlobStorage, **client_options: Any) -> None:
        self.config = config
        self.prefix = config.prefix
        self._client_options = {**_RETRY, **client_options}
        self._client: ContainerClient | None = None
        self._container_checked = False
        self._lock = threading.Lock()

    @property
    def client(self) -> ContainerClient:
        """The container client, made at first use (secrets are read then)."""
        if self._client is None:
            self._client = _container_client(self.config, dict(self._client_options))
        return self._client

    def describe(self) -> str:
        """``account_url/container/prefix``."""
        return f"{self.config.account_url.rstrip('/')}/{self.config.container}/{self.prefix}"

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        """Stage blocks (bounded in flight), then commit them all at once."""
        self._ensure_container()
        blob = self.client.get_blob_client(self.prefix + name)
        concurrency = self.config.max_concurrency
        slots = threading.BoundedSemaphore(concurrency)
        futures: list[Future[None]] = []
        ids: list[str] = []
        size = 0

        def stage(index: int, data: bytes) -> None:
            try:
                blob.stage_block(block_id(index), data, length=len(data), validate_content="md5")
            finally:
                slots.release()

        with ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="sealdump-upload"
        ) as pool:
            try:
                for index, data in enumerate(_blocks(chunks)):
                    slots.acquire()
                    failed = next((f for f in futures if f.done() and f.exception()), None)
                    if failed is not None:
                        slots.release()
                        break
                    futures.append(pool.submit(stage, index, data))
                    ids.append(block_id(index))
                    size += len(data)
                for future in futures:
                    future.result()
            except (HttpResponseError, ServiceRequestError) as exc:
                raise self._error("write", name, exc) from None
        options: dict[str, Any] = {}
        if self.config.tier:
            options["standard_blob_tier"] = TIERS[self.config.tier]
        if self.config.immutability_days:
            until = datetime.now(UTC) + timedelta(days=self.config.immutability_days)
            options["immutability_policy"] = ImmutabilityPolicy(
                expiry_time=until, policy_mode="Unlocked"
            )
        if self.config.legal_hold:
            options["legal_hold"] = True
        try:
            blob.commit_block_list([BlobBlock(block_id=i) for i in ids], **options)
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("write", name, exc) from None
        return size

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream the blob or a range of it, ranges fetched in parallel."""
        blob = self.client.get_blob_client(self.prefix + name)
        start = offset if (offset or length is not None) else None
        try:
            downloader = blob.download_blob(
                start, length, max_concurrency=self.config.max_concurrency
            )
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("read", name, exc) from None
        return self._chunks(downloader, name)

    def _chunks(self, downloader: Any, name: str) -> Iterator[bytes]:
        try:
            yield from downloader.chunks()
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("read", name, exc) from None

    def size(self, name: str) -> int:
        """The blob's size."""
        try:
            return int(self.client.get_blob_client(self.prefix + name).get_blob_properties().size)
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("read", name, exc) from None

    def exists(self, name: str) -> bool:
        """Whether the blob exists."""
        try:
            return bool(self.client.get_blob_client(self.prefix + name).exists())
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("read", name, exc) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Blob names under the prefix, without the storage's own prefix."""
        try:
            for blob in self.client.list_blobs(name_starts_with=self.prefix + prefix):
                yield blob.name[len(self.prefix) :]
        except (HttpResponseError, ServiceRequestError) as exc:
            raise self._error("list", prefix or "(all)", exc) from None

    def delete(self, name: str) -> None:
        """Delete the blob; one still under immutability or legal hold is reported and kept."""
        try:
            self.client.get_blob_client(self.prefix + name).delete_blob()
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if "Immutab" in code or "LegalHold" in code:
                log.warning("blob is locked and was kept", blob=self.prefix + name, reason=code)
                return
            raise self._error("delete", name, exc) from None
        except ServiceRequestError as exc:
            raise self._error("delete", name, exc) from None

    def _ensure_container(self) -> None:
        """Create the container first if configured to; otherwise a missing one is reported.

        Existence is not probed: a container SAS may not read container properties.
        """
        with self._lock:
            if self._container_checked or not self.config.create_container:
                return
            try:
                self.client.create_container()
                log.info("container created", container=self.config.container)
            except ResourceExistsError:
                pass
            except (HttpResponseError, ServiceRequestError) as exc:
                raise self._error("write", "(container)", exc) from None
            self._container_checked = True

    def _error(self, operation: str, name: str, exc: Exception) -> StorageError:
        """One sentence for an SDK failure, naming the missing permission when it is one."""
        where = f"{self.describe()}{name}"
        if isinstance(exc, ServiceRequestError):
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text:
                ca = self.config.ca_file or "the system CA bundle"
                return StorageError(
                    f"TLS failure for {self.config.account_url}: "
                    f"certificate not signed by a CA in {ca}"
                )
            return StorageError(
                f"blob storage unreachable at {self.config.account_url}: "
                f"{scrub(text.splitlines()[0])}",
                transient=True,
            )
        code = str(getattr(exc, "error_code", "") or "")
        status = getattr(exc, "status_code", None)
        if code == "BlobArchived" or "archive" in code.lower():
            return StorageError(
                f"{where} is in the archive tier: rehydrate it to hot or cool "
                "(Set Blob Tier, or copy it) before restoring; that takes hours"
            )
        if code == "ContainerNotFound":
            return StorageError(
                f"container {self.config.container!r} does not exist at {self.config.account_url} "
                "(create it, or set create_container: true)"
            )
        if isinstance(exc, ResourceNotFoundError):
            return StorageError(f"{name} is not in storage {self.describe()}")
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            if "Permission" in code or code == "AuthorizationPermissionMismatch":
                return StorageError(
                    f"blob storage refused {operation} of {where}: the credential lacks the "
                    f"{_PERMISSIONS[operation]} permission"
                )
            return StorageError(
                f"blob storage rejected the credential for {operation} of {where} "
                "(SAS expired or not valid, wrong key, or identity without access)"
            )
        return StorageError(
            f"blob storage {operation} of {where} failed: {code or status}: {_first_line(exc)}"
        )


_QUERY = re.compile(r"\?[^\s'\"]*")


def scrub(text: str) -> str:
    """Drop URL query strings from a message: a SAS token travels in them."""
    return _QUERY.sub("?<redacted>", text)


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return scrub(str(message).splitlines()[0])


def _blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Regroup a byte stream into blocks of ``block_size(i)`` bytes (the last may be short)."""
    pending = bytearray()
    index = 0
    for chunk in chunks:
        pending += chunk
        while len(pending) >= block_size(index):
            size = block_size(index)
            yield bytes(pending[:size])
            del pending[:size]
            index += 1
    if pending or index == 0:
        yield bytes(pending)

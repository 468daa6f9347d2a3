"""Backups in Azure Blob Storage, over HTTPS only.

Objects are uploaded as block blobs of unknown size with bounded memory: blocks are staged
(``stage_block``, MD5-validated by the service, retried by azure-storage on timeouts and 5xx)
with at most ``max_concurrency`` in flight, then committed in one ``commit_block_list``
carrying the tier and, when configured, an immutability policy and a legal hold. A blob
exists only once committed, so a failed upload leaves no partial object; its uncommitted
blocks are discarded by the service after seven days. Block sizes grow with the object so
one object can pass 1 TiB within the 50,000-block limit.

Every request has a deadline: the storage's ``timeout`` (see ``RetryPlan``). A request
that runs out of time is a transient ``StorageError`` saying it timed out and naming the
storage.

HTTPS only, whatever the credential: ``account_url`` is checked by ``config validate``, and
a connection string (a secret, read at first use) is checked then, on the endpoint the SDK
client it makes would actually call (``BlobEndpoint``, or ``DefaultEndpointsProtocol`` with
``AccountName`` and ``EndpointSuffix``, or ``UseDevelopmentStorage``): plain HTTP is refused
unless the storage has ``allow_insecure_http: true`` (warned at every use), and an endpoint
other than ``account_url``'s is refused, before any request leaves the process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, ContainerClient, ImmutabilityPolicy, StandardBlobTier

from sealdump.azure_errors import timed_out
from sealdump.config.model import AzureBlobStorage
from sealdump.config.secrets import SecretFile
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
# HTTP statuses worth retrying later, once azure-storage's own retries gave up.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# azure-storage's ExponentialRetry: retry i (1, 2, 3) sleeps 2**i s, +-1 s of jitter.
_INITIAL_BACKOFF = 0
_INCREMENT_BASE = 2
_JITTER = 1
_MAX_RETRIES = 3
_SOCKET_SHARE = 6  # each socket timeout is a sixth of the deadline...
_SOCKET_MAX = 60.0  # ...and at most the SDK's own read timeout
# The SDK's download re-reads a broken response body after this pause (not configurable).
_REREAD_PAUSE = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPlan:
    """The azure-storage settings that keep every request within the storage's ``timeout``.

    A stalled endpoint (TCP accepted, no answers) costs each attempt one socket timeout
    ``s``: the TLS handshake or the response never comes (``connection_timeout`` covers
    connecting and sending, ``read_timeout`` each wait for the answer), and the first
    operation that times out ends the attempt. So one request, from the moment the endpoint
    stops answering, ends within::

        request_bound = (retries + 1) * s + sum(2**i + 1 for i in 1..retries)

    (every attempt, plus each back-off at its longest). A download may first lose its
    response body (one more ``s``), which the SDK re-requests after a fixed 1 s pause, so::

        bound = s + 1 + request_bound

    ``plan(timeout)`` takes ``s = min(timeout / 6, 60)`` and the most retries (at most 3)
    for which ``bound <= timeout``. The default 120 s gives s = 20 s and 3 retries:
    request_bound = 4 * 20 + (3 + 5 + 9) = 97 s, bound = 20 + 1 + 97 = 118 s. A 20 s
    timeout gives s = 3.3 s and 1 retry (bound 14 s).

    This bounds a stall, not a server that keeps trickling bytes (that is progress), nor
    name resolution. Uploads run ``max_concurrency`` requests at once, each within its own
    bound; the first failure stops new ones, so a stalled write fails within the bound too.
    A managed identity's token request gets the same socket timeouts and retry count.
    """

    timeout: float
    socket: float
    retries: int

    @classmethod
    def plan(cls, timeout: float) -> RetryPlan:
        """The plan for a ``timeout`` in seconds (see the class docstring)."""
        socket = min(timeout / _SOCKET_SHARE, _SOCKET_MAX)
        for retries in range(_MAX_RETRIES, 0, -1):
            candidate = cls(timeout, socket, retries)
            if candidate.bound <= timeout:
                return candidate
        return cls(timeout, socket, 0)

    @property
    def backoff(self) -> float:
        """The longest the retries can sleep in all."""
        return float(
            sum(_INITIAL_BACKOFF + _INCREMENT_BASE**i + _JITTER for i in range(1, self.retries + 1))
        )

    @property
    def request_bound(self) -> float:
        """Worst case of one request against a stalled endpoint, retries included."""
        return (self.retries + 1) * self.socket + self.backoff

    @property
    def bound(self) -> float:
        """Worst case of any one storage request, a download's body re-read included."""
        return self.socket + _REREAD_PAUSE + self.request_bound

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for the azure-storage client (transport and retry policy)."""
        return {
            "connection_timeout": self.socket,
            "read_timeout": self.socket,
            "retry_total": self.retries,
            "initial_backoff": _INITIAL_BACKOFF,
            "increment_base": _INCREMENT_BASE,
            "random_jitter_range": _JITTER,
        }


def block_size(index: int) -> int:
    """The size of block ``index``: small first, so small objects stay cheap."""
    return SMALL_BLOCK if index < SMALL_BLOCKS else LARGE_BLOCK


def block_id(index: int) -> str:
    """Deterministic, equal-length block ids, as the service requires (the SDK base64s them)."""
    return f"sealdump-{index:08d}"


def _container_client(config: AzureBlobStorage, options: dict[str, Any]) -> ContainerClient:
    """A client for the configured container; the first configured credential wins."""
    _check_scheme(config, config.account_url)
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
        return _from_connection_string(config, config.connection_string_file, text, options)
    from azure.identity import DefaultAzureCredential

    log.info(
        "blob storage authentication",
        storage=config.name,
        method="default credential (managed identity)",
    )
    # The token request gets the same socket timeouts and retry count as the storage's.
    bounded = {k: options[k] for k in ("connection_timeout", "read_timeout", "retry_total")}
    identity = DefaultAzureCredential(
        managed_identity_client_id=config.managed_identity_client_id, **bounded
    )
    return ContainerClient(config.account_url, config.container, credential=identity, **options)


_READ_AT_USE = (
    "the connection string is a secret read at first use, so `sealdump config validate` "
    "cannot check it"
)


def _check_scheme(config: AzureBlobStorage, endpoint: str, source: str = "account_url") -> None:
    """Refuse a plain-HTTP ``endpoint`` unless ``allow_insecure_http`` (then warn)."""
    if urlsplit(endpoint).scheme.lower() == "https":
        return
    if not config.allow_insecure_http:
        where = "" if source == "account_url" else f" ({_READ_AT_USE})"
        raise StorageError(
            f"blob storage {config.name!r}: {source} names the plain-HTTP endpoint {endpoint}: "
            "refused, its credential would cross the network in clear; use https:// or, for "
            f"an emulator only, allow_insecure_http: true{where}"
        )
    log.warning(
        "using plain HTTP to blob storage (allow_insecure_http: true): emulators only",
        storage=config.name,
        endpoint=endpoint,
    )


def _from_connection_string(
    config: AzureBlobStorage, secret: SecretFile, text: str, options: dict[str, Any]
) -> ContainerClient:
    """The SDK's client for a connection string, once the endpoint it would call is checked.

    The client is made first (no request is sent) and its own endpoint is checked, so what is
    checked is what would be called. Nothing of the string itself is ever put in a message.
    """
    source = f"the connection string ({secret.describe()})"
    try:
        client = ContainerClient.from_connection_string(text, config.container, **options)
    except ValueError:
        raise StorageError(
            f"blob storage {config.name!r}: {source} is not a valid connection string (expected "
            "BlobEndpoint=https://...;SharedAccessSignature=... or "
            "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=...)"
        ) from None
    # The SDK's host, port and account path; never user information (nor a query: a SAS).
    endpoint = f"{client.scheme}://{client.primary_hostname.rpartition('@')[2]}"
    _check_scheme(config, endpoint, source)
    if _normalized(endpoint) != _normalized(config.account_url):
        raise StorageError(
            f"blob storage {config.name!r}: {source} names the endpoint {endpoint}, but "
            f"account_url is {config.account_url}: refused, they must name the same endpoint "
            f"({_READ_AT_USE})"
        )
    return client


def _normalized(url: str) -> tuple[str, str, int | None, str]:
    """Scheme, host, port (the scheme's default made explicit) and path of an endpoint."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def _account_name(account_url: str) -> str:
    """The storage account of an endpoint: the host's first label, or Azurite's path segment."""
    parsed = urlsplit(account_url)
    path = parsed.path.strip("/")
    host = parsed.hostname or ""
    if path and (host.replace(".", "").isdigit() or host == "localhost"):
        return path.split("/")[0]
    return host.split(".")[0]


class AzureBlobStore:
    """A blob container (and prefix) holding sealdump objects.

    ``client_options`` go to the azure-storage client after the deadline's own settings,
    so tests can override one of them.
    """

    def __init__(self, config: AzureBlobStorage, **client_options: Any) -> None:
        self.config = config
        self.prefix = config.prefix
        self.plan = RetryPlan.plan(config.timeout)
        self._client_options = {**self.plan.client_options(), **client_options}
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

    def _call(
        self, operation: str, name: str, function: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """One SDK request; its failure becomes a StorageError saying how long it took."""
        started = time.monotonic()
        try:
            return function(*args, **kwargs)
        except AzureError as exc:
            raise self._error(operation, name, exc, time.monotonic() - started) from None

    def _iterate(self, operation: str, name: str, items: Iterable[T]) -> Iterator[T]:
        """Items of a paged or streamed SDK result, each fetch timed and its errors mapped."""
        iterator = iter(items)
        while True:
            started = time.monotonic()
            try:
                item = next(iterator)
            except StopIteration:
                return
            except AzureError as exc:
                raise self._error(operation, name, exc, time.monotonic() - started) from None
            yield item

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        """Stage blocks (bounded in flight), then commit them all at once.

        The first failed block stops the upload: no block is started after it, and the
        write raises once the blocks in flight have ended (each within its deadline).
        """
        self._ensure_container()
        blob = self.client.get_blob_client(self.prefix + name)
        concurrency = self.config.max_concurrency
        slots = threading.BoundedSemaphore(concurrency)
        failed = threading.Event()
        futures: list[Future[Any]] = []
        ids: list[str] = []
        size = 0

        def finished(future: Future[Any]) -> None:
            # Runs once the future is done, so a waiter woken by the slot sees the failure.
            if future.exception() is not None:
                failed.set()
            slots.release()

        with ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="sealdump-upload"
        ) as pool:
            for index, data in enumerate(_blocks(chunks)):
                slots.acquire()
                if failed.is_set():
                    slots.release()
                    break
                future = pool.submit(
                    self._call,
                    "write",
                    name,
                    blob.stage_block,
                    block_id(index),
                    data,
                    length=len(data),
                    validate_content="md5",
                )
                future.add_done_callback(finished)
                futures.append(future)
                ids.append(block_id(index))
                size += len(data)
            for future in futures:
                future.result()
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
        self._call(
            "write", name, blob.commit_block_list, [BlobBlock(block_id=i) for i in ids], **options
        )
        return size

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream the blob or a range of it, ranges fetched in parallel."""
        blob = self.client.get_blob_client(self.prefix + name)
        start = offset if (offset or length is not None) else None
        downloader = self._call(
            "read",
            name,
            blob.download_blob,
            start,
            length,
            max_concurrency=self.config.max_concurrency,
        )
        return self._iterate("read", name, downloader.chunks())

    def size(self, name: str) -> int:
        """The blob's size."""
        blob = self.client.get_blob_client(self.prefix + name)
        return int(self._call("read", name, blob.get_blob_properties).size)

    def exists(self, name: str) -> bool:
        """Whether the blob exists."""
        blob = self.client.get_blob_client(self.prefix + name)
        return bool(self._call("read", name, blob.exists))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Blob names under the prefix, without the storage's own prefix."""
        for blob in self._listing(prefix):
            yield blob.name[len(self.prefix) :]

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Blob names under the prefix and their sizes, from one (paged) listing."""
        return {blob.name[len(self.prefix) :]: int(blob.size) for blob in self._listing(prefix)}

    def _listing(self, prefix: str) -> Iterator[Any]:
        """Committed blobs under the prefix, one page request at a time."""
        pages = self.client.list_blobs(name_starts_with=self.prefix + prefix)
        return self._iterate("list", prefix or "(all)", pages)

    def delete(self, name: str) -> None:
        """Delete the blob; one still under immutability or legal hold is reported and kept."""
        blob = self.client.get_blob_client(self.prefix + name)
        started = time.monotonic()
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if "Immutab" in code or "LegalHold" in code:
                log.warning("blob is locked and was kept", blob=self.prefix + name, reason=code)
                return
            raise self._error("delete", name, exc, time.monotonic() - started) from None
        except AzureError as exc:
            raise self._error("delete", name, exc, time.monotonic() - started) from None

    def _ensure_container(self) -> None:
        """Create the container first if configured to; otherwise a missing one is reported.

        Existence is not probed: a container SAS may not read container properties.
        """
        with self._lock:
            if self._container_checked or not self.config.create_container:
                return
            started = time.monotonic()
            try:
                self.client.create_container()
                log.info("container created", container=self.config.container)
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise self._error("write", "(container)", exc, time.monotonic() - started) from None
            self._container_checked = True

    def _error(
        self, operation: str, name: str, exc: Exception, elapsed: float | None = None
    ) -> StorageError:
        """One sentence for an SDK failure, naming the missing permission when it is one."""
        where = f"{self.describe()}{name}"
        storage = f"blob storage {self.config.name!r}"
        if isinstance(exc, ServiceRequestError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            ca = self.config.ca_file or "the system CA bundle"
            return StorageError(
                f"TLS failure for {self.config.account_url}: certificate not signed by a CA in {ca}"
            )
        if timed_out(exc):
            took = f" after {elapsed:.0f} s" if elapsed is not None else ""
            return StorageError(
                f"{storage} timed out{took}: no answer to {operation} of {where} "
                f"(timeout: {self.config.timeout:g} s per request, retries included)",
                transient=True,
            )
        if isinstance(exc, ServiceRequestError):
            return StorageError(
                f"{storage} unreachable at {self.config.account_url}: {_first_line(exc)}",
                transient=True,
            )
        if isinstance(exc, ServiceResponseError):
            return StorageError(
                f"{storage} connection lost during {operation} of {where}: {_first_line(exc)}",
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
            f"{storage} {operation} of {where} failed: {code or status}: {_first_line(exc)}",
            transient=status in _TRANSIENT_STATUS,
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

"""Key-encryption keys in Azure Key Vault (or Managed HSM), through azure-keyvault-keys.

An unversioned ``key_url`` is resolved to its newest version when a backup wraps its data
key, and that version is recorded; unwrapping always uses the recorded version, so key
rotation never strands a backup. Two SDK traps are handled here:

- algorithms are passed as ``KeyWrapAlgorithm`` enums: a plain string takes another path
  through the SDK;
- the SDK wraps locally whenever it holds key material. That is right for RSA (the public
  key) but for Managed HSM ``oct-HSM`` keys it "wraps" with a random local key and the data
  is lost, so for A256KW the local path is switched off and the service does the wrap.

Backups are signed (see ``sealdump.keys.base``): an RSA key signs with ``PS256`` through the
vault's ``sign`` operation on the version that wrapped the data key, and signatures are
checked locally with that version's public key (fetched with ``get``). Managed HSM
``oct-HSM`` keys cannot sign (Key Vault has no HMAC operation), so their backups carry a
``DEK-HS256`` MAC, which the reader accepts only with an A256KW wrapping by that version:
only the HSM can make one, so it proves who chose the data key.

Every call has a deadline, the key's ``timeout`` (see ``VaultDeadline``); one that runs out
of time is a transient ``KeyProviderError`` saying it timed out and naming the key URL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline.policies import RetryPolicy
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from sealdump.azure_errors import timed_out
from sealdump.azure_identity import make_credential as make_identity_credential
from sealdump.config.model import AzureKeyVaultKey
from sealdump.errors import IntegrityError, KeyProviderError, SealdumpError
from sealdump.keys.base import DEK_HS256, PS256, RS256, Signature, Wrapping, mac
from sealdump.log import get_logger

log = get_logger(__name__)

ALGORITHMS = {
    "RSA-OAEP-256": KeyWrapAlgorithm.rsa_oaep_256,
    "RSA-OAEP": KeyWrapAlgorithm.rsa_oaep,
    "A256KW": KeyWrapAlgorithm.aes_256,
}
# azure-core retries throttling (429), 5xx and (for GET) lost connections, with exponential
# back-off: 0, 0.8, 1.6, 3.2 s, never more than VaultDeadline.socket.
_RETRIES = 4
_BACKOFF_FACTOR = 0.4
_SOCKET_SHARE = 6  # each socket timeout is a sixth of the deadline...
_SOCKET_MAX = 30.0  # ...and at most 30 s: Key Vault answers small requests quickly
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PERMISSION = {"wrap": "wrapKey", "unwrap": "unwrapKey", "get": "get", "sign": "sign"}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True)
class VaultDeadline:
    """azure-core settings that keep every Key Vault call within the key's ``timeout``.

    With ``s = min(timeout / 6, 30)`` as connect and read timeout, azure-core's RetryPolicy
    gets an absolute ``timeout`` of ``budget = timeout - 2 * s``. The policy starts no
    attempt once ``budget`` is spent and clamps each attempt's connect timeout to what is
    left, so the last attempt starts before ``budget`` and ends within one more read
    timeout ``s``; a back-off (or a server's Retry-After, capped here) of at most ``s``
    may follow before the policy gives up. Hence::

        bound = budget + s + s = timeout

    The default 60 s gives s = 10 s and budget = 40 s. Wrap and unwrap are POSTs, which
    azure-core does not resend after a lost connection (only on 5xx answers), so a stalled
    vault fails them within one ``s``. A token request (managed identity, service
    principal), when a call needs a new token, runs inside that call's first attempt with
    the same socket timeouts and retry count; its own retries come on top of the bound.
    """

    timeout: float

    @property
    def socket(self) -> float:
        """Connect and read timeout of one attempt; also the longest back-off."""
        return min(self.timeout / _SOCKET_SHARE, _SOCKET_MAX)

    @property
    def budget(self) -> float:
        """The RetryPolicy's absolute timeout: no attempt starts after it."""
        return self.timeout - 2 * self.socket

    @property
    def bound(self) -> float:
        """Worst case of one call against a stalled vault, retries included."""
        return self.budget + 2 * self.socket

    def transport_options(self) -> dict[str, Any]:
        """Socket timeouts and retry count, for clients and credentials alike."""
        return {
            "connection_timeout": self.socket,
            "read_timeout": self.socket,
            "retry_total": _RETRIES,
            "retry_backoff_factor": _BACKOFF_FACTOR,
            "retry_backoff_max": self.socket,
        }

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for KeyClient and CryptographyClient."""
        options = self.transport_options()
        options["retry_policy"] = _BoundedRetry(
            retry_after_max=self.socket,
            timeout=self.budget,
            retry_total=_RETRIES,
            retry_backoff_factor=_BACKOFF_FACTOR,
            retry_backoff_max=self.socket,
        )
        return options


class _BoundedRetry(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy, with a server's Retry-After capped so the bound holds."""

    def __init__(self, *, retry_after_max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry_after_max = retry_after_max

    def get_retry_after(self, response: Any) -> float | None:
        """Retry-After as the service says, but never longer than ``retry_after_max``."""
        value = super().get_retry_after(response)
        return None if value is None else min(value, self._retry_after_max)


def parse_key_url(url: str) -> tuple[str, str, str | None]:
    """``https://v.vault.azure.net/keys/name[/version]`` -> (vault URL, name, version)."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "https" or len(parts) not in (2, 3) or parts[0] != "keys":
        raise KeyProviderError(f"not a Key Vault key URL: {url}")
    return f"https://{parsed.netloc}", parts[1], parts[2] if len(parts) == 3 else None


def make_credential(config: AzureKeyVaultKey) -> TokenCredential:
    """A service principal when one is configured, else DefaultAzureCredential.

    Built by ``sealdump.azure_identity``, which database logins with Entra ID share.
    """
    return make_identity_credential(
        config,
        subject=f"key {config.name!r}",
        error=KeyProviderError,
        transport=VaultDeadline(config.timeout).transport_options(),
        event="key vault authentication",
        key=config.name,
    )


class AzureKeyVaultProvider:
    """One Key Vault key (all its versions)."""

    provider = "azure-key-vault"

    def __init__(self, config: AzureKeyVaultKey, credential: TokenCredential | None = None) -> None:
        self.name = config.name
        self.config = config
        self.vault_url, self.key_name, self.pinned_version = parse_key_url(config.key_url)
        self.algorithm = config.algorithm
        self.deadline = VaultDeadline(config.timeout)
        self._credential = credential
        self._clients: dict[str, CryptographyClient] = {}
        self._unwrapped: dict[tuple[str, bytes], bytes] = {}
        self._public: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = self.deadline.client_options()
        options["verify_challenge_resource"] = self.config.verify_challenge_resource
        if self.config.ca_file is not None:
            options["connection_verify"] = str(Path(self.config.ca_file))
        return options

    def _cred(self) -> TokenCredential:
        if self._credential is None:
            self._credential = make_credential(self.config)
        return self._credential

    def _crypto(self, key_id: str) -> CryptographyClient:
        with self._lock:
            client = self._clients.get(key_id)
            if client is None:
                client = CryptographyClient(key_id, self._cred(), **self._options())
                if self.algorithm == "A256KW":
                    _service_side_only(client)
                self._clients[key_id] = client
            return client

    def current_key_id(self) -> str:
        """The versioned id that new wraps use: the pinned version, else the newest."""
        if self.pinned_version:
            return f"{self.vault_url}/keys/{self.key_name}/{self.pinned_version}"
        client = KeyClient(self.vault_url, self._cred(), **self._options())
        try:
            key = self._call(
                "get", f"{self.vault_url}/keys/{self.key_name}", client.get_key, self.key_name
            )
        finally:
            client.close()
        if key.id is None:
            raise KeyProviderError(f"Key Vault returned no id for key {self.key_name}")
        return str(key.id)

    def wrap(self, dek: bytes) -> Wrapping:
        """Wrap ``dek`` under the newest (or pinned) version; never falls back to anything."""
        key_id = self.current_key_id()
        algorithm = ALGORITHMS[self.algorithm]
        result = self._call("wrap", key_id, self._crypto(key_id).wrap_key, algorithm, dek)
        wrapping = Wrapping(self.provider, key_id, self.algorithm, bytes(result.encrypted_key))
        with self._lock:
            self._unwrapped[(key_id, wrapping.wrapped_key)] = dek
        return wrapping

    def owns(self, wrapping: Wrapping) -> bool:
        """Whether ``wrapping`` names a version of this key in this vault."""
        if wrapping.provider != self.provider:
            return False
        try:
            vault, name, _ = parse_key_url(wrapping.key_id)
        except KeyProviderError:
            return False
        return (vault, name) == (self.vault_url, self.key_name)

    def owns_key_id(self, key_id: str) -> bool:
        """Whether ``key_id`` is a version of this key in this vault (a versioned URL)."""
        try:
            vault, name, version = parse_key_url(key_id)
        except KeyProviderError:
            return False
        return version is not None and (vault, name) == (self.vault_url, self.key_name)

    def sign(self, message: bytes, dek: bytes, wrapping: Wrapping) -> Signature:
        """PS256 by the vault with the version that wrapped the data key (oct-HSM: DEK-HS256)."""
        if self.algorithm == "A256KW":
            # oct-HSM keys cannot sign; the wrapping, which only the HSM can make, vouches
            # for the data key, and the data key for the message.
            return Signature(wrapping.key_id, DEK_HS256, mac(dek, message))
        digest = hashlib.sha256(message).digest()
        crypto = self._crypto(wrapping.key_id)
        result = self._call("sign", wrapping.key_id, crypto.sign, SignatureAlgorithm.ps256, digest)
        return Signature(wrapping.key_id, PS256, bytes(result.signature))

    def verify(self, message: bytes, signature: Signature) -> None:
        """Check a PS256 (or RS256) signature locally with the signing version's public key."""
        if signature.algorithm not in (PS256, RS256):
            raise IntegrityError(
                f"unsupported signature algorithm {signature.algorithm!r} by {signature.key_id}"
            )
        public = self._public_key(signature.key_id)
        scheme = _PSS if signature.algorithm == PS256 else padding.PKCS1v15()
        digest = hashlib.sha256(message).digest()
        try:
            public.verify(signature.value, digest, scheme, utils.Prehashed(hashes.SHA256()))
        except InvalidSignature:
            raise IntegrityError(f"the signature by {signature.key_id} does not verify") from None

    def _public_key(self, key_id: str) -> rsa.RSAPublicKey:
        """The RSA public key of one version (``get``), cached per process."""
        with self._lock:
            cached = self._public.get(key_id)
        if cached is not None:
            return cached
        _, name, version = parse_key_url(key_id)
        client = KeyClient(self.vault_url, self._cred(), **self._options())
        try:
            key = self._call("get", key_id, client.get_key, name, version)
        finally:
            client.close()
        jwk = key.key
        if jwk.n is None or jwk.e is None:
            raise IntegrityError(f"{key_id} is not an RSA key: it cannot have signed a backup")
        numbers = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big"))
        public = numbers.public_key()
        with self._lock:
            self._public[key_id] = public
        return public

    def unwrap(self, wrapping: Wrapping) -> bytes:
        """Unwrap with exactly the recorded version; one service call per backup per process."""
        cache_key = (wrapping.key_id, wrapping.wrapped_key)
        with self._lock:
            cached = self._unwrapped.get(cache_key)
        if cached is not None:
            return cached
        algorithm = ALGORITHMS.get(wrapping.algorithm)
        if algorithm is None:
            raise KeyProviderError(
                f"unknown wrap algorithm {wrapping.algorithm!r} for {wrapping.key_id}"
            )
        crypto = self._crypto(wrapping.key_id)
        result = self._call(
            "unwrap", wrapping.key_id, crypto.unwrap_key, algorithm, wrapping.wrapped_key
        )
        with self._lock:
            self._unwrapped[cache_key] = bytes(result.key)
        return bytes(result.key)

    def _call(self, operation: str, key_id: str, function: Any, *args: Any) -> Any:
        """Run one SDK call, turning its exceptions into one operator-readable sentence."""
        started = time.monotonic()
        try:
            return function(*args)
        except AzureError as exc:
            raise self._error(operation, key_id, exc, time.monotonic() - started) from None

    def _error(self, operation: str, key_id: str, exc: AzureError, elapsed: float) -> SealdumpError:
        if timed_out(exc):
            return KeyProviderError(
                f"Key Vault timed out after {elapsed:.0f} s: no answer to {operation} on "
                f"{key_id} (timeout: {self.config.timeout:g} s per call, retries included)",
                transient=True,
            )
        if isinstance(exc, ResourceNotFoundError):
            return KeyProviderError(f"Key Vault key {key_id} does not exist (deleted?)")
        if isinstance(exc, ClientAuthenticationError):
            return KeyProviderError(
                f"cannot authenticate to Key Vault for {key_id}: {_first_line(exc)}"
            )
        if isinstance(exc, HttpResponseError):
            message = _first_line(exc)
            if exc.status_code == 403 and "disabled" in message.lower():
                return KeyProviderError(f"Key Vault key version {key_id} is disabled")
            if exc.status_code in (400, 403) and "not permitted" in message.lower():
                return KeyProviderError(
                    f"Key Vault key {key_id} does not allow the '{_PERMISSION[operation]}' "
                    f"operation (its key_ops): {message}"
                )
            if exc.status_code == 403:
                return KeyProviderError(
                    f"Key Vault refused {operation} on {key_id}: the identity lacks the keys "
                    f"'{_PERMISSION[operation]}' permission"
                )
            if exc.status_code == 400 and operation == "unwrap":
                return IntegrityError(
                    f"Key Vault could not unwrap the data key with {key_id}: {message}"
                )
            return KeyProviderError(
                f"Key Vault {operation} on {key_id} failed: {message}",
                transient=exc.status_code in _TRANSIENT_STATUS,
            )
        if isinstance(exc, ServiceRequestError):
            return KeyProviderError(
                f"Key Vault unreachable for {key_id}: {_first_line(exc)}", transient=True
            )
        return KeyProviderError(
            f"Key Vault connection lost during {operation} on {key_id}: {_first_line(exc)}",
            transient=True,
        )


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).splitlines()[0] if message else type(exc).__name__


def _service_side_only(client: CryptographyClient) -> None:
    """Make the SDK send every operation to the service, never to its local provider.

    The SDK has no public switch for this. Without it, an ``oct-HSM`` key's A256KW wrap runs
    locally against a key the SDK made up, and the data key is lost. The integration test
    for A256KW fails if an SDK update changes these internals.
    """
    from azure.keyvault.keys.crypto._providers import NoLocalCryptography

    client._local_provider = NoLocalCryptography()  # type: ignore[no-untyped-call]
    client._initialized = True

"""Key-encryption keys in Azure Key Vault (or Managed HSM), through azure-keyvault-keys.

An unversioned ``key_url`` is resolved to its newest version when a backup wraps its data
key, and that version is recorded; unwrapping always uses the recorded version, so key
rotation never strands a backup. Two SDK traps are handled here:

- algorithms are passed as ``KeyWrapAlgorithm`` enums: a plain string takes another path
  through the SDK;
- the SDK wraps locally whenever it holds key material. That is right for RSA (the public
  key) but for Managed HSM ``oct-HSM`` keys it "wraps" with a random local key and the data
  is lost, so for A256KW the local path is switched off and the service does the wrap.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from sealdump.config.model import AzureKeyVaultKey
from sealdump.errors import IntegrityError, KeyProviderError
from sealdump.keys.base import Wrapping
from sealdump.log import get_logger

log = get_logger(__name__)

ALGORITHMS = {
    "RSA-OAEP-256": KeyWrapAlgorithm.rsa_oaep_256,
    "RSA-OAEP": KeyWrapAlgorithm.rsa_oaep,
    "A256KW": KeyWrapAlgorithm.aes_256,
}
# azure-core retries throttling (429) and 5xx with exponential backoff; these bound it.
_RETRY = {"retry_total": 4, "retry_backoff_factor": 0.4, "retry_backoff_max": 30}
_PUBLIC_AUTHORITIES = {
    "https://login.microsoftonline.com",
    "https://login.microsoftonline.us",
    "https://login.chinacloudapi.cn",
}
_PERMISSION = {"wrap": "wrapKey", "unwrap": "unwrapKey", "get": "get"}


def parse_key_url(url: str) -> tuple[str, str, str | None]:
    """``https://v.vault.azure.net/keys/name[/version]`` -> (vault URL, name, version)."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "https" or len(parts) not in (2, 3) or parts[0] != "keys":
        raise KeyProviderError(f"not a Key Vault key URL: {url}")
    return f"https://{parsed.netloc}", parts[1], parts[2] if len(parts) == 3 else None


def make_credential(config: AzureKeyVaultKey) -> TokenCredential:
    """A service principal when one is configured, else DefaultAzureCredential."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if config.client_secret_file is not None:
        if not (config.tenant_id and config.client_id):
            raise KeyProviderError(
                f"key {config.name!r}: client_secret_file needs tenant_id and client_id"
            )
        log.info("key vault authentication", key=config.name, method="service principal")
        secret = config.client_secret_file.read()
        options: dict[str, Any] = {}
        if config.authority_host:
            # Sovereign clouds, or a local stand-in: Microsoft's instance discovery does not
            # know other hosts.
            options["authority"] = config.authority_host
            options["disable_instance_discovery"] = config.authority_host not in _PUBLIC_AUTHORITIES
        if config.ca_file is not None:
            options["connection_verify"] = str(config.ca_file)
        return ClientSecretCredential(
            config.tenant_id, config.client_id, secret.reveal(), **options
        )
    log.info(
        "key vault authentication", key=config.name, method="default credential (managed identity)"
    )
    return DefaultAzureCredential(managed_identity_client_id=config.client_id)


class AzureKeyVaultProvider:
    """One Key Vault key (all its versions)."""

    provider = "azure-key-vault"

    def __init__(self, config: AzureKeyVaultKey, credential: TokenCredential | None = None) -> None:
        self.name = config.name
        self.config = config
        self.vault_url, self.key_name, self.pinned_version = parse_key_url(config.key_url)
        self.algorithm = config.algorithm
        self._credential = credential
        self._clients: dict[str, CryptographyClient] = {}
        self._unwrapped: dict[tuple[str, bytes], bytes] = {}
        self._lock = threading.Lock()

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = dict(_RETRY)
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
        try:
            return function(*args)
        except ResourceNotFoundError:
            raise KeyProviderError(f"Key Vault key {key_id} does not exist (deleted?)") from None
        except ClientAuthenticationError as exc:
            raise KeyProviderError(
                f"cannot authenticate to Key Vault for {key_id}: {_first_line(exc)}"
            ) from None
        except HttpResponseError as exc:
            message = _first_line(exc)
            if exc.status_code == 403 and "disabled" in message.lower():
                raise KeyProviderError(f"Key Vault key version {key_id} is disabled") from None
            if exc.status_code == 403:
                raise KeyProviderError(
                    f"Key Vault refused {operation} on {key_id}: the identity lacks the keys "
                    f"'{_PERMISSION[operation]}' permission"
                ) from None
            if exc.status_code == 400 and operation == "unwrap":
                raise IntegrityError(
                    f"Key Vault could not unwrap the data key with {key_id}: {message}"
                ) from None
            raise KeyProviderError(
                f"Key Vault {operation} on {key_id} failed: {message}",
                transient=exc.status_code in (429, 500, 502, 503, 504),
            ) from None
        except ServiceRequestError as exc:
            raise KeyProviderError(
                f"Key Vault unreachable for {key_id}: {_first_line(exc)}", transient=True
            ) from None


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

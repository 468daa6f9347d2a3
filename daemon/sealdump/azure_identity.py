"""How sealdump signs in to Microsoft Entra ID, for Key Vault keys and database logins alike.

One construction for every place that needs an Azure token credential configured with the
same keys (``tenant_id``, ``client_id``, ``client_secret_file``, ``authority_host``,
``ca_file``):

- ``client_secret_file`` (with ``tenant_id`` and ``client_id``): a service principal,
  through azure-identity's ``ClientSecretCredential``; ``authority_host`` points it at a
  sovereign cloud (or a local stand-in, for which instance discovery is switched off);
- otherwise ``DefaultAzureCredential``: environment variables (``AZURE_CLIENT_ID`` with
  ``AZURE_CLIENT_SECRET`` or ``AZURE_CLIENT_CERTIFICATE_PATH``), workload identity on
  Kubernetes (``AZURE_FEDERATED_TOKEN_FILE``), then managed identity; ``client_id`` picks
  a user-assigned managed identity.

The secret is read when the credential is made, never kept in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from azure.core.credentials import TokenCredential

from sealdump.config.secrets import SecretFile
from sealdump.errors import SealdumpError
from sealdump.log import get_logger

log = get_logger(__name__)

# Entra ID authorities that Microsoft's instance discovery knows (public and sovereign).
PUBLIC_AUTHORITIES = frozenset(
    {
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.us",
        "https://login.chinacloudapi.cn",
    }
)


class IdentityConfig(Protocol):
    """The credential keys a configuration section offers (a Key Vault key, a server)."""

    @property
    def tenant_id(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def client_secret_file(self) -> SecretFile | None: ...
    @property
    def authority_host(self) -> str | None: ...
    @property
    def ca_file(self) -> Path | None: ...


def describe_method(config: IdentityConfig) -> str:
    """Which way ``config`` signs in, for logs: never a secret."""
    if config.client_secret_file is not None:
        return "service principal"
    return "default credential (managed identity)"


def make_credential(
    config: IdentityConfig,
    *,
    subject: str,
    error: type[SealdumpError],
    transport: Mapping[str, Any] | None = None,
    event: str = "azure authentication",
    **log_fields: Any,
) -> TokenCredential:
    """A service principal when one is configured, else DefaultAzureCredential.

    ``subject`` names the configuration section in errors ("key 'prod'"); ``error`` is the
    exception raised for an incomplete service principal; ``transport`` holds azure-core's
    socket timeouts and retry settings; ``event`` and ``log_fields`` make the log line that
    says which method is used.
    """
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    options: dict[str, Any] = dict(transport or {})
    method = describe_method(config)
    if config.client_secret_file is not None:
        if not (config.tenant_id and config.client_id):
            raise error(f"{subject}: client_secret_file needs tenant_id and client_id")
        log.info(event, method=method, **log_fields)
        secret = config.client_secret_file.read()
        if config.authority_host:
            # Sovereign clouds, or a local stand-in: Microsoft's instance discovery does not
            # know other hosts.
            options["authority"] = config.authority_host
            options["disable_instance_discovery"] = config.authority_host not in PUBLIC_AUTHORITIES
        if config.ca_file is not None:
            options["connection_verify"] = str(config.ca_file)
        return ClientSecretCredential(
            config.tenant_id, config.client_id, secret.reveal(), **options
        )
    log.info(event, method=method, **log_fields)
    return DefaultAzureCredential(managed_identity_client_id=config.client_id, **options)

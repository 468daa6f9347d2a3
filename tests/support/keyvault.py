"""An HTTPS stand-in for the Azure Key Vault keys REST API, and a managed-identity endpoint.

No Key Vault emulator can be installed here, so tests run the real azure-keyvault-keys and
azure-identity code against this server. It speaks the parts of the REST API sealdump uses
the way the service does: a 401 bearer challenge before any authenticated call, get key,
list versions, create, rotate, update (enable/disable), wrapkey and unwrapkey with real RSA
keys, sign and verify (PS256, RS256) with real RSA signatures, 403 for a disabled version, a
missing permission or an operation the key's ``key_ops`` do not allow, and injectable
429/5xx failures.
The token endpoint is App Service's managed identity protocol (``IDENTITY_ENDPOINT`` /
``IDENTITY_HEADER``); the vault only accepts tokens it issued.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from tests.support.certs import TestCA

RESOURCE = "https://vault.azure.net"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ALL_PERMISSIONS = frozenset(
    {"get", "list", "create", "update", "wrapKey", "unwrapKey", "rotate", "sign", "verify"}
)
RSA_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
OCT_OPS = ("encrypt", "decrypt", "wrapKey", "unwrapKey")  # Managed HSM oct-HSM: no sign
_SIGNATURES = {
    "PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
    "RS256": padding.PKCS1v15(),
}
_OAEP = {
    "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 - the service offers it
    "RSA-OAEP-256": padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    ),
}


def b64url(data: bytes) -> str:
    """Base64url without padding, as Key Vault's JSON Web Keys use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Inverse of ``b64url``."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class KeyVersion:
    """One version of a key: RSA, or a Managed HSM symmetric (oct-HSM) key."""

    version: str
    private: rsa.RSAPrivateKey | None = None
    secret: bytes | None = None  # oct-HSM key material, which the service never returns
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    ops: tuple[str, ...] = RSA_OPS  # key_ops: what the service lets any caller do with it


@dataclass
class Call:
    """One request the vault answered, for tests that assert on traffic."""

    method: str
    path: str
    status: int
    authorized: bool


class _Server(ThreadingHTTPServer):
    # SDK clients keep connections alive: don't wait for their handler threads on close.
    daemon_threads = True
    block_on_close = False


class KeyVaultStandIn:
    """The vault's state and its two servers (the vault over HTTPS, tokens over HTTP)."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.keys: dict[str, list[KeyVersion]] = {}
        self.permissions: set[str] = set(ALL_PERMISSIONS)
        self.identity_header = secrets.token_hex(16)
        self._signing_key = secrets.token_bytes(32)
        self.tokens: set[str] = set()
        self.service_principals: dict[str, str] = {}  # client id -> secret, for Entra ID
        self.calls: list[Call] = []
        self.failures: list[int] = []  # statuses to answer to the next authorized calls
        self._lock = threading.Lock()
        self._vault: _Server | None = None
        self._identity: _Server | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> KeyVaultStandIn:
        """Listen on free loopback ports; the vault with a certificate from ``ca``."""
        cert = self.ca.issue("keyvault")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert.cert, cert.key)
        self._vault = _Server(("127.0.0.1", 0), _handler(self, is_vault=True))
        self._vault.socket = context.wrap_socket(self._vault.socket, server_side=True)
        self._identity = _Server(("127.0.0.1", 0), _handler(self, is_vault=False))
        for server in (self._vault, self._identity):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        for server in (self._vault, self._identity):
            if server is not None:
                server.shutdown()
                server.server_close()

    @property
    def vault_url(self) -> str:
        """The vault's base URL."""
        assert self._vault is not None
        return f"https://127.0.0.1:{self._vault.server_address[1]}"

    @property
    def identity_endpoint(self) -> str:
        """Value for ``IDENTITY_ENDPOINT``."""
        assert self._identity is not None
        return f"http://127.0.0.1:{self._identity.server_address[1]}/msi/token"

    def identity_environment(self) -> dict[str, str]:
        """Environment that points azure-identity's ManagedIdentityCredential here."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
        }

    # -- state the tests drive ---------------------------------------------------------
    def create_key(
        self, name: str, size: int = 2048, kty: str = "RSA", ops: tuple[str, ...] | None = None
    ) -> str:
        """Create ``name`` (or a new version of it); returns the versioned key id.

        ``ops``: the key's ``key_ops`` (default: every operation its type supports).
        """
        with self._lock:
            versions = self.keys.setdefault(name, [])
            if kty == "oct-HSM" or (versions and versions[-1].secret is not None):
                version = KeyVersion(
                    secrets.token_hex(16), secret=os.urandom(32), ops=ops or OCT_OPS
                )
            else:
                version = KeyVersion(
                    secrets.token_hex(16),
                    private=rsa.generate_private_key(65537, size),
                    ops=ops or RSA_OPS,
                )
            versions.append(version)
            return self.kid(name, version.version)

    def kid(self, name: str, version: str) -> str:
        """The versioned key identifier."""
        return f"{self.vault_url}/keys/{name}/{version}"

    def set_enabled(self, name: str, version: str, enabled: bool) -> None:
        """Enable or disable one version."""
        self._version(name, version).enabled = enabled

    def issue_token(self, resource: str) -> str:
        """A JWT-shaped bearer token for ``resource`` (Azurite checks its claims, not its signature)."""
        now = int(time.time())
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "aud": resource.removesuffix("/.default").rstrip("/"),
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": secrets.token_hex(8),
        }
        body = b64url(json.dumps(claims).encode())
        signature = b64url(
            hmac.new(self._signing_key, f"{header}.{body}".encode(), "sha256").digest()
        )
        token = f"{header}.{body}.{signature}"
        self.tokens.add(token)
        return token

    def fail_next(self, *statuses: int) -> None:
        """Answer the next authorized requests with these statuses (429, 500, 503...)."""
        with self._lock:
            self.failures.extend(statuses)

    def _version(self, name: str, version: str | None) -> KeyVersion:
        versions = self.keys.get(name)
        if not versions:
            raise LookupError(name)
        if not version:
            return versions[-1]
        for item in versions:
            if item.version == version:
                return item
        raise LookupError(f"{name}/{version}")

    def bundle(self, name: str, item: KeyVersion) -> dict[str, Any]:
        """The KeyBundle JSON the service returns for one version."""
        key: dict[str, Any] = {
            "kid": self.kid(name, item.version),
            "key_ops": list(item.ops),
        }
        if item.private is not None:
            numbers = item.private.public_key().public_numbers()
            key["kty"] = "RSA"
            key["n"] = b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
            key["e"] = b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
        else:
            key["kty"] = "oct-HSM"  # no "k": HSM key material never leaves the service
        return {
            "key": key,
            "attributes": {
                "enabled": item.enabled,
                "created": item.created,
                "updated": item.created,
                "recoveryLevel": "Recoverable+Purgeable",
            },
        }


def _handler(vault: KeyVaultStandIn, *, is_vault: bool) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to ``vault``: the vault API, or the token endpoint."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read ``vault.calls`` instead."""

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def _send(
            self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlparse(self.path)
            if not is_vault:
                self._token(url.query)
                return
            if url.path.startswith(f"/{TENANT}/"):
                self._entra(url.path, raw)
                return
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            authorized = token in vault.tokens
            status = self._vault(method, url.path, raw) if authorized else self._challenge()
            vault.calls.append(Call(method, url.path, status, authorized))

        def _challenge(self) -> int:
            self._send(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                {
                    "WWW-Authenticate": (
                        f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                        f'resource="{RESOURCE}"'
                    )
                },
            )
            return 401

        def _error(self, status: int, code: str, message: str) -> int:
            self._send(status, {"error": {"code": code, "message": message}})
            return status

        def _vault(self, method: str, path: str, raw: bytes) -> int:
            with vault._lock:
                failure = vault.failures.pop(0) if vault.failures else None
            if failure is not None:
                headers = {"Retry-After": "0"} if failure == 429 else {}
                self._send(
                    failure,
                    {
                        "error": {
                            "code": "Throttled" if failure == 429 else "ServiceUnavailable",
                            "message": "injected",
                        }
                    },
                    headers,
                )
                return failure
            parts = [p for p in path.split("/") if p]
            if len(parts) < 2 or parts[0] != "keys":
                return self._error(404, "NotFound", "unknown path")
            name = parts[1]
            rest = parts[2:]
            body = json.loads(raw) if raw else {}
            operation, version = self._route(method, rest)
            if operation is None:
                return self._error(405, "BadRequest", f"{method} {path} is not supported")
            if operation not in vault.permissions:
                return self._error(
                    403,
                    "Forbidden",
                    f"The user, group or application does not have keys {operation} "
                    "permission on key vault.",
                )
            if operation == "create":
                vault.create_key(name, int(body.get("key_size", 2048)))
                return self._ok(name, None)
            try:
                item = vault._version(name, version)
            except LookupError:
                return self._error(
                    404,
                    "KeyNotFound",
                    f"A key with (name/id) {name} was not found in this key vault.",
                )
            if operation == "get":
                return self._ok(name, item.version)
            if operation == "list":
                listing = [
                    {
                        "kid": vault.kid(name, v.version),
                        "attributes": vault.bundle(name, v)["attributes"],
                    }
                    for v in vault.keys[name]
                ]
                self._send(200, {"value": listing, "nextLink": None})
                return 200
            if operation == "rotate":
                vault.create_key(name)
                return self._ok(name, None)
            if operation == "update":
                enabled = body.get("attributes", {}).get("enabled")
                if enabled is not None:
                    item.enabled = bool(enabled)
                return self._ok(name, item.version)
            return self._crypto(operation, name, item, body)

        @staticmethod
        def _route(method: str, rest: list[str]) -> tuple[str | None, str | None]:
            if method == "GET" and rest == ["versions"]:
                return "list", None
            if method == "GET" and len(rest) <= 1:
                return "get", rest[0] if rest else None
            if method == "POST" and rest == ["create"]:
                return "create", None
            if method == "POST" and rest == ["rotate"]:
                return "rotate", None
            if method == "PATCH" and len(rest) <= 1:
                return "update", rest[0] if rest else None
            operations = {
                "wrapkey": "wrapKey",
                "unwrapkey": "unwrapKey",
                "sign": "sign",
                "verify": "verify",
            }
            if method == "POST" and len(rest) in (1, 2) and rest[-1] in operations:
                return operations[rest[-1]], (rest[0] if len(rest) == 2 else None)
            return None, None

        def _ok(self, name: str, version: str | None) -> int:
            self._send(200, vault.bundle(name, vault._version(name, version)))
            return 200

        def _crypto(self, operation: str, name: str, item: KeyVersion, body: dict[str, Any]) -> int:
            if not item.enabled:
                return self._error(
                    403, "Forbidden", f"Operation {operation} is not allowed on a disabled key."
                )
            if operation not in item.ops:
                self._send(
                    403,
                    {
                        "error": {
                            "code": "Forbidden",
                            "message": f"Operation {operation} is not permitted on this key.",
                            "innererror": {"code": "KeyOperationForbidden"},
                        }
                    },
                )
                return 403
            value = unb64url(body.get("value", ""))
            alg = body.get("alg", "")
            if operation in ("sign", "verify"):
                return self._signature(operation, name, item, alg, body, value)
            try:
                if item.secret is not None and alg == "A256KW":
                    wrap = operation == "wrapKey"
                    key = item.secret
                    out = aes_key_wrap(key, value) if wrap else aes_key_unwrap(key, value)
                elif item.private is not None and alg in _OAEP:
                    if operation == "wrapKey":
                        out = item.private.public_key().encrypt(value, _OAEP[alg])
                    else:
                        out = item.private.decrypt(value, _OAEP[alg])
                else:
                    return self._error(400, "BadParameter", f"unsupported algorithm {alg!r}")
            except (ValueError, InvalidUnwrap):
                return self._error(400, "BadParameter", "Bad Request")
            self._send(200, {"kid": vault.kid(name, item.version), "value": b64url(out)})
            return 200

        def _signature(
            self,
            operation: str,
            name: str,
            item: KeyVersion,
            alg: str,
            body: dict[str, Any],
            value: bytes,
        ) -> int:
            """Sign a digest with the private key, or verify a signature of one, as the
            service does: the caller hashes; ``value`` (sign) or ``digest`` (verify) is the
            32-byte SHA-256, and verify answers ``{"value": true|false}``."""
            scheme = _SIGNATURES.get(alg)
            if item.private is None or scheme is None:
                return self._error(400, "BadParameter", f"unsupported algorithm {alg!r}")
            prehashed = utils.Prehashed(hashes.SHA256())
            if operation == "sign":
                if len(value) != 32:
                    return self._error(400, "BadParameter", "digest must be 32 bytes for SHA-256")
                signature = item.private.sign(value, scheme, prehashed)
                self._send(200, {"kid": vault.kid(name, item.version), "value": b64url(signature)})
                return 200
            digest = unb64url(body.get("digest", ""))
            if len(digest) != 32:
                return self._error(400, "BadParameter", "digest must be 32 bytes for SHA-256")
            try:
                item.private.public_key().verify(value, digest, scheme, prehashed)
                valid = True
            except InvalidSignature:
                valid = False
            self._send(200, {"value": valid})
            return 200

        def _entra(self, path: str, raw: bytes) -> None:
            """Microsoft Entra ID's OpenID discovery and client-credentials token endpoint."""
            base = f"{vault.vault_url}/{TENANT}"
            if path.endswith("/.well-known/openid-configuration"):
                self._send(
                    200,
                    {
                        "issuer": f"https://sts.windows.net/{TENANT}/",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    },
                )
                return
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            known = vault.service_principals.get(form.get("client_id", ""))
            if form.get("grant_type") != "client_credentials" or known != form.get("client_secret"):
                self._send(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    },
                )
                return
            scope = form.get("scope", RESOURCE).split()[0]
            token = vault.issue_token(scope)
            self._send(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "ext_expires_in": 3600,
                    "access_token": token,
                },
            )

        def _token(self, query: str) -> None:
            params = parse_qs(query)
            if self.headers.get("X-IDENTITY-HEADER") != vault.identity_header:
                self._send(401, {"error": "invalid identity header"})
                return
            token = vault.issue_token(params.get("resource", [RESOURCE])[0])
            self._send(
                200,
                {
                    "access_token": token,
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": params.get("resource", [RESOURCE])[0],
                    "token_type": "Bearer",
                },
            )

    return Handler

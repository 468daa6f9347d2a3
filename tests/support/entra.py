"""A Microsoft Entra ID stand-in that signs RS256 access tokens, and the PAM service that
checks them in MariaDB, for password-less login tests.

``EntraIssuer`` serves, over HTTPS with a certificate from the test CA, what azure-identity
asks Entra ID for: the tenant's OpenID configuration and the client-credentials token
endpoint (a service principal with a secret), plus App Service's managed-identity protocol
(``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``, plain HTTP on loopback as on App Service).
Tokens are RS256 JWTs with Entra's claims (aud, iss, iat, nbf, exp, oid, sub, tid, appid);
a test can make the issuer sign one client's tokens for another audience, already expired
or with a key the server does not trust.

``EntraPam`` makes the server side: MariaDB's PAM plugin (``auth_pam``, with
``pam_use_cleartext_plugin=ON`` so the client is asked for the token with
``mysql_clear_password``, as Azure Database for MySQL asks) runs a PAM service
``/etc/pam.d/sealdump-entra-<random>`` whose ``auth`` line runs tests/support/entra_verify.py
through tests/support/entra_pam.c (compiled here) with the presented token on stdin.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.certs import TestCA

TENANT = "4c5d1a9e-8f3b-4e2a-9c1d-6b7e0f2a3d51"
MYSQL_RESOURCE = "https://ossrdbms-aad.database.windows.net"
ISSUER = f"https://sts.windows.net/{TENANT}/"
PAM_DIR = Path("/etc/pam.d")
PAM_PREFIX = "sealdump-entra-"
HERE = Path(__file__).parent

Fault = Literal["audience", "expired", "foreign-key"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Client:
    """One identity the issuer knows: a service principal or a managed identity."""

    client_id: str
    secret: str | None  # None: a managed identity (no secret, the MSI endpoint vouches)
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    fault: Fault | None = None
    lifetime: int = 3600  # seconds the tokens live (and expires_in says)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class EntraIssuer:
    """Entra ID's token endpoints for a few known clients, signing with its own RSA key."""

    def __init__(self, ca: TestCA, directory: Path) -> None:
        self.ca = ca
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(65537, 2048)
        self._foreign = rsa.generate_private_key(65537, 2048)  # a key nobody trusts
        self.kid = secrets.token_hex(8)
        self.public_key_path = directory / "issuer-public.pem"
        self.public_key_path.write_bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.identity_header = secrets.token_hex(16)
        self.clients: dict[str, Client] = {}
        self.issued: list[str] = []  # every token handed out, for leak checks
        self.requests: list[str] = []  # client id of every token request
        self._lock = threading.Lock()
        self._https: _Server | None = None
        self._http: _Server | None = None

    def start(self) -> EntraIssuer:
        """Listen on free loopback ports (HTTPS for Entra ID, HTTP for managed identity)."""
        cert = self.ca.issue("entra")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert.cert, cert.key)
        self._https = _Server(("127.0.0.1", 0), _handler(self, managed_identity=False))
        self._https.socket = context.wrap_socket(self._https.socket, server_side=True)
        self._http = _Server(("127.0.0.1", 0), _handler(self, managed_identity=True))
        for server in (self._https, self._http):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        for server in (self._https, self._http):
            if server is not None:
                server.shutdown()
                server.server_close()

    @property
    def authority_host(self) -> str:
        """What ``authority_host`` names: the stand-in instead of login.microsoftonline.com."""
        assert self._https is not None
        return f"https://127.0.0.1:{self._https.server_address[1]}"

    def identity_environment(self) -> dict[str, str]:
        """Environment that points azure-identity's ManagedIdentityCredential here."""
        assert self._http is not None
        return {
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{self._http.server_address[1]}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
        }

    def add_client(self, *, managed: bool = False, fault: Fault | None = None) -> Client:
        """A new service principal (with a secret) or user-assigned managed identity."""
        client = Client(str(uuid.uuid4()), None if managed else secrets.token_urlsafe(24))
        client.fault = fault
        with self._lock:
            self.clients[client.client_id] = client
        return client

    def token_requests(self, client: Client) -> int:
        """How many tokens ``client`` asked for."""
        with self._lock:
            return self.requests.count(client.client_id)

    def sign(self, client: Client, resource: str) -> tuple[str, int]:
        """An access token for ``client`` and ``resource``, and its lifetime in seconds."""
        now = int(time.time())
        audience = resource.removesuffix("/.default").rstrip("/")
        expires = now + client.lifetime
        if client.fault == "audience":
            audience = "https://management.azure.com"
        elif client.fault == "expired":
            expires = now - 3600
        claims = {
            "aud": audience,
            "iss": ISSUER,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": expires,
            "oid": client.oid,
            "sub": client.oid,
            "tid": TENANT,
            "appid": client.client_id,
            "idtyp": "app",
            "ver": "1.0",
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        key = self._foreign if client.fault == "foreign-key" else self._key
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        with self._lock:
            self.issued.append(token)
            self.requests.append(client.client_id)
        return token, client.lifetime


def _handler(issuer: EntraIssuer, *, managed_identity: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if managed_identity:
                self._managed_identity(parse_qs(url.query))
            elif url.path.endswith("/.well-known/openid-configuration"):
                base = f"{issuer.authority_host}/{TENANT}"
                self._send(
                    200,
                    {
                        "issuer": f"{base}/v2.0",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    },
                )
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if managed_identity or not urlparse(self.path).path.endswith("/oauth2/v2.0/token"):
                self._send(404, {"error": "not_found"})
                return
            client = issuer.clients.get(form.get("client_id", ""))
            if (
                form.get("grant_type") != "client_credentials"
                or client is None
                or client.secret is None
                or not secrets.compare_digest(client.secret, form.get("client_secret", ""))
            ):
                self._send(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    },
                )
                return
            token, lifetime = issuer.sign(client, form.get("scope", "").split(" ")[0])
            self._send(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "access_token": token,
                },
            )

        def _managed_identity(self, query: dict[str, list[str]]) -> None:
            if self.headers.get("X-IDENTITY-HEADER") != issuer.identity_header:
                self._send(401, {"error": "invalid identity header"})
                return
            client = issuer.clients.get(query.get("client_id", [""])[0])
            if client is None or client.secret is not None:
                self._send(
                    400, {"error": "invalid_request", "error_description": "Identity not found"}
                )
                return
            resource = query.get("resource", [""])[0]
            token, lifetime = issuer.sign(client, resource)
            self._send(
                200,
                {
                    "access_token": token,
                    "expires_on": str(int(time.time()) + lifetime),
                    "resource": resource,
                    "token_type": "Bearer",
                },
            )

    return Handler


class EntraPam:
    """A PAM service for MariaDB's auth_pam that accepts only the issuer's valid tokens.

    Writing ``/etc/pam.d`` needs root; ``unavailable()`` says why this machine cannot run
    it (tests skip with that reason only when not root). ``remove()`` deletes the service.
    """

    def __init__(self, issuer: EntraIssuer, directory: Path) -> None:
        self.issuer = issuer
        self.directory = directory
        self.service = f"{PAM_PREFIX}{secrets.token_hex(6)}"
        self.module = directory / "pam_entra_exec.so"
        self.config = directory / "verifier.json"
        self.log = directory / "verifier.log"
        self.accounts: dict[str, str] = {}

    @staticmethod
    def unavailable() -> str | None:
        """Why the PAM chain cannot be set up here (not root), or None.

        Root is needed twice: to write /etc/pam.d, and for mariadbd (run with --user=root)
        to reach auth_pam_tool in its root-only directory. Anything else missing is a
        failure, not a skip: scripts/setup installs it.
        """
        if os.geteuid() != 0:
            return (
                "needs root: the test PAM service is written to /etc/pam.d and MariaDB's "
                "auth_pam_tool_dir is root-only"
            )
        return None

    @property
    def path(self) -> Path:
        """The service file."""
        return PAM_DIR / self.service

    def install(self) -> EntraPam:
        """Compile the PAM module, write the verifier config and the PAM service."""
        _remove_stale_services()
        self.directory.mkdir(parents=True, exist_ok=True)
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None or not Path("/usr/include/security/pam_modules.h").exists():
            raise RuntimeError(
                "building the test PAM module needs gcc and libpam0g-dev (scripts/setup)"
            )
        subprocess.run(
            [
                compiler,
                "-shared",
                "-fPIC",
                "-Wall",
                "-Werror",
                "-o",
                str(self.module),
                str(HERE / "entra_pam.c"),
                "-lpam",
            ],
            check=True,
            capture_output=True,
        )
        self._write_config()
        self.log.touch()
        self.path.write_text(
            "# sealdump tests: Entra ID tokens checked by tests/support/entra_verify.py\n"
            f"auth required {self.module} {sys.executable} {HERE / 'entra_verify.py'} "
            f"{self.config}\n"
            "account required pam_permit.so\n"
        )
        return self

    def allow(self, user: str, oid: str) -> None:
        """Map the MariaDB account ``user`` to the Entra identity ``oid``."""
        self.accounts[user] = oid
        self._write_config()

    def _write_config(self) -> None:
        self.config.write_text(
            json.dumps(
                {
                    "public_key": str(self.issuer.public_key_path),
                    "audience": MYSQL_RESOURCE,
                    "issuer": ISSUER,
                    "accounts": self.accounts,
                    "log": str(self.log),
                }
            )
        )

    def decisions(self) -> list[str]:
        """The verifier's log lines so far."""
        return self.log.read_text().splitlines()

    def remove(self) -> None:
        """Delete the PAM service file."""
        self.path.unlink(missing_ok=True)


def _remove_stale_services() -> None:
    """Remove services of killed test sessions: those whose PAM module no longer exists."""
    for path in PAM_DIR.glob(f"{PAM_PREFIX}*"):
        try:
            words = path.read_text().split()
        except OSError:
            continue
        modules = [w for w in words if w.endswith("pam_entra_exec.so")]
        if modules and not all(Path(m).exists() for m in modules):
            path.unlink(missing_ok=True)

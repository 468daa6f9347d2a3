"""Check a Microsoft Entra ID access token the way Azure Database for MySQL does, for tests.

Run by MariaDB's PAM plugin through tests/support/entra_pam.c as
``python entra_verify.py CONFIG USER`` with the token on standard input. It accepts (exit 0)
only an RS256 JWT whose signature verifies with the test issuer's public key, whose
audience is the configured resource, whose issuer is the test tenant's, that is within
its validity period, and whose ``oid`` is the object id the config maps ``USER`` to.

Each decision is appended to the config's log file as one line, ``accepted USER`` or
``refused USER: REASON``, never with the token, so tests can tell why a login failed.
CONFIG is JSON: ``{"public_key": PEM path, "audience", "issuer", "accounts": {USER: oid},
"log": path}``. Only the standard library and ``cryptography``: it runs outside pytest.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

LEEWAY = 60  # seconds of clock skew allowed on nbf and exp, as Entra ID's validators do
MAX_TOKEN = 16384


class Refused(Exception):
    """The token is not acceptable; the message says why (never the token)."""


def _segment(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Refused("not base64url") from None


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment(text))
    except ValueError:
        raise Refused(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Refused(f"the {what} is not a JSON object")
    return value


def check(token: str, user: str, config: dict[str, Any], now: float) -> None:
    """Raise Refused unless ``token`` is a valid access token for ``user``."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused("not a JWT (three dot-separated parts)")
    header = _json(parts[0], "header")
    if header.get("alg") != "RS256":
        raise Refused(f"algorithm {header.get('alg')!r} is not RS256")
    public = serialization.load_pem_public_key(Path(config["public_key"]).read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(
            _segment(parts[2]),
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, UnicodeEncodeError):
        raise Refused("bad signature (not signed by the test issuer's key)") from None
    claims = _json(parts[1], "payload")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if config["audience"] not in audiences:
        raise Refused(f"wrong audience {audience!r} (expected {config['audience']!r})")
    if claims.get("iss") != config["issuer"]:
        raise Refused(f"wrong issuer {claims.get('iss')!r}")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires + LEEWAY < now:
        raise Refused(f"expired (exp {expires!r}, now {int(now)})")
    not_before = claims.get("nbf", 0)
    if not isinstance(not_before, int | float) or not_before - LEEWAY > now:
        raise Refused(f"not yet valid (nbf {not_before!r})")
    expected = config["accounts"].get(user)
    if expected is None:
        raise Refused("no Entra identity is mapped to this account")
    if claims.get("oid") != expected:
        raise Refused(f"the token's oid {claims.get('oid')!r} is not this account's identity")


def main(argv: list[str]) -> int:
    """Verify the token on stdin for the user in ``argv``; exit status 0 accepts."""
    config = json.loads(Path(argv[1]).read_text())
    user = argv[2]
    raw = sys.stdin.buffer.read(MAX_TOKEN + 1)
    try:
        if len(raw) > MAX_TOKEN:
            raise Refused("longer than any access token")
        token = raw.decode("ascii").rstrip("\0\r\n")
        check(token, user, config, time.time())
    except Refused as exc:
        outcome = f"refused {user}: {exc}"
    except Exception as exc:  # noqa: BLE001 - any other failure refuses too, and says so
        outcome = f"refused {user}: verifier error {type(exc).__name__}"
    else:
        outcome = f"accepted {user} ({len(token)} bytes)"
    with open(config["log"], "a", encoding="utf-8") as log:
        log.write(outcome + "\n")
    return 0 if outcome.startswith("accepted") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

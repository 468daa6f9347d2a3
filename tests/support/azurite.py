"""Azurite's Blob service over HTTPS, as DESIGN §10 describes.

Azurite's own ``--oauth basic`` needs HTTPS, so the emulator gets a certificate from the
test CA and clients trust that CA explicitly (``connection_verify``). ``--skipApiVersionCheck``
lets the newest azure-storage-blob talk to it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.certs import TestCA
from tests.support.net import free_port, port_open, wait_until

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it is the same for every install).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO = Path(__file__).resolve().parents[2]


def azurite_binary() -> str:
    """``azurite-blob``: from $PATH, or from the project-local npm install in .tools/."""
    local = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    found = shutil.which("azurite-blob") or (str(local) if local.exists() else None)
    if not found:
        raise FileNotFoundError("azurite-blob not found: run scripts/setup (npm install azurite)")
    return found


@dataclass
class Azurite:
    """A running Azurite blob endpoint at ``account_url``."""

    workdir: Path
    ca: TestCA
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def account_url(self) -> str:
        """The blob service URL, path-style as Azurite serves it."""
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string with the well-known development key."""
        return (
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self) -> Azurite:
        """Start Azurite and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert = self.ca.issue("azurite")
        self.port = self.port or free_port()
        log = open(self.workdir / "azurite.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                azurite_binary(),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.workdir / "data"),
                "--cert",
                str(cert.cert),
                "--key",
                str(cert.key),
                "--oauth",
                "basic",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--silent",
                "--debug",
                str(self.workdir / "debug.log"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._ready, 60, f"Azurite (log: {self.workdir / 'azurite.log'})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "azurite.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"azurite-blob exited with {self.process.returncode}:\n{log}")
        return port_open(self.port)

    def stop(self) -> None:
        """Stop the emulator."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            # Azurite drains keep-alive connections on SIGTERM; nothing here needs that.
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

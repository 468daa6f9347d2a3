"""Azurite's Blob service over HTTPS, as DESIGN §10 describes.

Azurite's own ``--oauth basic`` needs HTTPS, so the emulator gets a certificate from the
test CA and clients trust that CA explicitly (``connection_verify``). ``--skipApiVersionCheck``
lets the newest azure-storage-blob talk to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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

    def container_with_sas(self, name: str, directory: Path) -> Path:
        """Create container ``name`` and write a SAS for it (racwdl, 2 hours) under ``directory``."""
        import datetime as dt

        from azure.storage.blob import (
            BlobServiceClient,
            ContainerSasPermissions,
            generate_container_sas,
        )

        service = BlobServiceClient.from_connection_string(
            self.connection_string, connection_verify=str(self.ca.cert_path)
        )
        service.create_container(name)
        token = generate_container_sas(
            ACCOUNT,
            name,
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(
                read=True, add=True, create=True, write=True, delete=True, list=True
            ),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.sas"
        path.write_text(token + "\n")
        return path

    def pause(self) -> None:
        """Freeze the emulator (SIGSTOP): connections are still accepted, nothing is answered.

        That is a stalled endpoint as clients meet it: the kernel completes TCP handshakes
        into the listen backlog and buffers requests, the process never reads them.
        """
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("Azurite is not running")
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused emulator run again (SIGCONT); harmless when it is not paused."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    @contextmanager
    def paused(self) -> Iterator[Azurite]:
        """Frozen inside the block, and always resumed after it (even when the block fails)."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    def stop(self) -> None:
        """Stop the emulator (resuming it first, should it be paused)."""
        self.resume()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            # Azurite drains keep-alive connections on SIGTERM; nothing here needs that.
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

from pathlib import Path

import pytest

from sealdump.config.secrets import REDACTED, Secret, SecretFile
from sealdump.errors import ConfigError


def test_secret_never_renders_its_value() -> None:
    secret = Secret("hunter2")
    assert secret.reveal() == "hunter2"
    assert str(secret) == repr(secret) == f"{secret}" == REDACTED
    assert "hunter2" not in repr([secret, {"password": secret}])


def test_file_secret_drops_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert SecretFile("./pw", tmp_path).read({}).reveal() == "s3cret"


def test_bare_name_is_a_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "orders").write_text("from-systemd")
    secret = SecretFile("orders", Path("/etc/sealdump"))
    assert secret.is_credential
    assert secret.describe() == "credential orders"
    assert secret.read({"CREDENTIALS_DIRECTORY": str(tmp_path)}).reveal() == "from-systemd"


def test_credential_without_systemd_says_what_to_do() -> None:
    with pytest.raises(
        ConfigError, match=r"CREDENTIALS_DIRECTORY is not set \(use LoadCredential="
    ):
        SecretFile("orders", Path("/etc")).read({})


def test_unreadable_or_empty_secret_names_the_file_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read secret file \./absent"):
        SecretFile("./absent", tmp_path).read({})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SecretFile("./empty", tmp_path).read({})

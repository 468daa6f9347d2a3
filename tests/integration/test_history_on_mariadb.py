"""The history database on MariaDB (shared by several daemons), over verified TLS.

The server's certificate comes from the throwaway test CA (not in the system store) and
names localhost and 127.0.0.1 only; the server also listens on 127.0.0.2 to prove the host
name is checked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from sealdump.config.model import HistoryUrl
from sealdump.config.secrets import SecretFile
from sealdump.errors import HistoryError
from sealdump.history import History, RunStatus
from sealdump.log import setup_logging
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


@pytest.fixture
def history_db(mariadb: MariaDB) -> Iterator[str]:
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS sealdump_history")
        cur.execute("CREATE DATABASE sealdump_history")
    yield "sealdump_history"
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS sealdump_history")


def url_of(
    mariadb: MariaDB, host: str = "127.0.0.1", *, ca: bool = True, password: bool = True
) -> str:
    secret = f":{quote(mariadb.password, safe='')}" if password else ""
    query = f"?ssl_ca={mariadb.ca.cert_path}" if ca else ""
    return f"mysql+pymysql://{mariadb.user}{secret}@{host}:{mariadb.port}/sealdump_history{query}"


def tls_cipher(history: History) -> str:
    with history.engine.connect() as connection:
        row = connection.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()
    return str(row[1])


def test_history_and_claims_on_mariadb(mariadb: MariaDB, history_db: str) -> None:
    url = url_of(mariadb)  # the CA from ssl_ca; certificate and host name checked
    first, second = History(url), History(url)  # two daemons: the second finds it migrated
    try:
        assert tls_cipher(first)
        run_id = first.start("db1", "nightly", "schedule")
        first.finish(run_id, RunStatus.SUCCESS, backup_id="b1", bytes_=10, rows=2)
        [run] = second.runs()
        assert (run.status, run.backup_id, run.started_at.tzinfo) == ("success", "b1", UTC)
        due = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
        assert first.claim("backup:db1/nightly", due) is True
        assert second.claim("backup:db1/nightly", due) is False
    finally:
        first.close()
        second.close()


def test_without_ssl_ca_the_system_store_is_used_and_refuses_the_test_ca(
    mariadb: MariaDB, history_db: str
) -> None:
    # PyMySQL alone would connect here, over TLS it never checks.
    with pytest.raises(HistoryError) as caught:
        History(url_of(mariadb, ca=False))
    message = str(caught.value)
    assert "TLS failure: the server certificate is not signed by a trusted CA" in message
    assert "ssl_ca" in message
    assert mariadb.password not in message
    assert quote(mariadb.password, safe="") not in message


def test_a_host_name_not_in_the_certificate_is_refused(mariadb: MariaDB, history_db: str) -> None:
    with pytest.raises(HistoryError, match="host name mismatch"):
        History(url_of(mariadb, "127.0.0.2"))
    # verify-ca checks the CA only, as for sources
    history = History(HistoryUrl(url_of(mariadb, "127.0.0.2"), tls="verify-ca"))
    try:
        assert tls_cipher(history)
    finally:
        history.close()


def test_insecure_skip_verify_connects_with_a_warning_at_every_open(
    mariadb: MariaDB, history_db: str
) -> None:
    stream = io.StringIO()
    setup_logging(0, stream)
    url = HistoryUrl(url_of(mariadb, "127.0.0.2", ca=False), tls="insecure-skip-verify")
    for _ in range(2):
        history = History(url)
        try:
            assert tls_cipher(history)  # still TLS, only unchecked
            history.runs()
        finally:
            history.close()
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = [w for w in warnings if w["level"] == "warning"]
    assert len(warnings) == 2
    assert "certificate NOT verified (history_tls: insecure-skip-verify)" in warnings[0]["event"]
    assert mariadb.password not in stream.getvalue()
    assert str(warnings[0]["history_url"]).startswith("mysql+pymysql://sealdump:<redacted>@")


def test_tls_settings_in_the_url_that_weaken_it_are_refused(
    mariadb: MariaDB, history_db: str
) -> None:
    for option in ("ssl_disabled=true", "ssl_verify_cert=false", "ssl_check_hostname=false"):
        with pytest.raises(HistoryError, match="history_tls"):
            History(url_of(mariadb) + "&" + option)


def test_password_from_a_file_read_at_open_and_never_in_errors(
    mariadb: MariaDB, history_db: str, tmp_path: Path
) -> None:
    secret = tmp_path / "history.password"
    secret.write_text(mariadb.password + "\n")
    url = HistoryUrl(
        url_of(mariadb, password=False), password_file=SecretFile(str(secret), tmp_path)
    )
    history = History(url)
    try:
        history.runs()
    finally:
        history.close()
    secret.write_text("wrong-" + mariadb.password)
    with pytest.raises(HistoryError) as caught:
        History(url).runs()  # read again at this open: the new (wrong) password is used
    assert "Access denied" in str(caught.value)
    assert mariadb.password not in str(caught.value)
    secret.unlink()
    with pytest.raises(HistoryError, match="cannot read secret file"):
        History(url)


def test_a_wrong_password_in_the_url_is_not_shown(mariadb: MariaDB, history_db: str) -> None:
    canary = "canary-pw-/@?&-7f3a"
    url = url_of(mariadb).replace(quote(mariadb.password, safe=""), quote(canary, safe=""))
    with pytest.raises(HistoryError) as caught:
        History(url)
    message = str(caught.value)
    assert "Access denied" in message
    for form in (canary, quote(canary, safe=""), "7f3a"):
        assert form not in message

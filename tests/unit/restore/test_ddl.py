"""DDL rewrites for restores: pure string functions."""

from __future__ import annotations

import pytest

from sealdump.restore.ddl import unqualify_trigger


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (
            "CREATE DEFINER=`root`@`localhost` TRIGGER shop.t AFTER INSERT ON shop.p "
            "FOR EACH ROW INSERT INTO shop.audit VALUES (1)",
            "CREATE DEFINER=`root`@`localhost` TRIGGER t AFTER INSERT ON p "
            "FOR EACH ROW INSERT INTO shop.audit VALUES (1)",
        ),
        (
            "CREATE TRIGGER `odd db`.`t``x` BEFORE update ON `odd db` . `o` FOR EACH ROW SET @a=1",
            "CREATE TRIGGER `t``x` BEFORE update ON `o` FOR EACH ROW SET @a=1",
        ),
        ("CREATE TRIGGER t BEFORE DELETE ON o FOR EACH ROW SET @a=1", None),
    ],
)
def test_trigger_header_loses_its_database_qualifiers_but_not_its_body(
    typed: str, expected: str | None
) -> None:
    """Qualified as typed, a rehearsal in staging would have created the trigger on the live table."""
    assert unqualify_trigger(typed) == (expected or typed)

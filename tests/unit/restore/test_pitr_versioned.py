"""Point-in-time restores refuse system-versioned tables before anything is read or changed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sealdump.errors import UsageError
from sealdump.restore.pitr import _refuse_versioned


def manifest(**kinds: str) -> SimpleNamespace:
    tables = [SimpleNamespace(name=name, kind=kind) for name, kind in kinds.items()]
    return SimpleNamespace(databases=[SimpleNamespace(name="shop", tables=tables)])


def test_a_versioned_table_in_the_restore_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match=r"shop\.hist: system-versioned"):
        _refuse_versioned(
            manifest(hist="SYSTEM VERSIONED", plain="BASE TABLE"), {"shop.hist", "shop.plain"}
        )


def test_tables_outside_the_restore_or_not_versioned_pass() -> None:
    _refuse_versioned(manifest(hist="SYSTEM VERSIONED", plain="BASE TABLE"), {"shop.plain"})

"""SQL expressions that make the server format each row as an exact SQL literal tuple.

These expressions define the literal bytes of every type. Backups now read plain values
and format them on the client with the same result (rowscan.py, _rowscan.c: half the
server's CPU); the server still formats FLOAT, BIT and ZEROFILL columns, and everything
where the scanner extension is not built. Each type is written so that inserting the
literal back gives the same bytes:

- numbers and YEAR as their decimal text (exact for integers and DECIMAL(65,30));
- FLOAT through DOUBLE: the float's exact value printed with round-trip precision, where
  printing FLOAT directly keeps 6 digits and loses data (as mysqldump does);
- BIT as its unsigned integer value;
- binary strings, BLOBs and spatial values as ``X'..'`` hex (any byte, SRID included);
- text in UTF-8 charsets with ``QUOTE()``; text in other charsets as hex with a charset
  introducer (``_latin1 X'..'``) so no byte goes through a conversion;
- temporal types with ``QUOTE()``, in a UTC session so TIMESTAMP values do not shift.
"""

from __future__ import annotations

from sealdump.source.catalog import Column, quote_ident

NUMERIC_TYPES = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "year"}
)
FLOAT_TYPES = frozenset({"float", "double", "real", "double precision"})
BINARY_TYPES = frozenset(
    {
        "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
        "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
        "multipolygon", "geometrycollection", "geomcollection", "vector",
    }
)  # fmt: skip
UTF8_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii"})


def literal(column: Column) -> str:
    """An expression giving ``column``'s value as SQL literal bytes (``NULL`` for NULL)."""
    name = quote_ident(column.name)
    kind = column.data_type
    if kind in NUMERIC_TYPES:
        text = f"IFNULL({name}, 'NULL')"
    elif kind in FLOAT_TYPES:
        text = f"IFNULL(CAST({name} AS DOUBLE), 'NULL')"
    elif kind == "bit":
        text = f"IFNULL(CAST({name} AS UNSIGNED), 'NULL')"
    elif kind in BINARY_TYPES or column.charset == "binary":
        text = f"IFNULL(CONCAT('X''', HEX({name}), ''''), 'NULL')"
    elif column.charset is not None and column.charset.lower() not in UTF8_CHARSETS:
        text = f"IFNULL(CONCAT('_{column.charset.lower()} X''', HEX({name}), ''''), 'NULL')"
    else:
        text = f"QUOTE({name})"
    # As bytes: columns of different collations cannot be mixed in one CONCAT otherwise,
    # and bytes need no decoding on the client.
    return f"CONVERT({text} USING binary)"


def row_literal(columns: list[Column]) -> str:
    """An expression giving a whole row as ``(v1,v2,...)`` bytes."""
    parts = ", ',', ".join(literal(column) for column in columns)
    return f"CONCAT('(', {parts}, ')')"

"""The literal-only check of data batches: every form the dump writes, and nothing else."""

from __future__ import annotations

import pytest

from sealdump.archive.framing import frame
from sealdump.errors import IntegrityError
from sealdump.restore.literals import (
    LiteralError,
    check_batch,
    check_key,
    checked_batches,
    is_literal,
)

# Every literal form the dump writes (backup/values.py), as the fidelity backup holds them.
WRITTEN = [
    b"NULL",
    b"0",
    b"-128",
    b"18446744073709551615",
    b"-9223372036854775808",
    b"0000",  # YEAR 0
    b"99999999999999999999999999999999999.999999999999999999999999999999",
    b"-0.000000000000000000000000000001",
    b"3.4028234663852886e38",
    b"1.1754943508222875e-38",
    b"5e-324",
    b"1e16",
    b"-0.0000001",
    b"-0",
    b"''",
    b"'abc'",
    b"'it\\'s \"quoted\" \\\\ back\\\\slash'",
    b"'line1\nline2\r\n\ttab'",  # QUOTE() leaves CR, LF and TAB raw
    b"'\\0\\Z\\'\\\\'",  # NUL, Ctrl-Z, quote, backslash as QUOTE() escapes them
    b"'\xc3\xbcn\xc3\xaf \xf0\x9f\x98\x80'",
    b"'(SELECT 1); -- /* # inside a string is data'",
    b"'2038-01-19 03:14:07.999999'",
    b"'-838:59:59.000000'",
    b'\'{"a": [1, 2.50, "x"], "b": {"c": null}}\'',
    b"X''",
    b"X'00FF27225C0A0D1A'",
    b"X'e610000001'",
    b"X'" + b"AB" * 100 + b"'",
    b"X'" + b"AB" * 17 + b"'",  # not a multiple of 32 digits
    b"_latin1 X'E9E8E0'",
    b"_cp1251 X'CFF0E8E2E5F2'",
    b"_sjis X''",
    b"_utf16le X'4100'",
]


@pytest.mark.parametrize("value", WRITTEN)
def test_every_written_form_is_accepted_alone_and_in_rows(value: bytes) -> None:
    check_batch(b"(" + value + b")", 1)
    check_batch(b"(1," + value + b",NULL),(" + value + b",2," + value + b")", 3)
    assert is_literal(value.decode())


def test_a_framed_chunk_passes_through_unchanged() -> None:
    batches = [b"(1,'a'),(2,NULL)", b"(3,X'00'),(4,_latin1 X'E9')"]
    stream = frame([b"(1,'a')", b"(2,NULL)"]) + frame([b"(3,X'00')", b"(4,_latin1 X'E9')"])
    pieces = [stream[i : i + 5] for i in range(0, len(stream), 5)]
    assert list(checked_batches(iter(pieces), 2, table="db.t", object_name="abc")) == batches


ATTACKS = {
    "subquery": b"(1,(SELECT GROUP_CONCAT(user,':',password) FROM mysql.user))",
    "bare subquery": b"(1,SELECT 1)",
    "function call": b"(1,SLEEP(10))",
    "function call after a number": b"(1,1+SLEEP(10))",
    "keyword": b"(1,DEFAULT)",
    "lowercase null": b"(1,null)",
    "variable": b"(1,@x)",
    "identifier": b"(1,password)",
    "block comment": b"(1,/* x */2)",
    "comment after the row": b"(1,2)/*",
    "executable comment": b"(1,/*!50000 2*/)",
    "dash comment": b"(1,2)-- x",
    "dash comment in a value": b"(1,-- x\n2)",
    "double minus": b"(1,--2)",
    "hash comment": b"(1,2)#x",
    "semicolon and a second statement": b"(1,2);DROP TABLE t",
    "semicolon alone": b"(1,2);",
    "unbalanced quote": b"(1,'abc)",
    "quote closed by an escape": b"(1,'abc\\')",
    "doubled quote (not QUOTE()'s form)": b"(1,'it''s')",
    "string continued by a second string": b"(1,'a' 'b')",
    "unknown escape": b"(1,'a\\nb')",
    "raw NUL in a string": b"(1,'a\x00b')",
    "raw Ctrl-Z in a string": b"(1,'a\x1ab')",
    "too few values": b"(1)",
    "too many values": b"(1,2,3)",
    "second row too short": b"(1,2),(3)",
    "empty row": b"()",
    "empty batch": b"",
    "trailing comma": b"(1,2),",
    "leading comma": b",(1,2)",
    "space between values": b"(1, 2)",
    "space between rows": b"(1,2), (3,4)",
    "newline at the end": b"(1,2)\n",
    "nested tuple": b"(1,(2))",
    "row constructor": b"(1,ROW(2,3))",
    "odd hex": b"(1,X'ABC')",
    "odd hex after a full block": b"(1,X'" + b"A" * 33 + b"')",
    "non-hex digit": b"(1,X'GG')",
    "lowercase x": b"(1,x'AB')",
    "0x literal": b"(1,0x41)",
    "hex without its quote": b"(1,X'AB)",
    "charset with junk": b"(1,_latin1(SELECT 1))",
    "charset with a string": b"(1,_latin1 'abc')",
    "charset with a comment": b"(1,_latin1/**/X'AB')",
    "charset with two spaces": b"(1,_latin1  X'AB')",
    "charset name with a dot": b"(1,_lat.in1 X'AB')",
    "charset name uppercase": b"(1,_LATIN1 X'AB')",
    "charset alone": b"(1,_latin1)",
    "collate clause": b"(1,'a' COLLATE utf8mb4_bin)",
    "plus sign": b"(1,+2)",
    "number with a trailing dot": b"(1,2.)",
    "number with a leading dot": b"(1,.5)",
    "exponent without digits": b"(1,1e)",
    "infinity": b"(1,inf)",
    "binary operator": b"(1,2*3)",
    "interval": b"(1,'2020-01-01' + INTERVAL 1 DAY)",
    "boolean": b"(1,TRUE)",
    "b-string": b"(1,b'101')",
    "n-string": b"(1,N'abc')",
    "date literal": b"(1,DATE '2020-01-01')",
}


@pytest.mark.parametrize("batch", ATTACKS.values(), ids=ATTACKS.keys())
def test_anything_but_literals_is_refused(batch: bytes) -> None:
    with pytest.raises(LiteralError):
        check_batch(batch, 2)


def test_the_refusal_says_where_and_names_the_object_and_table() -> None:
    bad = b"(1,'a'),(2,(SELECT password FROM mysql.user))"
    with pytest.raises(LiteralError, match=r"row 2, value 2: expected a literal, found '\('"):
        check_batch(bad, 2)
    with pytest.raises(
        IntegrityError,
        match=r"object 0123 \(table shop\.orders\): batch 2 is not a list of literal rows: "
        r"row 2, value 2",
    ) as caught:
        list(
            checked_batches(
                iter([frame([b"(1,'a')"]), frame([b"(1,'a')", b"(2,(SELECT 1))"])]),
                2,
                table="shop.orders",
                object_name="0123",
            )
        )
    assert caught.value.exit_code == 4


def test_refusal_messages_never_carry_row_data() -> None:
    secret = b"s3cr3t-value"
    with pytest.raises(LiteralError) as caught:
        check_batch(b"('" + secret + b"',X'" + secret + b"')", 2)
    assert "s3cr3t" not in str(caught.value)
    assert "found 'X' at byte 16" in str(caught.value)


def test_column_count_comes_from_the_caller() -> None:
    check_batch(b"(1)", 1)
    check_batch(b"(" + b",".join([b"NULL"] * 500) + b")", 500)
    with pytest.raises(LiteralError, match=r"the table has 3 columns"):
        check_batch(b"(1,2,3,4)", 3)
    with pytest.raises(LiteralError, match=r"at least one column"):
        check_batch(b"(1)", 0)


def test_broken_framing_is_an_integrity_error() -> None:
    broken = {
        b"12\n(1,2)\n": "ends inside a batch",
        b"x\n(1,2)\n": "LENGTH line",
        b"+5\n(1,2)\n": "LENGTH line",
        b"05\n(1,2)\n": "LENGTH line",
        b" 5\n(1,2)\n": "LENGTH line",
        b"5 \n(1,2)\n": "LENGTH line",
        b"1" * 20: "LENGTH line",
        b"4\n(1,2)\n": "not followed by a newline",
        b"5\n(1,2)\n5\n(3,4)": "ends inside a batch",
    }
    for stream, reason in broken.items():
        with pytest.raises(IntegrityError, match=rf"not a sequence of framed batches: .*{reason}"):
            list(checked_batches(iter([stream]), 2, table="db.t", object_name="abc"))
    byte_by_byte = [bytes([b]) for b in b"5\n(1,2)\n5\n(3,4)\n"]
    assert list(checked_batches(byte_by_byte, 2, table="db.t", object_name="abc")) == [
        b"(1,2)",
        b"(3,4)",
    ]


def test_pathological_inputs_finish() -> None:
    """Linear time: each of these would take hours with a backtracking pattern."""
    size = 1 << 20
    inputs = [
        b"(" + b"'" * size,
        b"('" + b"\\'" * size,
        b"('" + b"\\" * size,
        b"(" * size,
        b"(" + b"1" * size + b",(SELECT 1))",
        b"(X'" + b"A" * (size + 1) + b"')",
        b"(_" + b"a" * size,
        b"(1,1)," * size + b"(1,1)#",
        b"(" + b"1," * size + b"1)",
        b"(" + b"1.1e1" * size,
    ]
    for batch in inputs:
        with pytest.raises(LiteralError):
            check_batch(batch, 2)
    check_batch(b"(1,1)," * size + b"(1,1)", 2)


def test_chunk_keys_must_be_literals() -> None:
    check_key(["1", "'k7'"], 2, table="db.t", object_name="abc", side="first")
    check_key(["_latin1 X'E9'"], 1, table="db.t", object_name="abc", side="last")
    for bad in (["1"], ["1", "(SELECT 1)"], ["1", "'a'),(9"], "1", None, ["1", 2]):
        with pytest.raises(IntegrityError, match=r"its first key in the manifest is not 2"):
            check_key(bad, 2, table="db.t", object_name="abc", side="first")
    assert not is_literal("1 OR 1=1")
    assert not is_literal("\udcff")

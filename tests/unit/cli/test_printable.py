from sealdump.cli.table import printable, render_table


def test_names_with_control_characters_are_shown_escaped() -> None:
    assert printable("shop.orders") == "shop.orders"
    assert printable("été ü") == "été ü"
    assert printable("t\nFAKE LINE") == "t\\nFAKE LINE"
    assert printable("x\x1b[31mred") == "x\\x1b[31mred"
    assert printable("evil\u202etxt") == "evil\\u202etxt"
    assert printable("a\\nb") == "a\\\\nb"  # a real backslash cannot pass for an escape


def test_tables_never_get_extra_lines_from_a_cell() -> None:
    text = render_table(["TABLE", "ROWS"], [["db.t\nfake  99", "1"], ["db.u", "2"]])
    assert text.splitlines() == [
        "TABLE           ROWS",
        "db.t\\nfake  99  1",
        "db.u            2",
    ]

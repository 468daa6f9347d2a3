from pathlib import Path

from sealdump.config.reference import render

REPO = Path(__file__).resolve().parents[3]


def test_committed_reference_matches_the_schema() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "regenerate: python -m sealdump.config.reference > docs/configuration.md"
    )


def test_every_schema_key_is_documented() -> None:
    text = render()
    for key in (
        "sas_token_file",
        "key_url",
        "password_file",
        "exclude_tables",
        "keep_yearly",
        "mode",
    ):
        assert f"| `{key}` |" in text

"""Property: no config file, however malformed, gets past ``config validate`` as a traceback.

Random YAML trees and random mutations of a valid config must end with exit 0 (valid) or
exit 2 with every line ``FILE:LINE: ...``; a valid one must also ``config show``.
Deterministic (derandomize) so CI never sees a new failure it did not make.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from tests.unit.config.test_hostile_input import MAIN, SERVER, run_cli

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = [
    "state_dir", "history_url", "storages", "keys", "defaults", "servers_dir", "metrics_listen",
    "host", "port", "user", "password", "password_file", "tls", "jobs", "every", "schedule",
    "timeout", "retention", "keep_last", "type", "path", "key_file", "webhooks", "drill",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["3306.0", "*/³ * * * *", "99999999999d", "[::1]:9187", "h:99999", "${X:-pw}", "1s"]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=25,
)
# Characters that mean something to YAML, for splicing into valid text.
SPLICE = st.text(alphabet="&*!|>{}[]:,-#'\"%@?\n \t\\$0123456789abcx³.", max_size=12)


def _dump(tree: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(tree, out)
    return out.getvalue()


def check(main_file: Path, server_file: Path) -> None:
    code, _, err = run_cli("--config", str(main_file), "config", "validate")
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        located = re.compile(rf"^({re.escape(str(main_file))}|{re.escape(str(server_file))}):\d+: ")
        lines = err.splitlines()
        assert lines, err
        assert all(located.match(line) for line in lines), err
    else:
        code, _, err = run_cli("--config", str(main_file), "config", "show")
        assert code == 0, err


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "servers.d").mkdir()
    return tmp_path / "sealdump.yaml", tmp_path / "servers.d" / "db1.yaml"


@FUZZ
@given(main=TREES, server=TREES)
def test_random_trees_end_in_located_problems(
    files: tuple[Path, Path], main: Any, server: Any
) -> None:
    main_file, server_file = files
    main_file.write_text(_dump(main))
    server_file.write_text(_dump(server))
    check(main_file, server_file)


@FUZZ
@given(
    target=st.booleans(),
    cuts=st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 8), SPLICE), min_size=1, max_size=4
    ),
)
def test_mutated_valid_configs_end_in_located_problems(
    files: tuple[Path, Path], target: bool, cuts: list[tuple[int, int, str]]
) -> None:
    main_file, server_file = files
    texts = [MAIN, SERVER + "  other: {schedule: '*/5 * * * *', timeout: 30m}\n"]
    text = texts[target]
    for at, length, insert in cuts:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + length :]
    texts[target] = text
    main_file.write_text(texts[0])
    server_file.write_text(texts[1])
    check(main_file, server_file)


@FUZZ
@given(data=st.data())
def test_valid_configs_with_one_value_replaced_end_in_located_problems(
    files: tuple[Path, Path], data: st.DataObject
) -> None:
    main_file, server_file = files
    yaml = YAML(typ="safe", pure=True)
    main: dict[str, Any] = yaml.load(MAIN)
    server: dict[str, Any] = yaml.load(SERVER)
    tree = data.draw(st.sampled_from([main, server]))
    node: Any = tree
    while isinstance(node, dict) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict):
            break
        node = node[key]
    node[data.draw(st.sampled_from([*sorted(node), *KEYS]))] = data.draw(TREES)
    main_file.write_text(_dump(main))
    server_file.write_text(_dump(server))
    check(main_file, server_file)

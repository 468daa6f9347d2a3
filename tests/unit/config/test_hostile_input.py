"""Malformed and hostile config files end as ``FILE:LINE: path: message`` and exit 2.

Each case here once gave a traceback, a hang or a crash (issue "No secret leaks and no
traceback from any input"). They run through the real command line entry point.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import textwrap
import urllib.request
from pathlib import Path

import pytest

from sealdump.cli import main
from sealdump.config import load_config
from sealdump.config.loader import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, load_document
from sealdump.config.validate import parse_listen
from sealdump.errors import ConfigError
from sealdump.monitoring.metrics import Metrics, serve

MAIN = textwrap.dedent("""
    state_dir: state
    storages:
      local: {type: filesystem, path: backups}
    keys:
      onprem: {type: local, key_file: kek.key}
    defaults: {storage: local, key: onprem}
""").lstrip()
SERVER = "host: db1\nuser: backup\npassword_file: db1.password\njobs:\n  nightly: {every: 6h}\n"


def run_cli(*args: str) -> tuple[int, str, str]:
    """``sealdump ARGS`` in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as done,
    ):
        main(list(args))
    code = done.value.code
    return code if isinstance(code, int) else 1, out.getvalue(), err.getvalue()


def validate(main_file: Path) -> tuple[int, list[str]]:
    code, _, err = run_cli("--config", str(main_file), "config", "validate")
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    return code, err.splitlines()


def refused(main_file: Path, *files: Path) -> list[str]:
    """The problems of an invalid config, checked to be exit 2 and one located line each."""
    code, lines = validate(main_file)
    assert code == 2, lines
    located = re.compile(
        "^(" + "|".join(re.escape(str(f)) for f in (main_file, *files)) + r"):\d+: "
    )
    assert lines
    assert all(located.match(line) for line in lines), lines
    return lines


def with_server(write, server_yaml: str, main_extra: str = "") -> tuple[Path, Path]:
    main_file = write("sealdump.yaml", MAIN + main_extra)
    return main_file, write("servers.d/db1.yaml", server_yaml)


def test_a_valid_config_still_validates(write) -> None:
    main_file, _ = with_server(write, SERVER)
    code, lines = validate(main_file)
    assert code == 0, lines


def test_an_alias_bomb_is_refused_before_it_is_expanded(write) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    main_file = write("sealdump.yaml", "\n".join(lines) + "\n")
    [problem] = refused(main_file)
    assert f"aliases expand to more than {MAX_ALIAS_NODES} nodes" in problem


def test_an_alias_to_its_own_collection_is_refused(write) -> None:
    main_file = write("sealdump.yaml", "state_dir: x\nloop: &a [1, *a]\n")
    [problem] = refused(main_file)
    assert problem == f"{main_file}:2: loop[1]: alias *a refers to itself"


def test_aliases_within_the_limit_are_allowed(write) -> None:
    main_file = write("sealdump.yaml", MAIN)
    write(
        "servers.d/db1.yaml",
        SERVER.replace("jobs:\n", "jobs:\n  hourly: {every: 1h, retention: &r {keep_last: 3}}\n")
        + "  weekly: {every: 7d, retention: *r}\n"
        + "  merged:\n    <<: {every: 1d}\n    connections: 3\n",
    )
    config = load_config(main_file, environ={})
    jobs = config.servers["db1"].jobs
    assert jobs["weekly"].retention.keep_last == 3
    assert jobs["merged"].connections == 3
    assert jobs["merged"].every is not None


def test_deep_nesting_is_refused_with_its_line(write) -> None:
    depth = 10_000
    main_file = write("sealdump.yaml", "state_dir: x\nstorages: " + "[" * depth + "]" * depth)
    [problem] = refused(main_file)
    assert problem.startswith(f"{main_file}:2: storages[0][0]")
    assert problem.endswith(f"nested deeper than {MAX_DEPTH} levels")


def test_deep_block_nesting_is_refused(write) -> None:
    text = "".join(f"{'  ' * level}k{level}:\n" for level in range(200)) + "  " * 200 + "x: 1\n"
    [problem] = refused(write("sealdump.yaml", text))
    assert "nested deeper than" in problem


def test_python_and_unknown_tags_are_refused(write) -> None:
    main_file, server = with_server(
        write,
        "host: !!python/object/apply:os.system [echo owned]\nuser: !custom backup\n"
        "port: !!int 3306\n",
    )
    problems = refused(main_file, server)
    assert problems == [
        f"{server}:1: host: unsupported tag !!python/object/apply:os.system",
        f"{server}:2: user: unsupported tag !custom",
    ]


def test_huge_every_and_timeout_are_refused(write) -> None:
    main_file, server = with_server(
        write,
        SERVER.replace("every: 6h", "every: 99999999999999999999d")
        + "  slow: {every: 367d, timeout: 999999999999}\n"
        + "  slower: {every: 1d, timeout: '99999999999999999999'}\n"
        + "  longest: {every: 366d, timeout: 31622400}\n",
    )
    problems = refused(main_file, server)
    assert len(problems) == 4, problems
    assert "jobs.nightly.every: '99999999999999999999d' is not an interval" in problems[0]
    assert "jobs.slow.every: '367d' is longer than the longest allowed, 366 days" in problems[1]
    assert "jobs.slow.timeout: 999999999999 is greater than the maximum" in problems[2]
    assert "jobs.slower.timeout" in problems[3]
    assert "longest allowed" in problems[3]


@pytest.mark.parametrize(
    "schedule",
    ["*/³ * * * *", "٣ * * * *", "0 ² * * *", "0-٥ * * * *"],  # noqa: RUF001 - the point
)
def test_cron_takes_ascii_digits_only(write, schedule: str) -> None:
    main_file, server = with_server(write, SERVER.replace("every: 6h", f"schedule: '{schedule}'"))
    [problem] = refused(main_file, server)
    assert problem.startswith(f"{server}:5: jobs.nightly.schedule: ")


def test_port_must_be_an_integer_not_a_float(write) -> None:
    main_file, server = with_server(write, SERVER + "port: 3306.0\n")
    [problem] = refused(main_file, server)
    assert problem == f"{server}:6: port: expected an integer, got 3306.0"


def test_integers_everywhere_refuse_floats(write) -> None:
    main_file, server = with_server(
        write,
        SERVER.replace("every: 6h", "every: 6h, connections: 2.0, retention: {keep_last: 1.0}"),
    )
    problems = refused(main_file, server)
    assert len(problems) == 2, problems


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+pymysql://u@db:/history", "history_url: the port is not a number"),
        ("mysql+pymysql://u@db:x/history", "history_url: the port is not a number"),
        ("mysql+pymysql://u:pw@db:99999/h", "history_url: port 99999 is not in 1-65535"),
        ("not a url", "history_url: not a database URL"),
        ("nosuchdb://db/h", "history_url: unknown database kind 'nosuchdb'"),
    ],
)
def test_history_url_is_parsed_at_validate(write, url: str, message: str) -> None:
    main_file, _ = with_server(write, SERVER, f"history_url: '{url}'\n")
    [problem] = refused(main_file)
    assert problem.startswith(f"{main_file}:7: {message}")
    assert "pw" not in problem


def test_config_show_works_for_every_history_url_validate_accepts(write) -> None:
    main_file, _ = with_server(write, SERVER, "history_url: 'mysql+pymysql://u:pw@db:3307/h'\n")
    code, out, err = run_cli("--config", str(main_file), "config", "show")
    assert code == 0, err
    assert "pw" not in out.replace("password", "")


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:99999", "port 99999 is not in 1-65535"),
        ("127.0.0.1:0", "port 0 is not in 1-65535"),
        ("[::1]:65536", "port 65536 is not in 1-65535"),
        ("[1:2:3]:9187", "[1:2:3] is not an IPv6 address"),
    ],
)
def test_metrics_listen_port_and_address_are_checked(write, listen: str, message: str) -> None:
    main_file, _ = with_server(write, SERVER, f"metrics_listen: '{listen}'\n")
    [problem] = refused(main_file)
    assert problem == f"{main_file}:7: metrics_listen: {listen!r}: {message}"


def test_metrics_listen_on_ipv6_validates_and_serves(write) -> None:
    assert parse_listen("[::1]:9187") == ("::1", 9187)
    assert parse_listen("localhost:1") == ("localhost", 1)
    main_file, _ = with_server(write, SERVER, "metrics_listen: '[::1]:9187'\n")
    assert validate(main_file)[0] == 0
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = serve("[::1]:0", Metrics(), lambda: True)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=5) as answer:
            assert answer.read() == b"ok\n"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "password",
    ["${UNSET:-hunter2}", "${SET:-hunter2}", "hunter${SET}", "${SET}2"],
)
def test_a_password_default_or_text_around_a_reference_is_a_password_in_clear(
    write, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("SET", "x")
    monkeypatch.delenv("UNSET", raising=False)
    main_file, server = with_server(write, f"host: db1\nuser: backup\npassword: '{password}'\n")
    code, _, err = run_cli("--config", str(main_file), "config", "validate")
    assert code == 2, err
    assert err == (
        f"{server}:3: password: a password in clear is refused, also as a ${{VAR:-default}} "
        "default or around a reference: use password_file or ${ENV_VAR} alone\n"
    )
    assert "hunter" not in err


def test_a_password_from_the_environment_alone_is_accepted(write) -> None:
    main_file, _ = with_server(write, "host: db1\nuser: backup\npassword: ${A}${B:-}\n")
    config = load_config(main_file, environ={"A": "secret"})
    password = config.servers["db1"].password
    assert password is not None
    assert password.reveal() == "secret"


def test_a_file_larger_than_the_limit_is_refused_unread(write) -> None:
    main_file = write("sealdump.yaml", "state_dir: x\n" + "#" * MAX_FILE_BYTES)
    [problem] = refused(main_file)
    assert problem == f"{main_file}:1: file larger than {MAX_FILE_BYTES // 1024} KiB"


def test_numbers_too_long_to_convert_are_refused(write) -> None:
    main_file, server = with_server(write, SERVER + "port: " + "9" * 5000 + "\n")
    [problem] = refused(main_file, server)
    assert problem == f"{server}:6: port: a number of more than 100 digits"


def test_control_characters_and_odd_keys_stay_on_one_line(write) -> None:
    main_file = write("sealdump.yaml", 'state_dir: x\n"a\\nb\\u202e": 1\n')
    problems = refused(main_file)
    assert problems == [f"{main_file}:2: a\\nb\\u202e: unknown key"], problems
    main_file = write("sealdump.yaml", "state_dir: x\nb: \x07\n")
    [problem] = refused(main_file)
    assert problem.startswith(f"{main_file}:2: invalid YAML: ")


def test_nul_in_a_path_and_bad_urls_are_refused(write) -> None:
    main_file = write("sealdump.yaml", MAIN.replace("key_file: kek.key", 'key_file: "k\\0"'))
    write("servers.d/db1.yaml", SERVER + "  hook: {webhooks: {failure: 'https://[oops/ping'}}\n")
    problems = refused(main_file, main_file.parent / "servers.d" / "db1.yaml")
    assert any("keys.onprem.key_file: " in p and "NUL" in p for p in problems), problems
    assert any("webhooks.failure: not a usable URL" in p for p in problems), problems


def test_loader_problems_are_config_errors_with_lines(write) -> None:
    file = write("a.yaml", "a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError) as caught:
        load_document(file, environ={})
    assert re.match(rf"^{re.escape(str(file))}:\d+: invalid YAML: ", caught.value.problems[0])

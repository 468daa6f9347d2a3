"""Load and check the whole configuration, reporting every problem at once.

Three passes over already-parsed documents: the JSON Schema in ``schema.yaml`` (shapes,
types, enums), then checks the schema cannot express (schedules, secrets in clear, names
that refer to other sections or files), then the typed model (build.py). Problems from all files are
gathered before anything is raised, each as ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from ruamel.yaml import YAML

from sealdump.config.build import binlog_default, build, parse_duration, resolve_path
from sealdump.config.cron import (
    ScheduleError,
    parse_cron,
    parse_every,
    parse_timezone,
)
from sealdump.config.loader import Document, KeyPath, load_document
from sealdump.config.model import Config
from sealdump.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/sealdump/sealdump.yaml")
# Keys whose values are never echoed in an error, whatever their type.
SECRET_KEYS = frozenset({"password", "history_url"})
_TYPE_NAMES = {
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
    "number": "a number",
}


@functools.cache
def schema() -> dict[str, Any]:
    """The config JSON Schema shipped with the package (``config/schema.yaml``)."""
    text = resources.files("sealdump.config").joinpath("schema.yaml").read_text("utf-8")
    loaded: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return loaded


def _is_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 3306.0 as an integer; nothing in sealdump can use a float there.
    return isinstance(instance, int) and not isinstance(instance, bool)


# Draft 2020-12 with "integer" meaning a YAML integer only.
_Validator = extend(  # type: ignore[no-untyped-call]  # jsonschema's stubs leave it untyped
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@functools.cache
def _validator(definition: str) -> Any:
    root = schema()
    return _Validator({**root, "$ref": f"#/$defs/{definition}"})


_LISTEN = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port); ValueError says what is wrong."""
    match = _LISTEN.match(text)
    if match is None:
        raise ValueError("must be HOST:PORT or [IPV6]:PORT, such as 127.0.0.1:9187")
    ipv6, host, port_text = match.groups()
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise ValueError(f"[{ipv6}] is not an IPv6 address") from None
        host = ipv6
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not in 1-65535")
    return host, port


def _history_url_problem(url: str) -> str | None:
    """Why SQLAlchemy could not use ``url``, without echoing it (it may hold a password)."""
    # Imported only for a configured history_url: SQLAlchemy costs a CLI start ~0.2 s.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "not a database URL such as sqlite:///PATH or mysql+pymysql://USER@HOST/DB"
    except ValueError:
        return "the port is not a number"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"port {parsed.port} is not in 1-65535"
    if "\x00" in url:
        return "contains a NUL character"
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return f"unknown database kind {parsed.drivername!r}"
    return None


def _url_problem(url: str) -> str | None:
    """Why a storage, vault or webhook URL that matched its pattern cannot be used."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        return f"not a usable URL: {exc}"
    if not parts.hostname:
        return "not a usable URL: no host"
    return None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` and its server files into a Config, or raise ConfigError with all problems."""
    env = os.environ if environ is None else environ
    path = Path(path)
    problems: list[str] = []
    main = load_document(path, env)
    problems += schema_problems(main, "main")
    named = main.data.get("servers_dir")
    explicit = isinstance(named, str)  # anything else the schema reported
    servers_dir = resolve_path(path.parent, named if isinstance(named, str) else "servers.d")
    servers: list[Document] = []
    for file in _server_files(servers_dir, main, explicit, problems):
        try:
            document = load_document(file, env)
        except ConfigError as exc:
            problems += exc.problems
            continue
        problems += schema_problems(document, "server")
        servers.append(document)
    # Cross checks run even after schema problems, so one run reports everything.
    problems += _cross_checks(main, servers)
    if problems:
        raise ConfigError(sorted(set(problems), key=_problem_order))
    return build(main, servers, servers_dir)


def _problem_order(problem: str) -> tuple[str, int, str]:
    file, _, rest = problem.partition(":")
    line, _, message = rest.partition(":")
    return (file, int(line) if line.isascii() and line.isdigit() else 0, message)


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else empty: cross checks skip what the schema rejected."""
    return value if isinstance(value, dict) else {}


def _server_files(
    directory: Path, main: Document, explicit: bool, problems: list[str]
) -> list[Path]:
    if not directory.is_dir():
        if explicit:
            problems.append(main.problem(("servers_dir",), f"not a directory: {directory}"))
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def schema_problems(doc: Document, definition: str) -> list[str]:
    """Every schema violation in ``doc`` as a located, readable problem."""
    problems = []
    for error in sorted(_validator(definition).iter_errors(doc.data), key=_error_order):
        problems += _describe(doc, error)
    return problems


def _error_order(error: ValidationError) -> tuple[str, ...]:
    return tuple(str(part) for part in error.absolute_path)


def _describe(doc: Document, error: ValidationError) -> list[str]:
    path: KeyPath = tuple(error.absolute_path)
    schema_node = error.schema if isinstance(error.schema, dict) else {}
    hidden = (bool(path) and path[-1] in SECRET_KEYS) or path in doc.from_env
    instance: Any = error.instance
    wanted: Any = error.validator_value
    shown = "the value given" if hidden else repr(instance)
    match error.validator:
        case "additionalProperties":
            known = list(schema_node.get("properties", {}))
            return [
                doc.problem((*path, key), "unknown key" + _suggest(key, known))
                for key in instance
                if key not in known
            ]
        case "required":
            missing = [k for k in schema_node.get("required", []) if k not in instance]
            return [doc.problem(path, f"missing required key {key!r}") for key in missing]
        case "type":
            names = [wanted] if isinstance(wanted, str) else list(wanted)
            expected = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
            return [doc.problem(path, f"expected {expected}, got {shown}")]
        case "enum" | "const":
            choices = wanted if error.validator == "enum" else [wanted]
            listed = ", ".join(str(c) for c in choices)
            return [doc.problem(path, f"{shown} is not one of: {listed}")]
        case "pattern":
            if "propertyNames" in error.schema_path:
                return [doc.problem((*path, instance), f"invalid name {shown}: {_name_rule()}")]
            if schema_node.get("pattern") == schema()["$defs"]["name"]["pattern"]:
                return [doc.problem(path, f"invalid name {shown}: {_name_rule()}")]
            rule = schema_node.get("x-error", "is not in the expected form")
            return [doc.problem(path, f"{shown} {rule}")]
        case "minLength":
            return [doc.problem(path, "must not be empty")]
        case _:
            message = error.message if not hidden else f"{shown} is invalid ({error.validator})"
            return [doc.problem(path, message)]


def _name_rule() -> str:
    return "use letters, digits, '.', '_' and '-', starting with a letter or digit"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known(kind: str, names: Iterable[str]) -> str:
    names = sorted(names)
    return f"(known {kind}: {', '.join(names)})" if names else f"(no {kind} are configured)"


def _cross_checks(main: Document, servers: list[Document]) -> list[str]:
    problems: list[str] = []
    storages = _mapping(main.data.get("storages"))
    keys = _mapping(main.data.get("keys"))
    defaults = _mapping(main.data.get("defaults"))
    for section, table in (("storage", storages), ("key", keys)):
        name = defaults.get(section)
        if isinstance(name, str) and name not in table:
            kind = "storages" if section == "storage" else "keys"
            problems.append(
                main.problem(
                    ("defaults", section), f"unknown {section} {name!r} {_known(kind, table)}"
                )
            )
    problems += _history_checks(main)
    history_url = main.data.get("history_url")
    if isinstance(history_url, str) and history_url:
        reason = _history_url_problem(history_url)
        if reason is not None:
            problems.append(main.problem(("history_url",), reason))
    listen = main.data.get("metrics_listen")
    if isinstance(listen, str) and _LISTEN.match(listen):  # else the schema said it
        try:
            parse_listen(listen)
        except ValueError as exc:
            problems.append(main.problem(("metrics_listen",), f"{listen!r}: {exc}"))
    problems += _url_problems(main, "storages", "account_url")
    problems += _url_problems(main, "keys", "key_url")
    problems += _url_problems(main, "keys", "authority_host")
    for name, storage in storages.items():
        url = _mapping(storage).get("account_url")
        if (
            isinstance(url, str)
            and url.startswith("http://")
            and not storage.get("allow_insecure_http", False)
        ):
            problems.append(
                main.problem(
                    ("storages", name, "account_url"),
                    "http:// is refused (secure transfer required); use https:// "
                    "or, for an emulator only, allow_insecure_http: true",
                )
            )
    seen: dict[str, Document] = {}
    for doc in servers:
        server_name = str(doc.data.get("name", doc.file.stem))
        if server_name in seen:
            problems.append(
                doc.problem(
                    ("name",) if "name" in doc.data else (),
                    f"server name {server_name!r} is already used by {seen[server_name].file}",
                )
            )
        seen.setdefault(server_name, doc)
        problems += _server_checks(doc, storages, keys, defaults)
    for doc in servers:
        for job_name, job in _mapping(doc.data.get("jobs")).items():
            target = _mapping(job).get("drill_target")
            if isinstance(target, str) and target not in seen:
                problems.append(
                    doc.problem(
                        ("jobs", job_name, "drill_target"),
                        f"unknown server {target!r} {_known('servers', seen)}",
                    )
                )
    return problems


def _history_checks(main: Document) -> list[str]:
    """The history database's password is given once (in history_url or in a file)."""
    url = main.data.get("history_url")
    if not isinstance(url, str):
        return []
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return []  # _history_url_problem says why
    if parsed.password is not None and "history_password_file" in main.data:
        return [
            main.problem(
                ("history_password_file",),
                "give the password in history_url or history_password_file, not both",
            )
        ]
    return []


def _url_problems(doc: Document, section: str, key: str) -> list[str]:
    problems = []
    for name, item in _mapping(doc.data.get(section)).items():
        url = _mapping(item).get(key)
        reason = _url_problem(url) if isinstance(url, str) else None
        if reason is not None:
            problems.append(doc.problem((section, name, key), reason))
    return problems


def _entra_checks(doc: Document) -> list[str]:
    """``auth: entra``: no password, a token sent only over verified TLS, a whole principal."""
    data = doc.data
    entra = data.get("entra")
    if data.get("auth") != "entra":
        if entra is not None:
            return [doc.problem(("entra",), "entra settings are used only with auth: entra")]
        return []
    problems = [
        doc.problem(
            (key,),
            f"auth: entra logs in with a Microsoft Entra ID token instead of a password: "
            f"remove {key}",
        )
        for key in ("password", "password_file")
        if key in data
    ]
    if data.get("allow_plaintext") is True:
        problems.append(
            doc.problem(
                ("allow_plaintext",),
                "auth: entra sends its token as a clear-text password, only over verified "
                "TLS: remove allow_plaintext",
            )
        )
    tls_mode = _mapping(data.get("tls")).get("mode")
    if tls_mode == "insecure-skip-verify":
        problems.append(
            doc.problem(
                ("tls", "mode"),
                "auth: entra sends its token as a clear-text password, only to a verified "
                "server: use verify-identity or verify-ca, not insecure-skip-verify",
            )
        )
    settings = _mapping(entra)
    authority = settings.get("authority_host")
    reason = _url_problem(authority) if isinstance(authority, str) else None
    if reason is not None:
        problems.append(doc.problem(("entra", "authority_host"), reason))
    if "client_secret_file" in settings:
        missing = [key for key in ("tenant_id", "client_id") if key not in settings]
        if missing:
            problems.append(
                doc.problem(
                    ("entra", "client_secret_file"),
                    f"a service principal needs tenant_id and client_id too (missing: "
                    f"{', '.join(missing)})",
                )
            )
    return problems


def _binlog_checks(
    doc: Document, storages: dict[str, Any], keys: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """``binlog:``: a storage and key it names exist; without them, the jobs' must agree."""
    binlog = doc.data.get("binlog")
    if not isinstance(binlog, dict):
        return []
    jobs = _mapping(doc.data.get("jobs"))
    problems: list[str] = []
    for section, table in (("storage", storages), ("key", keys)):
        kind = "storages" if section == "storage" else "keys"
        name = binlog.get(section)
        if isinstance(name, str):
            if name not in table:
                problems.append(
                    doc.problem(
                        ("binlog", section), f"unknown {section} {name!r} {_known(kind, table)}"
                    )
                )
            continue
        if section in binlog:
            continue  # the schema reported its type
        if binlog_default(section, jobs, defaults) is None:
            used = sorted(
                {str(_mapping(job).get(section, defaults.get(section))) for job in jobs.values()}
            )
            why = (
                f"this server's jobs use different {kind} ({', '.join(used)})"
                if len(used) > 1
                else f"there are no jobs and no defaults.{section}"
            )
            problems.append(
                doc.problem(("binlog",), f"binlog needs a {section}: {why}; set binlog.{section}")
            )
    return problems


def _server_checks(
    doc: Document, storages: dict[str, Any], keys: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    problems: list[str] = []
    data = doc.data
    if "password" in data:
        if ("password",) not in doc.from_env:
            problems.append(
                doc.problem(
                    ("password",),
                    "a password in clear is refused: use password_file or ${ENV_VAR}",
                )
            )
        elif ("password",) in doc.clear_text:
            # ${UNSET:-hunter2} would put hunter2 in the file just as well.
            problems.append(
                doc.problem(
                    ("password",),
                    "a password in clear is refused, also as a ${VAR:-default} default or "
                    "around a reference: use password_file or ${ENV_VAR} alone",
                )
            )
        if "password_file" in data:
            problems.append(doc.problem(("password",), "give password or password_file, not both"))
    problems += _entra_checks(doc)
    problems += _binlog_checks(doc, storages, keys, defaults)
    for job_name, job_data in _mapping(data.get("jobs")).items():
        job = _mapping(job_data)
        at: KeyPath = ("jobs", job_name)
        for section, table in (("storage", storages), ("key", keys)):
            name = job.get(section, defaults.get(section))
            kind = "storages" if section == "storage" else "keys"
            if name is None:
                problems.append(
                    doc.problem(at, f"no {section}: set {section} here or defaults.{section}")
                )
            elif isinstance(name, str) and name not in table and section in job:
                problems.append(
                    doc.problem((*at, section), f"unknown {section} {name!r} {_known(kind, table)}")
                )
        if "schedule" in job and "every" in job:
            problems.append(doc.problem((*at, "every"), "give schedule or every, not both"))
        for event, url in _mapping(job.get("webhooks")).items():
            reason = _url_problem(url) if isinstance(url, str) else None
            if reason is not None:
                problems.append(doc.problem((*at, "webhooks", event), reason))
        for key, parse in (
            ("drill", parse_cron),
            ("schedule", parse_cron),
            ("every", parse_every),
            ("timezone", parse_timezone),
            ("timeout", parse_duration),
        ):
            if isinstance(job.get(key), str):
                try:
                    parse(job[key])
                except ScheduleError as exc:
                    detail = f"{job[key]!r}: {exc}" if key in ("schedule", "drill") else str(exc)
                    problems.append(doc.problem((*at, key), detail))
    return problems

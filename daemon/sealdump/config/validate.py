"""Load and check the whole configuration, reporting every problem at once.

Three passes over already-parsed documents: the JSON Schema in ``schema.yaml`` (shapes,
types, enums), then checks the schema cannot express (schedules, secrets in clear, names
that refer to other sections or files), then the typed model. Problems from all files are
gathered before anything is raised, each as ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterable, Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML

from sealdump.config.loader import Document, KeyPath, load_document
from sealdump.config.model import (
    AzureBlobStorage,
    AzureKeyVaultKey,
    Config,
    FilesystemStorage,
    Job,
    KeyConfig,
    LocalKey,
    Retention,
    Server,
    Storage,
    Tls,
)
from sealdump.config.secrets import Secret, SecretFile
from sealdump.errors import ConfigError
from sealdump.scheduling.schedule import (
    Cron,
    ScheduleError,
    parse_cron,
    parse_every,
    parse_timezone,
)

DEFAULT_CONFIG = Path("/etc/sealdump/sealdump.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/sealdump")
# Keys whose values are never echoed in an error, whatever their type.
SECRET_KEYS = frozenset({"password"})
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


@functools.cache
def _validator(definition: str) -> Draft202012Validator:
    root = schema()
    return Draft202012Validator({**root, "$ref": f"#/$defs/{definition}"})


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` and its server files into a Config, or raise ConfigError with all problems."""
    env = os.environ if environ is None else environ
    path = Path(path)
    problems: list[str] = []
    main = load_document(path, env)
    problems += schema_problems(main, "main")
    servers_dir = _resolve(path.parent, main.data.get("servers_dir", "servers.d"))
    servers: list[Document] = []
    for file in _server_files(servers_dir, main, "servers_dir" in main.data, problems):
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
    return _build(main, servers, servers_dir)


def _problem_order(problem: str) -> tuple[str, int, str]:
    file, _, rest = problem.partition(":")
    line, _, message = rest.partition(":")
    return (file, int(line) if line.isdigit() else 0, message)


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else empty: cross checks skip what the schema rejected."""
    return value if isinstance(value, dict) else {}


def _resolve(base: Path, value: str) -> Path:
    """``value`` taken relative to ``base`` unless absolute, with ``..`` folded away."""
    return Path(os.path.normpath(base / value))


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
        if "password_file" in data:
            problems.append(doc.problem(("password",), "give password or password_file, not both"))
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
        for key, parse in (
            ("drill", parse_cron),
            ("schedule", parse_cron),
            ("every", parse_every),
            ("timezone", parse_timezone),
        ):
            if isinstance(job.get(key), str):
                try:
                    parse(job[key])
                except ScheduleError as exc:
                    detail = f"{job[key]!r}: {exc}" if key in ("schedule", "drill") else str(exc)
                    problems.append(doc.problem((*at, key), detail))
    return problems


def _secret_file(doc: Document, value: str | None) -> SecretFile | None:
    return SecretFile(value, doc.file.parent) if value is not None else None


def _path(doc: Document, value: str | None) -> Path | None:
    return _resolve(doc.file.parent, value) if value is not None else None


def _retention(data: Mapping[str, int] | None, fallback: Retention) -> Retention:
    return Retention(**data) if data is not None else fallback


def _build(main: Document, servers: list[Document], servers_dir: Path) -> Config:
    data = main.data
    state_dir = _resolve(main.file.parent, data.get("state_dir", str(DEFAULT_STATE_DIR)))
    defaults = data.get("defaults", {})
    default_retention = _retention(defaults.get("retention"), Retention(keep_last=7))
    storages: dict[str, Storage] = {}
    for name, item in data.get("storages", {}).items():
        if item["type"] == "filesystem":
            storages[name] = FilesystemStorage(
                name=name, path=_resolve(main.file.parent, item["path"])
            )
        else:
            storages[name] = AzureBlobStorage(
                name=name,
                account_url=item["account_url"],
                container=item["container"],
                prefix=item.get("prefix", ""),
                sas_token_file=_secret_file(main, item.get("sas_token_file")),
                account_key_file=_secret_file(main, item.get("account_key_file")),
                connection_string_file=_secret_file(main, item.get("connection_string_file")),
                managed_identity_client_id=item.get("managed_identity_client_id"),
                ca_file=_path(main, item.get("ca_file")),
                tier=item.get("tier"),
                allow_insecure_http=item.get("allow_insecure_http", False),
                create_container=item.get("create_container", False),
                max_concurrency=item.get("max_concurrency", 4),
                immutability_days=item.get("immutability_days"),
                legal_hold=item.get("legal_hold", False),
            )
    keys: dict[str, KeyConfig] = {}
    for name, item in data.get("keys", {}).items():
        if item["type"] == "local":
            keys[name] = LocalKey(
                name=name,
                key_file=_resolve(main.file.parent, item["key_file"]),
                old_key_files=tuple(
                    _resolve(main.file.parent, p) for p in item.get("old_key_files", [])
                ),
            )
        else:
            keys[name] = AzureKeyVaultKey(
                name=name,
                key_url=item["key_url"],
                algorithm=item.get("algorithm", "RSA-OAEP-256"),
                tenant_id=item.get("tenant_id"),
                client_id=item.get("client_id"),
                client_secret_file=_secret_file(main, item.get("client_secret_file")),
                authority_host=item.get("authority_host"),
                ca_file=_path(main, item.get("ca_file")),
                verify_challenge_resource=item.get("verify_challenge_resource", True),
            )
    built: dict[str, Server] = {}
    for doc in servers:
        server = _build_server(doc, defaults, default_retention)
        built[server.name] = server
    return Config(
        file=main.file,
        state_dir=state_dir,
        history_url=data.get("history_url", f"sqlite:///{state_dir / 'history.db'}"),
        servers_dir=servers_dir,
        storages=storages,
        keys=keys,
        servers=built,
        metrics_listen=data.get("metrics_listen"),
        default_storage=defaults.get("storage"),
        default_key=defaults.get("key"),
        default_retention=default_retention,
    )


def _build_server(doc: Document, defaults: dict[str, Any], default_retention: Retention) -> Server:
    data = doc.data
    name = data.get("name", doc.file.stem)
    tls = data.get("tls", {})
    jobs: dict[str, Job] = {}
    for job_name, job in data.get("jobs", {}).items():
        cron: Cron | None = parse_cron(job["schedule"]) if "schedule" in job else None
        every: timedelta | None = parse_every(job["every"]) if "every" in job else None
        jobs[job_name] = Job(
            name=job_name,
            server=name,
            storage=job.get("storage", defaults.get("storage")),
            key=job.get("key", defaults.get("key")),
            cron=cron,
            every=every,
            schedule_text=job.get("schedule", job.get("every")),
            timezone=parse_timezone(job.get("timezone", "UTC")),
            databases=tuple(job.get("databases", ())),
            exclude_tables=tuple(job.get("exclude_tables", ())),
            retention=_retention(job.get("retention"), default_retention),
            connections=job.get("connections", 2),
            drill=job.get("drill"),
            webhooks=dict(job.get("webhooks", {})),
            drill_target=job.get("drill_target"),
        )
    password = data.get("password")
    return Server(
        name=name,
        file=doc.file,
        host=data["host"],
        user=data["user"],
        port=data.get("port", 3306),
        password=Secret(password) if password is not None else None,
        password_file=_secret_file(doc, data.get("password_file")),
        tls=Tls(
            mode=tls.get("mode", "verify-identity"),
            ca_file=_path(doc, tls.get("ca_file")),
            cert_file=_path(doc, tls.get("cert_file")),
            key_file=_path(doc, tls.get("key_file")),
        ),
        allow_plaintext=data.get("allow_plaintext", False),
        jobs=jobs,
    )

"""``sealdump config validate`` and ``sealdump config show``."""

from __future__ import annotations

import io

import click
from ruamel.yaml import YAML

from sealdump.cli.context import State, emit_json, pass_state
from sealdump.config.show import effective


@click.group()
def config() -> None:
    """Check or print the configuration."""


@config.command()
@pass_state
def validate(state: State) -> None:
    """Validate the config and every server file; report all problems at once (exit 2)."""
    loaded = state.config()
    jobs = sum(len(server.jobs) for server in loaded.servers.values())
    if state.as_json:
        emit_json(
            {"valid": True, "file": str(loaded.file), "servers": len(loaded.servers), "jobs": jobs}
        )
    else:
        click.echo(f"{loaded.file}: valid ({len(loaded.servers)} servers, {jobs} jobs)")


@config.command()
@pass_state
def show(state: State) -> None:
    """Print the effective config (defaults applied, secrets redacted)."""
    data = effective(state.config())
    if state.as_json:
        emit_json(data)
        return
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep config order
    yaml.dump(data, out)
    click.echo(out.getvalue(), nl=False)

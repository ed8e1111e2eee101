"""The `hub` command. Sub-commands are imported only when used, so `hub --help` stays fast."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group; imported lazily to keep `hub --help` fast.
SUBCOMMANDS: dict[str, str] = {
    "simulate": "hub.simulate_cli:simulate",
    "demo": "hub.demo:demo",
    "ingest": "hub.ingest_cli:ingest",
    "quarantine": "hub.ingest_cli:quarantine",
    "privacy": "hub.privacy_cli:privacy",
    "keys": "hub.privacy_cli:keys",
    "settings": "hub.cli:settings_command",
    "link": "hub.link_cli:link_group",
    "publish": "hub.publish_cli:publish_command",
    "db": "hub.publish_cli:db_group",
    "airflow": "hub.airflow_cli:airflow_group",
    "serve": "hub.service_cli:serve_command",
    "consumers": "hub.service_cli:consumers_group",
}


class _LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Community data-sharing hub: pull department records, validate, pseudonymise, link, publish.

    Start with `hub demo`; every sub-command has its own --help.
    """


@click.command("settings")
def settings_command() -> None:
    """Show every setting, its value and where it came from (environment or default); secrets are redacted.

    HUB_HOME is resolved once, here: its default is var/ of the checkout the hub runs from (or the user's
    data folder for an installed package), never the current working directory.
    """
    from rich.console import Console
    from rich.table import Table

    from hub.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title="hub settings")
    for name in ("setting", "value", "from"):
        table.add_column(name, overflow="fold")
    for row in settings.describe():
        table.add_row(*row)
    Console(width=160).print(table)


def main() -> None:
    """Console-script entry point."""
    cli()

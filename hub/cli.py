"""The `hub` command. Sub-commands live beside their stage package and are imported only when used."""

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


def main() -> None:
    """Console-script entry point."""
    cli()

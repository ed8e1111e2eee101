"""`hub serve` and `hub consumers add | revoke | list`: the front-desk and back-office service and its API keys."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from hub.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa
    from fastapi import FastAPI

    from service.app import ServiceConfig


def consumer_roles(settings: Settings) -> set[str]:
    """The database roles an API consumer may act as: the city's staff roles and each platform's role."""
    from publish.consumers import load_consumers
    from publish.lookup import SERVICE_ACTS_AS

    platforms = {c.role for c in load_consumers(settings.consumers) if c.kind == "platform"}
    return set(SERVICE_ACTS_AS) | platforms


def _admin_engine(settings: Settings) -> sa.Engine:
    from hub.publish_cli import migrated_engine

    if not settings.database_url.startswith("postgresql"):
        raise click.ClickException("the service needs PostgreSQL (HUB_DATABASE_URL): its roles are its only filter")
    return migrated_engine(settings)


def service_config(settings: Settings, workers: int = 1) -> ServiceConfig:
    """Everything the service needs, resolved here (the service itself reads no environment)."""
    from privacy.policy import load_policy
    from service.app import ServiceConfig

    if not settings.service_database_url.startswith("postgresql"):
        raise click.ClickException("the service needs PostgreSQL: set HUB_DATABASE_URL (and HUB_SERVICE_DATABASE_URL)")
    return ServiceConfig(
        engine=settings.service_engine(),
        keyring=settings.load_keyring(),
        policy=load_policy(),
        audit_log=settings.audit_log,
        # each worker process keeps its own buckets: it gets its share, so no consumer gets more than the limit
        rate_per_minute=settings.service_rate_per_minute / workers,
        rate_burst=max(1, settings.service_rate_burst // workers),
    )


WORKERS_ENV = "HUB_SERVICE_WORKERS_STARTED"  # how many worker processes `hub serve` started (read by each)


def app_from_env() -> FastAPI:
    """The app of one worker process of `hub serve --workers N` (uvicorn imports and calls this in each)."""
    import os

    from service.app import create_app

    return create_app(service_config(Settings.from_env(), int(os.environ.get(WORKERS_ENV, "1"))))


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default HUB_SERVICE_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default HUB_SERVICE_PORT; 0 lets the system pick).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    help="Worker processes sharing the port (each takes its share of the rate limit; desk sessions need 1).",
)
def serve_command(host: str | None, port: int | None, workers: int) -> None:
    """Serve the front-desk / back-office API and the clerk's pages (/desk, /office) against the published database.

    Every request runs under its consumer's database role (SET ROLE), so row-level security decides what
    it sees; lookups and reveals are rate-limited per consumer and every request is in the audit log.
    """
    import uvicorn

    from schemas.base import HubError
    from service.app import create_app

    try:
        settings = Settings.from_env()
        _admin_engine(settings).dispose()  # migrated, roles and grants in place
        config = service_config(settings) if workers == 1 else None
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    bind_host, bind_port = host or settings.service_host, settings.service_port if port is None else port
    if config is None:  # uvicorn binds once and starts the workers, each building its app from the settings
        import os

        os.environ[WORKERS_ENV] = str(workers)
        uvicorn.run(
            "hub.service_cli:app_from_env",
            factory=True,
            workers=workers,
            access_log=False,
            host=bind_host,
            port=bind_port,
        )
        return
    # the audit log records every request; an access log would add nothing but noise
    uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="info", access_log=False, host=bind_host, port=bind_port)
    ).run()


@click.group("consumers")
def consumers_group() -> None:
    """API consumers of the service: a platform, a front-desk clerk or a back-office operator, each with a key."""


@consumers_group.command("add")
@click.argument("name")
@click.option("--role", required=True, help="Database role: hub_front_desk, hub_back_office, hub_platform_<name>, …")
@click.option("--label", default="", help="What the consumer is (shown in `hub consumers list`).")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the new key (mode 0600; default HUB_HOME/service/keys/NAME.key). It is never printed.",
)
def add_command(name: str, role: str, label: str, key_file: Path | None) -> None:
    """Create consumer NAME acting as database role ROLE; its API key goes to a private file, shown nowhere else."""
    from schemas.base import HubError, write_atomic
    from service.keys import add_consumer

    try:
        settings = Settings.from_env()
        engine = _admin_engine(settings)
        target = key_file or settings.home / "service" / "keys" / f"{name}.key"
        if target.exists():
            raise click.ClickException(f"{target} exists; pass another --key-file")
        with engine.begin() as conn:
            key = add_consumer(conn, name, role, label, consumer_roles(settings))
            write_atomic(target, key + "\n", exclusive=True)  # the row commits only once the key is safe
        engine.dispose()
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"consumer {name} acts as {role}; its API key is in {target} (mode 0600)")


@consumers_group.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke consumer NAME's key: the service refuses it from the next request on."""
    from schemas.base import HubError
    from service.keys import revoke_consumer

    try:
        engine = _admin_engine(Settings.from_env())
        with engine.begin() as conn:
            revoke_consumer(conn, name)
        engine.dispose()
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"consumer {name} revoked")


@consumers_group.command("list")
def list_command() -> None:
    """Every consumer with its role, key id and state (keys and their hashes are never shown)."""
    from rich.console import Console
    from rich.table import Table

    from schemas.base import HubError
    from service.keys import list_consumers

    try:
        engine = _admin_engine(Settings.from_env())
        with engine.connect() as conn:
            rows = list_consumers(conn)
        engine.dispose()
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title="service consumers")
    for name in ("name", "role", "key id", "created", "state", "label"):
        table.add_column(name)
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        table.add_row(r.name, r.role, r.key_id, f"{r.created_at:%Y-%m-%d %H:%M}", state, r.label)
    Console(width=140).print(table)

"""`hub publish` and `hub db upgrade | downgrade | current | catalogue`: the unified community database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hub.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from publish.build import Batch
    from publish.publisher import PublishResult, TableChange
    from publish.release import ReleaseFigure

    ReleaseOutcome = tuple[int | None, list[TableChange], list[ReleaseFigure]]


def staged_for_publish(settings: Settings) -> list[Batch]:
    """Every complete staged batch in staging order, with the key versions it was protected under."""
    from hub.link_cli import staged_refs
    from hub.staging import read_manifest
    from publish.build import Batch

    return [
        Batch(ref.dataset, ref.batch_id, ref.folder / "data.parquet", read_manifest(ref.folder).key_versions)
        for ref in staged_refs(settings)
    ]


def state_folder(settings: Settings) -> Path:
    """The private folder where publishes keep copies of what they left in the database (``publish.state_cache``)."""
    from schemas.base import private_dir

    return private_dir(settings.home / "runs" / "publish" / "state")


def migrated_engine(settings: Settings) -> sa.Engine:
    """The hub database, upgraded to this code's newest migration, with its consumers and check views."""
    from schemas.migrate import ensure_current

    engine = settings.engine()
    ensure_current(engine)
    prepare_derived(engine, settings)
    return engine


def prepare_derived(engine: sa.Engine, settings: Settings) -> None:
    """Make the roles and scopes match the consumers file, and the check views match checks.yaml."""
    from publish.checks import load_rules, refresh_views
    from publish.consumers import load_consumers, sync_consumers
    from publish.lookup import grant_service_roles
    from schemas.migrate import prepared

    consumers = load_consumers(settings.consumers)
    params, rules = load_rules()
    with engine.begin() as raw:
        conn = prepared(raw)
        sync_consumers(conn, consumers)
        refresh_views(conn, params, rules)
        grant_service_roles(conn, consumers)


def run_publish(settings: Settings, release: bool = True) -> tuple[PublishResult, ReleaseOutcome | None]:
    """Publish what linkage placed (one transaction), then the release tier behind its k/l gate (another)."""
    from rich.console import Console

    from hub.link_cli import one_link_at_a_time
    from privacy.policy import load_policy
    from publish.consumers import load_consumers
    from publish.lookup import refresh_lookup
    from publish.publisher import publish
    from publish.release import publish_release
    from schemas.base import private_dir
    from schemas.contract import packaged_contracts

    engine = migrated_engine(settings)
    console = Console(stderr=True)
    try:
        # the link lock: a publish reads the lineage a running link would be rewriting
        keyring, policy = settings.load_keyring(), load_policy()
        state = state_folder(settings)
        with (
            one_link_at_a_time(settings.home / "runs" / "link"),
            console.status("publishing") as status,
            ThreadPoolExecutor(1, thread_name_prefix="publish-side") as side,
        ):
            # the lookup index depends on the identity index alone: it is refreshed beside the publish (its
            # own transaction; the ID decryption in Python overlaps the build in DuckDB and the COPY)
            lookup = side.submit(refresh_lookup, engine, keyring)
            result = publish(
                engine,
                staged_for_publish(settings),
                keyring,
                policy,
                packaged_contracts(),
                progress=lambda stage: status.update(stage),
                spill=private_dir(settings.home / "runs" / "publish" / "spill"),
                state=state,
            )
            status.update("refreshing the front desk's lookup index")
            lookup.result()
            # the worklist (new conflicts become open cases) beside the release tier: both read the published core
            cases = side.submit(sync_worklist, engine)
            outcome = None
            if release:
                consumers = load_consumers(settings.consumers)
                year = datetime.now(UTC).year
                outcome = publish_release(
                    engine, consumers, keyring, policy, year, progress=status.update, state=state
                )
            cases.result()
            return result, outcome
    finally:
        engine.dispose()


def sync_worklist(engine: sa.Engine) -> dict[str, int]:
    """Open a service case for each new conflict (PostgreSQL: the service needs its roles); counts only."""
    if engine.dialect.name != "postgresql":
        return {}
    from service.worklist import sync_cases

    with engine.begin() as conn:
        return sync_cases(conn)


def print_publish_summary(result: PublishResult, release: ReleaseOutcome | None, seconds: float) -> None:
    """Rows and changes per table, the release gate's figures, then the totals."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    title = f"publish {result.publish_id}" if result.publish_id is not None else "publish: nothing changed"
    table = Table(title=title)
    for name in ("table", "rows", "inserted", "updated", "deleted", "seconds"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for t in result.tables + (release[1] if release else []):
        table.add_row(t.table, f"{t.rows:,}", f"{t.inserted:,}", f"{t.updated:,}", f"{t.deleted:,}", f"{t.seconds:.2f}")
    console.print(table)
    if release:
        gate = Table(title="release tier: k-anonymity and distinct l-diversity (suppressed groups removed first)")
        for name in ("table", "quasi-identifiers", "persons", "suppressed", "groups", "k min", "l min", "verdict"):
            gate.add_column(name, justify="left" if name in ("table", "quasi-identifiers") else "right")
        for f in release[2]:
            gate.add_row(
                f.table,
                ", ".join(f.quasi_identifiers) + (f" | {', '.join(f.sensitive)}" if f.sensitive else ""),
                f"{f.persons:,}",
                f"{f.suppressed:,}",
                f"{f.groups:,}",
                str(f.k_min),
                str(f.l_min if f.sensitive else "-"),
                f"k≥{f.threshold_k}"
                + (f", l≥{f.threshold_l}" if f.sensitive else "")
                + (" ok" if f.passes else " FAILS"),
            )
        console.print(gate)
    feed = result.changes + (sum(t.changes for t in release[1]) if release else 0)
    scope = " (of the persons changed since the last publish: a scoped publish)" if result.scoped else ""
    console.print(f"records read {result.records_read:,}{scope}; change-log rows {feed:,}; {seconds:.1f}s")
    for dataset, n in sorted(result.unlinked.items()):
        console.print(f"  {dataset}: {n:,} staged records not linked yet (run `hub link`), not published")
    for column, n in sorted(result.rekeyed.items()):
        console.print(f"  {column}: {n:,} values moved to the active key version")


@click.command("publish")
@click.option("--no-release", is_flag=True, help="Publish core and sensitive only; leave the release tier as it is.")
def publish_command(no_release: bool) -> None:
    """Publish the linked, pseudonymised records into the unified community database.

    One transaction: the database's current state is compared with what the staged batches and the
    identity index say, and only the difference is written, each change with a change-log row that
    platforms read with `since`. Publishing again without new data changes nothing.
    """
    from schemas.base import HubError

    started = time.perf_counter()
    try:
        settings = Settings.from_env()
        result, release = run_publish(settings, release=not no_release)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    print_publish_summary(result, release, time.perf_counter() - started)


@click.group("db")
def db_group() -> None:
    """The hub database's schema (Alembic migrations) and the data dictionary."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Migrate the hub database up to REVISION (default: the newest)."""
    from schemas.base import HubError
    from schemas.migrate import head, upgrade

    try:
        settings = Settings.from_env()
        engine = settings.engine()
        at = upgrade(engine, revision)
        if at == head():
            prepare_derived(engine, settings)
        click.echo(f"hub database at revision {at}")
    except HubError as exc:
        raise click.ClickException(str(exc)) from None


@db_group.command("downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Migrate the hub database down to REVISION ("base" removes every table the migrations made)."""
    from schemas.base import HubError
    from schemas.migrate import downgrade

    try:
        engine = Settings.from_env().engine()
        click.echo(f"hub database at revision {downgrade(engine, revision) or 'base'}")
    except HubError as exc:
        raise click.ClickException(str(exc)) from None


@db_group.command("current")
def current_command() -> None:
    """Print the revision the hub database is at, and the newest one this code knows."""
    from schemas.migrate import current, head

    engine = Settings.from_env().engine()
    click.echo(f"database {current(engine) or 'base (never migrated)'}; code {head()}")


@db_group.command("catalogue")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for catalogue.md and catalogue.html (default: HUB_HOME/catalogue).",
)
def catalogue_command(out: Path | None) -> None:
    """Write the data dictionary and sharing catalogue (国发〔2016〕51号) as Markdown and HTML.

    Generated from the published model (tables, columns, Chinese labels, privacy tier, sharing type,
    the roles allowed) and the source contracts (which department's field feeds each column).
    """
    from publish.catalogue import write_catalogue
    from schemas.base import HubError

    try:
        settings = Settings.from_env()
        folder = out or settings.home / "catalogue"
        for path in write_catalogue(folder):
            click.echo(f"wrote {path}")
    except HubError as exc:
        raise click.ClickException(str(exc)) from None

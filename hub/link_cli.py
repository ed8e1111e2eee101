"""`hub link`: identity resolution over the staged batches; `evaluate` against synthetic truth; `explain`."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hub.settings import Settings

if TYPE_CHECKING:
    from linkage.resolve import BatchRef, LinkResult


def staged_refs(settings: Settings) -> list[BatchRef]:
    """Every complete staged batch, as linkage reads it (hub/staging owns the layout)."""
    from hub import staging
    from linkage.resolve import BatchRef

    root = settings.home / "staging"
    ordered = []
    for m in staging.staged_batches(root):
        folder = staging.batch_dir(root, m.dataset, m.batch_id)
        # staging order, so a record staged twice (an update) is linked as its newest version; manifests
        # written before staged_at existed fall back to their file time
        ordered.append((m.staged_at or (folder / staging.MANIFEST).stat().st_mtime_ns, folder, m))
    ordered.sort(key=lambda item: (item[0], str(item[1])))
    return [BatchRef(m.dataset, m.batch_id, m.content_hash, folder) for _, folder, m in ordered]


@contextmanager
def one_link_at_a_time(folder: Path) -> Iterator[None]:
    """Refuse a second concurrent `hub link` on the same hub: both would mint keys for the same new tokens."""
    from schemas.base import HubError, private_dir

    lock = private_dir(folder) / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HubError(f"another `hub link` is running on this hub (lock {lock}); try again when it ends") from None
        yield
    finally:
        os.close(fd)


def run_link(settings: Settings, threshold: float | None = None, min_weight: float | None = None) -> LinkResult:
    """Link what was staged since the last run, with a spinner naming the stage."""
    from rich.console import Console

    from linkage.probabilistic import ModelSettings
    from linkage.resolve import link

    options = ModelSettings(
        threshold=settings.link_threshold if threshold is None else threshold,
        min_weight=settings.link_min_weight if min_weight is None else min_weight,
    )
    keyring = settings.load_keyring()
    engine = settings.engine()
    console = Console(stderr=True)
    try:
        with one_link_at_a_time(settings.home / "runs" / "link"), console.status("linking") as status:
            return link(
                staged_refs(settings),
                engine,
                keyring,
                settings.home / "runs" / "link",
                options,
                progress=lambda stage: status.update(stage),
            )
    finally:
        engine.dispose()


def print_link_summary(result: LinkResult) -> None:
    """Counts of the run, one line each (no values)."""
    if result.run_id is None:
        click.echo(f"nothing new to link; {result.persons:,} persons in the identity index")
        return
    click.echo(f"link run {result.run_id}: {result.batches} batches, {result.records:,} records")
    click.echo(f"  exact (ID number)        {result.exact:,}")
    click.echo(f"  probabilistic (Splink)   {result.probabilistic:,}")
    click.echo(f"  unplaced (own person)    {result.unplaced:,}   (on the data stewards' list: hub link unplaced)")
    click.echo(f"  kept from earlier runs   {result.kept:,}")
    click.echo(f"  new persons              {result.new_persons:,}")
    click.echo(f"  merges / splits          {result.merges} / {result.splits}")
    click.echo(f"  re-keyed after rotation  {result.rekeyed:,}")
    click.echo(f"  persons in the index     {result.persons:,}")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    click.echo(f"  time: {timing}")
    if result.model_path:
        click.echo(f"  model: {result.model_path}")


@click.group("link", invoke_without_command=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Placement probability (the best person's share among the candidates) a record needs "
                   "(default HUB_LINK_THRESHOLD, 0.95).")  # fmt: skip
@click.option("--min-weight", type=float, default=None,
              help="Splink match weight (log2 odds) the best person needs "
                   "(default HUB_LINK_MIN_WEIGHT, -2).")  # fmt: skip
@click.pass_context
def link_group(ctx: click.Context, threshold: float | None, min_weight: float | None) -> None:
    """Resolve identities: one stable person_key per person across every staged dataset.

    Without a sub-command, links the batches staged since the last run: an exact pass on the ID
    number's link token, then Splink for records without a usable ID number. Re-running with nothing
    new staged changes nothing.
    """
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from schemas.base import HubError

    try:
        result = run_link(Settings.from_env(), threshold, min_weight)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    print_link_summary(result)


@link_group.command("evaluate")
@click.option("--truth", "truth_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Simulator truth folder (default: HUB_SIM_DATA/truth).")  # fmt: skip
@click.option("--show", default=20, show_default=True, help="How many wrong records to list (by record id).")
def evaluate_command(truth_dir: Path | None, show: int) -> None:
    """Pairwise precision, recall and F1 of the identity index against the simulators' truth."""
    from linkage.evaluate import evaluate

    settings = Settings.from_env()
    truth_dir = truth_dir or settings.sim_data / "truth"
    engine = settings.engine()
    try:
        report = evaluate(engine, truth_dir / "records.parquet", settings.load_keyring())
    finally:
        engine.dispose()
    for line in report.lines():
        click.echo(line)
    if report.wrong:
        click.echo(f"wrong records ({len(report.wrong)}; showing {min(show, len(report.wrong))}):")
        for dataset, record_id, why in report.wrong[:show]:
            click.echo(f"  {dataset} {record_id}: {why}")


@link_group.command("explain")
@click.argument("record_id")
@click.option("--dataset", default=None, help="The record's dataset, when its id is not unique.")
def explain_command(record_id: str, dataset: str | None) -> None:
    """Why RECORD_ID (a staged record id) belongs to its person: Splink's match weights for its best candidate.

    Personal values are shown masked (first character of the name, birth year); nothing is written.
    """
    from linkage.resolve import explain
    from schemas.base import HubError

    settings = Settings.from_env()
    engine = settings.engine()
    try:
        found = explain(record_id, dataset, staged_refs(settings), engine, settings.load_keyring())
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    probability = "-" if found.match_probability is None else f"{found.match_probability:.4f}"
    click.echo(f"{found.dataset} {found.record_id} -> person {found.person_key} ({found.match_kind}, p={probability})")
    if not found.rows:
        click.echo("  no scored candidate (no saved model yet, or nothing shares a blocking key)")
        return
    click.echo(f"  best candidate: person {found.candidate}")
    click.echo(f"  record    {found.record_masked}")
    click.echo(f"  candidate {found.candidate_masked}")
    click.echo(f"  {'comparison':<14} {'level':<58} {'log2 BF':>8}")
    for row in found.rows:
        label = str(row.get("label_for_charts") or "")
        click.echo(
            f"  {row.get('column_name')!s:<14} {label[:58]:<58} {float(row.get('log2_bayes_factor') or 0):>8.2f}"
        )


@link_group.command("unplaced")
@click.option("--dataset", default=None, help="Only this dataset.")
def unplaced_command(dataset: str | None) -> None:
    """Records without a usable ID number that linkage could not place (each is a person of its own for now).

    Data stewards fix these at the source; their rows are in the encrypted quarantine (hub quarantine list).
    """
    import sqlalchemy as sa

    from linkage import store

    settings = Settings.from_env()
    engine = settings.engine()
    store.create(engine)
    table = store.link_record
    query = sa.select(table.c.dataset, table.c.record_id, table.c.id_status, table.c.batch_id).where(
        table.c.match_kind == "new", table.c.id_status.in_(["missing", "invalid"])
    )
    if dataset:
        query = query.where(table.c.dataset == dataset)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(table.c.dataset, table.c.record_id)).all()
    engine.dispose()
    for row in rows:
        click.echo("\t".join(str(v) for v in row))
    click.echo(f"{len(rows)} unplaced record(s)", err=True)

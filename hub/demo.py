"""`hub demo`: the main job end to end on embedded defaults (SQLite, demo keyring, simulators on loopback)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from hub.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    import sqlalchemy as sa
    from rich.console import Console


@click.command("demo")
@click.option("--residents", default=20_000, show_default=True, help="Synthetic residents to generate.")
@click.option("--seed", default=1, show_default=True, help="Seed of the synthetic population.")
def demo(residents: int, seed: int) -> None:
    """Generate a synthetic population, serve the six department systems on 127.0.0.1, ingest, link, publish.

    Everything goes under $HUB_HOME (default: var/ of the checkout; `hub settings` shows it). A second run
    continues incrementally: nothing new is staged, linked or published.
    """
    from rich.console import Console

    from connectors.registry import registry
    from hub.ingest_cli import print_summary, report_failures, run_ingest
    from hub.link_cli import print_link_summary, run_link
    from hub.publish_cli import print_publish_summary, run_publish
    from linkage.evaluate import evaluate
    from publish.catalogue import write_catalogue
    from simulators.http_server import start_servers

    console = Console(soft_wrap=True)
    settings = Settings.from_env()
    prepare(settings, residents, seed, console)
    with start_servers(settings.sim_data) as servers:
        for system, url in servers.urls.items():
            console.print(f"simulated {system} system at {url}")
        results = run_ingest(list(registry()), settings)
    print_summary(results)
    console.print("\n[bold]Identity resolution[/]")
    link_result = run_link(settings)
    print_link_summary(link_result)
    engine = settings.engine()
    try:
        quality = evaluate(engine, settings.sim_data / "truth" / "records.parquet", settings.load_keyring())
    finally:
        engine.dispose()
    for line in quality.lines():
        console.print(f"  {line}")
    console.print("\n[bold]The unified community database[/]")
    started = time.perf_counter()
    published, release = run_publish(settings)
    print_publish_summary(published, release, time.perf_counter() - started)
    engine = settings.engine()
    try:
        console.print("cross-department checks (core.cross_check) against the conflicts the simulators planted:")
        print_checks(engine, settings.sim_data / "truth" / "conflicts.parquet", console)
    finally:
        engine.dispose()
    catalogue = write_catalogue(settings.home / "catalogue")
    home = settings.home
    console.print("\n[bold]Where to look[/]")
    console.print(f"  staged pseudonymised batches : {home / 'staging'}/<dataset>/<batch>/")
    console.print(f"  encrypted quarantine         : {home / 'quarantine'}  (hub quarantine list)")
    console.print(f"  GX results (no values)       : {home / 'runs' / 'gx'}")
    console.print(f"  incremental state, identity  : {settings.database_url}  (link_person, link_record, …)")
    tiers = "core, sensitive, release" + (
        " (on SQLite: one file, names without the tier)" if "sqlite" in settings.database_url else ""
    )
    console.print(f"  published database           : {settings.database_url}  ({tiers})")
    console.print("  change feed                  : core.change_log (seq > since), core.publish_batch")
    console.print("  cross-department checks      : core.cross_check, one view core.conflict_<rule> per rule")
    console.print(f"  data dictionary, catalogue   : {catalogue[0]}  and  {catalogue[1]}")
    console.print(f"  linkage models               : {home / 'runs' / 'link'}  (hub link explain RECORD_ID)")
    console.print(f"  synthetic sources and truth  : {settings.sim_data}")
    console.print(f"  privacy officer's report     : hub privacy report --out {home / 'report'}")
    report_failures(results)


def prepare(settings: Settings, residents: int, seed: int, console: Console) -> None:
    """The demo keyfile (unless a secrets backend holds the keyring) and the synthetic sources, made once."""
    from privacy.keyring import init_keyfile
    from simulators.generate import generate

    settings.home.mkdir(parents=True, exist_ok=True)
    keyfile = settings.keyring
    if settings.keyring_json is None and not keyfile.exists():
        init_keyfile(keyfile)
        console.print(f"[yellow]demo keyring written to {keyfile} (mode 0600): a local keyfile is for the demo only[/]")
    manifest = settings.sim_data / "manifest.json"
    made = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    if made.get("residents") != residents or made.get("seed") != seed:
        with console.status(f"generating {residents:,} synthetic residents (seed {seed}) in {settings.sim_data}"):
            summary = generate(settings.sim_data, residents=residents, seed=seed)
        console.print(f"generated {sum(summary.rows.values()):,} source records in {summary.seconds:.1f}s")


def print_checks(engine: sa.Engine, truth: Path, console: Console) -> None:
    """Each cross-department rule's findings against the conflicts the simulators planted (truth)."""
    from publish.evaluate import compare_conflicts

    for f in compare_conflicts(engine, truth):
        console.print(
            f"  {f.rule_id:<28} found {f.found:>5,}  planted {f.planted:>5,}  agree {f.matched:>5,}"
            f"  precision {f.precision:.3f}  recall {f.recall:.3f}"
        )

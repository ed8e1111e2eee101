"""`hub simulate`: generate the synthetic population, serve the department systems, let time pass."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click


def _default_data() -> Path:
    """HUB_SIM_DATA, else <HUB_HOME>/sim (the settings default), so the commands agree without options."""
    from hub.settings import Settings

    return Settings.from_env().sim_data


def _generated_folder(path: Path) -> Path:
    """The folder, or a ClickException naming it when it is missing or was not written by `generate`."""
    if not path.exists():
        raise click.ClickException(f"{path}: no such folder; run `hub simulate generate --out {path}` first")
    if not path.is_dir():
        raise click.ClickException(f"{path}: not a folder")
    if not (path / "manifest.json").is_file():
        raise click.ClickException(
            f"{path}: not a generated simulator folder (no manifest.json); run `hub simulate generate --out {path}`"
        )
    return path


def _where(location: Any) -> str:
    """A manifest location in one line: a file, a folder (with its file count) or url schema.table."""
    if not isinstance(location, dict):
        return str(location or "")
    if "url" in location:  # the manifest keeps SQL URLs without a password
        qualified = ".".join(str(p) for p in (location.get("schema"), location.get("table")) if p)
        return f"{location['url']} {qualified}"
    if "dir" in location:
        files = location.get("files")
        count = f" ({len(files)} files)" if isinstance(files, list) else ""
        return f"{location['dir']}/{count}"
    return str(location.get("path", ""))


def _manifest_table(data_dir: Path, title: str) -> Any:
    """A rich table of rows per dataset from DIR/manifest.json."""
    from rich.table import Table

    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    table = Table(title=title)
    for name, justify in (("dataset", "left"), ("system", "left"), ("rows", "right"), ("location", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    total = 0
    for dataset, info in sorted(manifest.get("datasets", {}).items()):
        rows = int(info.get("rows", 0))
        total += rows
        table.add_row(dataset, str(info.get("system", "")), f"{rows:,}", _where(info.get("location")))
    table.add_section()
    table.add_row("total", "", f"{total:,}", "")
    return table


@click.group("simulate", context_settings={"help_option_names": ["-h", "--help"]})
def simulate() -> None:
    """Simulated department systems over a seeded synthetic Hulunbuir population.

    \b
    generate  write the population, the department data and the ground truth to a folder
    serve     run the 公安 and 人社 REST servers over that folder
    advance   let time pass: update some records (some late) and drop a new births CSV

    The pipeline reads the folder only through the real interfaces (HTTP, SQL, files);
    DIR/truth/ exists to measure linkage quality and is never read by the hub.
    """


@simulate.command("generate")
@click.option("--residents", "-n", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Synthetic residents to create; department records scale with it.")  # fmt: skip
@click.option("--seed", "-s", type=int, default=1, show_default=True,
              help="Random seed; the same seed gives byte-identical output.")  # fmt: skip
@click.option("--out", "-o", "out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder to write (default: HUB_SIM_DATA or var/sim).")  # fmt: skip
@click.option(
    "--sql-url",
    default=None,
    metavar="URL",
    help="Write the 司法/民政 tables to this PostgreSQL database instead of SQLite files.",
)
def generate_command(residents: int, seed: int, out: Path | None, sql_url: str | None) -> None:
    """Write the synthetic population and every department's data to a folder.

    \b
    DIR/http/     公安 and 人社 datasets (served by `serve`)
    DIR/sql/      司法 and 民政 tables (SQLite, or --sql-url)
    DIR/drops/    计生 daily GB18030 CSV drops
    DIR/exports/  残联 XLSX exports
    DIR/truth/    who is who, for measuring linkage (never read by the pipeline)
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from simulators.generate import generate

    folder = out or _default_data()
    console = Console()
    with Progress(
        TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("starting", total=None)

        def report(stage: str, done: int, total: int) -> None:
            """Called before each stage with the stages done so far, and with done == total at the end."""
            progress.update(task, description=stage, completed=done, total=total or None)

        generate(folder, residents=residents, seed=seed, sql_url=sql_url, progress=report)
    console.print(_manifest_table(folder, f"{residents:,} residents, seed {seed} → {folder}"))


@simulate.command("serve")
@click.option("--data", "-d", "data", type=click.Path(path_type=Path), default=None,
              help="Generated folder to serve (default: HUB_SIM_DATA or var/sim).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="公安 port; 0 lets the OS pick a free one.")  # fmt: skip
@click.option("--renshe-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="人社 port; 0 lets the OS pick a free one.")  # fmt: skip
@click.option("--token", envvar="HUB_SIM_TOKEN", default=None,
              help="One bearer token for both systems (env HUB_SIM_TOKEN); by default each system gets "
                   "a random token of its own.")  # fmt: skip
def serve_command(data: Path | None, host: str, port: int, renshe_port: int, token: str | None) -> None:
    """Run the 公安 (cursor pages) and 人社 (offset pages) REST servers until Ctrl-C or SIGTERM.

    Each needs `Authorization: Bearer <its token>`. The URLs and tokens are printed and written to
    DIR/serve.json (mode 0600), which is removed again on exit; the hub reads it when no
    HUB_SOURCE_<SYSTEM>_URL/_TOKEN is set. Faults for tests and demos: POST /_admin/faults;
    counters: GET /_admin/stats (see docs/simulator-interfaces.md).
    """
    from simulators.http_server import start_servers

    folder = _generated_folder(data or _default_data())
    try:
        servers = start_servers(folder, host=host, port=port, renshe_port=renshe_port, token=token)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"公安 gongan  {servers.urls['gongan']}")
        click.echo(f"人社 renshe  {servers.urls['renshe']}")
        for system, secret in servers.tokens.items():
            click.echo(f"token {system}  {secret}")
        click.echo(f"serve.json   {servers.serve_file}")
        click.echo(f"Serving {folder}; press Ctrl-C (or send SIGTERM) to stop.")
        while not stop.wait(0.5):
            pass
    finally:
        servers.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("Stopped.")


@simulate.command("advance")
@click.option("--data", "-d", "data", type=click.Path(path_type=Path), default=None,
              help="Generated folder (default: HUB_SIM_DATA or var/sim).")  # fmt: skip
@click.option(
    "--changed",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Fraction of records per dataset updated with a time after the current maximum.",
)
@click.option(
    "--late",
    type=click.FloatRange(0, 1),
    default=0.002,
    show_default=True,
    help="Fraction updated with a time up to 10 minutes BEFORE the maximum (late arrivals).",
)
@click.option("--seed", "-s", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--sql-url",
    default=None,
    metavar="URL",
    help="PostgreSQL URL with password, when the manifest's (stored without it) is not enough.",
)
def advance_command(data: Path | None, changed: float, late: float, seed: int, sql_url: str | None) -> None:
    """Let simulated time pass once: update records in the HTTP and SQL systems and drop a new births CSV.

    A running `serve` picks the changed files up on its next request. What changed is written to
    DIR/truth/changes_<n>.parquet (dataset, record_id, kind = changed | late | new).
    """
    from rich.console import Console
    from rich.table import Table

    from simulators.advance import advance

    folder = _generated_folder(data or _default_data())
    if changed + late > 1:
        raise click.BadParameter("--changed plus --late must not exceed 1", param_hint="--changed/--late")
    summary = advance(folder, changed=changed, late=late, seed=seed, sql_url=sql_url)
    table = Table(title=f"advance #{summary.number} (seed {seed})")
    for name in ("dataset", "changed", "late", "new"):
        table.add_column(name, justify="left" if name == "dataset" else "right")
    for dataset, kinds in summary.counts.items():
        table.add_row(dataset, *(f"{kinds.get(k, 0):,}" for k in ("changed", "late", "new")))
    console = Console()
    console.print(table)
    console.print(f"truth: {summary.changes_path}")
    if summary.csv_drop:
        console.print(f"new births drop: {summary.csv_drop}")

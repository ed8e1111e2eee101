"""Ingest hardening: a kill at the staging rename loses nothing, --all goes past failures, connectors close,
small drops are not held back by one bad row, and what the hub writes is owner-only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub.settings import Settings
from hub.staging import read_staged, staged_batches
from privacy.keyring import init_keyfile
from simulators.generate import generate
from simulators.http_server import SimulatorServers, start_servers

RESIDENTS = 600
SQL_DATASET = "minzheng.dibao"

# Runs `hub ingest` in a child that SIGKILLs itself at the exact moment a staged batch folder would be
# renamed into place: the batch is complete under its hidden temp name, and the state is not yet advanced.
KILL_AT_RENAME = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if ".tmp-" in os.path.basename(os.fspath(src)):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from hub.cli import main
sys.argv = ["hub", "ingest", sys.argv[1]]
main()
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("hardening") / "sim"
    generate(data, residents=RESIDENTS, seed=23)
    return data


def _home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    init_keyfile(home / "keys" / "demo-keyring.json")
    return home


def _env(home: Path, sim: Path) -> dict[str, str]:
    return {"HUB_HOME": str(home), "HUB_SIM_DATA": str(sim), "GX_ANALYTICS_ENABLED": "false"}


def _settings(home: Path, sim: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in _env(home, sim).items():
        monkeypatch.setenv(key, value)
    return Settings.from_env()


def test_kill_at_the_staging_rename_loses_no_rows(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.ingest_cli import run_ingest

    clean = _home(tmp_path, "clean")
    run_ingest([SQL_DATASET], _settings(clean, generated, monkeypatch))
    expected = sorted(read_staged(clean / "staging", SQL_DATASET)["record_id"])
    assert len(expected) > 20

    killed = _home(tmp_path, "killed")
    child = subprocess.run(
        [sys.executable, "-c", KILL_AT_RENAME, SQL_DATASET],
        env={**os.environ, **_env(killed, generated)},
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr.decode(errors="replace")[-2000:]
    folder = killed / "staging" / SQL_DATASET
    leftovers = [p.name for p in folder.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".") and ".tmp-" in leftovers[0]
    assert staged_batches(killed / "staging", SQL_DATASET) == []  # the temp folder is not a batch

    result = run_ingest([SQL_DATASET], _settings(killed, generated, monkeypatch))[0]
    assert result.error is None
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # the stale temp folder is gone
    got = read_staged(killed / "staging", SQL_DATASET)["record_id"]
    assert got.is_unique and sorted(got) == expected


def test_ingest_all_goes_past_every_failing_dataset_and_names_each(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.cli import cli

    home = _home(tmp_path, "hub")
    _settings(home, generated, monkeypatch)
    # no simulator serves HTTP (no serve.json): the four 公安/人社 datasets fail with a SourceError;
    # a file where the 残联 staging folder belongs makes staging raise an OSError
    (home / "staging").mkdir(mode=0o700)
    (home / "staging" / "canlian.disability").write_text("not a folder")
    outcome = CliRunner().invoke(cli, ["ingest", "--all"])
    assert outcome.exit_code == 1, outcome.output
    failed = {"gongan.hukou", "gongan.migrant", "renshe.employment", "renshe.insurance", "canlian.disability"}
    assert f"{len(failed)} of 9 dataset(s) failed" in outcome.output
    for dataset in failed:
        assert f"  {dataset}: " in outcome.output
    assert "FileExistsError" in outcome.output or "NotADirectoryError" in outcome.output
    for dataset in ("sifa.corrections", "minzheng.dibao", "minzheng.relief", "jisheng.births"):
        assert len(read_staged(home / "staging", dataset)) > 0, dataset


@pytest.fixture
def served(generated: Path) -> Iterator[SimulatorServers]:
    with start_servers(generated) as servers:
        yield servers


def test_connectors_are_closed_after_each_dataset(
    generated: Path, served: SimulatorServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.ingest_cli import run_ingest

    home = _home(tmp_path, "hub")
    results = run_ingest(["gongan.hukou", SQL_DATASET], _settings(home, generated, monkeypatch))
    assert [r.error for r in results] == [None, None] and all(r.staged > 0 for r in results)
    me = psutil.Process()
    port = int(served.urls["gongan"].rsplit(":", 1)[1])
    clients = [c for c in me.net_connections("tcp") if c.raddr and c.raddr.port == port]
    assert clients == [], "HTTP connections to 公安 left open after the dataset finished"
    source_db = sa.engine.make_url(
        pd.read_json(generated / "manifest.json", typ="series")["datasets"][SQL_DATASET]["location"]["url"]
    ).database
    open_files = {f.path for f in me.open_files()}
    assert str(Path(str(source_db)).resolve()) not in open_files, "the 民政 source database is still open"


def _small_drop(generated: Path, folder: Path) -> pd.DataFrame:
    """Write a 19-row births drop under ``folder`` (a simulator-shaped tree) whose first row has a bad ID."""
    frames = []
    for path in sorted((generated / "drops" / "jisheng").glob("births_*.csv")):
        try:
            frames.append(pd.read_csv(path, dtype=str, encoding="gb18030"))
        except (UnicodeDecodeError, pd.errors.ParserError):
            continue  # the generator plants a corrupt drop on purpose
    rows = pd.concat(frames, ignore_index=True)[frames[0].columns]
    small = rows.sample(19, replace=True, random_state=1).reset_index(drop=True)
    small["记录编号"] = [f"T{i:08d}" for i in range(19)]
    good_id = str(small.loc[0, "母亲身份证号"]).strip()
    small.loc[0, "母亲身份证号"] = good_id[:17] + ("0" if good_id[17] != "0" else "1")  # wrong check character
    (folder / "drops" / "jisheng").mkdir(parents=True)
    small.to_csv(folder / "drops" / "jisheng" / "births_20260101.csv", index=False, encoding="gb18030")
    return small


def test_one_bad_row_in_a_small_drop_does_not_hold_it_back(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.ingest_cli import run_ingest

    own = tmp_path / "sim"
    small = _small_drop(generated, own)
    home = _home(tmp_path, "hub")
    result = run_ingest(["jisheng.births"], _settings(home, own, monkeypatch))[0]
    assert result.error is None, result.error
    # the bad ID is the row's only problem: quarantined for the stewards, and staged unkeyed for linkage
    assert (result.quarantined, result.unkeyed, result.staged) == (1, 1, 19)
    link = read_staged(home / "staging", "jisheng.births", "linkage")
    assert link["id_status"].value_counts().to_dict() == {"valid": 18, "invalid": 1}
    assert link["link_token"].isna().sum() == 1

    # a drop that is mostly bad is still held back, with the numbers and the command that releases it
    small["母亲身份证号"] = "123"
    small.to_csv(own / "drops" / "jisheng" / "births_20260102.csv", index=False, encoding="gb18030")
    held = run_ingest(["jisheng.births"], _settings(home, own, monkeypatch))[0]
    assert held.error is not None and held.staged == 0
    assert "19 of 19 rows quarantined" in held.error and "window of max(19, 200)" in held.error
    assert "hub ingest jisheng.births --max-quarantine-rate" in held.error
    released = run_ingest(["jisheng.births"], _settings(home, own, monkeypatch), max_quarantine_rate=1.0)[0]
    assert released.error is None and released.quarantined == 19


def test_staged_files_are_owner_only(generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.ingest_cli import run_ingest

    home, own = _home(tmp_path, "hub"), tmp_path / "sim"
    _small_drop(generated, own)
    run_ingest([SQL_DATASET], _settings(home, generated, monkeypatch))
    run_ingest(["jisheng.births"], _settings(home, own, monkeypatch))
    written = [p for p in (home / "staging").rglob("*")] + [p for p in (home / "quarantine").rglob("*")]
    assert any(p.suffix == ".parquet" for p in written) and any(p.suffix == ".quarantine" for p in written)
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:04o}"


def test_a_bad_optional_field_is_counted_in_the_run_summary(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.ingest_cli import print_summary, run_ingest

    own = tmp_path / "sim"
    small = _small_drop(generated, own)
    small.loc[3:6, "婴儿身份证号"] = "not-an-id"  # an optional field: nulled and counted, the record goes on
    small.to_csv(own / "drops" / "jisheng" / "births_20260101.csv", index=False, encoding="gb18030")
    home = _home(tmp_path, "hub")
    result = run_ingest(["jisheng.births"], _settings(home, own, monkeypatch))[0]
    assert result.error is None and result.staged == 19 and result.unkeyed == 1
    assert sum(v for k, v in result.field_problems.items() if k.startswith("child_id_number:")) == 4
    manifest = staged_batches(home / "staging", "jisheng.births")[0]
    assert sum(manifest.field_problems.values()) == 4
    capsys.readouterr()
    print_summary([result])
    assert "optional values set missing, record kept child_id_number:" in capsys.readouterr().out


def test_a_row_with_a_bad_id_and_another_problem_stays_in_quarantine_only(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.ingest_cli import run_ingest

    own = tmp_path / "sim"
    small = _small_drop(generated, own)
    small.loc[0, "孩次"] = "many"  # row 0 has a bad ID already; a required integer that fails too
    small.loc[1, "母亲身份证号"] = ""  # row 1: a missing ID is its only problem
    small.to_csv(own / "drops" / "jisheng" / "births_20260101.csv", index=False, encoding="gb18030")
    home = _home(tmp_path, "hub")
    result = run_ingest(["jisheng.births"], _settings(home, own, monkeypatch))[0]
    assert result.error is None, result.error
    assert (result.quarantined, result.unkeyed, result.staged) == (2, 1, 18)
    link = read_staged(home / "staging", "jisheng.births", "linkage")
    assert link["id_status"].value_counts().to_dict() == {"valid": 17, "missing": 1}
    data = read_staged(home / "staging", "jisheng.births")
    assert "T00000000" not in set(data["record_id"]) and "T00000001" in set(data["record_id"])

"""`advance`: simulated time passes over real parquet files, SQLite files, PostgreSQL tables and CSV drops."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schemas.contract import get_contract
from simulators.advance import advance, fraction_of, read_drops
from simulators.conflicts import RULES, conflict_counts
from simulators.generate import generate

RESIDENTS = 1000
HTTP = ["gongan.hukou", "gongan.migrant", "renshe.employment", "renshe.insurance"]
SQL = ["minzheng.dibao", "minzheng.relief", "sifa.corrections"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pristine") / "sim"
    generate(out, residents=RESIDENTS, seed=1)
    return out


@pytest.fixture
def folder(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sim"
    shutil.copytree(pristine, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for info in manifest["datasets"].values():  # the SQLite URLs are absolute: point them at the copy
        if info["system"] == "sql":
            url = info["location"]["url"]
            info["location"]["url"] = url.replace(str(pristine.resolve()), str(copy.resolve()))
    (copy / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    return copy


def _sql_frame(folder: Path, dataset: str) -> pd.DataFrame:
    contract = get_contract(dataset)
    engine = sa.create_engine(f"sqlite:///{folder / 'sql' / f'{contract.department}.sqlite'}")
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(f'SELECT * FROM "{contract.table}"'), conn).astype("string")
    engine.dispose()
    return frame


def _differences(before: pd.DataFrame, after: pd.DataFrame, pk: str) -> pd.DataFrame:
    """Rows (by primary key) whose values differ, with the before and after cursor."""
    a = before.set_index(pk).sort_index()
    b = after.set_index(pk).sort_index()
    assert a.index.equals(b.index)
    differs = ~((a == b) | (a.isna() & b.isna())).all(axis=1)
    return a[differs.to_numpy()]


def _check_dataset(before: pd.DataFrame, after: pd.DataFrame, changes: pd.DataFrame, dataset: str) -> None:
    contract = get_contract(dataset)
    pk, cursor = contract.primary_key[0], contract.cursor
    assert cursor is not None
    mine = changes[changes["dataset"] == dataset]
    n_changed = fraction_of(0.05, len(before))
    assert (mine["kind"] == "changed").sum() == n_changed
    assert (mine["kind"] == "late").sum() == min(fraction_of(0.01, len(before)), len(before) - n_changed)
    changed_ids = _differences(before, after, pk).index
    assert set(changed_ids) == set(mine["record_id"])
    top = pd.to_datetime(before[cursor]).max()
    times = pd.to_datetime(after.set_index(pk).loc[mine["record_id"], cursor]).to_numpy()
    late = (mine["kind"] == "late").to_numpy()
    assert (times[~late] > top).all()
    assert ((times[late] < top) & (times[late] >= top - pd.Timedelta(minutes=10))).all()
    sep = "T" if contract.interface.startswith("http") else " "
    assert after[cursor].str.fullmatch(rf"\d{{4}}-\d\d-\d\d{sep}\d\d:\d\d:\d\d").all()
    assert mine["field"].isin(contract.source_names).all()  # the truth file names the attribute changed


def test_advance_changes_the_requested_fractions_and_writes_truth(folder: Path) -> None:
    http_before = {d: pd.read_parquet(folder / "http" / f"{d}.parquet") for d in HTTP}
    sql_before = {d: _sql_frame(folder, d) for d in SQL}
    summary = advance(folder, changed=0.05, late=0.01, seed=5)
    assert summary.number == 1 and summary.changes_path == folder / "truth" / "changes_1.parquet"
    changes = pd.read_parquet(summary.changes_path)
    assert list(changes.columns)[:3] == ["dataset", "record_id", "kind"]
    assert set(changes["kind"]) == {"changed", "late", "new"}
    for dataset in HTTP:
        after = pd.read_parquet(folder / "http" / f"{dataset}.parquet")
        assert list(after.columns) == list(http_before[dataset].columns)
        assert all(str(t) == "string" for t in after.dtypes)
        _check_dataset(http_before[dataset], after, changes, dataset)
    for dataset in SQL:
        _check_dataset(sql_before[dataset], _sql_frame(folder, dataset), changes, dataset)
    hukou_rows = len(http_before["gongan.hukou"])
    assert summary.counts["gongan.hukou"] == {
        "changed": fraction_of(0.05, hukou_rows), "late": fraction_of(0.01, hukou_rows)
    }  # fmt: skip
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["advances"][0]["changes"] == "truth/changes_1.parquet"


def test_advance_drops_a_births_csv_restating_changed_records_and_new_births(folder: Path) -> None:
    contract = get_contract("jisheng.births")
    records_before = pd.read_parquet(folder / "truth" / "records.parquet")
    known = records_before.loc[records_before["dataset"] == "jisheng.births", "record_id"]
    earlier = read_drops(folder / "drops" / "jisheng", contract.source_names)[0].set_index("记录编号")
    earlier = earlier[earlier.index.isin(known)]
    summary = advance(folder, changed=0.05, late=0.01, seed=5)
    assert summary.csv_drop == folder / "drops" / "jisheng" / "births_20261101.csv"
    text = summary.csv_drop.read_bytes().decode("gb18030")
    drop = pd.read_csv(summary.csv_drop, encoding="gb18030", dtype=str, keep_default_na=False)
    header = text.splitlines()[0].split(",")
    assert header[: len(contract.source_names)] == list(contract.source_names)
    assert header == read_drops(folder / "drops" / "jisheng", contract.source_names)[1]  # drift column kept
    changes = pd.read_parquet(summary.changes_path)
    births = changes[changes["dataset"] == "jisheng.births"]
    restated = births[births["kind"] == "changed"]
    new = births[births["kind"] == "new"]
    assert len(restated) == fraction_of(0.05, len(earlier)) and len(new) >= 1
    assert set(drop["记录编号"]) == set(births["record_id"])
    for rid, field in restated[["record_id", "field"]].itertuples(index=False):
        row = drop.set_index("记录编号").loc[rid]
        assert row[field] != earlier.loc[rid, field]
        assert (row.drop(field) == earlier.loc[rid].drop(field)).all()
    assert not set(new["record_id"]) & set(earlier.index)
    records = pd.read_parquet(folder / "truth" / "records.parquet")
    assert len(records) == len(records_before) + len(new)
    assert set(new["record_id"]) <= set(records["record_id"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "births_20261101.csv" in manifest["datasets"]["jisheng.births"]["location"]["files"]
    later = advance(folder, changed=0.05, late=0.01, seed=5)
    assert later.number == 2 and later.csv_drop is not None and later.csv_drop.name == "births_20261102.csv"


def test_advance_is_deterministic_for_a_seed(pristine: Path, tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, bytes]:
        copy = tmp_path / name
        shutil.copytree(pristine, copy)
        text = (copy / "manifest.json").read_text()
        (copy / "manifest.json").write_text(text.replace(str(pristine), str(copy)))
        advance(copy, changed=0.03, late=0.01, seed=seed)
        files = [*sorted((copy / "http").glob("*.parquet")), copy / "truth" / "changes_1.parquet",
                 *sorted((copy / "drops" / "jisheng").glob("*.csv"))]  # fmt: skip
        out = {p.name: p.read_bytes() for p in files}
        for dataset in SQL:
            out[dataset] = _sql_frame(copy, dataset).to_csv().encode()
        return out

    first, second, other = run("a", 11), run("b", 11), run("c", 12)
    assert first == second
    assert first["changes_1.parquet"] != other["changes_1.parquet"]


def test_advance_names_a_folder_that_was_not_generated(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        advance(tmp_path)
    with pytest.raises(ValueError, match="fractions"):
        advance(tmp_path, changed=0.8, late=0.3)


@pytest.fixture
def own_pg_url(pg_url: str) -> Iterator[str]:
    """A database of this test's own on the test server, so the generator's schemas meet no other test."""
    name = f"hub_test_advance_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_advance_updates_postgresql_tables_in_place(tmp_path: Path, own_pg_url: str) -> None:
    folder = tmp_path / "sim"
    generate(folder, residents=RESIDENTS, seed=1, sql_url=own_pg_url)
    assert not (folder / "sql").exists()
    engine = sa.create_engine(own_pg_url)

    def read(dataset: str) -> pd.DataFrame:
        c = get_contract(dataset)
        with engine.connect() as conn:
            return pd.read_sql(sa.text(f'SELECT * FROM "{c.department}"."{c.table}"'), conn).astype("string")

    try:
        before = {d: read(d) for d in SQL}
        summary = advance(folder, changed=0.05, late=0.01, seed=5, sql_url=own_pg_url)
        changes = pd.read_parquet(summary.changes_path)
        for dataset in SQL:
            _check_dataset(before[dataset], read(dataset), changes, dataset)
        # The conflicts truth was derived again, reading 低保 and 救助 from PostgreSQL.
        conflicts = pd.read_parquet(folder / "truth" / "conflicts.parquet")
        assert summary.conflicts == conflict_counts(conflicts) and summary.conflicts[RULES[0]] >= 1
    finally:
        engine.dispose()

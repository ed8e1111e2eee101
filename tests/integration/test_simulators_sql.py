"""generate(sql_url=...) writes the 司法 and 民政 tables into PostgreSQL schemas sifa and minzheng."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schemas.contract import packaged_contracts
from schemas.id_number import is_valid, normalise_text
from simulators.generate import generate

pytestmark = pytest.mark.postgres


def test_generate_writes_sql_tables_into_postgres(fresh_pg_url: str, tmp_path: Path) -> None:
    summary = generate(tmp_path, residents=3000, seed=4, sql_url=fresh_pg_url)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert not (tmp_path / "sql").exists()
    contracts = packaged_contracts()
    engine = sa.create_engine(fresh_pg_url)
    try:
        with engine.connect() as conn:
            for dataset in ("sifa.corrections", "minzheng.dibao", "minzheng.relief"):
                contract = contracts[dataset]
                loc = manifest["datasets"][dataset]["location"]
                assert loc["schema"] == contract.department and loc["table"] == contract.table
                assert make_url(loc["url"]).password is None
                assert make_url(loc["url"]).database == make_url(fresh_pg_url).database
                table = f'"{loc["schema"]}"."{loc["table"]}"'
                count = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                assert count == summary.rows[dataset] == manifest["datasets"][dataset]["rows"] > 0
                cols = [
                    r[0]
                    for r in conn.execute(
                        sa.text(
                            "SELECT column_name FROM information_schema.columns"
                            " WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
                        ),
                        {"s": loc["schema"], "t": loc["table"]},
                    )
                ]
                assert cols == list(contract.source_names)
                indexes = {
                    r[0]
                    for r in conn.execute(
                        sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND tablename = :t"),
                        {"s": loc["schema"], "t": loc["table"]},
                    )
                }
                assert f"ix_{loc['table']}_cursor" in indexes
                id_col = next(f.source for f in contract.fields if f.unified == "person.id_number")
                values = [r[0] for r in conn.exec_driver_sql(f'SELECT "{id_col}" FROM {table}')]
                valid = [is_valid(normalise_text(v) or "") for v in values]
                assert sum(valid) / len(valid) > 0.9
            stamps = conn.exec_driver_sql(
                'SELECT min(updated_at), max(updated_at) FROM "minzheng"."dibao_member"'
            ).one()
            assert "2025-" <= stamps[0] <= stamps[1] < "2026-11-01 00:00:00"
    finally:
        engine.dispose()
    # A second run replaces the tables rather than appending.
    again = generate(tmp_path, residents=3000, seed=4, sql_url=fresh_pg_url)
    engine = sa.create_engine(fresh_pg_url)
    try:
        with engine.connect() as conn:
            count = conn.exec_driver_sql('SELECT count(*) FROM "sifa"."sqjz_dx"').scalar()
            assert count == again.rows["sifa.corrections"]
    finally:
        engine.dispose()

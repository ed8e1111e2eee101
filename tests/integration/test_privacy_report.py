"""The privacy officer's report against real SQLite and PostgreSQL databases filled with protected batches."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from hub.privacy_cli import privacy
from privacy.audit_log import append_audit, audit_head
from privacy.keyring import KEYRING_ENV, Keyring
from privacy.policy import POLICY_PATH, load_policy
from privacy.protect import protect
from privacy.report import build_report, render_html
from privacy.synthetic import conformed_batch
from schemas.contract import get_contract, packaged_contracts
from simulators.population import build_population

ROWS = 1500


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    return build_population(ROWS, seed=23)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture(scope="module")
def published(people: pd.DataFrame, keyring: Keyring) -> dict[str, pd.DataFrame]:
    """Protected hukou and dibao batches, as the publish stage would write them."""
    policy = load_policy()
    tables = {}
    for dataset, table in (("gongan.hukou", "hukou_registration"), ("minzheng.dibao", "dibao_membership")):
        contract = get_contract(dataset)
        batch = conformed_batch(contract, ROWS, seed=4)
        for col in (
            "id_number",
            "name",
            "sex",
            "birth_date",
            "phone",
            "ethnicity",
            "community_code",
            "address",
        ):
            if col in batch.columns:
                batch[col] = people[col].to_numpy()
                if batch[col].dtype == object:
                    batch[col] = batch[col].astype("string")
        tables[table] = protect(batch, contract, policy, keyring).data
    return tables


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory, people: pd.DataFrame) -> Path:
    folder = tmp_path_factory.mktemp("sim") / "truth"
    folder.mkdir()
    people[["person_id", "id_number", "name", "phone"]].to_parquet(folder / "persons.parquet")
    return folder


def _fill(
    url: str, published: dict[str, pd.DataFrame], people: pd.DataFrame, schema: str | None = None
) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if schema:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            for name, frame in published.items():
                frame.to_sql(name, conn, index=False, if_exists="replace", schema=schema)
    finally:
        engine.dispose()


def _add_leak(url: str, people: pd.DataFrame) -> None:
    """A careless export holding plaintext: 3 ID numbers, 2 phones and 4 names in free text."""
    leak = pd.DataFrame(
        {
            "note": [f"联系人 {people['name'][i]} 已走访" for i in range(4)] + ["无"],
            "raw_id": [*people["id_number"][:3], None, "123"],
            "contact": ["电话" + people["phone"][0], people["phone"][1], None, "N/A", "12345"],
        }
    )
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            leak.to_sql("careless_export", conn, index=False, if_exists="replace")
    finally:
        engine.dispose()


def _expected_risk(frame: pd.DataFrame, cols: list[str], k: int) -> dict[str, Any]:
    sizes = frame.groupby(cols, dropna=False).size()
    return {
        "rows": int(sizes.sum()),
        "classes": len(sizes),
        "k_min": int(sizes.min()),
        "unique_share": float(sizes[sizes == 1].sum() / sizes.sum()),
        "passes": int(sizes.min()) >= k,
    }


def _assert_no_plaintext(text: str, people: pd.DataFrame) -> None:
    for column in ("id_number", "phone", "name"):
        values = [v for v in people[column].dropna() if len(v) >= 2]
        assert not any(v in text for v in values), f"a plaintext {column} appears in the report"


def _check_report(
    out: Path, published: dict[str, pd.DataFrame], people: pd.DataFrame, leaked: bool, table_prefix: str = ""
) -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    html_text = (out / "report.html").read_text(encoding="utf-8")
    _assert_no_plaintext(json.dumps(report, ensure_ascii=False), people)
    _assert_no_plaintext(html_text, people)
    assert report["coverage"]["ok"] and len(report["datasets"]) == 9
    hukou = next(d for d in report["datasets"] if d["dataset"] == "gongan.hukou")
    name_row = next(f for f in hukou["fields"] if f["field"] == "name")
    assert name_row["label"] == "姓名" and name_row["treatment"] == "encrypt(person_name)"
    assert name_row["purpose"] and name_row["legal_basis"]
    scan = report["leak_scan"]
    assert scan["names_checked"] > 0
    findings = {(f["table"].split(".")[-1], f["column"], f["kind"]): f["rows"] for f in scan["findings"]}
    if leaked:
        assert not scan["clean"]
        assert findings == {
            ("careless_export", "note", "name"): 4,
            ("careless_export", "raw_id", "id_number"): 3,
            ("careless_export", "contact", "phone"): 2,
        }
    else:
        assert scan["clean"] and findings == {}
    in_use = report["keys"]["in_use"]
    assert in_use[f"{table_prefix}hukou_registration.id_number"] == {"t1": ROWS}
    assert in_use[f"{table_prefix}hukou_registration.name"] == {"e1": ROWS}
    risks = {
        (r["table"].split(".")[-1], tuple(r["quasi_identifiers"])): r
        for r in report["reidentification"]["tables"]
    }
    cols = ["birth_year", "sex", "community_code", "ethnicity"]
    got = risks[("hukou_registration", tuple(cols))]
    expected = _expected_risk(published["hukou_registration"], cols, 5)
    assert {k: got[k] for k in expected} == expected
    assert got["prosecutor_max"] == pytest.approx(1 / expected["k_min"])
    assert got["prosecutor_avg"] == pytest.approx(expected["classes"] / expected["rows"])
    assert ("dibao_membership", ("birth_year", "sex", "community_code")) not in risks  # no birth_year there
    assert report["reveal_log"]["entries"] == 2 and report["reveal_log"]["chain_ok"]
    assert report["reveal_log"]["by_outcome"] == {"revealed": 1, "refused": 1}
    assert "<h2>Leak scan</h2>" in html_text
    return report


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring: Keyring) -> Iterator[Path]:
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.setenv(KEYRING_ENV, keyring.to_json())
    log = tmp_path / "audit" / "reveal.log"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")  # the hub database keeps the log's head
    append_audit(
        {"action": "reveal", "operator": "clerk-01", "domain": "person_name", "outcome": "revealed"},
        log,
        engine,
        keyring,
    )
    append_audit(
        {"action": "reveal", "operator": "clerk-02", "domain": "contact", "outcome": "refused: no reason"},
        log,
        engine,
        keyring,
    )
    engine.dispose()
    yield tmp_path


def test_report_on_sqlite(
    hub_env: Path, published: dict[str, pd.DataFrame], people: pd.DataFrame, truth: Path
) -> None:
    url = f"sqlite:///{hub_env / 'hub.db'}"
    _fill(url, published, people)
    runner = CliRunner()
    clean = runner.invoke(
        privacy, ["report", "--out", str(hub_env / "r1"), "--database-url", url, "--truth", str(truth)]
    )
    assert clean.exit_code == 0, clean.output
    report = _check_report(hub_env / "r1", published, people, leaked=False)
    assert report["keys"]["active"] == 1 and report["keys"]["source"] == KEYRING_ENV
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (hub_env / "r1").iterdir()}
    assert modes == {"report.json": 0o600, "report.html": 0o600}
    assert stat.S_IMODE((hub_env / "r1").stat().st_mode) == 0o700
    _add_leak(url, people)
    leaky = runner.invoke(
        privacy, ["report", "--out", str(hub_env / "r2"), "--database-url", url, "--truth", str(truth)]
    )
    assert leaky.exit_code == 0 and "plaintext found" in leaky.output
    _check_report(hub_env / "r2", published, people, leaked=True)


@pytest.mark.postgres
def test_report_on_postgresql(
    hub_env: Path, fresh_pg_url: str, published: dict[str, pd.DataFrame], people: pd.DataFrame, truth: Path
) -> None:
    _fill(fresh_pg_url, published, people, schema="publish")
    _add_leak(fresh_pg_url, people)
    result = CliRunner().invoke(
        privacy,
        ["report", "--out", str(hub_env / "pg"), "--database-url", fresh_pg_url, "--truth", str(truth), "--k", "5"],
    )
    assert result.exit_code == 0, result.output
    report = _check_report(hub_env / "pg", published, people, leaked=True, table_prefix="publish.")
    assert "postgres" in report["leak_scan"]["database"]


def test_html_escapes_policy_text(tmp_path: Path, keyring: Keyring) -> None:
    raw = yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8"))
    raw["fields"]["person.sex"]["purpose"] = "<script>alert('x')</script>"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    report = build_report(load_policy(path), packaged_contracts(), tmp_path / "none.log", keyring)
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert report["leak_scan"] is None and report["reidentification"]["tables"] == []
    assert report["keys"]["versions"][0]["version"] == 1 and "key" not in report["keys"]["versions"][0]


def test_report_flags_a_log_whose_database_head_was_removed(hub_env: Path, keyring: Keyring) -> None:
    engine = sa.create_engine(f"sqlite:///{hub_env / 'hub.db'}")
    log = hub_env / "audit" / "reveal.log"
    intact = build_report(load_policy(), packaged_contracts(), log, keyring, audit_engine=engine)
    assert intact["reveal_log"]["chain_ok"] and intact["reveal_log"]["entries"] == 2
    with engine.begin() as conn:
        conn.execute(sa.delete(audit_head))
    broken = build_report(load_policy(), packaged_contracts(), log, keyring, audit_engine=engine)
    assert not broken["reveal_log"]["chain_ok"] and "database" in broken["reveal_log"]["problem"]
    unchecked = build_report(load_policy(), packaged_contracts(), log, keyring)
    assert not unchecked["reveal_log"]["chain_ok"] and "hub database" in unchecked["reveal_log"]["problem"]

"""The publish stage's rule files and gates, without a database: release suppression and the k/l gate,
age bands, the checks YAML, the consumers file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from publish.checks import ChecksError, case_sql, load_rules
from publish.consumers import ConsumersError, load_consumers
from publish.release import ReleaseFigure, ReleaseRefused, age_band_sql, gate, suppress


def _figure(k: int | None, l_div: int | None, sensitive: tuple[str, ...] = ("category",)) -> ReleaseFigure:
    return ReleaseFigure("release.disability", ("age_band", "sex", "county_code"), sensitive, 50, 3, 7, k, l_div, 5, 2)


def test_the_gate_refuses_a_release_below_k_or_l() -> None:
    gate([_figure(5, 2), _figure(9, None, ())])
    with pytest.raises(ReleaseRefused, match=r"release.disability: k=4 \(needs 5\)"):
        gate([_figure(4, 3)])
    with pytest.raises(ReleaseRefused, match=r"l=1 \(needs 2\)"):
        gate([_figure(6, 1)])


def test_suppression_keeps_only_groups_of_k_with_l_distinct_values() -> None:
    con = duckdb.connect()
    rows = (
        [("a", f"p{i}", "视力残疾") for i in range(4)]  # 4 persons: under k
        + [("b", f"q{i}", "肢体残疾") for i in range(6)]  # 6 persons, one category: under l
        + [("c", f"r{i}", "视力残疾" if i % 2 else "听力残疾") for i in range(5)]  # kept
    )
    con.register("src", pd.DataFrame(rows, columns=["county_code", "person_key", "category"]))
    kept = con.sql(suppress("src", ["county_code"], ["category"], 5, 2)).df()
    assert sorted(set(kept["county_code"])) == ["c"] and len(kept) == 5
    without_l = con.sql(suppress("src", ["county_code"], [], 5, 2)).df()
    assert sorted(set(without_l["county_code"])) == ["b", "c"]


def test_the_rows_suppression_fails_are_every_other_row_with_a_missing_value_among_them() -> None:
    """What a county-level group fails is recoded to the city: every row not kept, with its duplicates and the
    rows whose group cannot be formed (a missing quasi-identifier), as ``source EXCEPT ALL kept`` gives."""
    con = duckdb.connect()
    rows = (
        [("a", f"p{i}", "视力残疾") for i in range(4)]
        + [("a", "p0", "视力残疾")]  # a duplicate row of a failing group stays a duplicate
        + [("c", f"r{i}", "视力残疾" if i % 2 else "听力残疾") for i in range(5)]
        + [(None, "s0", "视力残疾")]  # no county: no group to pass
    )
    con.register("src", pd.DataFrame(rows, columns=["county_code", "person_key", "category"]))
    failing = con.sql(suppress("src", ["county_code"], ["category"], 5, 2, failing=True)).df()
    expected = con.sql(f"SELECT * FROM src EXCEPT ALL {suppress('src', ['county_code'], ['category'], 5, 2)}").df()
    key = ["person_key", "county_code"]
    assert len(failing) == 6 and sorted(failing["person_key"]) == ["p0", "p0", "p1", "p2", "p3", "s0"]
    assert failing.sort_values(key, ignore_index=True).equals(expected.sort_values(key, ignore_index=True))


def test_age_bands_are_five_years_with_one_band_from_85() -> None:
    con = duckdb.connect()
    frame = pd.DataFrame({"birth_year": [2026, 2022, 2021, 1942, 1941, 1900]})
    con.register("p", frame)
    bands = [r[0] for r in con.sql(f"SELECT {age_band_sql(2026)} FROM p").fetchall()]
    assert bands == ["00-04", "00-04", "05-09", "80-84", "85+", "85+"]


def test_the_shipped_rules_render_for_both_databases() -> None:
    params, rules = load_rules()
    assert {r.id for r in rules} == {
        "benefit_deceased_or_moved",
        "dibao_with_income",
        "tekun_with_supporter",
        "migrant_two_communities",
        "birth_mother_not_in_hukou",
    }
    births = next(r for r in rules if r.id == "birth_mother_not_in_hukou")
    with sa.create_engine("sqlite://").connect() as conn:
        sql = case_sql(conn, births, births.cases[0], params)
    assert "FROM birth_registration s" in sql and sql.count("NOT EXISTS") == 2 and "FROM core." not in sql
    income = next(r for r in rules if r.id == "dibao_with_income")
    with sa.create_engine("sqlite://").connect() as conn:
        assert "e.monthly_benefit > 1000" in case_sql(conn, income, income.cases[1], params)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("{subject: core.nowhere}", "no published table 'core.nowhere'"),
        ("{subject: core.person, joins: [{alias: e, table: core.person}]}", "each join needs alias, table and match"),
        ("{subject: core.person, joins: [{alias: s, table: core.person, match: x}]}", "not 's'"),
        ("{subject: core.person, evidence: z}", "evidence 'z' is not one of the joins' aliases"),
    ],
)
def test_a_wrong_rule_is_named_with_its_file_rule_and_case(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(f"format: 1\nrules:\n  - id: broken_rule\n    cases: [{case}]\n", encoding="utf-8")
    with pytest.raises(ChecksError, match=message) as caught:
        load_rules(path)
    assert "rule 1 (broken_rule) case 1" in str(caught.value) and str(path) in str(caught.value)


def test_an_unknown_placeholder_is_refused() -> None:
    _, rules = load_rules()
    rule = next(r for r in rules if r.id == "dibao_with_income")
    with sa.create_engine("sqlite://").connect() as conn, pytest.raises(ChecksError, match="local_income_line"):
        case_sql(conn, rule, rule.cases[1], {})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: Bad-Name, kind: platform, scope: ['150702']}", "lower_snake_case"),
        ("{name: nowhere, kind: platform}", "a platform needs a scope"),
        ("{name: wrong_code, kind: platform, scope: ['1507']}", "6 or 12 digits, not 1507"),
        ("{name: who, kind: friend}", "kind must be one of platform, release"),
    ],
)
def test_a_wrong_consumer_is_named(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "consumers.yaml"
    path.write_text(f"format: 1\nconsumers:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(ConsumersError, match=message):
        load_consumers(path)


def test_the_shipped_consumers() -> None:
    consumers = load_consumers()
    platforms = [c for c in consumers if c.kind == "platform"]
    assert platforms and all(c.role.startswith("hub_platform_") and c.scope for c in platforms)
    assert {c.token_domain for c in consumers if c.kind == "release"} == {
        "release_stats_bureau",
        "release_disabled_federation",
    }


def test_the_year_ages_are_computed_in_can_be_named() -> None:
    params, rules = load_rules()
    tekun = next(r for r in rules if r.id == "tekun_with_supporter")
    with sa.create_engine("sqlite://").connect() as conn:
        assert "strftime('%Y', 'now')" in case_sql(conn, tekun, tekun.cases[0], params)
        assert "BETWEEN 2026 - 59 AND 2026 - 18" in case_sql(
            conn, tekun, tekun.cases[0], {**params, "current_year": 2026}
        )


def test_a_household_community_tie_is_broken_the_same_way_whatever_the_row_order() -> None:
    """DuckDB's ``mode`` keeps the first of a tie in arrival order, so a rebuild (or a scoped one) could flip a
    household's community; ``mode_sql`` takes the smallest of the tie."""
    import duckdb

    from schemas.duck import mode_sql

    con = duckdb.connect()
    orders = (["150702001001", "150702001002", None], [None, "150702001002", "150702001001"])
    got = {
        con.execute(f"SELECT {mode_sql('c')} FROM (SELECT unnest($1::VARCHAR[]) AS c)", [rows]).fetchone()
        for rows in orders
    }
    assert got == {("150702001001",)}
    plain = {
        con.execute("SELECT mode(c) FROM (SELECT unnest($1::VARCHAR[]) AS c)", [rows]).fetchone() for rows in orders
    }
    assert len(plain) == 2  # what the published households depended on before
    many = ["150702001003"] * 2 + ["150702001001"]
    assert con.execute(f"SELECT {mode_sql('c')} FROM (SELECT unnest($1::VARCHAR[]) AS c)", [many]).fetchone() == (
        "150702001003",
    )


def test_the_build_fingerprint_follows_the_rules_not_the_folder_they_are_installed_in(tmp_path: Path) -> None:
    """A clone or a worker's image in another folder holds the same rules: the fingerprint (which decides whether a
    publish may be scoped) stays; a changed contract file changes it."""
    import dataclasses
    import shutil

    from privacy.policy import load_policy
    from publish.publisher import build_fingerprint
    from schemas.contract import packaged_contracts

    contracts, policy = packaged_contracts(), load_policy()
    moved: dict[str, Any] = {}
    for name, contract in contracts.items():
        copy = tmp_path / "contracts" / Path(contract.path).name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(contract.path, copy)
        moved[name] = dataclasses.replace(contract, path=str(copy))
    shutil.copy(policy.path, tmp_path / Path(policy.path).name)
    moved_policy = dataclasses.replace(policy, path=str(tmp_path / Path(policy.path).name))
    assert build_fingerprint(moved, moved_policy) == build_fingerprint(contracts, policy)
    changed = Path(next(iter(moved.values())).path)
    changed.write_bytes(changed.read_bytes() + b"\n# changed\n")
    assert build_fingerprint(moved, moved_policy) != build_fingerprint(contracts, policy)

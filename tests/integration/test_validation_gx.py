"""validate() runs a contract-generated GX 1.x suite for real and names bad rows by index, never by value."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from schemas.conform import ID_SHAPE, Conformed, conform
from schemas.contract import get_contract, packaged_contracts
from schemas.validation import (
    RESULTS_FILE,
    SUMMARY_FILE,
    Validation,
    ValidationError,
    build_suite,
    ephemeral_context,
    validate,
)
from tests.unit.test_conform import ID_A, ID_B, ID_C, ID_X, dirty_births, dirty_hukou, hukou_at_scale

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

AS_OF = date(2026, 11, 29)


Checked = tuple[pd.DataFrame, Conformed, Validation, Path]


def _kwargs(suite: ExpectationSuite) -> dict[tuple[str, str], dict[str, Any]]:
    """Each expectation's kwargs by (type, column)."""
    return {(e.expectation_type, e.configuration.kwargs["column"]): dict(e.configuration.kwargs)
            for e in suite.expectations}


def test_suite_is_generated_from_each_contract() -> None:
    for contract in packaged_contracts().values():
        suite = build_suite(contract, AS_OF)
        kinds = set(_kwargs(suite))
        assert suite.name == f"{contract.dataset}.v{contract.version}"
        for cf in contract.fields:
            assert (("expect_column_values_to_not_be_null", cf.name) in kinds) == cf.required
            if cf.allowed:
                assert ("expect_column_values_to_be_in_set", cf.name) in kinds
            if cf.type in ("date", "datetime"):
                assert ("expect_column_values_to_be_between", cf.name) in kinds
    hukou = build_suite(get_contract("gongan.hukou"), AS_OF)
    by_key = _kwargs(hukou)
    assert by_key["expect_column_values_to_match_regex", "id_number"]["regex"] == ID_SHAPE
    assert by_key["expect_column_values_to_match_regex", "household_no"]["regex"] == "^[0-9]{9}$"
    assert list(by_key["expect_column_values_to_be_in_set", "sex"]["value_set"]) == ["1", "2"]
    birth = by_key["expect_column_values_to_be_between", "birth_date"]
    assert pd.Timestamp(birth["max_value"]) == pd.Timestamp("2026-11-30")  # no births after the day checked


@pytest.fixture(scope="module")
def hukou_checked(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    raw = dirty_hukou()
    raw.loc[100, "gxsj"] = "2100-01-01T00:00:00"  # parses, but lies past 2099: only GX catches it
    results = tmp_path_factory.mktemp("gx") / "gongan.hukou" / "b000001"
    contract = get_contract("gongan.hukou")
    conformed = conform(raw, contract)
    return raw, conformed, validate(conformed, contract, results_dir=results, as_of=AS_OF), results


def test_good_and_bad_rows(hukou_checked: Checked) -> None:
    checked = hukou_checked[2]
    assert sorted(checked.bad_index) == [100, 104, 105, 106, 107]
    assert list(checked.good.index) == [101, 102, 103]
    assert "_row" not in checked.good.columns and "_source_position" in checked.good.columns
    assert checked.quarantine_rate == pytest.approx(5 / 8)
    assert set(checked.reasons.index) == set(checked.bad_index)
    reasons = {i: set(r.split(";")) for i, r in checked.reasons.items()}
    assert reasons[100] == {"gx:expect_column_values_to_be_between:updated_at"}
    # ID shape fine but check character wrong; 22831 from a REST source is text, not an Excel serial
    assert reasons[104] == {"conform:id_number_invalid:id_number", "conform:date_unparseable:birth_date"}
    assert reasons[105] == {"conform:required_missing:id_number"}  # once; its landline is fine
    # one code per bad field: conform names the cause, GX's failure on the same field is not added
    assert reasons[106] == {"conform:code_not_allowed:sex", "conform:pattern_mismatch:household_no",
                            "conform:community_code_invalid:community_code", "conform:date_unparseable:birth_date",
                            "conform:datetime_unparseable:updated_at"}
    assert "conform:required_missing:name" in reasons[107]
    assert not any(code.startswith("gx:") for code in reasons[107])


def test_summary_counts_only(hukou_checked: Checked) -> None:
    _, _, checked, _ = hukou_checked
    summary = checked.summary
    assert (summary["rows"], summary["good"], summary["bad"]) == (8, 3, 5)
    assert summary["expectations"]["gx:expect_column_values_to_be_in_set:sex"] == 1
    assert summary["expectations"]["gx:expect_column_values_to_not_be_null:record_id"] == 0
    assert summary["conform_issues"]["conform:id_number_invalid:id_number"] == 1
    assert summary["unknown_columns"] == ["nation_code"]


def test_a_missing_required_value_is_counted_once(hukou_checked: Checked) -> None:
    summary = hukou_checked[2].summary
    reasons = summary["reasons"]
    assert reasons["conform:required_missing:id_number"] == 1
    assert "gx:expect_column_values_to_not_be_null:id_number" not in reasons
    assert summary["expectations"]["gx:expect_column_values_to_not_be_null:id_number"] == 1  # what GX saw
    assert sum(reasons.values()) == sum(len(r.split(";")) for r in hukou_checked[2].reasons)


def test_an_optional_field_gx_rejects_is_nulled_and_counted() -> None:
    raw = dirty_hukou().loc[[101, 102]]
    raw.loc[101, "swrq"] = "2100-01-01"  # an optional date past the plausible range
    contract = get_contract("gongan.hukou")
    conformed = conform(raw, contract)
    checked = validate(conformed, contract, as_of=AS_OF)
    assert checked.bad_index.empty and list(checked.good.index) == [101, 102]
    assert pd.isna(checked.good.loc[101, "death_date"])
    assert checked.field_problems == {"death_date:expect_column_values_to_be_between": 1}
    assert checked.summary["field_problems"] == checked.field_problems
    assert pd.notna(conformed.data.loc[101, "death_date"])  # the conformed batch itself is not changed


def test_validation_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    contract = get_contract("gongan.hukou")
    validate(conform(dirty_hukou().loc[[101]], contract), contract, as_of=AS_OF)
    assert "GX_ANALYTICS_ENABLED" not in os.environ
    assert ephemeral_context().config.analytics_enabled is False  # switched off in the context's own config
    schemas = Path(__file__).resolve().parents[2] / "schemas"
    touching = [p.name for p in schemas.rglob("*.py") if re.search(r"os\.environ|getenv", p.read_text())]
    assert touching == []


def test_results_json_holds_no_value_from_the_batch(hukou_checked: Checked) -> None:
    raw, conformed, _, results = hukou_checked
    written = (results / RESULTS_FILE).read_text(encoding="utf-8") + (results / SUMMARY_FILE).read_text(
        encoding="utf-8"
    )
    json.loads((results / RESULTS_FILE).read_text(encoding="utf-8"))
    personal = ["gmsfhm", "xm", "lxdh", "hjdz", "hh", "sqdm"]
    secrets = {str(v) for col in personal for v in raw[col].dropna() if str(v).strip()}
    secrets |= {str(v) for col in ("id_number", "name", "phone", "address", "household_no", "community_code")
                for v in conformed.data[col].dropna()}
    assert secrets
    leaked = sorted(s for s in secrets if s in written or s.strip() in written)
    assert not leaked, f"{len(leaked)} personal values in the GX results"
    assert '"_row"' in written  # failing rows are named by number


def test_clean_batch_has_no_bad_rows(tmp_path: Path) -> None:
    raw = dirty_hukou().loc[[101, 102, 103]]
    checked = validate(conform(raw, get_contract("gongan.hukou")), get_contract("gongan.hukou"), as_of=AS_OF)
    assert len(checked.good) == 3 and checked.bad_index.empty and checked.reasons.empty
    assert checked.quarantine_rate == 0.0


def test_births_and_far_out_dates() -> None:
    raw = dirty_births()
    raw.loc[0, "出生日期"] = "0201-05-05"  # a typo far outside any plausible year
    raw.loc[1, "出生日期"] = "1850/1/1"
    raw.loc[1, "婴儿身份证号"] = None  # else the child's ID number would already disagree (conform's reason)
    contract = get_contract("jisheng.births")
    checked = validate(conform(raw, contract), contract, as_of=AS_OF)
    reasons = {i: set(r.split(";")) for i, r in checked.reasons.items()}
    assert "gx:expect_column_values_to_be_between:child_birth_date" in reasons[1]
    assert "gx:expect_column_values_to_be_between:child_birth_date" in reasons[0]  # held as 1677-09-22
    assert "conform:integer_invalid:birth_order" in reasons[2]


def test_an_expectation_that_cannot_run_stops_the_batch() -> None:
    contract = get_contract("gongan.hukou")
    conformed = conform(dirty_hukou(), contract)
    as_text = conformed.data["birth_date"].astype(str)  # a type the range check cannot compare
    broken = replace(conformed, data=conformed.data.assign(birth_date=as_text))
    expected = "gongan.hukou: expect_column_values_to_be_between on field 'birth_date' could not run"
    with pytest.raises(ValidationError, match=f"^{re.escape(expected)}$"):
        validate(broken, contract, as_of=AS_OF)


def test_empty_batch(tmp_path: Path) -> None:
    contract = get_contract("gongan.hukou")
    checked = validate(conform(dirty_hukou().iloc[:0], contract), contract, results_dir=tmp_path)
    assert checked.summary["rows"] == 0 and checked.quarantine_rate == 0.0
    assert (tmp_path / SUMMARY_FILE).exists()


def test_ids_in_fixture_are_valid() -> None:
    from schemas.id_number import is_valid

    assert all(is_valid(n) for n in (ID_A, ID_B, ID_C, ID_X))


@pytest.mark.slow
def test_a_million_rows_through_gx(tmp_path: Path) -> None:
    contract = get_contract("gongan.hukou")
    conformed = conform(hukou_at_scale(1_000_000), contract)
    started = time.perf_counter()
    checked = validate(conformed, contract, results_dir=tmp_path)
    seconds = time.perf_counter() - started
    print(f"validate: 1,000,000 rows in {seconds:.1f} s (GX {checked.summary['gx_seconds']:.1f} s)")
    assert checked.summary["bad"] == 0
    assert seconds < 60


def test_a_quarantined_row_gets_the_same_clean_up_for_unkeyed_staging() -> None:
    """A row whose only fault is its ID is staged unkeyed from ``cleaned``: its failed optional values are missing."""
    raw = dirty_hukou().loc[[101, 102]]
    raw.loc[101, "swrq"] = "2100-01-01"
    raw.loc[101, "gmsfhm"] = None  # the ID is missing too: the row is bad
    contract = get_contract("gongan.hukou")
    checked = validate(conform(raw, contract), contract, as_of=AS_OF)
    assert list(checked.bad_index) == [101]
    assert checked.cleaned is not None and pd.isna(checked.cleaned.loc[101, "death_date"])
    assert checked.good.index.tolist() == [102]

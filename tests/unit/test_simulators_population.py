"""The synthetic population: identity numbers, households, documented shares, and the dirt kinds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stdnum.cn import ric

from schemas.areas import COUNTIES, code_valid_in
from schemas.contract import packaged_contracts
from schemas.id_number import check_character, is_valid, normalise_series, valid_series
from simulators.dirty import (
    DEFAULT_RATES,
    KINDS,
    DirtyRates,
    dirty_ids,
    dirty_names,
    excel_serials,
    format_dates,
    format_times,
    kinds_text,
    transpose_adjacent,
)
from simulators.population import (
    AS_OF,
    RELATIONS,
    TRUTH_COLUMNS,
    build_population,
    build_services,
    communities,
)


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    return build_population(20_000, 7)


@pytest.fixture(scope="module")
def facts(people: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return build_services(people, 7)


def test_truth_columns_and_as_of(people: pd.DataFrame) -> None:
    assert list(people.columns[: len(TRUTH_COLUMNS)]) == list(TRUTH_COLUMNS)
    assert AS_OF.isoformat() == "2026-11-01T00:00:00"
    assert people["person_id"].is_unique


def test_every_id_number_is_valid_unique_and_consistent(people: pd.DataFrame) -> None:
    ids = people["id_number"]
    assert valid_series(ids).all()
    assert ids.is_unique
    assert (ids.str.slice(6, 14) == people["birth_date"].dt.strftime("%Y%m%d")).all()
    odd = ids.str.slice(16, 17).astype(int) % 2 == 1
    assert (odd == (people["sex"] == "1")).all()


def test_local_ids_follow_the_era_rule(people: pd.DataFrame) -> None:
    local = people[~people["is_migrant"] & ~people["in_mover"]]
    area = local["id_number"].str.slice(0, 6)
    year = local["birth_date"].dt.year
    assert area[year < 2001].str.startswith("1521").all()
    assert area[year >= 2001].str.startswith("1507").all()
    assert (year[area == "150703"] >= 2013).all()
    # 扎赉诺尔区 residents born 2001-2012 carry 满洲里's code.
    zalai = local["county_code"] == "150703"
    assert area[zalai & (year >= 2001) & (year < 2013)].eq("150781").all()
    pairs = pd.DataFrame({"a": area, "y": year}).drop_duplicates()
    assert all(code_valid_in(a, y) for a, y in zip(pairs["a"], pairs["y"], strict=True))


def test_migrants_come_from_other_provinces_with_era_valid_codes(people: pd.DataFrame) -> None:
    migrants = people[people["is_migrant"]]
    assert not migrants["origin_area"].str.startswith("15").any()
    assert (migrants["origin_area"] == migrants["id_number"].str.slice(0, 6)).all()
    assert migrants["household_no"].isna().all()
    assert people.loc[~people["is_migrant"], "origin_area"].isna().all()


def test_households_and_relations(people: pd.DataFrame) -> None:
    hukou = people[~people["is_migrant"]]
    assert hukou["household_no"].str.fullmatch(r"[0-9]{9}").all()
    sizes = hukou.groupby("household_no").size()
    assert sizes.between(1, 6).all()
    heads = hukou[hukou["relation_to_head"] == "户主"].groupby("household_no").size()
    assert len(heads) == len(sizes) and (heads == 1).all()
    allowed = set(packaged_contracts()["gongan.hukou"].field("relation_to_head").allowed or ())
    assert set(hukou["relation_to_head"].unique()) <= allowed


def test_the_generator_knows_exactly_the_relations_the_contracts_allow() -> None:
    """GB/T 4761 has 子 and 女, no 子女: the generator's table must speak the contracts' words."""
    for dataset in ("gongan.hukou", "minzheng.dibao"):
        allowed = packaged_contracts()[dataset].field("relation_to_head").allowed or ()
        assert set(RELATIONS) == set(allowed), dataset


def test_communities_cover_all_counties_urban_and_rural(people: pd.DataFrame) -> None:
    table = communities()
    assert table["community_code"].str.fullmatch(r"[0-9]{12}").all()
    assert table["community_code"].is_unique
    assert (table["community_code"].str.slice(0, 6) == table["county_code"]).all()
    assert int(table["urban"].sum()) >= 259 and int((~table["urban"]).sum()) > 0
    assert set(table["county_code"]) == {c.code for c in COUNTIES}
    assert (people["community_code"].str.slice(0, 6) == people["county_code"]).all()
    assert people["phone"].dropna().str.fullmatch(r"1[3-9][0-9]{9}").all()


def test_shares_land_in_documented_ranges(people: pd.DataFrame, facts: dict[str, pd.DataFrame]) -> None:
    n = len(people)
    living = people[people["status"] != "死亡"]
    assert 0.49 <= (people["sex"] == "1").mean() <= 0.53
    assert 0.025 <= (living["age"] >= 80).mean() <= 0.05
    eth = people["ethnicity"].value_counts(normalize=True)
    ranges = {
        "汉族": (0.76, 0.85),
        "蒙古族": (0.07, 0.10),
        "满族": (0.02, 0.045),
        "达斡尔族": (0.015, 0.035),
        "鄂温克族": (0.005, 0.016),
        "回族": (0.002, 0.009),
    }
    for group, (low, high) in ranges.items():
        assert low <= eth.get(group, 0.0) <= high, group
    assert set(eth.index) <= set(packaged_contracts()["gongan.hukou"].field("ethnicity").allowed or ())
    assert 0.10 <= people["is_migrant"].mean() <= 0.15
    status = people["status"].value_counts(normalize=True)
    assert 0.005 <= status["死亡"] <= 0.03 and 0.01 <= status["迁出"] <= 0.06
    assert 0.07 <= len(facts["minzheng.dibao"]) / n <= 0.09
    relief = facts["minzheng.relief"]["category"].value_counts()
    assert 0.0015 <= relief["特困供养"] / n <= 0.0025
    assert 0.0002 <= relief["孤儿"] / n <= 0.0006
    assert 0.03 <= len(facts["canlian.disability"]) / n <= 0.04
    assert 0.0007 <= len(facts["sifa.corrections"]) / n <= 0.0013
    assert set(facts["minzheng.dibao"]["area_type"]) == {"城市", "农村"}


def test_service_facts_are_consistent(people: pd.DataFrame, facts: dict[str, pd.DataFrame]) -> None:
    age = people["age"].to_numpy()
    old = facts["minzheng.relief"].query("category == '高龄津贴'")["person"].to_numpy()
    assert (age[old] >= 80).all()
    insured = facts["renshe.insurance"]["person"].unique()
    adults = (age >= 16).sum()
    assert len(insured) / adults > 0.7
    births = facts["jisheng.births"]
    mothers = people.iloc[births["person"].to_numpy()]
    assert (mothers["sex"] == "2").all()
    assert {"普通家庭", "独生子女家庭"} <= set(births["family_type"])
    assert set(births["family_type"]) <= set(
        packaged_contracts()["jisheng.births"].field("family_type").allowed or ()
    )
    disability = facts["canlian.disability"]
    assert disability["record_id"].str.fullmatch(r"[0-9]{17}[0-9X][1-7][1-4]").all()
    for dataset, frame in facts.items():
        # Everything recorded happened before AS_OF; only a sentence's planned end lies ahead.
        dates = [c for c in frame.columns if frame[c].dtype.kind == "M" and c != "end_date"]
        for col in dates:
            assert (frame[col].dropna() < pd.Timestamp(AS_OF)).all(), (dataset, col)


def test_same_seed_same_population_other_seed_differs() -> None:
    a, b, c = build_population(3000, 1), build_population(3000, 1), build_population(3000, 2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["id_number"].equals(c["id_number"])


def test_id_dirt_kinds_do_what_they_say(people: pd.DataFrame) -> None:
    rates = DirtyRates(missing_id=0.05, bad_check=0.2, legacy15=0.2, fullwidth=0.1, space=0.1, lower_x=1.0)
    clean = people["id_number"]
    dirty, marks = dirty_ids(clean, people["birth_date"].to_numpy(), np.random.default_rng(3), rates)
    kinds = kinds_text(marks)
    normal = normalise_series(dirty)
    bad = kinds == "bad_check"
    assert bad.sum() > 1000
    assert not any(is_valid(v) for v in normal[bad])
    assert dirty[kinds == "missing_id"].isna().all()
    restorable = kinds.isin(["", "legacy15", "fullwidth", "space", "lower_x"])
    assert (normal[restorable] == clean[restorable]).all()
    legacy = dirty[kinds == "legacy15"]
    assert legacy.str.len().eq(15).all()
    years = people.loc[(kinds == "legacy15").to_numpy(), "birth_date"].dt.year
    assert years.between(1900, 1999).all()
    assert dirty[kinds == "lower_x"].str.endswith("x").all()
    assert dirty[kinds == "fullwidth"].str.contains("[０-９]").all()
    assert dirty[kinds == "space"].str.contains(" ").all()


def test_transposition_swaps_two_different_adjacent_digits() -> None:
    numbers = pd.Series(["11010519491231002X", "440524188001010014", "152101197501010011"], dtype="string")
    swapped = transpose_adjacent(numbers, np.random.default_rng(0))
    for before, after in zip(numbers, swapped, strict=True):
        diff = [i for i in range(18) if before[i] != after[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and diff[1] <= 16
        assert before[diff[0]] == after[diff[1]] and not is_valid(after)


def test_validity_agrees_with_stdnum_on_ten_thousand_values(people: pd.DataFrame) -> None:
    rng = np.random.default_rng(11)
    clean = people["id_number"].iloc[:4000]
    rates = DirtyRates(missing_id=0.0, bad_check=0.3, legacy15=0.2, fullwidth=0.2, space=0.2, lower_x=1.0)
    dirty, _marks = dirty_ids(
        people["id_number"].iloc[4000:8000], people["birth_date"].to_numpy()[4000:8000], rng, rates
    )
    # Random bodies: real and invented area codes, plausible and impossible dates, right and wrong checks.
    areas = np.concatenate(
        [people["id_number"].str.slice(0, 6).unique(), ["150799", "000000", "152100", "999999"]]
    )
    n = 4000
    bodies = [
        f"{a}{y:04d}{m:02d}{d:02d}{s:03d}"
        for a, y, m, d, s in zip(
            rng.choice(areas, n),
            rng.integers(1890, 2030, n),
            rng.integers(0, 14, n),
            rng.integers(0, 33, n),
            rng.integers(0, 1000, n),
            strict=True,
        )
    ]
    checks = [
        check_character(b) if rng.random() < 0.6 else str(rng.choice(list("0123456789X"))) for b in bodies
    ]
    random_values = pd.Series([b + c for b, c in zip(bodies, checks, strict=True)], dtype="string")
    values = pd.concat([clean, normalise_series(dirty), random_values], ignore_index=True).dropna()
    assert len(values) >= 10_000

    def reference(v: str) -> bool:
        try:
            return bool(ric.is_valid(v))
        except KeyError:  # stdnum raises KeyError for an unknown county under a known prefecture
            return False

    expected = [reference(v) for v in values]
    assert [is_valid(v) for v in values] == expected
    assert valid_series(values).tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_date_styles_and_excel_serials() -> None:
    day = np.array(["2017-05-05", "NaT"], dtype="datetime64[D]")
    assert format_dates(day, "cn").iloc[0] == "2017年5月5日"
    assert format_dates(day, "compact").iloc[0] == "20170505"
    assert format_dates(day, "slash").iloc[0] == "2017/5/5"
    assert format_dates(day, "iso").iloc[0] == "2017-05-05"
    assert format_dates(day, "iso").isna().iloc[1]
    assert excel_serials(day[:1])[0] == 42860
    stamp = np.array(["2026-10-31T23:59:58"], dtype="datetime64[s]")
    assert format_times(stamp).iloc[0] == "2026-10-31T23:59:58"
    assert format_times(stamp, " ").iloc[0] == "2026-10-31 23:59:58"


def test_name_dirt_traditional_homophone_and_space() -> None:
    names = pd.Series(["刘丽华", "张伟", "王静", "巴特尔"] * 50, dtype="string")
    rates = DirtyRates(traditional=0.3, homophone=0.3, name_space=0.3)
    out, marks = dirty_names(names, np.random.default_rng(5), rates)
    kinds = kinds_text(marks)
    assert "劉麗華" in set(out[kinds == "traditional"])
    homophones = out[kinds == "homophone"]
    assert len(homophones) and (homophones != names[kinds == "homophone"]).all()
    assert out[kinds == "name_space"].str.contains(" ").all()
    assert (out[kinds == ""] == names[kinds == ""]).all()


def test_dirty_rates_are_documented_and_checked() -> None:
    assert set(DEFAULT_RATES.as_dict()) >= {"missing_id", "bad_check", "duplicate", "excel_serial"}
    assert all(v == 0 for k, v in DirtyRates.clean().as_dict().items() if k != "drift")
    with pytest.raises(ValueError):
        DirtyRates(bad_check=1.5)
    assert len(KINDS) == len(set(KINDS))


def test_no_birth_date_piles_up_on_an_age_bound(people: pd.DataFrame) -> None:
    """Spouse and sibling ages were clipped to [18, 104] and [1, 104]: every clipped spouse was born on the same
    day (18 years before AS_OF), 257 women of one county at a million residents, and at 2.2 million the ID
    numbers' sequence digits ran out (500 per area, date and sex)."""
    per_day = people.groupby("birth_date").size()
    # 20,000 people over about 38,000 days: a day holds a handful; the pile held 4 ‰ of everyone
    assert per_day.max() <= 12, per_day.sort_values().tail(3).to_dict()

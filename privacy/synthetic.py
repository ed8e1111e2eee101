"""Synthetic conformed batches for any contract: the input protect() expects, for tests and the benchmark.

Values are plausible and self-consistent (valid ID numbers under the address-code era rule, sex and
birth date agreeing with the ID) and generated column-wise with numpy, so a million rows take seconds.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from schemas.areas import COUNTIES, code_valid_in
from schemas.contract import Contract, ContractField
from schemas.id_number import check_characters_series

SURNAMES = list(
    "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎"
)
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志红玉梅文斌宇浩鑫晨阳巴特尔乌云其木格")
STRING = pd.StringDtype()


@cache
def _codes_by_year() -> dict[int, tuple[str, ...]]:
    """Hulunbuir address codes in force in each birth year (the era rule ID validity checks)."""
    codes = [c.code for c in COUNTIES] + [c.historical_code for c in COUNTIES if c.historical_code]
    return {y: tuple(c for c in codes if code_valid_in(c, y)) for y in range(1930, 2026)}


def _digits(rng: np.random.Generator, rows: int, width: int) -> pd.Series:
    """Random fixed-width digit strings."""
    raw = rng.integers(0, 10, size=(rows, width), dtype=np.uint8) + ord("0")
    return pd.Series(raw.view(f"S{width}").ravel().astype(str), dtype=STRING)


def _people(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """ID number, name, sex, birth date and phone of ``rows`` distinct synthetic residents."""
    days = rng.integers(0, (pd.Timestamp("2025-12-31") - pd.Timestamp("1930-01-01")).days, rows)
    birth = pd.Timestamp("1930-01-01") + pd.to_timedelta(days, unit="D")
    birth = pd.Series(birth.normalize())
    years = birth.dt.year.to_numpy()
    area = np.empty(rows, dtype="U6")
    for year in np.unique(years):
        pick = years == year
        pool = np.array(_codes_by_year()[int(year)])
        area[pick] = pool[rng.integers(0, len(pool), int(pick.sum()))]
    seq = rng.integers(0, 1000, rows)
    body = (
        pd.Series(area, dtype=STRING)
        + pd.Series(birth.dt.strftime("%Y%m%d"), dtype=STRING)
        + pd.Series(np.char.zfill(seq.astype(str), 3), dtype=STRING)
    )
    ids = body + check_characters_series(body)
    sex = pd.Series(np.where(seq % 2 == 1, "1", "2"), dtype=STRING)
    surname = np.array(SURNAMES)[rng.integers(0, len(SURNAMES), rows)]
    given1 = np.array(GIVEN)[rng.integers(0, len(GIVEN), rows)]
    given2 = np.where(rng.random(rows) < 0.6, np.array(GIVEN)[rng.integers(0, len(GIVEN), rows)], "")
    names = pd.Series(np.char.add(np.char.add(surname, given1), given2), dtype=STRING)
    prefixes = np.array(["138", "139", "150", "151", "186", "187", "131", "155", "177", "199"])
    phone = pd.Series(prefixes[rng.integers(0, len(prefixes), rows)], dtype=STRING) + _digits(rng, rows, 8)
    return pd.DataFrame({"id_number": ids, "name": names, "sex": sex, "birth_date": birth, "phone": phone})


def _dates(rng: np.random.Generator, rows: int, start: str = "2000-01-01", days: int = 9000) -> pd.Series:
    return pd.Series(pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days, rows), unit="D"))


def _community(rng: np.random.Generator, rows: int) -> pd.Series:
    county = np.array([c.code for c in COUNTIES])[rng.integers(0, len(COUNTIES), rows)]
    street = np.char.zfill(rng.integers(1, 8, rows).astype(str), 3)
    community = np.char.zfill(rng.integers(1, 20, rows).astype(str), 3)
    return pd.Series(np.char.add(np.char.add(county, street), community), dtype=STRING)


def _field_values(
    cf: ContractField, rng: np.random.Generator, rows: int, people: pd.DataFrame, community: pd.Series
) -> pd.Series:
    """One column of plausible conformed values for a contract field."""
    unified = cf.unified
    person_cols = {
        "person.id_number": "id_number",
        "person.name": "name",
        "person.sex": "sex",
        "person.birth_date": "birth_date",
        "person.phone": "phone",
    }
    if unified in person_cols:
        return people[person_cols[unified]]
    if cf.type == "community_code":
        return community
    if cf.type == "id_number":
        return _people(rng, rows)["id_number"]
    if cf.type == "name":
        return _people(rng, rows)["name"]
    if cf.type == "phone":
        return people["phone"]
    if cf.type == "address":
        return community.str.slice(0, 6) + "某街道" + _digits(rng, rows, 3) + "号"
    if cf.type == "area_code":
        return pd.Series(
            np.array(["110105", "150702", "152101", "220102", "230103", "440524"])[rng.integers(0, 6, rows)],
            dtype=STRING,
        )
    if cf.type == "code":
        allowed = np.array(cf.allowed or ("",))
        return pd.Series(allowed[rng.integers(0, len(allowed), rows)], dtype=STRING)
    if cf.type == "date":
        return _dates(rng, rows)
    if cf.type == "datetime":
        return pd.Series(
            pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 86400 * 300, rows), unit="s")
        )
    if cf.type == "integer":
        return pd.Series(rng.integers(1, 4, rows), dtype="Int64")
    if cf.type == "decimal":
        return pd.Series(np.round(rng.uniform(300, 1500, rows), 2), dtype="Float64")
    if cf.pattern == "^[0-9]{9}$":
        return _digits(rng, rows, 9)
    if cf.pattern and cf.pattern.startswith("^DB"):
        return "DB" + _digits(rng, rows, 10)
    if cf.pattern and cf.pattern.startswith("^JZ"):
        return "JZ" + _digits(rng, rows, 12)
    if cf.pattern and cf.pattern.startswith("^[0-9]{17}[0-9X][1-7][1-4]"):
        level = pd.Series(rng.integers(1, 8, rows).astype(str), dtype=STRING)
        return people["id_number"] + level + pd.Series(rng.integers(1, 5, rows).astype(str), dtype=STRING)
    return "R" + _digits(rng, rows, 10)


def conformed_batch(contract: Contract, rows: int, seed: int = 0, metadata: bool = True) -> pd.DataFrame:
    """A conformed batch of ``rows`` synthetic records for ``contract`` (hub names, conformed dtypes)."""
    rng = np.random.default_rng(seed)
    people = _people(rng, rows)
    community = _community(rng, rows)
    data = {
        cf.name: _field_values(cf, rng, rows, people, community).reset_index(drop=True)
        for cf in contract.fields
    }
    batch = pd.DataFrame(data)
    if metadata:
        batch["_source_position"] = pd.Series(np.arange(rows), dtype="Int64")
        batch["_batch_id"] = pd.Series(["b000001"] * rows, dtype=STRING)
    return batch

"""The seeded synthetic Hulunbuir population: residents in households, migrants, and their service facts.

Everything is drawn with numpy Generators and built column-wise (no per-person Python), so one
million residents take seconds. ``build_population`` returns the truth persons table;
``build_services`` derives, per source dataset, the clean facts that the simulated department
systems then render (dirty) in their own formats.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.areas import COUNTIES, all_area_codes, code_spans
from schemas.id_number import check_characters_series
from simulators import names as nm

AS_OF = datetime(2026, 11, 1)
AS_OF_DAY = np.datetime64("2026-11-01", "D")
AS_OF_SECOND = np.datetime64("2026-11-01T00:00:00", "s")

# The columns of DIR/truth/persons.parquet, in order (build_population adds working columns after them).
TRUTH_COLUMNS = (
    "person_id",
    "id_number",
    "name",
    "sex",
    "birth_date",
    "ethnicity",
    "county_code",
    "community_code",
    "household_no",
    "is_migrant",
    "origin_area",
    "status",
    "death_date",
    "phone",
)
ETHNICITIES = (
    "汉族",
    "蒙古族",
    "满族",
    "达斡尔族",
    "鄂温克族",
    "回族",
    "俄罗斯族",
    "鄂伦春族",
    "朝鲜族",
    "其他",
)
# Relation to the head as the hukou and 低保 contracts spell it (GB/T 4761: a son is 子, a daughter 女).
RELATIONS = ("户主", "配偶", "子", "女", "父母", "孙子女", "兄弟姐妹", "其他")
_HEAD, _SPOUSE, _CHILD, _PARENT, _GRANDCHILD, _SIBLING, _OTHER = range(7)
_SON, _DAUGHTER = "子", "女"
# The label of each relation code; a child's (_CHILD) is then chosen by sex.
_CODE_LABELS = np.array([r for r in RELATIONS if r != _DAUGHTER], dtype=object)

# Age pyramid at AS_OF in 5-year bands 0-4 … 95-104 (per cent), shaped on Hulunbuir's 2020 census:
# few children, a bulge at 45-59, and 3.6 % aged 80+.
_AGE_EDGES = np.array([*range(0, 100, 5), 105], dtype=float)
_AGE_WEIGHTS = np.array(
    [3.5, 4.3, 4.5, 4.3, 4.6, 5.6, 7.2, 7.0, 6.8, 8.0, 9.4, 9.3, 7.2, 6.3, 4.6, 3.1, 2.0, 1.1, 0.4, 0.1]
)
_AGE_CDF = np.concatenate([[0.0], np.cumsum(_AGE_WEIGHTS) / _AGE_WEIGHTS.sum()])
HOUSEHOLD_SIZE_SHARES = (0.20, 0.33, 0.27, 0.12, 0.05, 0.03)  # sizes 1..6
MIGRANT_SHARE = 0.12
IN_MOVER_SHARE = 0.08  # hukou adults whose ID number carries a birth place outside Hulunbuir


@dataclass(frozen=True)
class CountyProfile:
    """How many people live in a county-level unit, how urban it is, and its ethnic mix."""

    population: float  # relative weight (ten-thousands of residents, roughly)
    urban_share: float
    urban_communities: int
    villages: int
    ethnic_mix: tuple[float, ...]  # weights in ETHNICITIES order


_MIX_DEFAULT = (83.0, 7.0, 3.5, 1.2, 0.4, 0.6, 0.2, 0.1, 0.4, 0.8)
COUNTY_PROFILES: dict[str, CountyProfile] = {
    "150702": CountyProfile(35, 0.95, 62, 4, (78.6, 11.5, 3.5, 1.8, 1.2, 0.8, 0.3, 0.2, 0.5, 0.6)),
    "150703": CountyProfile(9, 0.95, 12, 2, _MIX_DEFAULT),
    "150721": CountyProfile(31, 0.35, 10, 30, (90.0, 2.5, 4.0, 1.5, 0.3, 0.4, 0.1, 0.1, 0.3, 0.8)),
    "150722": CountyProfile(31, 0.35, 10, 32, (79.0, 3.0, 3.0, 12.5, 1.0, 0.4, 0.1, 0.3, 0.3, 0.4)),
    "150723": CountyProfile(27, 0.55, 14, 16, (87.0, 3.0, 4.0, 2.5, 0.8, 0.5, 0.2, 1.2, 0.3, 0.5)),
    "150724": CountyProfile(15, 0.50, 8, 12, (55.0, 24.0, 3.0, 7.0, 9.5, 0.5, 0.2, 0.3, 0.2, 0.3)),
    "150725": CountyProfile(6, 0.40, 4, 10, (56.0, 38.0, 2.0, 1.5, 1.5, 0.3, 0.3, 0.1, 0.1, 0.2)),
    "150726": CountyProfile(4, 0.35, 3, 10, (22.0, 73.0, 1.0, 1.5, 2.0, 0.2, 0.1, 0.1, 0.1, 0.0)),
    "150727": CountyProfile(3.5, 0.40, 4, 9, (17.0, 80.0, 1.0, 0.8, 0.8, 0.2, 0.1, 0.0, 0.1, 0.0)),
    "150781": CountyProfile(16, 0.97, 28, 3, (80.0, 9.0, 3.5, 1.0, 0.5, 1.0, 0.8, 0.1, 1.5, 2.6)),
    "150782": CountyProfile(34, 0.85, 38, 12, _MIX_DEFAULT),
    "150783": CountyProfile(40, 0.55, 30, 30, (86.0, 5.0, 4.0, 2.0, 0.5, 0.6, 0.1, 0.2, 0.4, 1.2)),
    "150784": CountyProfile(8, 0.70, 12, 10, (85.0, 5.0, 3.0, 1.0, 0.5, 0.4, 3.0, 0.3, 0.3, 1.5)),
    "150785": CountyProfile(14, 0.92, 24, 4, (85.0, 5.0, 4.0, 1.5, 1.5, 0.5, 0.5, 0.3, 0.5, 1.2)),
}
_PASTORAL = frozenset({"150724", "150725", "150726", "150727"})  # villages there are 嘎查
# Migrants' home provinces: the north-east and the north China plain send most.
_ORIGIN_PROVINCES = {"23": 0.30, "22": 0.12, "21": 0.12, "13": 0.07, "37": 0.07, "41": 0.05, "14": 0.03}
_ORIGIN_OTHER = 0.24


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """An independent, reproducible generator per (seed, stage): one stage changing never shifts another."""
    return np.random.default_rng([seed, zlib.crc32(stage.encode("utf-8"))])


# --- vectorised text helpers --------------------------------------------------------------------


def as_text(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    """A pandas nullable ("string") Series over an Arrow string array, without a Python loop."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return pd.Series(pd.arrays.ArrowStringArray(array.cast(pa.large_string())))


def pick_text(choices: tuple[str, ...] | list[str] | np.ndarray, index: np.ndarray) -> pd.Series:
    """choices[index] as a string Series (Arrow take, no Python per element)."""
    return as_text(
        pa.array(list(choices), pa.large_string()).take(pa.array(np.asarray(index, dtype=np.int64)))
    )


def text_from_bytes(matrix: np.ndarray) -> pd.Series:
    """Fixed-width ASCII rows (an (n, w) uint8 matrix) as a string Series, without copying per value."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(matrix, dtype=np.uint8).tobytes()
    return as_text(pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)))


def digit_bytes(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as an (n, width) matrix of ASCII digits, zero-padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((np.asarray(values, dtype=np.int64)[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def padded(values: np.ndarray, width: int = 0) -> pd.Series:
    """Integers as decimal text, left-padded with zeros to ``width``."""
    values = np.asarray(values, dtype=np.int64)
    if width and (values.size == 0 or (values.min() >= 0 and values.max() < 10**width)):
        return text_from_bytes(digit_bytes(values, width))
    text = pa.array(values).cast(pa.string())
    if width:
        text = pc.utf8_lpad(text, width=width, padding="0")
    return as_text(text)


def prefixed_ids(prefix: str, n: int, width: int, rng: np.random.Generator, start: int = 1) -> pd.Series:
    """Record numbers ``prefix`` + zero-padded sequence, handed out in random order."""
    return prefix + padded(start + rng.permutation(n), width)


def unique_numbers(n: int, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct integers in [low, high), in random order."""
    return low + rng.choice(high - low, size=n, replace=False)


# --- geography ----------------------------------------------------------------------------------


@cache
def communities() -> pd.DataFrame:
    """The fixed community list: 259 urban communities and the villages, with 12-digit codes.

    Geography does not depend on the seed, so community codes are stable between demo runs.
    Codes: county (6) + street/town (3: 001-099 街道, 101-199 镇, 201-299 苏木) + community (3).
    """
    rng = np.random.default_rng(2260)  # fixed: the map is the same for every seed
    rows: list[dict[str, object]] = []
    for county in COUNTIES:
        profile = COUNTY_PROFILES[county.code]
        streets = rng.permutation(len(nm.STREET_STEMS))
        stems = rng.permutation(len(nm.COMMUNITY_STEMS))
        for i in range(profile.urban_communities):
            street_no, community_no = divmod(i, 6)
            rows.append(
                {
                    "community_code": f"{county.code}{street_no + 1:03d}{community_no + 1:03d}",
                    "county_code": county.code,
                    "county_name": county.name,
                    "street_name": nm.STREET_STEMS[streets[street_no % len(streets)]] + "街道",
                    "community_name": nm.COMMUNITY_STEMS[stems[i % len(stems)]] + "社区",
                    "urban": True,
                }
            )
        towns = rng.permutation(len(nm.TOWN_STEMS))
        pastoral = county.code in _PASTORAL
        village_stems = nm.GACHA_STEMS if pastoral else nm.VILLAGE_STEMS
        vstems = rng.permutation(len(village_stems))
        for i in range(profile.villages):
            town_no, village_no = divmod(i, 8)
            base = 201 if pastoral else 101
            rows.append(
                {
                    "community_code": f"{county.code}{base + town_no:03d}{village_no + 1:03d}",
                    "county_code": county.code,
                    "county_name": county.name,
                    "street_name": nm.TOWN_STEMS[towns[town_no]] + ("苏木" if pastoral else "镇"),
                    "community_name": village_stems[vstems[i % len(vstems)]] + ("嘎查" if pastoral else "村"),
                    "urban": False,
                }
            )
    table = pd.DataFrame(rows)
    # Community sizes vary; a lognormal spread keeps some large and some small.
    table["weight"] = rng.lognormal(0.0, 0.45, len(table))
    return table


def _place_households(
    n: int, counties_weight: dict[str, float], rng: np.random.Generator, urban_share: float | None = None
) -> np.ndarray:
    """Community row numbers for n households: county by population, urban/rural by the county's share
    (or by ``urban_share`` for everyone, as for migrants)."""
    table = communities()
    codes = list(COUNTY_PROFILES)
    weights = np.array([counties_weight[c] for c in codes])
    county_idx = rng.choice(len(codes), size=n, p=weights / weights.sum())
    shares = np.array([COUNTY_PROFILES[c].urban_share for c in codes])
    urban = rng.random(n) < (shares[county_idx] if urban_share is None else urban_share)
    # Communities are grouped by (county, urban) class; draw inside the class by community weight.
    cls_of_row = np.array(
        [codes.index(c) * 2 + int(u) for c, u in zip(table["county_code"], table["urban"], strict=True)]
    )
    order = np.argsort(cls_of_row, kind="stable")
    cum = np.cumsum(table["weight"].to_numpy()[order])
    cls_sorted = cls_of_row[order]
    n_cls = len(codes) * 2
    first = np.searchsorted(cls_sorted, np.arange(n_cls), side="left")
    last = np.searchsorted(cls_sorted, np.arange(n_cls), side="right")
    lo = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    hi = cum[np.maximum(last - 1, 0)]
    cls = county_idx * 2 + urban.astype(int)
    target = lo[cls] + rng.random(n) * (hi[cls] - lo[cls])
    pos = np.minimum(np.searchsorted(cum, target, side="right"), len(cum) - 1)
    return order[pos]


# --- ages and dates -----------------------------------------------------------------------------


def _age_between(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ages drawn from the pyramid restricted to [lo, hi) (inverse CDF, vectorised)."""
    f_lo = np.interp(lo, _AGE_EDGES, _AGE_CDF)
    f_hi = np.interp(np.maximum(hi, lo), _AGE_EDGES, _AGE_CDF)
    u = f_lo + rng.random(len(lo)) * (f_hi - f_lo)
    return np.clip(np.interp(u, _AGE_CDF, _AGE_EDGES), lo, np.maximum(hi, lo))


def _fold_into(age: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Ages kept within [lo, hi] without piling up on the bounds: a value below ``lo`` lands in the year above it
    (by its own distance, no new random draw), one above ``hi`` in the year below. Clipping put every such
    spouse on the same birth date (18 years before AS_OF), and above 500 a day the ID sequence digits run out."""
    below, above = age < lo, age > hi
    out = age.copy()
    out[below] = lo + (lo - age[below]) % 1.0
    out[above] = hi - (age[above] - hi) % 1.0
    return out


def _birth_days(age_years: np.ndarray) -> np.ndarray:
    """Birth dates for exact ages (in years) at AS_OF."""
    days = np.floor(age_years * 365.2425).astype(np.int64) + 1
    return AS_OF_DAY - days.astype("timedelta64[D]")


def years_of(days: np.ndarray) -> np.ndarray:
    """Calendar years of datetime64 values."""
    return days.astype("datetime64[Y]").astype(np.int64) + 1970


def ages_at_as_of(birth: np.ndarray) -> np.ndarray:
    """Completed years of age at AS_OF."""
    b = birth.astype("datetime64[D]")
    years = 2026 - years_of(b)
    month_day = (b - b.astype("datetime64[Y]")).astype(np.int64)
    # AS_OF is 1 November: day-of-year 304 (305 in leap years) marks the birthday threshold.
    leap = (years_of(b) % 4 == 0) & ((years_of(b) % 100 != 0) | (years_of(b) % 400 == 0))
    had_birthday = month_day < np.where(leap, 305, 304)
    return years - (~had_birthday).astype(np.int64)


def random_days_between(
    start: np.ndarray | np.datetime64, end: np.ndarray | np.datetime64, rng: np.random.Generator
) -> np.ndarray:
    """A uniform day in [start, end] (datetime64[D]); end is lifted to start where it falls before."""
    s = np.asarray(start, dtype="datetime64[D]").astype(np.int64)
    e = np.maximum(np.asarray(end, dtype="datetime64[D]").astype(np.int64), s)
    return (s + np.floor(rng.random(len(s)) * (e - s + 1)).astype(np.int64)).astype("datetime64[D]")


def cursor_times(
    n: int, rng: np.random.Generator, not_before: np.ndarray | None = None, days_back: int = 300
) -> np.ndarray:
    """Update times spread over the months before AS_OF, never before an event date, always before AS_OF."""
    back = rng.integers(60, days_back * 86400, size=n)
    times = AS_OF_SECOND - back.astype("timedelta64[s]")
    if not_before is not None:
        floor = not_before.astype("datetime64[s]")
        lifted = floor + rng.integers(3600, 3 * 86400, size=n).astype("timedelta64[s]")
        valid = ~np.isnat(floor)
        times = np.where(valid & (lifted > times), lifted, times)
        times = np.minimum(times, AS_OF_SECOND - np.timedelta64(1, "s"))
    return times


# --- identity numbers ---------------------------------------------------------------------------


def _local_code_chain(county_code: str) -> tuple[str, ...]:
    """Address codes a person born in this county may carry, newest first (the era rule picks one)."""
    county = next(c for c in COUNTIES if c.code == county_code)
    if county_code == "150703":  # 扎赉诺尔区 exists from 2013; before that it was part of 满洲里
        return ("150703", "150781", "152102")
    predecessors = {"152103": "152121", "152104": "152124", "152105": "152126", "152106": "152125"}
    chain = [county.code]
    if county.historical_code:
        chain.append(county.historical_code)
        if county.historical_code in predecessors:
            chain.append(predecessors[county.historical_code])
    return tuple(chain)


_FIRST_YEAR, _LAST_YEAR = 1900, 2026
_YEARS = np.arange(_FIRST_YEAR, _LAST_YEAR + 1)


def _era(code: str) -> tuple[np.ndarray, str]:
    """(validity per birth year 1900..2026, latest name) of an address code, from stdnum's era spans."""
    valid = np.zeros(len(_YEARS), dtype=bool)
    name = ""
    # One span lookup per code is far cheaper than code_valid_in per (code, year); same source, same rule.
    for start, end, span_name in code_spans(code):
        name = span_name
        valid |= (_YEARS >= (start or _FIRST_YEAR)) & (_YEARS <= (end or _LAST_YEAR))
    return valid, name


@cache
def _local_code_table() -> dict[str, np.ndarray]:
    """Per county, the ID address code in force for each birth year (index: year - 1900)."""
    table: dict[str, np.ndarray] = {}
    for county in COUNTIES:
        chain = _local_code_chain(county.code)
        eras = np.array([_era(c)[0] for c in chain])
        # Before 2001 the 1521xx league codes, from 2001 the 1507xx city codes; stdnum's eras agree.
        preferred = eras & np.array(
            [[not (c.startswith("1507") and y < 2001) for y in _YEARS] for c in chain]
        )
        pick = np.where(preferred.any(axis=0), preferred.argmax(axis=0), eras.argmax(axis=0))
        if not eras.any(axis=0).all():
            raise ValueError(f"no address code in force for some birth years in county {county.code}")
        table[county.code] = np.array([int(c) for c in chain], dtype=np.int64)[pick]
    return table


@cache
def _origin_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-Inner-Mongolian county codes, their draw weights, and a (code x year) era-validity matrix."""
    codes, eras = [], []
    for code in all_area_codes():
        if code.startswith("15"):
            continue
        valid, name = _era(code)
        if not name.endswith("市辖区"):  # an urban-district umbrella, not a birth place
            codes.append(code)
            eras.append(valid)
    province = np.array([c[:2] for c in codes])
    weight = np.zeros(len(codes))
    listed = np.isin(province, list(_ORIGIN_PROVINCES))
    for prov, share in _ORIGIN_PROVINCES.items():
        in_prov = province == prov
        weight[in_prov] = share / max(int(in_prov.sum()), 1)
    weight[~listed] = _ORIGIN_OTHER / max(int((~listed).sum()), 1)
    return np.array([int(c) for c in codes], dtype=np.int64), weight, np.array(eras)


def origin_codes(birth_years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Birth-place codes from other provinces, each in force in the person's birth year."""
    codes, weight, valid = _origin_pool()
    out = np.zeros(len(birth_years), dtype=np.int64)
    for year in np.unique(birth_years):
        rows = np.flatnonzero(birth_years == year)
        w = weight * valid[:, int(year) - _FIRST_YEAR]
        out[rows] = codes[rng.choice(len(codes), size=len(rows), p=w / w.sum())]
    return out


def id_numbers(area: np.ndarray, birth: np.ndarray, male: np.ndarray, seed: int) -> pd.Series:
    """GB 11643 numbers: sequence digits unique per (area, birth date), odd for men, check by MOD 11-2."""
    ymd = (
        years_of(birth) * 10000
        + (birth.astype("datetime64[M]").astype(np.int64) % 12 + 1) * 100
        + (birth.astype("datetime64[D]") - birth.astype("datetime64[M]")).astype(np.int64)
        + 1
    )
    key = area.astype(np.int64) * 100_000_000 + ymd
    rank = pd.DataFrame({"k": key, "m": male}).groupby(["k", "m"], sort=False).cumcount().to_numpy()
    # A seeded offset per (area, date) keeps sequence numbers from always starting at 001.
    mix = (key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFF)) >> np.uint64(
        40
    )
    slot = (mix.astype(np.int64) + rank) % 500
    if rank.max(initial=0) >= 500:
        raise ValueError("more than 500 people share an (area, birth date, sex): sequence digits exhausted")
    seq = slot * 2 + male.astype(np.int64)
    body = padded(key * 1000 + seq, 17)
    return body + check_characters_series(body)


# --- people -------------------------------------------------------------------------------------


def _household_structure(
    n_people: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(household index, position in household, household sizes) for n_people hukou residents."""
    shares = np.array(HOUSEHOLD_SIZE_SHARES)
    mean = float((np.arange(1, 7) * shares).sum())
    sizes = rng.choice(np.arange(1, 7), size=int(n_people / mean * 1.1) + 10, p=shares)
    total = np.cumsum(sizes)
    n_house = int(np.searchsorted(total, n_people) + 1)
    sizes = sizes[:n_house].copy()
    sizes[-1] -= int(total[n_house - 1] - n_people)
    household = np.repeat(np.arange(n_house), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return household, np.arange(n_people) - starts, sizes


def _relations_and_ages(
    household: np.ndarray, position: np.ndarray, sizes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relation codes, ages (years) and male flags consistent within each household."""
    n, n_house = len(household), len(sizes)
    single = sizes == 1
    head_age = np.where(
        single,
        _age_between(np.full(n_house, 18.0), np.full(n_house, 105.0), rng),
        _age_between(np.full(n_house, 20.0), np.full(n_house, 92.0), rng),
    )
    head_male = np.where(single, rng.random(n_house) < 0.5, rng.random(n_house) < 0.66)

    rel = np.full(n, _HEAD)
    second = position == 1
    rel[second] = rng.choice(
        [_SPOUSE, _CHILD, _PARENT, _OTHER], size=int(second.sum()), p=[0.80, 0.13, 0.04, 0.03]
    )
    later = position >= 2
    rel[later] = rng.choice(
        [_CHILD, _PARENT, _GRANDCHILD, _SIBLING, _OTHER],
        size=int(later.sum()),
        p=[0.66, 0.12, 0.14, 0.04, 0.04],
    )
    h = head_age[household]
    rel[(rel == _GRANDCHILD) & (h < 40)] = _CHILD  # too young to have grandchildren living with them
    rel[(rel == _PARENT) & (h > 80)] = _OTHER

    ages = np.select(
        [rel == _HEAD, rel == _SPOUSE, rel == _CHILD, rel == _PARENT, rel == _GRANDCHILD, rel == _SIBLING],
        [
            h,
            _fold_into(h + rng.normal(0, 3, n) + np.where(head_male[household], -2.0, 2.0), 18, 104),
            _age_between(np.maximum(0, h - 45), np.maximum(0.5, h - 18), rng),
            _age_between(h + 18, np.minimum(h + 45, 104.9), rng),
            _age_between(np.maximum(0, h - 75), np.maximum(0.5, h - 38), rng),
            _fold_into(h + rng.uniform(-10, 10, n), 1, 104),
        ],
        _age_between(np.zeros(n), np.full(n, 105.0), rng),
    )
    male = np.select(
        [rel == _HEAD, rel == _SPOUSE, rel == _PARENT],
        [head_male[household], ~head_male[household], rng.random(n) < 0.42],
        rng.random(n) < 0.515,
    )
    return rel, ages, male


def _ethnicity(county_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ethnic group codes (ETHNICITIES index) drawn from each county's mix."""
    mixes = np.array([COUNTY_PROFILES[c].ethnic_mix for c in COUNTY_PROFILES])
    cum = np.cumsum(mixes / mixes.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(county_idx))
    return np.minimum((u[:, None] > cum[county_idx]).sum(axis=1), len(ETHNICITIES) - 1)


def _zipf_index(n: int, size: int, rng: np.random.Generator, flatten: float = 6.0) -> np.ndarray:
    """Indexes 0..size-1 with a Zipf-like tail: frequent characters first."""
    w = 1.0 / (np.arange(size) + flatten)
    return rng.choice(size, size=n, p=w / w.sum())


def _names(
    surname_idx: np.ndarray, male: np.ndarray, minority: np.ndarray, rng: np.random.Generator
) -> pd.Series:
    """Full names: surname + 1-2 given characters, or a transliterated minority name used whole."""
    n = len(male)
    surnames = [s for s, _w in nm.SURNAMES]
    males, females = list(nm.GIVEN_MALE), list(nm.GIVEN_FEMALE)
    pool = np.array(males + females, dtype=object)
    first = np.where(male, _zipf_index(n, len(males), rng), len(males) + _zipf_index(n, len(females), rng))
    second = np.where(male, _zipf_index(n, len(males), rng), len(males) + _zipf_index(n, len(females), rng))
    two = rng.random(n) < 0.72
    given = pick_text(pool, first) + pick_text(np.append(pool, ""), np.where(two, second, len(pool)))
    full = pick_text(surnames, surname_idx) + given
    transliterated = minority & (rng.random(n) < 0.55)
    if transliterated.any():
        tm, tf = list(nm.MINORITY_MALE), list(nm.MINORITY_FEMALE)
        idx = np.where(male, rng.integers(0, len(tm), n), len(tm) + rng.integers(0, len(tf), n))
        full = full.where(~transliterated, pick_text(tm + tf, idx))
    return full


def _surname_draw(n: int, rng: np.random.Generator) -> np.ndarray:
    """Surname indexes drawn by the frequency table."""
    w = np.array([w for _s, w in nm.SURNAMES], dtype=float)
    return rng.choice(len(w), size=n, p=w / w.sum())


def _phones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible 11-digit mobile numbers (as integers)."""
    prefixes = np.array(nm.MOBILE_PREFIXES, dtype=np.int64)
    return prefixes[rng.integers(0, len(prefixes), n)] * 100_000_000 + rng.integers(0, 100_000_000, n)


def _addresses(community_row: np.ndarray, rng: np.random.Generator) -> pd.Series:
    """Address text: county + street/town + community/village + building and room (or group and house)."""
    table = communities()
    n = len(community_row)
    place = (table["county_name"] + table["street_name"] + table["community_name"]).to_numpy(dtype=object)
    urban = table["urban"].to_numpy()[community_row]
    building = padded(rng.integers(1, 41, n)) + "号楼" + padded(rng.integers(1, 7, n)) + "单元"
    room = padded(rng.integers(1, 19, n) * 100 + rng.integers(1, 5, n)) + "室"
    rural = padded(rng.integers(1, 13, n)) + "组" + padded(rng.integers(1, 121, n)) + "号"
    tail = (building + room).where(pd.Series(urban), rural)
    return "呼伦贝尔市" + pick_text(place, community_row) + tail


def build_population(residents: int, seed: int) -> pd.DataFrame:
    """The truth persons table: ``residents`` people (hukou households + migrants), columns TRUTH_COLUMNS
    first, then working columns (relation_to_head, address, urban, age, id_area, in_mover,
    registered_on, departed_on, household) used to derive the service facts.
    """
    if residents < 10:
        raise ValueError("residents must be at least 10")
    rng = stage_rng(seed, "population")
    table = communities()
    n_migrants = round(residents * MIGRANT_SHARE)
    n_hukou = residents - n_migrants
    county_weight = {c: p.population for c, p in COUNTY_PROFILES.items()}
    county_codes = np.array(list(COUNTY_PROFILES))

    # Hukou residents in households.
    household, position, sizes = _household_structure(n_hukou, rng)
    rel, ages, male = _relations_and_ages(household, position, sizes, rng)
    house_comm = _place_households(len(sizes), county_weight, rng)
    comm = house_comm[household]
    county_of_comm = pd.Index(county_codes).get_indexer(table["county_code"])
    house_eth = _ethnicity(county_of_comm[house_comm], rng)
    own_eth = _ethnicity(county_of_comm[comm], rng)
    # Spouses marry across groups sometimes; everyone else shares the head's group.
    eth = np.where((rel == _SPOUSE) & (rng.random(n_hukou) < 0.15), own_eth, house_eth[household])
    eth = np.where(rel == _OTHER, own_eth, eth)

    head_sur = _surname_draw(len(sizes), rng)
    spouse_sur = np.full(len(sizes), -1)
    spouse_rows = np.flatnonzero(rel == _SPOUSE)
    spouse_sur[household[spouse_rows]] = _surname_draw(len(spouse_rows), rng)
    head_rows = np.flatnonzero(rel == _HEAD)
    head_is_male = np.zeros(len(sizes), dtype=bool)
    head_is_male[household[head_rows]] = male[head_rows]
    father_sur = np.where(head_is_male | (spouse_sur < 0), head_sur, spouse_sur)
    random_sur = _surname_draw(n_hukou, rng)
    hh = household
    sur = np.select(
        [
            rel == _HEAD,
            rel == _SPOUSE,
            np.isin(rel, [_CHILD, _GRANDCHILD]),
            (rel == _PARENT) & male,
            rel == _SIBLING,
        ],
        [head_sur[hh], spouse_sur[hh], father_sur[hh], head_sur[hh], head_sur[hh]],
        random_sur,
    )
    household_no = padded(unique_numbers(len(sizes), 100_000_000, 1_000_000_000, rng)[household], 9)
    address = _addresses(house_comm, rng).iloc[household].reset_index(drop=True)

    # Migrants: working-age adults (some children), living in urban communities.
    mrng = stage_rng(seed, "migrants")
    m_child = mrng.random(n_migrants) < 0.15
    m_age = np.where(
        m_child,
        _age_between(np.zeros(n_migrants), np.full(n_migrants, 18.0), mrng),
        _age_between(np.full(n_migrants, 18.0), np.full(n_migrants, 60.0), mrng),
    )
    m_male = mrng.random(n_migrants) < 0.55
    m_comm = _place_households(n_migrants, county_weight, mrng, urban_share=0.93)
    m_mix = np.cumsum([92.0, 3.0, 2.0, 0.3, 0.1, 1.0, 0.1, 0.0, 0.5, 1.0])
    m_eth = np.minimum(
        np.searchsorted(m_mix / m_mix[-1], mrng.random(n_migrants), side="right"), len(ETHNICITIES) - 1
    )
    m_address = _addresses(m_comm, mrng)

    # Stack: hukou residents first, migrants after.
    n = residents
    age = np.concatenate([ages, m_age])
    birth = _birth_days(age)
    is_male = np.concatenate([male, m_male])
    migrant = np.concatenate([np.zeros(n_hukou, bool), np.ones(n_migrants, bool)])
    comm_all = np.concatenate([comm, m_comm])
    eth_all = np.concatenate([eth, m_eth])
    minority = np.isin(eth_all, [1, 3, 4, 7])  # Mongol, Daur, Evenki, Oroqen
    sur_all = np.concatenate([sur, _surname_draw(n_migrants, mrng)])
    prng = stage_rng(seed, "people")
    name = _names(sur_all, is_male, minority, prng)

    # ID birth-place: local era code, an in-mover's home county, or the migrant's origin.
    byear = years_of(birth)
    county_of_person = table["county_code"].to_numpy()[comm_all]
    area = np.zeros(n, dtype=np.int64)
    local = _local_code_table()
    for code in COUNTY_PROFILES:
        rows = np.flatnonzero(county_of_person == code)
        area[rows] = local[code][np.clip(byear[rows], 1900, 2026) - 1900]
    in_mover = ~migrant & (age >= 18) & (prng.random(n) < IN_MOVER_SHARE)
    moved = migrant | in_mover
    area[moved] = origin_codes(byear[moved], prng)
    ids = id_numbers(area, birth, is_male, seed)

    # Status: deaths rise steeply with age; moves out are commonest among young adults.
    srng = stage_rng(seed, "status")
    p_death = np.select(
        [age < 40, age < 60, age < 70, age < 80, age < 90], [0.002, 0.008, 0.02, 0.05, 0.12], 0.25
    )
    dead = ~migrant & (srng.random(n) < p_death)
    # Special families (特殊家庭-死亡): an adult only child died before the parents.
    child_rows = np.flatnonzero(np.isin(rel, [_CHILD]))
    kids_per_house = np.bincount(household[child_rows], minlength=len(sizes))
    only_child = np.zeros(n, dtype=bool)
    only_child[child_rows] = kids_per_house[household[child_rows]] == 1
    dead |= only_child & (age >= 18) & (age < 45) & (srng.random(n) < 0.015)
    moved_out = ~migrant & ~dead & (srng.random(n) < np.where((age >= 18) & (age < 40), 0.05, 0.01))
    death_date = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    death_date[dead] = random_days_between(
        np.maximum(birth[dead] + np.timedelta64(1, "D"), AS_OF_DAY - np.timedelta64(6 * 365, "D")),
        AS_OF_DAY - np.timedelta64(1, "D"),
        srng,
    )

    # Migrant registration and departure.
    registered = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    departed = registered.copy()
    m_rows = np.flatnonzero(migrant)
    registered[m_rows] = random_days_between(
        np.maximum(birth[m_rows] + np.timedelta64(30, "D"), AS_OF_DAY - np.timedelta64(8 * 365, "D")),
        AS_OF_DAY - np.timedelta64(1, "D"),
        srng,
    )
    gone = m_rows[srng.random(len(m_rows)) < 0.12]
    departed[gone] = random_days_between(
        registered[gone] + np.timedelta64(1, "D"), AS_OF_DAY - np.timedelta64(1, "D"), srng
    )
    status = np.where(dead, "死亡", np.where(moved_out | ~np.isnat(departed), "迁出", "正常"))

    # Phones: children under 14 seldom have one; many of the very old neither.
    phone_ok = srng.random(n) >= np.select([age < 14, age >= 80], [0.92, 0.40], 0.06)
    phone = padded(_phones(n, srng)).where(pd.Series(phone_ok))

    rel_text = np.where(rel == _CHILD, np.where(male, _SON, _DAUGHTER), _CODE_LABELS[rel])
    people = pd.DataFrame(
        {
            "person_id": "P" + padded(np.arange(1, n + 1), 9),
            "id_number": ids,
            "name": name,
            "sex": pd.Series(np.where(is_male, "1", "2"), dtype="string"),
            "birth_date": birth.astype("datetime64[s]"),
            "ethnicity": pick_text(ETHNICITIES, eth_all),
            "county_code": pd.Series(county_of_person, dtype="string"),
            "community_code": pick_text(table["community_code"].tolist(), comm_all),
            "household_no": pd.concat(
                [household_no, pd.Series(pd.NA, index=range(n_migrants), dtype="string")], ignore_index=True
            ),
            "is_migrant": migrant,
            "origin_area": padded(area).where(pd.Series(migrant)),
            "status": pd.Series(status, dtype="string"),
            "death_date": death_date.astype("datetime64[s]"),
            "phone": phone,
            "relation_to_head": pd.Series(
                np.concatenate([rel_text, np.full(n_migrants, None)]), dtype="string"
            ),
            "address": pd.concat([address, m_address], ignore_index=True),
            "urban": table["urban"].to_numpy()[comm_all],
            "age": ages_at_as_of(birth),
            "id_area": padded(area),
            "in_mover": in_mover,
            "registered_on": registered.astype("datetime64[s]"),
            "departed_on": departed.astype("datetime64[s]"),
            "household": np.concatenate([household, np.full(n_migrants, -1)]),
        }
    )
    return people


# --- service facts ------------------------------------------------------------------------------

DISABILITY_CATEGORIES = ("视力残疾", "听力残疾", "言语残疾", "肢体残疾", "智力残疾", "精神残疾", "多重残疾")
_DISABILITY_CATEGORY_SHARES = (0.13, 0.15, 0.02, 0.48, 0.07, 0.08, 0.07)
_DISABILITY_LEVEL_SHARES = (0.12, 0.28, 0.30, 0.30)
CORRECTION_TYPES = ("管制", "缓刑", "假释", "暂予监外执行")
_CORRECTION_TYPE_SHARES = (0.05, 0.82, 0.07, 0.06)

# Service shares of all residents (documented in docs/simulators.md).
DIBAO_SHARE = 0.08
TEKUN_SHARE = 0.002
ORPHAN_SHARE = 0.0004
DISABILITY_SHARE = 0.035
CORRECTION_SHARE = 0.001


def _weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct positions drawn with probability proportional to weight (Efraimidis-Spirakis keys)."""
    k = min(k, int((weights > 0).sum()))
    keys = np.where(weights > 0, np.log(rng.random(len(weights))) / np.maximum(weights, 1e-12), -np.inf)
    return np.sort(np.argpartition(-keys, k - 1)[:k]) if k > 0 else np.array([], dtype=np.int64)


def _day(text: str) -> np.datetime64:
    """A calendar day constant."""
    return np.datetime64(text, "D")


def _days(values: pd.Series | np.ndarray) -> np.ndarray:
    """A column as datetime64[D] (days)."""
    return np.asarray(values, dtype="datetime64[D]")


def _money(values: np.ndarray) -> np.ndarray:
    """Round to fen (2 decimals)."""
    return np.round(values, 2)


def _after_years(days: np.ndarray, years: float) -> np.ndarray:
    """The day ``years`` after each date (average year length)."""
    return days + np.timedelta64(int(years * 365.2425), "D")


def _by_as_of(days: np.ndarray) -> np.ndarray:
    """Dates no later than the day before AS_OF (an event cannot be recorded in the future)."""
    return np.minimum(days, AS_OF_DAY - np.timedelta64(1, "D"))


def _employers(n: int, rng: np.random.Generator) -> list[str]:
    """A pool of plausible local employer names."""
    firms = {
        p + s + k
        for p, s, k in zip(
            rng.choice(nm.EMPLOYER_PLACES, n),
            rng.choice(nm.EMPLOYER_STEMS, n),
            rng.choice(nm.EMPLOYER_KINDS, n),
            strict=True,
        )
    }
    public = {c.name + kind for c in COUNTIES for kind in nm.EMPLOYER_PUBLIC}
    return sorted(firms) + sorted(public)


def build_services(people: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Clean service facts per source dataset, keyed by dataset name.

    Each frame has ``person`` (row position in ``people``; for births, the mother), ``record_id``,
    the contract's hub-named fields that are not person attributes, and ``updated_at`` where the
    source has a cursor. Dates are datetime64; amounts are floats; codes are canonical.
    """
    rng = stage_rng(seed, "services")
    n = len(people)
    age = people["age"].to_numpy()
    migrant = people["is_migrant"].to_numpy()
    status = people["status"].to_numpy(dtype=object)
    present = status == "正常"
    alive = status != "死亡"
    hukou = ~migrant
    birth = _days(people["birth_date"])
    male = people["sex"].to_numpy(dtype=object) == "1"
    urban = people["urban"].to_numpy()
    facts: dict[str, pd.DataFrame] = {}

    # 公安 户籍: every hukou person, whatever the status.
    rows = np.flatnonzero(hukou)
    facts["gongan.hukou"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("RK", len(rows), 10, rng),
            "updated_at": cursor_times(len(rows), rng, _days(people["death_date"])[rows]),
        }
    )

    # 公安 流动人口: every migrant; about 70 % hold a residence permit (居住证).
    rows = np.flatnonzero(migrant)
    permit = rng.random(len(rows)) < 0.70
    permit_no = (
        "JZ"
        + people["county_code"].iloc[rows].reset_index(drop=True)
        + padded(unique_numbers(len(rows), 0, 1_000_000, rng), 6)
    ).where(pd.Series(permit))
    departed = _days(people["departed_on"])[rows]
    registered = _days(people["registered_on"])[rows]
    facts["gongan.migrant"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("LD", len(rows), 10, rng),
            "permit_no": permit_no,
            "updated_at": cursor_times(len(rows), rng, np.where(np.isnat(departed), registered, departed)),
        }
    )

    # 人社 就业失业登记: a third of working-age people who live here.
    p_reg = np.where(urban, 0.40, 0.22) * ((age >= 16) & (age < 65) & alive)
    rows = np.flatnonzero(rng.random(n) < p_reg)
    unemployed = rng.random(len(rows)) < 0.13
    registered = random_days_between(
        np.maximum(_after_years(birth[rows], 16), AS_OF_DAY - np.timedelta64(10 * 365, "D")),
        AS_OF_DAY - np.timedelta64(1, "D"),
        rng,
    )
    pool = _employers(max(50, min(5000, n // 40)), rng)
    employer = pick_text(pool, _zipf_index(len(rows), len(pool), rng, flatten=20.0)).where(
        pd.Series(~unemployed)
    )
    facts["renshe.employment"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("JY", len(rows), 10, rng),
            "registration_type": np.where(unemployed, "失业", "就业"),
            "registered_on": registered.astype("datetime64[s]"),
            "employer": employer,
            "updated_at": cursor_times(len(rows), rng, registered),
        }
    )

    # 人社 参保: medical and pension participation of adults; ended for the dead and the departed.
    worker = rng.random(n) < np.where(urban, 0.58, 0.12)
    adult = age >= 16
    retired = adult & (age >= np.where(male, 60, 55))
    parts = []
    for kind, share in (("养老", 0.72), ("医疗", 0.90)):
        covered = adult & ((present & (rng.random(n) < share)) | (~present & (rng.random(n) < 0.6)))
        rows = np.flatnonzero(covered)
        w = worker[rows]
        itype = np.where(w, f"城镇职工{kind}保险", f"城乡居民{kind}保险")
        u = rng.random(len(rows))
        if kind == "养老":
            state = np.where(
                retired[rows],
                np.where(u < 0.9, "领取待遇", "参保缴费"),
                np.where(u < 0.88, "参保缴费", "暂停缴费"),
            )
        else:
            state = np.where(u < 0.92, "参保缴费", "暂停缴费")
        state = np.where(present[rows], state, "终止参保")
        # Urban workers' schemes are older (1995/1999) than the residents' schemes (2009/2007).
        worker_start, resident_start = (
            ("1995-01-01", "2009-10-01") if kind == "养老" else ("1999-01-01", "2007-07-01")
        )
        scheme_start = np.where(w, _day(worker_start), _day(resident_start))
        start = random_days_between(
            np.maximum(_after_years(birth[rows], 16), scheme_start), AS_OF_DAY - np.timedelta64(1, "D"), rng
        )
        benefit = np.where(
            w,
            rng.normal(3300, 700, len(rows)).clip(1800, 6500),
            rng.normal(260, 70, len(rows)).clip(150, 600),
        )
        ended = _days(people["death_date"])[rows]
        parts.append(
            pd.DataFrame(
                {
                    "person": rows,
                    "insurance_type": itype,
                    "status": state,
                    "start_date": start.astype("datetime64[s]"),
                    "monthly_benefit": np.where(state == "领取待遇", _money(benefit), np.nan),
                    "updated_at": cursor_times(len(rows), rng, np.where(np.isnat(ended), start, ended)),
                }
            )
        )
    insurance = pd.concat(parts, ignore_index=True)
    insurance.insert(1, "record_id", prefixed_ids("CB", len(insurance), 10, rng))
    facts["renshe.insurance"] = insurance

    # 司法 社区矫正: about 0.1 %, mostly men of working age.
    eligible = present & (age >= 18) & (age <= 65)
    rows = _weighted_sample(eligible * np.where(male, 4.5, 1.0), max(1, round(CORRECTION_SHARE * n)), rng)
    start = random_days_between(
        np.full(len(rows), AS_OF_DAY - np.timedelta64(3 * 365, "D")),
        np.full(len(rows), AS_OF_DAY - np.timedelta64(1, "D")),
        rng,
    )
    facts["sifa.corrections"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("SQJZ", len(rows), 8, rng),
            "correction_type": rng.choice(CORRECTION_TYPES, len(rows), p=_CORRECTION_TYPE_SHARES),
            "start_date": start.astype("datetime64[s]"),
            "end_date": (start + rng.integers(180, 5 * 365, len(rows)).astype("timedelta64[D]")).astype(
                "datetime64[s]"
            ),
            "updated_at": cursor_times(len(rows), rng, start),
        }
    )

    # 民政 低保: whole households, rural and elderly-headed ones likelier, until ~8 % of residents.
    household = people["household"].to_numpy()
    hrows = np.flatnonzero(hukou & present)
    members = np.bincount(household[hrows], minlength=household.max() + 1)
    n_house = len(members)
    head_rows = np.flatnonzero(people["relation_to_head"].to_numpy(dtype=object, na_value="") == "户主")
    house_urban = np.zeros(n_house, dtype=bool)
    house_urban[household[head_rows]] = urban[head_rows]
    house_old = np.zeros(n_house, dtype=bool)
    house_old[household[head_rows]] = age[head_rows] >= 60
    weight = (members > 0) * np.where(house_urban, 1.0, 2.2) * np.where(house_old, 1.4, 1.0)
    keys = np.where(weight > 0, np.log(rng.random(n_house)) / np.maximum(weight, 1e-12), -np.inf)
    order = np.argsort(-keys, kind="stable")
    take = int(np.searchsorted(np.cumsum(members[order]), DIBAO_SHARE * n)) + 1
    chosen = np.zeros(n_house, dtype=bool)
    chosen[order[:take]] = True
    dibao_no = np.full(n_house, -1, dtype=np.int64)
    dibao_no[chosen] = unique_numbers(int(chosen.sum()), 0, 10_000_000_000, rng)
    per_head = np.where(house_urban, rng.uniform(560, 830, n_house), rng.uniform(380, 560, n_house))
    house_start = random_days_between(
        np.full(n_house, _day("2012-01-01")), np.full(n_house, AS_OF_DAY - np.timedelta64(1, "D")), rng
    )
    house_stopped = rng.random(n_house) < 0.10
    rows = hrows[chosen[household[hrows]]]
    h = household[rows]
    in_dibao = np.zeros(n, dtype=bool)
    in_dibao[rows] = True
    facts["minzheng.dibao"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("DBM", len(rows), 9, rng),
            "household_id": "DB" + padded(dibao_no[h], 10),
            "relation_to_head": people["relation_to_head"].iloc[rows].to_numpy(),
            "area_type": np.where(house_urban[h], "城市", "农村"),
            "monthly_amount": _money(per_head[h]),
            "start_date": house_start[h].astype("datetime64[s]"),
            "status": np.where(house_stopped[h], "停保", "在保"),
            "updated_at": cursor_times(len(rows), rng, house_start[h]),
        }
    )

    # 民政 救助: 特困 (old people alone, not on 低保), 高龄津贴 (80+), 孤儿 (children without parents).
    single = np.zeros(n, dtype=bool)
    single[hrows] = members[household[hrows]] == 1
    base = hukou & present & ~in_dibao
    tekun = _weighted_sample(
        base * np.where(single, 5.0, 0.3) * np.where(age >= 60, 3.0, 0.2), max(1, round(TEKUN_SHARE * n)), rng
    )
    elderly = np.flatnonzero(hukou & present & (age >= 80) & (rng.random(n) < 0.92))
    rel = people["relation_to_head"].to_numpy(dtype=object, na_value="")
    orphan_w = (hukou & present & (age < 18)) * np.where(np.isin(rel, ["孙子女", "其他"]), 5.0, 0.5)
    orphans = _weighted_sample(orphan_w, max(1, round(ORPHAN_SHARE * n)), rng)
    rows = np.concatenate([tekun, elderly, orphans])
    category = np.repeat(["特困供养", "高龄津贴", "孤儿"], [len(tekun), len(elderly), len(orphans)])
    r_age = age[rows]
    amount = np.select(
        [category == "特困供养", category == "孤儿", r_age >= 100, r_age >= 90],
        [
            np.where(urban[rows], 1050.0, 760.0) + rng.integers(0, 8, len(rows)) * 10.0,
            rng.integers(130, 161, len(rows)) * 10.0,
            np.full(len(rows), 600.0),
            np.full(len(rows), 300.0),
        ],
        100.0,
    )
    earliest = _by_as_of(
        np.select(
            [category == "高龄津贴", category == "孤儿"],
            [
                np.maximum(_after_years(birth[rows], 80), _day("2013-01-01")),
                np.maximum(birth[rows] + np.timedelta64(30, "D"), _day("2010-01-01")),
            ],
            np.maximum(_after_years(birth[rows], 16), _day("2014-01-01")),
        )
    )
    start = random_days_between(
        earliest, np.minimum(earliest + np.timedelta64(120, "D"), AS_OF_DAY - np.timedelta64(1, "D")), rng
    )
    start = np.where(
        category == "高龄津贴",
        start,
        random_days_between(earliest, np.full(len(rows), AS_OF_DAY - np.timedelta64(1, "D")), rng),
    )
    facts["minzheng.relief"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": prefixed_ids("MZ", len(rows), 10, rng),
            "category": category,
            "monthly_amount": _money(amount),
            "start_date": start.astype("datetime64[s]"),
            "updated_at": cursor_times(len(rows), rng, start),
        }
    )

    # 残联 残疾人证: ~3.5 %, rising with age; certificate number = ID number + category + level digits.
    rows = _weighted_sample((hukou & present) * (0.2 + (age / 40.0) ** 2), round(DISABILITY_SHARE * n), rng)
    cat = rng.choice(len(DISABILITY_CATEGORIES), len(rows), p=_DISABILITY_CATEGORY_SHARES)
    level = rng.choice(4, len(rows), p=_DISABILITY_LEVEL_SHARES) + 1
    earliest = _by_as_of(np.maximum(birth[rows] + np.timedelta64(365, "D"), _day("2008-01-01")))
    issued = random_days_between(earliest, np.full(len(rows), AS_OF_DAY - np.timedelta64(1, "D")), rng)
    # Renewals of second-generation cards keep the recent months busy (the monthly exports show them).
    recent = rng.random(len(rows)) < 0.12
    issued[recent] = random_days_between(
        np.maximum(earliest[recent], AS_OF_DAY - np.timedelta64(61, "D")),
        np.full(int(recent.sum()), AS_OF_DAY - np.timedelta64(1, "D")),
        rng,
    )
    ids = people["id_number"].iloc[rows].reset_index(drop=True)
    facts["canlian.disability"] = pd.DataFrame(
        {
            "person": rows,
            "record_id": ids + padded(cat + 1) + padded(level),
            "disability_category": pick_text(DISABILITY_CATEGORIES, cat),
            "disability_level": padded(level),
            "issued_on": issued.astype("datetime64[s]"),
        }
    )
    disabled_level = np.zeros(n, dtype=np.int64)
    disabled_level[rows] = level

    facts["jisheng.births"] = _births(people, household, disabled_level, rng)
    return facts


def _births(
    people: pd.DataFrame, household: np.ndarray, disabled_level: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Births of the last year with their mothers, plus only-child and special family registrations."""
    rel = people["relation_to_head"].to_numpy(dtype=object, na_value="")
    male = people["sex"].to_numpy(dtype=object) == "1"
    age = people["age"].to_numpy()
    birth = _days(people["birth_date"])
    status = people["status"].to_numpy(dtype=object)
    n_house = household.max() + 1
    head = np.full(n_house, -1)
    spouse = np.full(n_house, -1)
    heads = np.flatnonzero(rel == "户主")
    spouses = np.flatnonzero(rel == "配偶")
    head[household[heads]] = heads
    spouse[household[spouses]] = spouses
    # The mother is the female head or the head's wife; the father the male one.
    mother = np.where(
        (head >= 0) & ~male[head], head, np.where((spouse >= 0) & ~male[np.maximum(spouse, 0)], spouse, -1)
    )
    father = np.where(
        (head >= 0) & male[head], head, np.where((spouse >= 0) & male[np.maximum(spouse, 0)], spouse, -1)
    )
    is_child = np.isin(rel, ["子", "女"])
    kids = np.bincount(household[is_child], minlength=n_house)

    child = np.flatnonzero(is_child)
    mom = mother[household[child]]
    mom_age_at_birth = (birth[child] - birth[np.maximum(mom, 0)]).astype(np.int64) / 365.2425
    has_mother = (
        (mom >= 0)
        & (mom_age_at_birth >= 16)
        & (mom_age_at_birth <= 50)
        & (status[np.maximum(mom, 0)] != "死亡")
    )
    # Children of the last year, by birth order among the household's children.
    baby = has_mother & (birth[child] > AS_OF_DAY - np.timedelta64(365, "D"))
    # Only children of mothers aged 35-75: a third are registered as 独生子女家庭; every special one is.
    mom_age = age[np.maximum(mom, 0)]
    only = has_mother & ~baby & (kids[household[child]] == 1) & (mom_age >= 35) & (mom_age <= 75)
    special = only & (
        (status[child] == "死亡") | ((disabled_level[child] >= 1) & (disabled_level[child] <= 3))
    )
    registered_only = only & ((rng.random(len(child)) < 0.35) | special)
    pick = baby | registered_only
    c = child[pick]
    m = mom[pick]
    fam = np.where(
        baby[pick],
        "普通家庭",
        np.where(
            status[c] == "死亡",
            "特殊家庭-死亡",
            np.where((disabled_level[c] >= 1) & (disabled_level[c] <= 3), "特殊家庭-伤残", "独生子女家庭"),
        ),
    )
    order = np.where(baby[pick], np.maximum(kids[household[c]], 1), 1)
    child_id = people["id_number"].iloc[c].reset_index(drop=True)
    # A newborn's number is often not issued yet when the birth is registered.
    child_id = child_id.where(pd.Series(~baby[pick] | (rng.random(len(c)) < 0.75)))
    dad = father[household[c]]
    dad_phone = people["phone"].iloc[np.maximum(dad, 0)].reset_index(drop=True).where(pd.Series(dad >= 0))
    return pd.DataFrame(
        {
            "person": m,
            "record_id": prefixed_ids("CS", len(c), 10, rng),
            "child_name": people["name"].iloc[c].reset_index(drop=True),
            "child_id_number": child_id,
            "child_sex": people["sex"].iloc[c].reset_index(drop=True),
            "child_birth_date": birth[c].astype("datetime64[s]"),
            "birth_order": order,
            "family_type": fam,
            "community_code": people["community_code"].iloc[c].reset_index(drop=True),
            "father_phone": dad_phone,
        }
    )

"""Cross-department conflicts (家庭经济状况核对、应退则退): planted at small rates, then found from the facts.

Five checks compare the departments' records of one person. ``plant_conflicts`` adds a few cases of
each kind to the service facts at documented shares of the residents (its own seeded stage, so no
other stage shifts). ``find_conflicts`` then derives the ground truth from the records as they are,
planted and natural cases alike; ``generate`` writes it to ``truth/conflicts.parquet`` and
``advance`` rewrites it after changing the sources. The rules, per true person:

1. ``benefit_deceased_or_moved``: a 低保 member record 在保, or any 救助 record, of a person whose hukou
   record says 死亡 or 迁出; or a pension record 领取待遇 of a person whose hukou record says 死亡.
2. ``dibao_with_income``: a 低保 member record 在保 of a person with an employment record 就业, or an
   insurance record 领取待遇 paying more than ``LOCAL_INCOME_LINE`` a month.
3. ``tekun_with_supporter``: a 特困供养 record of a person whose hukou household (same household
   number) has another member 正常 aged 18-59 by birth year in ``CONFLICT_YEAR``.
4. ``migrant_two_communities``: two migrant registrations of one person, neither with a departure
   date, in two different communities (one row per pair: subject = the smaller record id).
5. ``birth_mother_not_in_hukou``: a birth record whose mother has neither a hukou nor a migrant record.

A row names the subject record (dataset, record_id) and the evidence record; one row per (subject,
evidence) pair, so a second record of the same person (dirt ``duplicate``) gives its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulators.population import (
    AS_OF,
    AS_OF_DAY,
    _addresses,
    _after_years,
    _day,
    _days,
    _money,
    _names,
    _phones,
    _surname_draw,
    communities,
    cursor_times,
    padded,
    random_days_between,
    stage_rng,
    years_of,
)

LOCAL_INCOME_LINE = 1000  # yuan a month: the local 低保 line; the checks' YAML carries the same number
CONFLICT_YEAR = AS_OF.year  # "the current calendar year" of rule 3's age test: the simulated now (2026)
SUPPORTER_AGES = (18, 59)  # inclusive, current year minus birth year

RULES = (
    "benefit_deceased_or_moved",
    "dibao_with_income",
    "tekun_with_supporter",
    "migrant_two_communities",
    "birth_mother_not_in_hukou",
)
CONFLICT_COLUMNS = ("rule_id", "person_id", "dataset", "record_id", "evidence_dataset", "evidence_record_id")

# Planted cases as shares of all residents; each kind gets at least one case when a candidate exists.
PLANT_SHARES: dict[str, float] = {
    "dibao_after_exit": 0.0003,  # a dead or moved-out member still 在保 on the household's 低保 roll
    "allowance_after_death": 0.0002,  # 高龄津贴 still paid to someone who died
    "pension_after_death": 0.0002,  # a pension still 领取待遇 after the pensioner's death
    "tekun_with_supporter": 0.0002,  # 特困供养 for an old person who lives with a working-age relative
    "migrant_two_communities": 0.0005,  # re-registered in another community, the old one never closed
    "unregistered_mother": 0.0005,  # a migrant mother never registered: births record, no 公安 record
}

# The fields each rule reads, by hub name (besides record_id and person_id).
FIELDS: dict[str, tuple[str, ...]] = {
    "gongan.hukou": ("status", "household_no"),
    "gongan.migrant": ("community_code", "departed_on"),
    "renshe.employment": ("registration_type",),
    "renshe.insurance": ("status", "monthly_benefit"),
    "minzheng.dibao": ("status",),
    "minzheng.relief": ("category",),
    "jisheng.births": (),
}

_ID_FORMATS = {  # record number prefix and digits, as build_services hands them out
    "gongan.migrant": ("LD", 10),
    "minzheng.dibao": ("DBM", 9),
    "minzheng.relief": ("MZ", 10),
    "jisheng.births": ("CS", 10),
}


# --- planting -------------------------------------------------------------------------------------------


def _more_ids(dataset: str, existing: pd.Series, k: int) -> pd.Series:
    """k new record numbers after the highest existing one (same prefix and width)."""
    prefix, width = _ID_FORMATS[dataset]
    numbers = pd.to_numeric(existing.astype("string").str.slice(len(prefix)), errors="coerce")
    start = int(numbers.max()) + 1 if numbers.notna().any() else 1
    return prefix + padded(start + np.arange(k), width)


def _plant_count(share: float, residents: int, candidates: int) -> int:
    """How many cases a share of the residents means: at least one if any candidate, at most all."""
    return 0 if share <= 0 or candidates == 0 else min(candidates, max(1, round(share * residents)))


def _append(frame: pd.DataFrame, *extra: pd.DataFrame) -> pd.DataFrame:
    """The frame with the non-empty extra rows after it (the frame itself when there are none)."""
    more = [e for e in extra if len(e)]
    return pd.concat([frame, *more], ignore_index=True) if more else frame


def plant_conflicts(
    people: pd.DataFrame,
    facts: Mapping[str, pd.DataFrame],
    seed: int,
    shares: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """The service facts with a few cases of each conflict added (PLANT_SHARES); the input is not changed.

    Adds 低保 and 高龄津贴 records of dead or moved-out people, turns a few ended pensions of the dead
    back to 领取待遇, adds 特困供养 for old people living with a working-age relative, registers some
    migrants a second time in another community, and replaces some migrant mothers' registration by a
    births record only. Draws come from the stage ``conflicts``, so no other stage shifts.
    """
    shares = {**PLANT_SHARES, **(shares or {})}
    rng = stage_rng(seed, "conflicts")
    out = dict(facts)
    n = len(people)
    status = people["status"].to_numpy(dtype=object)
    migrant = people["is_migrant"].to_numpy()
    hukou = ~migrant
    age = people["age"].to_numpy()
    birth = _days(people["birth_date"])
    died = _days(people["death_date"])
    household = people["household"].to_numpy()
    house = np.where(household >= 0, household, 0)
    n_house = int(household.max()) + 1 if n else 1
    urban = people["urban"].to_numpy()
    female = people["sex"].to_numpy(dtype=object) == "2"
    last_day = AS_OF_DAY - np.timedelta64(1, "D")

    def pick(share_key: str, candidates: np.ndarray) -> np.ndarray:
        k = _plant_count(shares[share_key], n, len(candidates))
        return np.sort(rng.choice(candidates, k, replace=False)) if k else np.array([], dtype=np.int64)

    # 1a. A member who died or moved out stays 在保 on the household's 低保 roll.
    dibao = facts["minzheng.dibao"]
    active = np.flatnonzero(dibao["status"].to_numpy(dtype=object) == "在保")
    template = np.full(n_house, -1)
    template[household[dibao["person"].to_numpy()[active]]] = active
    start = _days(dibao["start_date"])
    t = np.where(hukou, template[house], -1)
    exited = hukou & np.isin(status, ["死亡", "迁出"]) & (t >= 0)
    exited &= np.isnat(died) | (died > start[np.maximum(t, 0)])
    chosen = pick("dibao_after_exit", np.flatnonzero(exited))
    stale = dibao.iloc[t[chosen]].copy()
    stale["person"] = chosen
    stale["record_id"] = _more_ids("minzheng.dibao", dibao["record_id"], len(chosen)).to_numpy()
    stale["relation_to_head"] = people["relation_to_head"].iloc[chosen].to_numpy()
    stale["updated_at"] = cursor_times(len(chosen), rng, start[t[chosen]])
    out["minzheng.dibao"] = _append(dibao, stale)

    # 1b. 高龄津贴 keeps being paid after the recipient's death.
    relief = facts["minzheng.relief"]
    in_relief = np.zeros(n, dtype=bool)
    in_relief[relief["person"].to_numpy()] = True
    earliest = np.maximum(_after_years(birth, 80), _day("2013-01-01"))
    dead_old = hukou & (status == "死亡") & ~in_relief & ~np.isnat(died)
    dead_old &= earliest < died - np.timedelta64(30, "D")
    chosen = pick("allowance_after_death", np.flatnonzero(dead_old))
    since = random_days_between(earliest[chosen], died[chosen] - np.timedelta64(30, "D"), rng)
    old_age = age[chosen]
    allowance = pd.DataFrame(
        {
            "person": chosen,
            "record_id": _more_ids("minzheng.relief", relief["record_id"], len(chosen)).to_numpy(),
            "category": "高龄津贴",
            "monthly_amount": np.select([old_age >= 100, old_age >= 90], [600.0, 300.0], 100.0),
            "start_date": since.astype("datetime64[s]"),
            "updated_at": cursor_times(len(chosen), rng, since),
        }
    )

    # 1c. A pension goes on being paid (领取待遇) after the pensioner's death.
    insurance = facts["renshe.insurance"].copy()
    who = insurance["person"].to_numpy()
    age_at_death = (died[who] - birth[who]).astype("timedelta64[D]").astype(np.float64) / 365.2425
    ended = (
        (insurance["status"].to_numpy(dtype=object) == "终止参保")
        & insurance["insurance_type"].astype("string").str.contains("养老").to_numpy(dtype=bool)
        & (status[who] == "死亡")
        & (np.nan_to_num(age_at_death, nan=0.0) >= 60)
    )
    chosen = pick("pension_after_death", np.flatnonzero(ended))
    worker = insurance["insurance_type"].iloc[chosen].astype("string").str.startswith("城镇职工").to_numpy(bool)
    pension = np.where(
        worker,
        rng.normal(3300, 700, len(chosen)).clip(1800, 6500),
        rng.normal(260, 70, len(chosen)).clip(150, 600),
    )
    column = insurance.columns.get_loc("status")
    insurance.iloc[chosen, column] = "领取待遇"
    benefit = insurance["monthly_benefit"].to_numpy(dtype=float, copy=True)
    benefit[chosen] = _money(pension)
    insurance["monthly_benefit"] = benefit
    out["renshe.insurance"] = insurance

    # 3. 特困供养 for an old person who lives with a working-age relative (正常, aged 18-59 by birth year).
    years = CONFLICT_YEAR - years_of(birth)
    supporter = hukou & (status == "正常") & (years >= SUPPORTER_AGES[0]) & (years <= SUPPORTER_AGES[1])
    supporters = np.bincount(household[supporter], minlength=n_house)
    in_dibao = np.zeros(n, dtype=bool)
    in_dibao[out["minzheng.dibao"]["person"].to_numpy()] = True
    lives_with = hukou & (supporters[house] - supporter.astype(np.int64) > 0)
    old = lives_with & (status == "正常") & (age >= 60) & ~in_dibao & ~in_relief
    chosen = pick("tekun_with_supporter", np.flatnonzero(old))
    earliest = np.maximum(_after_years(birth[chosen], 16), _day("2014-01-01"))
    since = random_days_between(earliest, np.full(len(chosen), last_day), rng)
    tekun = pd.DataFrame(
        {
            "person": chosen,
            "record_id": _more_ids("minzheng.relief", relief["record_id"], len(allowance) + len(chosen))
            .iloc[len(allowance) :]
            .to_numpy(),
            "category": "特困供养",
            "monthly_amount": _money(np.where(urban[chosen], 1050.0, 760.0) + rng.integers(0, 8, len(chosen)) * 10.0),
            "start_date": since.astype("datetime64[s]"),
            "updated_at": cursor_times(len(chosen), rng, since),
        }
    )
    out["minzheng.relief"] = _append(relief, allowance, tekun)

    # 5. A migrant mother who never registered with 公安 gives birth here: a births record only.
    settled = migrant & (status == "正常")
    mothers = pick("unregistered_mother", np.flatnonzero(settled & female & (age >= 20) & (age <= 45)))
    births = facts["jisheng.births"]
    k = len(mothers)
    boy = rng.random(k) < 0.515
    born = AS_OF_DAY - rng.integers(1, 365, k).astype("timedelta64[D]")
    phone = padded(_phones(k, rng)).where(pd.Series(rng.random(k) < 0.8))
    unregistered = pd.DataFrame(
        {
            "person": mothers,
            "record_id": _more_ids("jisheng.births", births["record_id"], k).to_numpy(),
            "child_name": _names(_surname_draw(k, rng), boy, np.zeros(k, dtype=bool), rng).to_numpy(),
            "child_id_number": pd.Series(pd.NA, index=range(k), dtype="string"),
            "child_sex": np.where(boy, "1", "2"),
            "child_birth_date": born.astype("datetime64[s]"),
            "birth_order": rng.choice([1, 2], k, p=[0.7, 0.3]),
            "family_type": "普通家庭",
            "community_code": people["community_code"].iloc[mothers].to_numpy(),
            "father_phone": phone.to_numpy(),
        }
    )
    out["jisheng.births"] = _append(births, unregistered)

    # 4. A migrant registers again in another community; the first registration is never closed.
    movers = pick("migrant_two_communities", np.flatnonzero(settled & ~np.isin(np.arange(n), mothers)))
    table = communities()
    codes = table["community_code"].to_numpy(dtype=object)
    code_row = pd.Index(codes).get_indexer(people["community_code"].iloc[movers].to_numpy(dtype=object))
    target = np.empty(len(movers), dtype=np.int64)
    for i, row in enumerate(code_row):
        same_county = table["urban"].to_numpy() & (table["county_code"].to_numpy() == table["county_code"].iat[row])
        options = np.flatnonzero(same_county & (np.arange(len(table)) != row))
        if not len(options):
            options = np.flatnonzero(table["urban"].to_numpy() & (np.arange(len(table)) != row))
        target[i] = options[rng.integers(0, len(options))]
    migrants = facts["gongan.migrant"]
    migrants = migrants[~np.isin(migrants["person"].to_numpy(), mothers)].reset_index(drop=True)
    mp = migrants["person"].to_numpy()
    migrants = migrants.assign(
        community_code=people["community_code"].iloc[mp].to_numpy(),
        address=people["address"].iloc[mp].to_numpy(),
        registered_on=people["registered_on"].iloc[mp].to_numpy(),
    )
    first = _days(people["registered_on"])[movers]
    again = random_days_between(np.minimum(first + np.timedelta64(30, "D"), last_day), last_day, rng)
    second = pd.DataFrame(
        {
            "person": movers,
            "record_id": _more_ids("gongan.migrant", facts["gongan.migrant"]["record_id"], len(movers)).to_numpy(),
            "permit_no": pd.Series(pd.NA, index=range(len(movers)), dtype="string"),
            "updated_at": cursor_times(len(movers), rng, again),
            "community_code": codes[target],
            "address": _addresses(target, rng).to_numpy(),
            "registered_on": again.astype("datetime64[s]"),
        }
    )
    out["gongan.migrant"] = _append(migrants, second)
    return out


# --- finding --------------------------------------------------------------------------------------------


def _text(values: pd.Series) -> np.ndarray:
    """Values as stripped text in a plain object array; missing becomes ''."""
    return values.astype("string").str.strip().fillna("").to_numpy(dtype=object)


def _plain(frame: pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame:
    """record_id, person_id and the fields as stripped object text (fast to hash and join); no unknown person."""
    plain = pd.DataFrame({c: _text(frame[c]) for c in ("record_id", "person_id", *fields)})
    return plain[plain["person_id"].to_numpy() != ""].reset_index(drop=True)


def _pairs(
    rule: str,
    subject: pd.DataFrame,
    dataset: str,
    evidence: pd.DataFrame,
    evidence_dataset: str,
    on: str = "person_id",
) -> pd.DataFrame:
    """One row per (subject record, evidence record) joined on ``on``."""
    left = subject[list(dict.fromkeys(["person_id", "record_id", on]))]
    right = evidence[list(dict.fromkeys([on, "record_id", "person_id"]))]
    joined = left.merge(right, on=on, suffixes=("", "_evidence"))
    if on != "person_id":  # another member of the household, not the subject's own record
        joined = joined[joined["person_id"].to_numpy() != joined["person_id_evidence"].to_numpy()]
    return pd.DataFrame(
        {
            "rule_id": rule,
            "person_id": joined["person_id"].to_numpy(),
            "dataset": dataset,
            "record_id": joined["record_id"].to_numpy(),
            "evidence_dataset": evidence_dataset,
            "evidence_record_id": joined["record_id_evidence"].to_numpy(),
        }
    )


def find_conflicts(
    sources: Mapping[str, pd.DataFrame], birth_years: pd.Series, year: int = CONFLICT_YEAR
) -> pd.DataFrame:
    """The five rules' cases (CONFLICT_COLUMNS, all strings) in the given records.

    ``sources[dataset]`` has ``record_id``, ``person_id`` (the true person) and FIELDS[dataset] by hub
    name, as text or values; a departure date counts as set when not empty. ``birth_years`` maps
    person_id to the birth year (rule 3's age is ``year`` minus it). Sorted, no duplicate rows.
    """
    frames = {d: _plain(sources[d], fields) for d, fields in FIELDS.items()}
    hukou, migrant = frames["gongan.hukou"], frames["gongan.migrant"]
    employment, insurance = frames["renshe.employment"], frames["renshe.insurance"]
    dibao, relief, births = frames["minzheng.dibao"], frames["minzheng.relief"], frames["jisheng.births"]

    # 1 and 2: benefits against hukou status, employment and pensions of the same person.
    h_status = hukou["status"].to_numpy()
    on_dibao = dibao[dibao["status"].to_numpy() == "在保"]
    paid = insurance[insurance["status"].to_numpy() == "领取待遇"]
    gone = hukou[(h_status == "死亡") | (h_status == "迁出")]
    dead = hukou[h_status == "死亡"]
    working = employment[employment["registration_type"].to_numpy() == "就业"]
    benefit = pd.to_numeric(pd.Series(paid["monthly_benefit"].to_numpy()), errors="coerce").to_numpy()
    rich = paid[np.nan_to_num(benefit, nan=0.0) > LOCAL_INCOME_LINE]

    # 3: a 特困 recipient's hukou household holds another member 正常 of working age.
    tekun = relief[relief["category"].to_numpy() == "特困供养"]
    houses = hukou[hukou["household_no"].to_numpy() != ""]
    tekun_house = tekun.merge(houses[["person_id", "household_no"]].drop_duplicates(), on="person_id")
    present = houses[houses["status"].to_numpy() == "正常"]
    years = pd.Series(birth_years.to_numpy(), index=pd.Index(birth_years.index.astype(str), dtype=object))
    age = year - pd.to_numeric(present["person_id"].map(years), errors="coerce").to_numpy(dtype=float)
    supporters = present[(age >= SUPPORTER_AGES[0]) & (age <= SUPPORTER_AGES[1])]

    # 4: two open migrant registrations of one person in two communities (subject: the smaller id).
    staying = migrant[migrant["departed_on"].to_numpy() == ""]
    twice = staying.merge(staying, on="person_id", suffixes=("", "_other"))
    twice = twice[
        (twice["record_id"].to_numpy() < twice["record_id_other"].to_numpy())
        & (twice["community_code"].to_numpy() != twice["community_code_other"].to_numpy())
    ]

    # 5: a birth whose mother has no 公安 record at all.
    registered = pa.chunked_array(
        [pa.array(hukou["person_id"].to_numpy(), pa.string()), pa.array(migrant["person_id"].to_numpy(), pa.string())]
    )
    known = pc.is_in(pa.array(births["person_id"].to_numpy(), pa.string()), value_set=pc.unique(registered))
    orphaned = births[~known.to_numpy(zero_copy_only=False)]

    parts = [
        _pairs(RULES[0], on_dibao, "minzheng.dibao", gone, "gongan.hukou"),
        _pairs(RULES[0], relief, "minzheng.relief", gone, "gongan.hukou"),
        _pairs(RULES[0], paid, "renshe.insurance", dead, "gongan.hukou"),
        _pairs(RULES[1], on_dibao, "minzheng.dibao", working, "renshe.employment"),
        _pairs(RULES[1], on_dibao, "minzheng.dibao", rich, "renshe.insurance"),
        _pairs(RULES[2], tekun_house, "minzheng.relief", supporters, "gongan.hukou", on="household_no"),
        pd.DataFrame(
            {
                "rule_id": RULES[3],
                "person_id": twice["person_id"].to_numpy(),
                "dataset": "gongan.migrant",
                "record_id": twice["record_id"].to_numpy(),
                "evidence_dataset": "gongan.migrant",
                "evidence_record_id": twice["record_id_other"].to_numpy(),
            }
        ),
        pd.DataFrame(
            {
                "rule_id": RULES[4],
                "person_id": orphaned["person_id"].to_numpy(),
                "dataset": "jisheng.births",
                "record_id": orphaned["record_id"].to_numpy(),
                "evidence_dataset": "",
                "evidence_record_id": "",
            }
        ),
    ]
    found = pd.concat(parts, ignore_index=True).loc[:, list(CONFLICT_COLUMNS)].drop_duplicates()
    found["_rank"] = found["rule_id"].map({r: i for i, r in enumerate(RULES)})
    found = found.sort_values(["_rank", "dataset", "record_id", "evidence_dataset", "evidence_record_id"])
    out = found.drop(columns="_rank").reset_index(drop=True).astype("string")
    for column in ("evidence_dataset", "evidence_record_id"):  # rule 5 has no evidence
        out[column] = out[column].mask(out[column] == "")
    return out


def conflict_counts(conflicts: pd.DataFrame) -> dict[str, int]:
    """Rows per rule, every rule listed (zero when none)."""
    counts = conflicts["rule_id"].value_counts()
    return {rule: int(counts.get(rule, 0)) for rule in RULES}

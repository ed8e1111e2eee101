"""Planted cross-department conflicts: truth/conflicts.parquet exists, covers every rule, and is true of the sources."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from simulators.advance import advance, rewrite_conflicts
from simulators.conflicts import (
    CONFLICT_COLUMNS,
    CONFLICT_YEAR,
    LOCAL_INCOME_LINE,
    PLANT_SHARES,
    RULES,
    conflict_counts,
    plant_conflicts,
)
from simulators.generate import generate
from simulators.population import build_population, build_services

RESIDENTS = 3000
KEY = ["rule_id", "person_id", "dataset", "record_id", "evidence_dataset", "evidence_record_id"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conflicts") / "sim"
    generate(out, residents=RESIDENTS, seed=3)
    return out


def _sources(sim: Path) -> dict[str, pd.DataFrame]:
    """The source tables as written (text), each with the true person of every record."""
    frames = {
        d: pd.read_parquet(sim / "http" / f"{d}.parquet")
        for d in ("gongan.hukou", "gongan.migrant", "renshe.employment", "renshe.insurance")
    }
    with sqlite3.connect(sim / "sql" / "minzheng.sqlite") as conn:
        frames["minzheng.dibao"] = pd.read_sql("SELECT * FROM dibao_member", conn)
        frames["minzheng.relief"] = pd.read_sql("SELECT * FROM relief_recipient", conn)
    records = pd.read_parquet(sim / "truth" / "records.parquet")
    frames["jisheng.births"] = records[records["dataset"] == "jisheng.births"][["record_id"]]
    keys = {"gongan.hukou": "rkid", "gongan.migrant": "djid", "renshe.employment": "recordNo"}
    keys |= {"renshe.insurance": "insuredId", "minzheng.dibao": "member_id", "minzheng.relief": "record_id"}
    out = {}
    for dataset, frame in frames.items():
        person = records[records["dataset"] == dataset].set_index("record_id")["person_id"]
        frame = frame.astype("string").rename(columns={keys.get(dataset, "record_id"): "rid"})
        out[dataset] = frame.assign(person_id=frame["rid"].map(person))
    return out


def _expected(src: dict[str, pd.DataFrame], persons: pd.DataFrame) -> set[tuple]:
    """Every case, computed naively and independently from the source text (the five rules as specified)."""
    hk, mig, emp = src["gongan.hukou"], src["gongan.migrant"], src["renshe.employment"]
    ins, dibao, relief = src["renshe.insurance"], src["minzheng.dibao"], src["minzheng.relief"]
    rows: set[tuple] = set()

    def pairs(rule: str, subj: pd.DataFrame, ds: str, ev: pd.DataFrame, eds: str) -> None:
        for r in subj.merge(ev, on="person_id", suffixes=("", "_e")).itertuples():
            rows.add((rule, r.person_id, ds, r.rid, eds, r.rid_e))

    on_dibao = dibao[dibao["status"] == "在保"]
    paid = ins[ins["status"] == "领取待遇"]
    pairs(RULES[0], on_dibao, "minzheng.dibao", hk[hk["zt"].isin(["死亡", "迁出"])], "gongan.hukou")
    pairs(RULES[0], relief, "minzheng.relief", hk[hk["zt"].isin(["死亡", "迁出"])], "gongan.hukou")
    pairs(RULES[0], paid, "renshe.insurance", hk[hk["zt"] == "死亡"], "gongan.hukou")
    pairs(RULES[1], on_dibao, "minzheng.dibao", emp[emp["regType"] == "就业"], "renshe.employment")
    rich = paid[paid["monthlyBenefit"].astype(float) > LOCAL_INCOME_LINE]
    pairs(RULES[1], on_dibao, "minzheng.dibao", rich, "renshe.insurance")
    year = persons.set_index("person_id")["birth_date"].map(lambda d: d.year)
    for t in relief[relief["category"] == "特困供养"].itertuples():
        houses = set(hk.loc[hk["person_id"] == t.person_id, "hh"].dropna())
        for m in hk[hk["hh"].isin(houses)].itertuples():
            if m.person_id != t.person_id and m.zt == "正常" and 18 <= CONFLICT_YEAR - year[m.person_id] <= 59:
                rows.add((RULES[2], t.person_id, "minzheng.relief", t.rid, "gongan.hukou", m.rid))
    open_ = mig[mig["lkrq"].fillna("").str.strip() == ""]
    for a in open_.merge(open_, on="person_id", suffixes=("", "_e")).itertuples():
        if a.rid < a.rid_e and a.sqdm != a.sqdm_e:
            rows.add((RULES[3], a.person_id, "gongan.migrant", a.rid, "gongan.migrant", a.rid_e))
    registered = set(hk["person_id"]) | set(mig["person_id"])
    for b in src["jisheng.births"].itertuples():
        if b.person_id not in registered:
            rows.add((RULES[4], b.person_id, "jisheng.births", b.rid, None, None))
    return rows


def _truth_rows(truth: pd.DataFrame) -> set[tuple]:
    return {tuple(None if pd.isna(v) else v for v in row) for row in truth[KEY].itertuples(index=False)}


def test_conflicts_file_has_the_columns_and_every_rule(sim: Path) -> None:
    truth = pd.read_parquet(sim / "truth" / "conflicts.parquet")
    assert list(truth.columns) == list(CONFLICT_COLUMNS)
    assert all(str(t) == "string" for t in truth.dtypes)
    assert not truth.duplicated().any()
    counts = conflict_counts(truth)
    assert all(counts[rule] >= 1 for rule in RULES), counts
    # Rule 1 is planted from three sides: 低保 and 高龄津贴 records of the dead or gone, pensions of the dead.
    first = truth[truth["rule_id"] == RULES[0]]
    assert set(first["dataset"]) == {"minzheng.dibao", "minzheng.relief", "renshe.insurance"}
    births = truth[truth["rule_id"] == RULES[4]]
    assert births["evidence_dataset"].isna().all() and births["evidence_record_id"].isna().all()
    assert truth.loc[truth["rule_id"] != RULES[4], "evidence_record_id"].notna().all()
    manifest = json.loads((sim / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["residents"] == RESIDENTS


def test_every_truth_row_holds_in_the_sources_and_no_case_is_missing(sim: Path) -> None:
    truth = pd.read_parquet(sim / "truth" / "conflicts.parquet")
    persons = pd.read_parquet(sim / "truth" / "persons.parquet")
    src = _sources(sim)
    expected = _expected(src, persons)
    assert _truth_rows(truth) == expected
    # Spot the facts behind the rules directly, too.
    hk = src["gongan.hukou"].set_index("rid")
    first = truth[(truth["rule_id"] == RULES[0])]
    assert hk.loc[first["evidence_record_id"], "zt"].isin(["死亡", "迁出"]).all()
    mothers = truth.loc[truth["rule_id"] == RULES[4], "person_id"]
    ids = set(persons.set_index("person_id").loc[mothers, "id_number"])
    assert not ids & (set(src["gongan.hukou"]["gmsfhm"].dropna()) | set(src["gongan.migrant"]["gmsfhm"].dropna()))


def test_the_sources_give_the_same_truth_as_the_clean_facts(sim: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sim"
    shutil.copytree(sim, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["datasets"]["minzheng.dibao"]["location"]["url"] = f"sqlite:///{copy / 'sql' / 'minzheng.sqlite'}"
    manifest["datasets"]["minzheng.relief"]["location"]["url"] = f"sqlite:///{copy / 'sql' / 'minzheng.sqlite'}"
    before = pd.read_parquet(copy / "truth" / "conflicts.parquet")
    assert rewrite_conflicts(copy, manifest) == conflict_counts(before)
    assert pd.read_parquet(copy / "truth" / "conflicts.parquet").equals(before)


def test_advance_rewrites_the_conflicts_so_they_stay_true(sim: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sim"
    shutil.copytree(sim, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    for info in manifest["datasets"].values():
        if info["system"] == "sql":
            info["location"]["url"] = info["location"]["url"].replace(str(sim.resolve()), str(copy.resolve()))
    (copy / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    before = pd.read_parquet(copy / "truth" / "conflicts.parquet")
    summary = advance(copy, changed=0.2, late=0.0, seed=4)
    after = pd.read_parquet(copy / "truth" / "conflicts.parquet")
    assert summary.conflicts == conflict_counts(after)
    assert not after.equals(before)  # 20 % of the records changed: some 迁出 and 停保 moved the cases
    assert _truth_rows(after) == _expected(_sources(copy), pd.read_parquet(copy / "truth" / "persons.parquet"))


def test_planting_has_its_own_stage_and_leaves_other_datasets_alone() -> None:
    people = build_population(2000, 9)
    facts = build_services(people, 9)
    planted = plant_conflicts(people, facts, 9)
    again = plant_conflicts(people, facts, 9)
    for dataset in facts:
        assert planted[dataset].equals(again[dataset]), dataset  # deterministic per seed
    for dataset in ("gongan.hukou", "renshe.employment", "sifa.corrections", "canlian.disability"):
        assert planted[dataset] is facts[dataset]
    assert len(planted["renshe.insurance"]) == len(facts["renshe.insurance"])  # a few statuses flipped
    for dataset in ("minzheng.dibao", "minzheng.relief", "jisheng.births"):
        n = len(facts[dataset])
        assert planted[dataset].iloc[:n].equals(facts[dataset]), dataset  # only rows added at the end
        assert len(planted[dataset]) > n
    assert len(build_services(people, 9)["minzheng.dibao"]) == len(facts["minzheng.dibao"])  # input unchanged
    none = plant_conflicts(people, facts, 9, shares=dict.fromkeys(PLANT_SHARES, 0.0))
    for dataset in ("minzheng.dibao", "minzheng.relief", "jisheng.births", "renshe.insurance"):
        assert none[dataset].equals(facts[dataset]), dataset
    assert len(none["gongan.migrant"]) == len(facts["gongan.migrant"])


def test_small_populations_still_get_a_case_of_each_planted_kind(tmp_path: Path) -> None:
    summary = generate(tmp_path / "small", residents=1000, seed=2)
    assert all(summary.conflicts[rule] >= 1 for rule in RULES), summary.conflicts

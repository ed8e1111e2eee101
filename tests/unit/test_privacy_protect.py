"""protect(): no plaintext ID, name or phone leaves it (data, linkage fields or logs); deny by default."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from privacy.keyring import Keyring
from privacy.operators import decrypt_series, encrypt_value, token_series, token_value
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_ID_DOMAIN, LINKAGE_QI_DOMAIN, load_policy, parse_policy
from privacy.protect import LINKAGE_COLUMNS, ProtectedBatch, protect
from privacy.report import scan_values
from privacy.synthetic import conformed_batch
from schemas.contract import Contract, get_contract, packaged_contracts
from simulators.population import build_population

PERSON_COLUMNS = (
    "id_number",
    "name",
    "sex",
    "birth_date",
    "phone",
    "ethnicity",
    "household_no",
    "relation_to_head",
    "address",
    "community_code",
    "status",
    "death_date",
    "origin_area",
    "registered_on",
    "departed_on",
)


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    """Synthetic residents from the shared population generator (ground truth for the leak scan)."""
    return build_population(3000, seed=11)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


def population_batch(contract: Contract, people: pd.DataFrame) -> pd.DataFrame:
    """A conformed batch for ``contract`` whose personal columns come from the generated population."""
    batch = conformed_batch(contract, len(people), seed=3)
    for name in PERSON_COLUMNS:
        if name in batch.columns and name in people.columns:
            batch[name] = people[name].to_numpy()
            if batch[name].dtype == object:
                batch[name] = batch[name].astype("string")
    return batch


def _text_cells(frame: pd.DataFrame) -> list[str]:
    cells: list[str] = []
    for col in frame.columns:
        cells += [str(v) for v in frame[col].dropna().unique()]
    return cells


def assert_no_plaintext(frames: list[pd.DataFrame], logs: str, people: pd.DataFrame) -> None:
    """No ID number, phone or name of any resident appears anywhere: exact values, substrings or patterns."""
    ids, phones = set(people["id_number"].dropna()), set(people["phone"].dropna())
    names = {n for n in people["name"].dropna() if len(n) >= 2}
    texts = [c for f in frames for c in _text_cells(f)] + logs.splitlines()
    distinct = pd.DataFrame({"value": pd.Series(texts, dtype="string"), "n": 1})
    assert scan_values(distinct, names) == {}
    runs = {m for t in texts for m in re.findall(r"[0-9]{6,}[0-9Xx]*", t)}
    assert not runs & ids and not runs & phones
    assert not {i[:17] for i in ids} & {r[:17] for r in runs if len(r) >= 17}
    assert not any(name in logs for name in names)


def test_protected_population_carries_no_plaintext(
    people: pd.DataFrame, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = load_policy()
    frames = []
    for dataset, contract in packaged_contracts().items():
        source = people[people["is_migrant"]] if dataset == "gongan.migrant" else people
        batch = population_batch(contract, source.reset_index(drop=True))
        # schema drift carrying personal data: must be dropped and reported, never passed on
        batch["spouse_id_number"] = batch["id_number"].to_numpy()[::-1]
        batch["contact_name"] = people["name"].to_numpy()[: len(batch)]
        # a file read without its header line: a value became a column name
        batch[people["id_number"].iloc[-1]] = "1"
        result = protect(batch, contract, policy, keyring)
        dropped = {d.column for d in result.dropped}
        assert {"spouse_id_number", "contact_name", f"<column {len(batch.columns) - 1}>"} <= dropped, dataset
        assert not any(people["id_number"].iloc[-1] in d.column for d in result.dropped)
        assert not set(result.data.columns) & {"spouse_id_number", "contact_name"}
        assert list(result.linkage.columns) == list(LINKAGE_COLUMNS)
        frames += [result.data.astype("string"), result.linkage]
    assert_no_plaintext(frames, caplog.text, people)


def test_leak_check_would_catch_a_plaintext_value(people: pd.DataFrame) -> None:
    """The scan itself is not blind: one plaintext ID, phone or name is found."""
    for column in ("id_number", "phone", "name"):
        frame = pd.DataFrame({"x": people[column].iloc[:1].astype("string")})
        with pytest.raises(AssertionError):
            assert_no_plaintext([frame], "", people)


def test_treatments_and_metadata(people: pd.DataFrame, keyring: Keyring) -> None:
    contract = get_contract("gongan.hukou")
    batch = population_batch(contract, people.iloc[:200].reset_index(drop=True))
    batch["_record_key"] = pd.Series(np.arange(200), dtype="Int64")
    result = protect(batch, contract, load_policy(), keyring)
    data = result.data
    assert data["_record_key"].equals(batch["_record_key"]) and data["_batch_id"].equals(batch["_batch_id"])
    first = batch.iloc[0]
    assert data["id_number"][0] == token_value(first["id_number"], keyring, "person")
    assert data["id_number_masked"][0] == first["id_number"][:4] + "*" * 10 + first["id_number"][-2:]
    assert data["name"][0] == encrypt_value(first["name"], keyring, "person_name")
    assert data["name_masked"][0] == first["name"][0] + "*" * (len(first["name"]) - 1)
    assert data["phone_masked"][0] == first["phone"][:3] + "****" + first["phone"][-4:]
    assert data["birth_year"].dtype == "Int64" and data["birth_year"][0] == first["birth_date"].year
    assert "birth_date" not in data.columns
    assert data["address"].tolist() == batch["community_code"].where(batch["address"].notna()).tolist()
    assert data["household_no"].str.fullmatch(r"[0-9]{9}").all()
    assert (data["household_no"] != batch["household_no"]).mean() > 0.99
    # members of one household keep one pseudonymous household number
    assert data.groupby(batch["household_no"])["household_no"].nunique().max() == 1
    assert data["sex"].equals(batch["sex"]) and data["status"].equals(batch["status"])
    assert result.columns["birth_date"] == ("birth_year",)
    assert result.columns["id_number"] == ("id_number", "id_number_masked")
    assert result.key_versions == {
        "person": 1,
        "person_name": 1,
        "contact": 1,
        "household": 1,
        LINKAGE_DOMAIN: 1,
        LINKAGE_QI_DOMAIN: 1,
        LINKAGE_ID_DOMAIN: 1,
    }
    manifest = result.manifest()
    assert manifest["rows"] == 200 and manifest["key_versions"]["person"] == 1


def test_linkage_fields(people: pd.DataFrame, keyring: Keyring) -> None:
    contract = get_contract("minzheng.dibao")
    batch = population_batch(contract, people.iloc[:50].reset_index(drop=True))
    good = batch["id_number"][0]
    batch.loc[1, "id_number"] = good[:17] + ("0" if good[17] != "0" else "1")  # wrong check character
    batch.loc[2, "id_number"] = pd.NA
    result = protect(batch, contract, load_policy(), keyring)
    link = result.linkage
    assert link.index.equals(batch.index)
    assert link["link_token"][0] == token_value(good, keyring, LINKAGE_DOMAIN)
    assert link["link_token"][0] != result.data["id_number"][0], "linkage and published tokens differ"
    assert pd.isna(link["link_token"][1]) and pd.isna(link["link_token"][2])
    names = decrypt_series(link["qi_name"], keyring, LINKAGE_QI_DOMAIN)
    assert names.tolist() == batch["name"].tolist()
    births = decrypt_series(link["qi_birth_date"], keyring, LINKAGE_QI_DOMAIN)
    assert births[0] == good[6:10] + "-" + good[10:12] + "-" + good[12:14]
    sexes = decrypt_series(link["qi_sex"], keyring, LINKAGE_QI_DOMAIN)
    assert sexes[0] == ("1" if int(good[16]) % 2 else "2")
    county = decrypt_series(link["qi_county"], keyring, LINKAGE_QI_DOMAIN)
    assert county[0] == good[:6]
    assert county[2] == batch["community_code"][2][:6], "no ID: the county comes from the community code"
    assert link["id_status"][:3].tolist() == ["valid", "invalid", "missing"]
    assert decrypt_series(link["id_ciphertext"], keyring, LINKAGE_ID_DOMAIN)[0] == good
    assert pd.isna(link["id_ciphertext"][1]) and pd.isna(link["id_ciphertext"][2])
    community = decrypt_series(link["qi_community"], keyring, LINKAGE_QI_DOMAIN)
    assert community.tolist() == batch["community_code"].tolist()
    household = token_value("dibao:" + batch["household_id"][0], keyring, LINKAGE_DOMAIN)
    assert link["household_token"][0] == household


def test_an_adjacent_swap_that_gives_a_valid_number_is_offered_as_a_token(
    people: pd.DataFrame, keyring: Keyring
) -> None:
    contract = get_contract("gongan.hukou")
    batch = population_batch(contract, people.iloc[:40].reset_index(drop=True))
    swapped = []
    for i, good in enumerate(batch["id_number"][:40]):
        k = next((k for k in range(16) if good[k] != good[k + 1]), None)
        if k is None:
            continue
        bad = good[:k] + good[k + 1] + good[k] + good[k + 2 :]
        if len(swapped) < 5 and bad[:17] != good[:17]:
            batch.loc[i, "id_number"] = bad
            swapped.append((i, good))
    result = protect(batch, contract, load_policy(), keyring)
    link = result.linkage
    for i, good in swapped:
        assert pd.isna(link["link_token"][i]) and link["id_status"][i] == "invalid"
        assert token_value(good, keyring, LINKAGE_DOMAIN) in str(link["swap_tokens"][i]).split(";")
    untouched = [i for i in range(40) if i not in dict(swapped)]
    assert link["swap_tokens"][untouched].isna().all()
    with_phone = batch["phone"].notna()
    assert (link["phone_token"][with_phone] == token_series(batch["phone"][with_phone], keyring, LINKAGE_DOMAIN)).all()


def test_a_certificate_number_places_a_record_whose_own_id_is_missing(
    people: pd.DataFrame, keyring: Keyring
) -> None:
    contract = get_contract("canlian.disability")
    batch = conformed_batch(contract, 10, seed=3)
    certificate = batch["record_id"][0]
    batch.loc[0, "id_number"] = pd.NA
    link = protect(batch, contract, load_policy(), keyring).linkage
    assert link["id_status"][0] == "certificate"
    assert link["link_token"][0] == token_value(certificate[:18], keyring, LINKAGE_DOMAIN)


def test_births_take_the_mothers_birth_date_and_sex_from_her_id(keyring: Keyring) -> None:
    contract = get_contract("jisheng.births")
    batch = conformed_batch(contract, 20, seed=5)
    result = protect(batch, contract, load_policy(), keyring)
    mother = batch["id_number"][0]
    births = decrypt_series(result.linkage["qi_birth_date"], keyring, LINKAGE_QI_DOMAIN)
    sexes = decrypt_series(result.linkage["qi_sex"], keyring, LINKAGE_QI_DOMAIN)
    assert births[0] == f"{mother[6:10]}-{mother[10:12]}-{mother[12:14]}"
    assert sexes[0] == ("1" if int(mother[16]) % 2 else "2")
    assert "child_birth_year" in result.data.columns


def test_fields_without_a_treatment_are_dropped_and_reported(keyring: Keyring) -> None:
    raw = {
        "format": 1,
        "version": 9,
        "linkage": {"purpose": "关联", "legal_basis": "PIPL 第13条"},
        "fields": {
            "person.id_number": {"treatment": "token(person)", "purpose": "查询", "legal_basis": "PIPL"}
        },
    }
    contract = get_contract("renshe.insurance")
    batch = conformed_batch(contract, 30, seed=2)
    result = protect(batch, contract, parse_policy(raw, "narrow.yaml"), keyring)
    kept = [c for c in result.data.columns if not c.startswith("_")]
    assert kept == ["id_number"]
    reasons = dict(result.dropped)
    assert reasons["name"] == "no treatment in the privacy policy"
    assert set(reasons) == set(contract.names) - {"id_number"}


def test_rotation_changes_versions_and_old_ciphertexts_still_decrypt(keyring: Keyring) -> None:
    contract = get_contract("sifa.corrections")
    batch = conformed_batch(contract, 40, seed=9)
    before = protect(batch, contract, load_policy(), keyring)
    rotated = keyring.rotated()
    after = protect(batch, contract, load_policy(), rotated)
    assert set(after.key_versions.values()) == {2}
    assert after.data["id_number"].str.startswith("t2.").all()
    assert after.data["correction_type"].str.startswith("e2.").all()
    old = decrypt_series(before.data["correction_type"], rotated, "corrections")
    assert old.tolist() == batch["correction_type"].tolist()


def test_duplicate_index_and_empty_batches(keyring: Keyring) -> None:
    contract = get_contract("canlian.disability")
    batch = conformed_batch(contract, 10, seed=1)
    batch.index = [0] * 10
    result: ProtectedBatch = protect(batch, contract, load_policy(), keyring)
    assert len(result.data) == 10 and len(result.linkage) == 10
    empty = protect(batch.iloc[:0], contract, load_policy(), keyring)
    assert empty.data.empty and empty.linkage.empty and "record_id" in empty.data.columns

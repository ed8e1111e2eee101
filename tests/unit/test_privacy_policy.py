"""Policy as code: the shipped policy covers all contracts; gaps and malformed entries are named."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hub.privacy_cli import privacy
from privacy.coverage import check_coverage
from privacy.policy import POLICY_PATH, PolicyError, load_policy, parse_policy, parse_treatment
from schemas.contract import CONTRACTS_DIR, packaged_contracts


def _raw() -> dict[str, Any]:
    return dict(yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8")))


def test_shipped_policy_covers_every_field_of_the_nine_contracts() -> None:
    policy = load_policy()
    contracts = packaged_contracts()
    assert len(contracts) == 9
    result = check_coverage(contracts, policy)
    assert result.ok, result.as_dict()
    assert not result.unused_entries
    for f in result.fields:
        assert f.rule is not None and f.rule.purpose and f.rule.legal_basis
        if f.privacy in ("direct_identifier", "sensitive"):
            assert f.source in ("field", "unified"), f"{f.qualified} rests on a class default"
        if f.privacy == "direct_identifier":
            assert f.rule.treatment.kind not in ("keep", "generalise"), f.qualified


def test_check_command_passes_on_the_shipped_tree() -> None:
    result = CliRunner().invoke(privacy, ["check"])
    assert result.exit_code == 0, result.output
    assert "covers all" in result.output


def test_check_command_names_an_uncovered_field(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts)
    path = contracts / "sifa.corrections.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["fields"].append(
        {
            "source": "bzxx",
            "name": "probation_officer_note",
            "type": "string",
            "required": False,
            "label": "备注信息",
            "privacy": "sensitive",
            "unified": "community_correction.officer_note",
        }
    )
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(privacy, ["check", "--contracts", str(contracts)])
    assert result.exit_code != 0
    assert "sifa.corrections.probation_officer_note" in result.output
    assert "1 uncovered" in result.output


def test_a_field_may_be_overridden_per_dataset() -> None:
    raw = _raw()
    raw["fields"]["gongan.hukou.phone"] = {
        "treatment": "drop",
        "purpose": "公安电话不共享",
        "legal_basis": "PIPL 第6条",
    }
    policy = parse_policy(raw, "override.yaml")
    contracts = packaged_contracts()
    hukou, migrant = contracts["gongan.hukou"], contracts["gongan.migrant"]
    resolution = policy.resolve(hukou, hukou.field("phone"))
    assert resolution.source == "field" and str(resolution.rule.treatment) == "drop"  # type: ignore[union-attr]
    assert str(policy.rule_for(migrant, migrant.field("phone")).treatment) == "encrypt(contact)"  # type: ignore[union-attr]


def _mutations() -> list[tuple[str, Any, str]]:
    return [
        (
            "treatment",
            lambda r: r["fields"]["person.name"].update(treatment="scramble(x)"),
            "entry 'person.name': unknown treatment 'scramble'",
        ),
        (
            "purpose",
            lambda r: r["fields"]["person.phone"].pop("purpose"),
            "entry 'person.phone': 'purpose' must be",
        ),
        (
            "legal basis",
            lambda r: r["fields"]["person.phone"].update(legal_basis=" "),
            "entry 'person.phone': 'legal_basis' must be",
        ),
        (
            "domain",
            lambda r: r["fields"]["person.id_number"].update(treatment="token()"),
            "entry 'person.id_number': 'token' needs",
        ),
        (
            "reserved domain",
            lambda r: r["fields"]["person.id_number"].update(treatment="token(linkage)"),
            "entry 'person.id_number': domain 'linkage' is reserved",
        ),
        (
            "mask",
            lambda r: r["fields"]["person.name"].update(display="mask(face)"),
            "entry 'person.name': mask pattern",
        ),
        (
            "display kind",
            lambda r: r["fields"]["person.name"].update(display="encrypt(person_name)"),
            "entry 'person.name': display must be a mask",
        ),
        (
            "generalise",
            lambda r: r["fields"]["person.birth_date"].update(treatment="generalise(decade)"),
            "entry 'person.birth_date': generalise rule",
        ),
        (
            "unknown key",
            lambda r: r["fields"]["person.sex"].update(colour="red"),
            "entry 'person.sex': unknown key",
        ),
        (
            "bad key",
            lambda r: r["fields"].update({"Person": r["fields"]["person.sex"]}),
            "entry 'Person': key must be",
        ),
        (
            "class default",
            lambda r: r["defaults"].update(direct_identifier=r["defaults"]["attribute"]),
            "entry 'defaults.direct_identifier': direct_identifier fields need an explicit entry",
        ),
        ("linkage", lambda r: r.pop("linkage"), "entry 'linkage'"),
        ("threshold", lambda r: r["reidentification"].update(threshold_k=1), "entry 'reidentification'"),
        ("format", lambda r: r.update(format=2), "'format' must be 1"),
    ]


@pytest.mark.parametrize(("what", "mutate", "needle"), _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_policy_names_file_and_entry(tmp_path: Path, what: str, mutate: Any, needle: str) -> None:
    raw = _raw()
    mutate(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_unparseable_policy_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("fields: [unclosed", encoding="utf-8")
    with pytest.raises(PolicyError, match=str(path)):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_treatment_that_does_not_suit_the_field_type_fails_the_check() -> None:
    raw = _raw()
    raw["fields"]["person.name"]["treatment"] = "fpe(person_name)"
    raw["fields"]["person.sex"]["treatment"] = "generalise(year)"
    result = check_coverage(packaged_contracts(), parse_policy(raw, "bad.yaml"))
    assert not result.ok
    invalid = {f.qualified for f in result.invalid}
    assert "gongan.hukou.name" in invalid and "gongan.hukou.sex" in invalid


def test_parse_treatment_forms() -> None:
    assert str(parse_treatment("token(person)")) == "token(person)"
    assert parse_treatment("encrypt(corrections)").domain == "corrections"
    assert parse_treatment("mask(3, 4)").arg == "3,4"
    assert parse_treatment("keep").domain is None
    with pytest.raises(PolicyError):
        parse_treatment("drop(x)")

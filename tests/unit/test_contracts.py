"""The contract loader accepts the shipped contracts and rejects malformed ones by file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas.contract import CONTRACTS_DIR, ContractError, load_contract, packaged_contracts


def test_all_shipped_contracts_load() -> None:
    contracts = packaged_contracts()
    assert len(contracts) >= 9
    departments = {c.department for c in contracts.values()}
    assert departments == {"gongan", "sifa", "jisheng", "renshe", "minzheng", "canlian"}
    for c in contracts.values():
        assert c.by_unified("person.id_number") is not None


def _write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((CONTRACTS_DIR / "sifa.corrections.yaml").read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "sifa.corrections.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["fields"][1].update(type="idcard"), "field 'id_number': type 'idcard'"),
        (lambda r: r["fields"][2].update(privacy="secret"), "field 'name': privacy 'secret'"),
        (lambda r: r["fields"][4].pop("allowed"), "field 'correction_type': a code field needs"),
        (lambda r: r["fields"][3].pop("label"), "field 'sex': missing required key 'label'"),
        (lambda r: r["fields"][5].update(pattern="(["), "field 'start_date': pattern does not compile"),
        (lambda r: r["fields"][6].update(colour="red"), "field 'end_date': unknown key"),
        (lambda r: r.update(cursor="nope"), "field 'nope': cursor names a field"),
        (lambda r: r.update(interface="ftp"), "interface 'ftp'"),
    ],
)
def test_malformed_contract_names_file_and_field(tmp_path: Path, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, mutate)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "x.y.yaml"
    path.write_text("dataset: [unclosed", encoding="utf-8")
    with pytest.raises(ContractError, match=r"x\.y\.yaml: not valid YAML"):
        load_contract(path)

"""Load and check the YAML data contracts: one per source dataset, the single source of truth.

Validation suites, conform rules, policy coverage and the data dictionary are all derived from
these objects, so the loader is strict: a malformed contract fails with the file and field named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from schemas.base import HubError

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

FIELD_TYPES = frozenset(
    {
        "string",
        "integer",
        "decimal",
        "date",
        "datetime",
        "id_number",
        "name",
        "phone",
        "address",
        "area_code",
        "community_code",
        "code",
    }
)
PRIVACY_CLASSES = ("direct_identifier", "quasi_identifier", "sensitive", "attribute")
INTERFACES = frozenset({"http_cursor", "http_offset", "sql", "csv", "xlsx"})
SHARING_TYPES = frozenset({"无条件共享", "有条件共享", "不予共享"})
DEPARTMENTS = {
    "gongan": "公安",
    "sifa": "司法",
    "jisheng": "计生",
    "renshe": "人社",
    "minzheng": "民政",
    "canlian": "残联",
}
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_UNIFIED = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_FIELD_KEYS = frozenset(
    {"source", "name", "type", "required", "label", "privacy", "unified", "pattern", "allowed", "value_map"}
)
_CONTRACT_KEYS = frozenset(
    {
        "dataset",
        "department",
        "department_label",
        "title",
        "version",
        "interface",
        "sharing_type",
        "primary_key",
        "cursor",
        "table",
        "encoding",
        "fields",
    }
)


class ContractError(HubError, ValueError):
    """A contract file is malformed; the message names the file and, where known, the field."""

    def __init__(self, path: Path | str, message: str, field_name: str | None = None) -> None:
        where = f"{path}" + (f": field '{field_name}'" if field_name else "")
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.field_name = field_name


@dataclass(frozen=True)
class ContractField:
    """One source field: how it is named at the source and in the hub, its type, rules and privacy class."""

    source: str
    name: str
    type: str
    required: bool
    label: str
    privacy: str
    unified: str
    pattern: str | None = None
    allowed: tuple[str, ...] | None = None
    value_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def unified_table(self) -> str:
        """The unified-model table this field lands in."""
        return self.unified.split(".", 1)[0]

    @property
    def unified_column(self) -> str:
        """The unified-model column this field lands in."""
        return self.unified.split(".", 1)[1]


@dataclass(frozen=True)
class Contract:
    """A source dataset's contract: identity, interface, keys and fields."""

    dataset: str
    department: str
    department_label: str
    title: str
    version: int
    interface: str
    sharing_type: str
    primary_key: tuple[str, ...]
    cursor: str | None
    fields: tuple[ContractField, ...]
    path: str
    table: str | None = None
    encoding: str | None = None

    def field(self, name: str) -> ContractField:
        """Return the field with this hub name (not the source name)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.dataset}: no field named '{name}'")

    @property
    def source_names(self) -> tuple[str, ...]:
        """Source field names in contract order."""
        return tuple(f.source for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        """Hub field names in contract order."""
        return tuple(f.name for f in self.fields)

    @property
    def rename_map(self) -> dict[str, str]:
        """Source name -> hub name."""
        return {f.source: f.name for f in self.fields}

    def by_unified(self, unified: str) -> ContractField | None:
        """The field that maps to ``table.column`` of the unified model, if any."""
        return next((f for f in self.fields if f.unified == unified), None)


def _require(raw: Mapping[str, Any], key: str, path: Path, field_name: str | None = None) -> Any:
    if key not in raw or raw[key] is None or raw[key] == "":
        raise ContractError(path, f"missing required key '{key}'", field_name)
    return raw[key]


def _parse_field(raw: Any, path: Path, index: int) -> ContractField:
    if not isinstance(raw, Mapping):
        raise ContractError(path, f"fields[{index}] must be a mapping, got {type(raw).__name__}")
    label = str(raw.get("name") or raw.get("source") or f"fields[{index}]")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise ContractError(path, f"unknown key(s) {sorted(unknown)}", label)
    source = str(_require(raw, "source", path, label))
    name = str(_require(raw, "name", path, label))
    if not _IDENT.match(name):
        raise ContractError(path, "name must be lower_snake_case", name)
    ftype = str(_require(raw, "type", path, name))
    if ftype not in FIELD_TYPES:
        raise ContractError(path, f"type '{ftype}' is not one of {sorted(FIELD_TYPES)}", name)
    privacy = str(_require(raw, "privacy", path, name))
    if privacy not in PRIVACY_CLASSES:
        raise ContractError(path, f"privacy '{privacy}' is not one of {list(PRIVACY_CLASSES)}", name)
    unified = str(_require(raw, "unified", path, name))
    if not _UNIFIED.match(unified):
        raise ContractError(path, f"unified '{unified}' must be 'table.column'", name)
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ContractError(path, "required must be true or false", name)
    pattern = raw.get("pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise ContractError(path, f"pattern does not compile: {exc}", name) from exc
    allowed = raw.get("allowed")
    if allowed is not None and (not isinstance(allowed, list) or not allowed):
        raise ContractError(path, "allowed must be a non-empty list", name)
    if ftype == "code" and allowed is None:
        raise ContractError(path, "a code field needs 'allowed' values", name)
    value_map = raw.get("value_map") or {}
    if not isinstance(value_map, Mapping):
        raise ContractError(path, "value_map must be a mapping", name)
    allowed_t = tuple(str(a) for a in allowed) if allowed is not None else None
    if allowed_t is not None:
        bad = [v for v in value_map.values() if str(v) not in allowed_t]
        if bad:
            raise ContractError(path, f"value_map targets {bad} are not in allowed", name)
    return ContractField(
        source=source,
        name=name,
        type=ftype,
        required=required,
        label=str(_require(raw, "label", path, name)),
        privacy=privacy,
        unified=unified,
        pattern=str(pattern) if pattern is not None else None,
        allowed=allowed_t,
        value_map={str(k): str(v) for k, v in value_map.items()},
    )


def parse_contract(raw: Any, path: Path | str = "<contract>") -> Contract:
    """Build a Contract from parsed YAML, raising ContractError naming the file and field."""
    path = Path(path)
    if not isinstance(raw, Mapping):
        raise ContractError(path, "a contract must be a YAML mapping")
    unknown = set(raw) - _CONTRACT_KEYS
    if unknown:
        raise ContractError(path, f"unknown top-level key(s) {sorted(unknown)}")
    dataset = str(_require(raw, "dataset", path))
    department = str(_require(raw, "department", path))
    if department not in DEPARTMENTS:
        raise ContractError(path, f"department '{department}' is not one of {sorted(DEPARTMENTS)}")
    if not dataset.startswith(department + "."):
        raise ContractError(path, f"dataset '{dataset}' must start with '{department}.'")
    interface = str(_require(raw, "interface", path))
    if interface not in INTERFACES:
        raise ContractError(path, f"interface '{interface}' is not one of {sorted(INTERFACES)}")
    sharing = str(_require(raw, "sharing_type", path))
    if sharing not in SHARING_TYPES:
        raise ContractError(path, f"sharing_type '{sharing}' is not one of {sorted(SHARING_TYPES)}")
    raw_fields = _require(raw, "fields", path)
    if not isinstance(raw_fields, list):
        raise ContractError(path, "fields must be a list")
    fields = tuple(_parse_field(f, path, i) for i, f in enumerate(raw_fields))
    for attr in ("source", "name", "unified"):
        seen: set[str] = set()
        for f in fields:
            value = getattr(f, attr)
            if value in seen:
                raise ContractError(path, f"duplicate {attr} '{value}'", f.name)
            seen.add(value)
    sources = {f.source for f in fields}
    pk = raw.get("primary_key")
    if not isinstance(pk, list) or not pk:
        raise ContractError(path, "primary_key must be a non-empty list of source fields")
    for key in pk:
        if key not in sources:
            raise ContractError(path, "primary_key names a field that is not declared", str(key))
    cursor = raw.get("cursor")
    if cursor is not None and cursor not in sources:
        raise ContractError(path, "cursor names a field that is not declared", str(cursor))
    if interface in {"http_cursor", "http_offset", "sql"} and cursor is None:
        raise ContractError(path, f"interface '{interface}' needs a cursor field")
    if interface == "sql" and not raw.get("table"):
        raise ContractError(path, "interface 'sql' needs a table")
    if not any(f.unified == "person.id_number" for f in fields):
        raise ContractError(path, "no field maps to person.id_number: the dataset cannot be linked")
    version = raw.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise ContractError(path, "version must be a positive integer")
    return Contract(
        dataset=dataset,
        department=department,
        department_label=str(raw.get("department_label") or DEPARTMENTS[department]),
        title=str(_require(raw, "title", path)),
        version=version,
        interface=interface,
        sharing_type=sharing,
        primary_key=tuple(str(k) for k in pk),
        cursor=str(cursor) if cursor is not None else None,
        fields=fields,
        path=str(path),
        table=str(raw["table"]) if raw.get("table") else None,
        encoding=str(raw["encoding"]) if raw.get("encoding") else None,
    )


def load_contract(path: Path | str) -> Contract:
    """Read one contract file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(path, f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ContractError(path, f"cannot read: {exc.strerror}") from exc
    contract = parse_contract(raw, path)
    if path.name != f"{contract.dataset}.yaml":
        raise ContractError(path, f"file name must be '{contract.dataset}.yaml'")
    return contract


def load_contracts(directory: Path | str | None = None) -> dict[str, Contract]:
    """Read every ``*.yaml`` contract in a folder (default: the packaged contracts), keyed by dataset."""
    folder = Path(directory) if directory is not None else CONTRACTS_DIR
    contracts = [load_contract(p) for p in sorted(folder.glob("*.yaml"))]
    return {c.dataset: c for c in contracts}


@cache
def packaged_contracts() -> dict[str, Contract]:
    """The contracts shipped with the hub, loaded once per process."""
    return load_contracts(CONTRACTS_DIR)


def get_contract(dataset: str) -> Contract:
    """The packaged contract for a dataset, with a clear error listing the known ones."""
    contracts = packaged_contracts()
    if dataset not in contracts:
        raise KeyError(f"unknown dataset '{dataset}'; known: {', '.join(sorted(contracts))}")
    return contracts[dataset]


def datasets(contracts: Iterable[Contract] | None = None) -> list[str]:
    """Sorted dataset names."""
    return sorted(c.dataset for c in (contracts or packaged_contracts().values()))

"""The privacy policy as code: a treatment, a purpose and a legal basis for every contract field.

``policy.yaml`` is owned by the privacy officer. Entries are keyed by the unified name
(``table.column``) or by ``dataset.field`` (which wins); class defaults may cover only
quasi-identifiers and attributes, so direct identifiers and sensitive fields always need a decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schemas.base import HubError
from schemas.contract import PRIVACY_CLASSES, Contract, ContractField

POLICY_PATH = Path(__file__).resolve().parent / "policy.yaml"
POLICY_FORMAT = 1
LINKAGE_DOMAIN = "linkage"
LINKAGE_QI_DOMAIN = "linkage_qi"
#: AES-SIV of the valid ID number in linkage.parquet and the identity index: lets `hub link` re-key link
#: tokens after a key rotation without keeping a plaintext anywhere.
LINKAGE_ID_DOMAIN = "linkage_id"
#: HMAC of a name's comparison forms (simplified name, pinyin), kept between linkage runs so a day's run blocks on
#: names without decrypting every name the hub holds (``linkage.workspace.Workspace.name_forms``)
LINKAGE_NAME_DOMAIN = "linkage_name"
# Classes whose fields may fall back on a class default; the others need an explicit entry.
DEFAULTABLE_CLASSES = ("quasi_identifier", "attribute")
KEYED_KINDS = ("token", "encrypt", "fpe")
MASK_PATTERNS = ("name", "phone", "id_number")
GENERALISE_RULES = ("year", "band5", "community", "county", "province")
_TREATMENT = re.compile(r"^(?P<kind>[a-z]+)(?:\((?P<arg>[^()]*)\))?$")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]*$")
_COLUMN = re.compile(r"^[a-z][a-z0-9_]*$")
_MASK_SPAN = re.compile(r"^(?P<first>[0-9]+),\s*(?P<last>[0-9]+)$")
_ENTRY_KEYS = frozenset({"treatment", "display", "column", "purpose", "legal_basis", "note"})
_TOP_KEYS = frozenset({"format", "version", "owner", "defaults", "linkage", "fields", "reidentification"})
_RESERVED_DOMAINS = frozenset(
    {LINKAGE_DOMAIN, LINKAGE_QI_DOMAIN, LINKAGE_ID_DOMAIN, LINKAGE_NAME_DOMAIN, "audit", "quarantine"}
)


class PolicyError(HubError, ValueError):
    """The policy file is malformed; the message names the file and, where known, the entry."""

    def __init__(self, path: Path | str, message: str, entry: str | None = None) -> None:
        where = f"{path}" + (f": entry '{entry}'" if entry else "")
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.entry = entry


@dataclass(frozen=True)
class Treatment:
    """One operator with its argument: drop, keep, token(d), encrypt(d), fpe(d), mask(p), generalise(r)."""

    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}({self.arg})"

    @property
    def domain(self) -> str | None:
        """The key domain of a keyed treatment (token, encrypt, fpe)."""
        return self.arg if self.kind in KEYED_KINDS else None


def parse_treatment(text: Any, where: str = "<treatment>", path: Path | str = "<policy>") -> Treatment:
    """Parse 'kind(arg)' and check the argument; raise PolicyError naming file and entry."""
    match = _TREATMENT.match(str(text).strip()) if isinstance(text, str) else None
    if match is None:
        raise PolicyError(path, f"treatment {text!r} is not 'kind' or 'kind(argument)'", where)
    kind, arg = match["kind"], match["arg"]
    arg = arg.strip() if arg is not None else None
    if kind in ("drop", "keep"):
        if arg:
            raise PolicyError(path, f"'{kind}' takes no argument", where)
        return Treatment(kind)
    if kind in KEYED_KINDS:
        if not arg or not _DOMAIN.match(arg):
            raise PolicyError(path, f"'{kind}' needs a lower_snake_case key domain, e.g. {kind}(person)", where)
        if arg in _RESERVED_DOMAINS:
            raise PolicyError(path, f"domain '{arg}' is reserved for the hub's internal use", where)
        return Treatment(kind, arg)
    if kind == "mask":
        if arg in MASK_PATTERNS or (arg is not None and _MASK_SPAN.match(arg)):
            return Treatment(kind, arg.replace(" ", ""))
        raise PolicyError(path, f"mask pattern must be one of {list(MASK_PATTERNS)} or 'first,last'", where)
    if kind == "generalise":
        if arg in GENERALISE_RULES:
            return Treatment(kind, arg)
        raise PolicyError(path, f"generalise rule must be one of {list(GENERALISE_RULES)}", where)
    raise PolicyError(path, f"unknown treatment '{kind}'", where)


@dataclass(frozen=True)
class Rule:
    """A policy entry: what to do with a field, into which column, why, and on what legal basis."""

    key: str
    treatment: Treatment
    purpose: str
    legal_basis: str
    display: Treatment | None = None
    column: str | None = None
    note: str | None = None

    def output_columns(self, field_name: str) -> tuple[str, ...]:
        """Columns this rule writes for a field: the treated value, then the masked display form."""
        if self.treatment.kind == "drop":
            return ()
        main = self.column or field_name
        return (main, f"{main}_masked") if self.display is not None else (main,)


@dataclass(frozen=True)
class Resolution:
    """The rule chosen for one contract field and where it came from ('field', 'unified' or 'default')."""

    rule: Rule | None
    source: str | None


@dataclass(frozen=True)
class Policy:
    """The parsed policy file."""

    path: str
    version: int
    owner: str
    fields: Mapping[str, Rule]
    defaults: Mapping[str, Rule]
    linkage_purpose: str
    linkage_legal_basis: str
    threshold_k: int = 5
    quasi_identifier_sets: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    threshold_l: int = 2
    sensitive_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve(self, contract: Contract, contract_field: ContractField) -> Resolution:
        """Pick the rule for a field: 'dataset.field' beats 'table.column', which beats the class default."""
        rule = self.fields.get(f"{contract.dataset}.{contract_field.name}")
        if rule is not None:
            return Resolution(rule, "field")
        rule = self.fields.get(contract_field.unified)
        if rule is not None:
            return Resolution(rule, "unified")
        rule = self.defaults.get(contract_field.privacy)
        if rule is not None:
            return Resolution(rule, "default")
        return Resolution(None, None)

    def rule_for(self, contract: Contract, contract_field: ContractField) -> Rule | None:
        """The rule for a field, or None when the policy does not cover it."""
        return self.resolve(contract, contract_field).rule

    @property
    def encrypt_domains(self) -> frozenset[str]:
        """Domains whose values may be revealed (only encrypt-treated values are reversible by staff)."""
        return frozenset(
            r.treatment.arg for r in self.fields.values() if r.treatment.kind == "encrypt" and r.treatment.arg
        )

    def sets_for(self, table: str) -> tuple[tuple[str, ...], ...]:
        """Quasi-identifier sets for a published table: its own, else those listed under '*'."""
        return self.quasi_identifier_sets.get(table) or self.quasi_identifier_sets.get("*", ())


def _text(raw: Mapping[str, Any], key: str, path: Path, entry: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(path, f"'{key}' must be a non-empty text", entry)
    return value.strip()


def _parse_rule(key: str, raw: Any, path: Path) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "must be a mapping with treatment, purpose and legal_basis", key)
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise PolicyError(path, f"unknown key(s) {sorted(unknown)}", key)
    treatment = parse_treatment(raw.get("treatment"), key, path)
    display = None
    if raw.get("display") is not None:
        display = parse_treatment(raw["display"], key, path)
        if display.kind != "mask":
            raise PolicyError(path, "display must be a mask(...) treatment", key)
        if treatment.kind == "drop":
            raise PolicyError(path, "a dropped field cannot have a display form", key)
    column = raw.get("column")
    if column is not None and (not isinstance(column, str) or not _COLUMN.match(column)):
        raise PolicyError(path, "column must be a lower_snake_case name", key)
    note = raw.get("note")
    return Rule(
        key=key,
        treatment=treatment,
        purpose=_text(raw, "purpose", path, key),
        legal_basis=_text(raw, "legal_basis", path, key),
        display=display,
        column=column,
        note=str(note) if note is not None else None,
    )


def _parse_reidentification(
    raw: Any, path: Path
) -> tuple[int, dict[str, tuple[tuple[str, ...], ...]], int, dict[str, tuple[str, ...]]]:
    if raw is None:
        return 5, {}, 2, {}
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "must be a mapping", "reidentification")
    k = raw.get("threshold_k", 5)
    if not isinstance(k, int) or k < 2:
        raise PolicyError(path, "threshold_k must be an integer of at least 2", "reidentification")
    sets_raw = raw.get("quasi_identifier_sets") or {}
    if not isinstance(sets_raw, Mapping):
        raise PolicyError(path, "quasi_identifier_sets must map table -> list of column lists", "reidentification")
    sets: dict[str, tuple[tuple[str, ...], ...]] = {}
    for table, lists in sets_raw.items():
        where = f"reidentification.quasi_identifier_sets.{table}"
        if not isinstance(lists, list) or not all(
            isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols) for cols in lists
        ):
            raise PolicyError(path, "must be a list of non-empty column lists", where)
        sets[str(table)] = tuple(tuple(cols) for cols in lists)
    l_div = raw.get("threshold_l", 2)
    if not isinstance(l_div, int) or l_div < 1:
        raise PolicyError(path, "threshold_l must be a positive integer", "reidentification")
    sensitive_raw = raw.get("sensitive_columns") or {}
    if not isinstance(sensitive_raw, Mapping) or not all(
        isinstance(cols, list) and all(isinstance(c, str) for c in cols) for cols in sensitive_raw.values()
    ):
        raise PolicyError(path, "sensitive_columns must map table -> list of columns", "reidentification")
    sensitive = {str(t): tuple(cols) for t, cols in sensitive_raw.items()}
    return k, sets, l_div, sensitive


def parse_policy(raw: Any, path: Path | str = "<policy>") -> Policy:
    """Build a Policy from parsed YAML, raising PolicyError naming the file and entry."""
    path = Path(path)
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "a policy must be a YAML mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise PolicyError(path, f"unknown top-level key(s) {sorted(unknown)}")
    if raw.get("format") != POLICY_FORMAT:
        raise PolicyError(path, f"'format' must be {POLICY_FORMAT}")
    version = raw.get("version")
    if not isinstance(version, int) or version < 1:
        raise PolicyError(path, "'version' must be a positive integer")
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, Mapping) or not fields_raw:
        raise PolicyError(path, "'fields' must be a non-empty mapping of entries")
    fields: dict[str, Rule] = {}
    for key, entry in fields_raw.items():
        key = str(key)
        parts = key.split(".")
        # 'table.column' (unified model) or 'department.dataset.field' (one contract field)
        if len(parts) not in (2, 3) or not all(_COLUMN.match(p) for p in parts):
            raise PolicyError(path, "key must be 'table.column' or 'department.dataset.field'", key)
        fields[key] = _parse_rule(key, entry, path)
    defaults_raw = raw.get("defaults") or {}
    if not isinstance(defaults_raw, Mapping):
        raise PolicyError(path, "must map privacy class -> entry", "defaults")
    defaults: dict[str, Rule] = {}
    for cls, entry in defaults_raw.items():
        where = f"defaults.{cls}"
        if cls not in PRIVACY_CLASSES:
            raise PolicyError(path, f"'{cls}' is not a privacy class {list(PRIVACY_CLASSES)}", where)
        if cls not in DEFAULTABLE_CLASSES:
            raise PolicyError(path, f"{cls} fields need an explicit entry each; no class default", where)
        defaults[str(cls)] = _parse_rule(where, entry, path)
    linkage = raw.get("linkage")
    if not isinstance(linkage, Mapping):
        raise PolicyError(path, "must give the purpose and legal_basis of linkage tokens", "linkage")
    threshold_k, sets, threshold_l, sensitive = _parse_reidentification(raw.get("reidentification"), path)
    return Policy(
        path=str(path),
        version=version,
        owner=str(raw.get("owner") or ""),
        fields=fields,
        defaults=defaults,
        linkage_purpose=_text(linkage, "purpose", path, "linkage"),
        linkage_legal_basis=_text(linkage, "legal_basis", path, "linkage"),
        threshold_k=threshold_k,
        quasi_identifier_sets=sets,
        threshold_l=threshold_l,
        sensitive_columns=sensitive,
    )


def load_policy(path: Path | str | None = None) -> Policy:
    """Read the policy file (default: the packaged privacy/policy.yaml)."""
    path = Path(path) if path is not None else POLICY_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(path, f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise PolicyError(path, f"cannot read: {exc.strerror}") from exc
    return parse_policy(raw, path)

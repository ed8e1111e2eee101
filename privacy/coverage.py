"""Policy coverage: every contract field must have a treatment that suits its type, or the check fails.

`hub privacy check` runs this over the shipped contracts; protect() applies the same resolution at
run time, so a field the check would flag is dropped rather than passed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from privacy.policy import Policy, Rule, Treatment
from schemas.contract import Contract, ContractField

_DATE_TYPES = frozenset({"date", "datetime"})
_TEXT_TYPES = frozenset(
    {"string", "id_number", "name", "phone", "address", "area_code", "community_code", "code"}
)
_FPE_TYPES = frozenset({"string", "id_number", "phone", "area_code", "community_code"})
_GENERALISE_TYPES = {
    "year": _DATE_TYPES,
    "band5": _DATE_TYPES,
    "community": frozenset({"address"}),
    "county": frozenset({"area_code", "community_code"}),
    "province": frozenset({"area_code", "community_code"}),
}


def treatment_problem(treatment: Treatment, field_type: str) -> str | None:
    """Why a treatment cannot apply to a field of this contract type, or None when it can."""
    if treatment.kind == "fpe" and field_type not in _FPE_TYPES:
        return f"fpe needs a digit-string field, not type '{field_type}'"
    if treatment.kind == "mask" and field_type not in _TEXT_TYPES:
        return f"mask needs a text field, not type '{field_type}'"
    if treatment.kind == "generalise" and treatment.arg is not None:
        allowed = _GENERALISE_TYPES[treatment.arg]
        if field_type not in allowed:
            return f"generalise({treatment.arg}) applies to types {sorted(allowed)}, not '{field_type}'"
    return None


@dataclass(frozen=True)
class FieldCoverage:
    """The policy decision for one contract field, where it came from, and any problem with it."""

    dataset: str
    field: str
    label: str
    privacy: str
    unified: str
    type: str
    rule: Rule | None
    source: str | None
    problem: str | None = None

    @property
    def qualified(self) -> str:
        """'dataset.field', the name the check reports."""
        return f"{self.dataset}.{self.field}"


@dataclass(frozen=True)
class CoverageResult:
    """Coverage of a set of contracts by one policy."""

    fields: tuple[FieldCoverage, ...]
    unused_entries: tuple[str, ...]

    @property
    def uncovered(self) -> tuple[FieldCoverage, ...]:
        """Fields with no treatment at all."""
        return tuple(f for f in self.fields if f.rule is None)

    @property
    def invalid(self) -> tuple[FieldCoverage, ...]:
        """Fields whose treatment does not suit their type."""
        return tuple(f for f in self.fields if f.rule is not None and f.problem)

    @property
    def ok(self) -> bool:
        """True when every field has a suitable treatment."""
        return not self.uncovered and not self.invalid

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary for the officer's report."""
        return {
            "ok": self.ok,
            "fields": len(self.fields),
            "uncovered": [f.qualified for f in self.uncovered],
            "invalid": [{"field": f.qualified, "problem": f.problem} for f in self.invalid],
            "unused_entries": list(self.unused_entries),
        }


def _field_coverage(policy: Policy, contract: Contract, cf: ContractField) -> FieldCoverage:
    resolution = policy.resolve(contract, cf)
    problem = None
    if resolution.rule is not None:
        rule = resolution.rule
        problem = treatment_problem(rule.treatment, cf.type)
        if problem is None and rule.display is not None:
            problem = treatment_problem(rule.display, cf.type)
        if problem is None and str(rule.treatment) == "generalise(community)":
            if not any(f.type == "community_code" for f in contract.fields):
                problem = "generalise(community) needs a community_code field in the same contract"
    return FieldCoverage(
        dataset=contract.dataset,
        field=cf.name,
        label=cf.label,
        privacy=cf.privacy,
        unified=cf.unified,
        type=cf.type,
        rule=resolution.rule,
        source=resolution.source,
        problem=problem,
    )


def check_coverage(contracts: Mapping[str, Contract] | Iterable[Contract], policy: Policy) -> CoverageResult:
    """Resolve every field of every contract against the policy; list entries that match no field."""
    items = list(contracts.values()) if isinstance(contracts, Mapping) else list(contracts)
    fields = tuple(
        _field_coverage(policy, c, cf) for c in sorted(items, key=lambda c: c.dataset) for cf in c.fields
    )
    used = {f"{c.dataset}.{cf.name}" for c in items for cf in c.fields} | {
        cf.unified for c in items for cf in c.fields
    }
    unused = tuple(sorted(k for k in policy.fields if k not in used))
    return CoverageResult(fields=fields, unused_entries=unused)

"""protect(): apply the privacy policy to a conformed batch and derive the linkage fields.

The input is a conformed batch (columns = contract hub names, IDs normalised to 18 characters).
Columns starting with '_' are hub metadata and pass through; any other column that the contract or
the policy does not name is dropped and reported (deny by default). Nothing here logs a value.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from privacy.keyring import Keyring
from privacy.operators import (
    STRING,
    canonical_text,
    encrypt_series,
    fpe_series,
    generalise_series,
    mask_series,
    token_series,
)
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_ID_DOMAIN, LINKAGE_QI_DOMAIN, Policy, Rule
from schemas.contract import Contract, ContractField
from schemas.id_number import birth_date_series, sex_series, valid_series

log = logging.getLogger(__name__)

LINKAGE_COLUMNS = (
    "link_token",  # HMAC of the valid ID number (linkage domain); missing when the record has none
    "id_status",  # valid | certificate (taken from the 残联 certificate) | missing | invalid
    "id_ciphertext",  # AES-SIV of the valid ID (linkage_id domain): re-keys tokens after a rotation
    "swap_tokens",  # invalid IDs: tokens of the valid numbers two adjacent digits swapped give, ';'-joined
    "phone_token",  # HMAC of the phone, for linking records an ID number cannot place
    "household_token",  # HMAC of the hukou household number, or of the 低保 household id
    "qi_name",
    "qi_birth_date",
    "qi_sex",
    "qi_county",
    "qi_community",
)
#: unified fields whose values say which household a record belongs to, with the namespace of each
HOUSEHOLD_FIELDS = {"hukou_registration.household_no": "hukou", "dibao_membership.household_id": "dibao"}
_EMBEDDED_ID = "^[0-9]{17}[0-9X]"
# A header that is really a data row (a file without its header line) would put a value in a column name.
_VALUE_LIKE_NAME = re.compile(r"[0-9]{11,}")


class DroppedColumn(NamedTuple):
    """A column that did not leave protect(), and why."""

    column: str
    reason: str


@dataclass
class ProtectedBatch:
    """The protected batch, the internal linkage fields, and what was dropped or refused."""

    dataset: str
    data: pd.DataFrame
    linkage: pd.DataFrame
    dropped: list[DroppedColumn]
    key_versions: dict[str, int]
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    policy_version: int = 0

    def manifest(self) -> dict[str, Any]:
        """What a staged batch records about its protection (no values)."""
        return {
            "dataset": self.dataset,
            "rows": len(self.data),
            "policy_version": self.policy_version,
            "key_versions": dict(sorted(self.key_versions.items())),
            "columns": {k: list(v) for k, v in self.columns.items()},
            "dropped": [{"column": d.column, "reason": d.reason} for d in self.dropped],
            "suppressed": dict(self.suppressed),
        }


def _community_column(contract: Contract, batch: pd.DataFrame) -> pd.Series | None:
    for cf in contract.fields:
        if cf.type == "community_code" and cf.name in batch.columns:
            return batch[cf.name]
    return None


def _apply(
    rule: Rule, cf: ContractField, values: pd.Series, keyring: Keyring, community: pd.Series | None
) -> pd.Series:
    """The treated column for one field (drop is handled by the caller)."""
    t = rule.treatment
    if t.kind == "keep":
        return values
    if t.kind == "token":
        return token_series(canonical_text(values, cf.type), keyring, str(t.arg))
    if t.kind == "encrypt":
        return encrypt_series(canonical_text(values, cf.type), keyring, str(t.arg))
    if t.kind == "fpe":
        return fpe_series(canonical_text(values, cf.type), keyring, str(t.arg))
    if t.kind == "mask":
        return mask_series(canonical_text(values, cf.type), str(t.arg))
    if t.kind == "generalise":
        return generalise_series(values, str(t.arg), community)
    raise ValueError(f"{cf.name}: no operator for treatment '{t}'")


def protect_field(
    values: pd.Series, contract: Contract, field_name: str, policy: Policy, keyring: Keyring
) -> pd.Series:
    """One field's values as protect() writes them (its main column), e.g. to find a staged record by its id."""
    cf = contract.field(field_name)
    rule = policy.rule_for(contract, cf)
    if rule is None or rule.treatment.kind == "drop":
        raise ValueError(f"{contract.dataset}.{field_name}: the policy does not publish this field")
    return _apply(rule, cf, values, keyring, None)


def _linkage(batch: pd.DataFrame, contract: Contract, keyring: Keyring) -> pd.DataFrame:
    """Linkage token of the valid 18-character ID and the quasi-identifiers, encrypted in their own domain."""
    index = batch.index
    missing = pd.Series(pd.NA, index=index, dtype=STRING)

    def column(unified: str) -> pd.Series | None:
        cf = contract.by_unified(unified)
        return batch[cf.name] if cf is not None and cf.name in batch.columns else None

    ids = column("person.id_number")
    ids = ids.astype(STRING) if ids is not None else missing
    valid = valid_series(ids)
    status = pd.Series(np.where(valid, "valid", np.where(ids.isna(), "missing", "invalid")), index=index, dtype=STRING)
    # a 残联 certificate number embeds the holder's ID number: it places a record whose own ID is unusable
    for cf in contract.fields:
        if cf.type == "string" and (cf.pattern or "").startswith(_EMBEDDED_ID) and cf.name in batch.columns:
            embedded = batch[cf.name].astype(STRING).str.slice(0, 18)
            usable = ~valid & valid_series(embedded)
            if usable.any():
                ids = ids.where(~usable, embedded)
                status = status.where(~usable, "certificate")
                valid = valid | usable
    link_token = token_series(ids.where(valid), keyring, LINKAGE_DOMAIN)
    swap_tokens = _swap_tokens(ids.where(~valid & ids.str.len().eq(18).fillna(False)), keyring)

    name = column("person.name")
    birth = column("person.birth_date")
    birth_text = canonical_text(birth, "date") if birth is not None else missing
    sex = column("person.sex")
    sex_text = sex.astype(STRING) if sex is not None else missing
    # what the dataset does not carry (e.g. the mother's birth date in births) comes from a valid ID
    need = (birth_text.isna() & valid).to_numpy()
    if need.any():
        birth_text = birth_text.copy()
        birth_text[need] = birth_date_series(ids[need]).dt.strftime("%Y-%m-%d").astype(STRING)
    need = (sex_text.isna() & valid).to_numpy()
    if need.any():
        sex_text = sex_text.copy()
        sex_text[need] = sex_series(ids[need])
    id_county = ids.str.slice(0, 6).where(ids.str.match(r"^[0-9]{6}").fillna(False).astype(bool))
    community = _community_column(contract, batch)
    county = (
        id_county.fillna(community.astype(STRING).str.slice(0, 6)) if community is not None else id_county
    )
    qi = {
        "qi_name": name.astype(STRING) if name is not None else missing,
        "qi_birth_date": birth_text,
        "qi_sex": sex_text,
        "qi_county": county,
        "qi_community": community.astype(STRING) if community is not None else missing,
    }
    phone = column("person.phone")
    household = missing
    for unified, space in HOUSEHOLD_FIELDS.items():
        values = column(unified)
        if values is not None:
            household = household.fillna(space + ":" + values.astype(STRING))
    out = {
        "link_token": link_token,
        "id_status": status,
        "id_ciphertext": encrypt_series(ids.where(valid), keyring, LINKAGE_ID_DOMAIN),
        "swap_tokens": swap_tokens,
        "phone_token": token_series(phone.astype(STRING), keyring, LINKAGE_DOMAIN) if phone is not None else missing,
        "household_token": token_series(household, keyring, LINKAGE_DOMAIN),
    }
    out |= {k: encrypt_series(v, keyring, LINKAGE_QI_DOMAIN) for k, v in qi.items()}
    return pd.DataFrame({k: v.array for k, v in out.items()}, index=index)


def _swap_tokens(invalid: pd.Series, keyring: Keyring) -> pd.Series:
    """For 18-character IDs that fail their check: tokens of every valid number one adjacent swap gives.

    A typist's commonest slip is two neighbouring digits exchanged; the number that results from undoing it
    is usually the person's real one, and linkage may use its token as evidence (never as proof).
    """
    out = pd.Series(pd.NA, index=invalid.index, dtype=STRING)
    todo = invalid.dropna()
    if todo.empty:
        return out
    found: list[pd.Series] = []
    for k in range(17):
        swapped = todo.str.slice(0, k) + todo.str.slice(k + 1, k + 2) + todo.str.slice(k, k + 1) + todo.str.slice(k + 2)
        ok = valid_series(swapped) & (swapped != todo)
        if ok.any():
            found.append(token_series(swapped[ok], keyring, LINKAGE_DOMAIN))
    if found:
        joined = pd.concat(found).groupby(level=0).agg(lambda s: ";".join(sorted(s)))
        out.loc[joined.index] = joined.astype(STRING)
    return out


def protect(batch: pd.DataFrame, contract: Contract, policy: Policy, keyring: Keyring) -> ProtectedBatch:
    """Apply the policy to a conformed batch; return treated data, linkage fields and what was dropped."""
    index = batch.index
    # work on positions: label-based helpers (ID validity) break on duplicate index labels
    batch = batch.reset_index(drop=True)
    names = set(contract.names)
    community = _community_column(contract, batch)
    out: dict[str, pd.Series] = {}
    dropped: list[DroppedColumn] = []
    columns: dict[str, tuple[str, ...]] = {}
    suppressed: dict[str, int] = {}
    key_versions: dict[str, int] = {}
    active = keyring.active_version
    for position, name in enumerate(batch.columns):
        if not isinstance(name, str) or _VALUE_LIKE_NAME.search(name):
            dropped.append(DroppedColumn(f"<column {position}>", "name withheld: it looks like a value"))
            continue
        if name.startswith("_"):
            out[name] = batch[name]  # hub metadata: record keys, batch ids, source positions
            continue
        if name not in names:
            dropped.append(DroppedColumn(name, "not named by the contract (schema drift)"))
            continue
        cf = contract.field(name)
        rule = policy.rule_for(contract, cf)
        if rule is None:
            dropped.append(DroppedColumn(name, "no treatment in the privacy policy"))
            continue
        if rule.treatment.kind == "drop":
            dropped.append(DroppedColumn(name, f"policy treatment drop ({rule.key})"))
            columns[name] = ()
            continue
        values = batch[name]
        treated = _apply(rule, cf, values, keyring, community)
        if rule.treatment.kind == "fpe":
            refused = int((values.notna() & treated.isna()).sum())
            if refused:
                suppressed[name] = refused
                log.warning(
                    "%s.%s: %d value(s) below the FF1 minimum domain were left missing",
                    contract.dataset,
                    name,
                    refused,
                )
        if rule.treatment.domain:
            key_versions[rule.treatment.domain] = active
        targets = rule.output_columns(name)
        out[targets[0]] = treated.rename(targets[0])
        if rule.display is not None:
            out[targets[1]] = mask_series(canonical_text(values, cf.type), str(rule.display.arg)).rename(
                targets[1]
            )
        columns[name] = targets
    linkage = _linkage(batch, contract, keyring).set_axis(index)
    key_versions[LINKAGE_DOMAIN] = active
    key_versions[LINKAGE_QI_DOMAIN] = active
    key_versions[LINKAGE_ID_DOMAIN] = active
    # arrays, not Series: no index alignment, so duplicate index labels are fine
    data = pd.DataFrame({k: v.array for k, v in out.items()}, index=index)
    if dropped:
        log.info("%s: dropped columns %s", contract.dataset, [(d.column, d.reason) for d in dropped])
    log.info(
        "%s: protected %d rows into %d columns (policy v%d, key v%d)",
        contract.dataset,
        len(data),
        len(data.columns),
        policy.version,
        active,
    )
    return ProtectedBatch(
        dataset=contract.dataset,
        data=data,
        linkage=linkage,
        dropped=dropped,
        key_versions=key_versions,
        columns=columns,
        suppressed=suppressed,
        policy_version=policy.version,
    )

"""Validate a conformed batch with a Great Expectations 1.x suite generated from its contract.

GX runs on an ephemeral context over the whole batch and names failing rows by an index column
(``_row``) only, never by value. Its failures and the conform issues become per-row reason codes
("gx:<expectation>:<field>", "conform:<reason>:<field>") that decide what goes to quarantine. A field
conform already gave a reason for is not counted again for GX, and a GX failure on an optional field
sets that value to missing and is counted, as conform does, instead of quarantining the record.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from schemas.base import HubError, write_atomic
from schemas.conform import AREA_CODE_SHAPE, COMMUNITY_CODE_SHAPE, ID_SHAPE, PHONE_SHAPE, Conformed
from schemas.contract import Contract, ContractField

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context import AbstractDataContext

ROW = "_row"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW],
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
}
# Plausible dates for any field; birth dates must also not lie after the day of validation.
DATE_MIN = pd.Timestamp("1900-01-01")
DATE_MAX = pd.Timestamp("2099-12-31 23:59:59")
_NS_MIN = pd.Timestamp("1677-09-22")
_NS_MAX = pd.Timestamp("2262-04-11")
SHAPES = {"id_number": ID_SHAPE, "phone": PHONE_SHAPE, "community_code": COMMUNITY_CODE_SHAPE,
          "area_code": AREA_CODE_SHAPE}
# Result keys that would carry values; GX omits them with exclude_unexpected_values, we drop them anyway.
_VALUE_KEYS = frozenset(
    {"unexpected_list", "partial_unexpected_list", "partial_unexpected_counts", "unexpected_rows",
     "pandas_data_fingerprint"}
)
RESULTS_FILE = "gx_results.json"
SUMMARY_FILE = "summary.json"


class ValidationError(HubError):
    """An expectation could not be evaluated; names the dataset, expectation and field, never a value."""


@dataclass(frozen=True)
class Validation:
    """The outcome for one batch: good rows to protect, bad rows by index with reason codes, counts.

    ``field_problems`` counts optional values set to missing, ``{"field:reason": n}``: conform's
    reasons and GX expectation names (``death_date:expect_column_values_to_be_between``).
    """

    good: pd.DataFrame
    bad_index: pd.Index
    reasons: pd.Series
    summary: dict[str, Any] = field(default_factory=dict)
    field_problems: dict[str, int] = field(default_factory=dict)
    cleaned: pd.DataFrame | None = None  # every row, optional values that failed set missing (for unkeyed rows)

    @property
    def quarantine_rate(self) -> float:
        """Share of the batch's rows set aside."""
        rows = len(self.good) + len(self.bad_index)
        return len(self.bad_index) / rows if rows else 0.0


def _gx() -> Any:
    """Import GX lazily: it takes seconds. Analytics are switched off per context (``ephemeral_context``)."""
    import great_expectations as gx

    return gx


def ephemeral_context() -> AbstractDataContext:
    """A fresh in-memory GX context with usage analytics and progress bars off in its own config."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _is_birth_date(cf: ContractField) -> bool:
    return cf.unified_column.endswith("birth_date")


def expectations_for(cf: ContractField, as_of: date) -> list[tuple[str, dict[str, Any]]]:
    """The (expectation type, kwargs) pairs a contract field implies, in a fixed order."""
    column = {"column": cf.name}
    out: list[tuple[str, dict[str, Any]]] = []
    if cf.required:
        out.append(("expect_column_values_to_not_be_null", column))
    if cf.type in SHAPES:
        out.append(("expect_column_values_to_match_regex", {**column, "regex": SHAPES[cf.type]}))
    if cf.pattern:
        out.append(("expect_column_values_to_match_regex", {**column, "regex": cf.pattern}))
    if cf.allowed:
        out.append(("expect_column_values_to_be_in_set", {**column, "value_set": list(cf.allowed)}))
    if cf.type in ("date", "datetime"):
        latest = pd.Timestamp(as_of) + pd.Timedelta(days=1) if _is_birth_date(cf) else DATE_MAX
        out.append(
            ("expect_column_values_to_be_between", {**column, "min_value": DATE_MIN, "max_value": latest})
        )
    return out


# Suites and their validation definitions, per process: a batch pays GX's run, not its set-up.
_SUITES: dict[str, ExpectationSuite] = {}
_CHECKS: dict[int, tuple[ExpectationSuite, Any]] = {}


def build_suite(contract: Contract, as_of: date | None = None) -> ExpectationSuite:
    """The GX suite for a contract: required, shapes, patterns, allowed codes and plausible dates.

    Built once per process for the same contract fields and day (later batches reuse it and its GX context).
    """
    as_of = as_of or date.today()
    planned = [
        (cf.name, cf.label, kind, kwargs) for cf in contract.fields for kind, kwargs in expectations_for(cf, as_of)
    ]
    key = repr((contract.dataset, contract.version, as_of.isoformat(), planned))
    cached = _SUITES.get(key)
    if cached is not None:
        return cached
    gx = _gx()
    from great_expectations.expectations.registry import get_expectation_impl

    expectations = [
        get_expectation_impl(kind)(**kwargs, meta={"field": name, "label": label})
        for name, label, kind, kwargs in planned
    ]
    # given to the constructor: add_expectation() would need a context to save the suite into
    suite = gx.ExpectationSuite(
        name=f"{contract.dataset}.v{contract.version}",
        expectations=expectations,
        meta={"dataset": contract.dataset, "contract_version": contract.version, "as_of": as_of.isoformat()},
    )
    if len(suite.expectations) != len(expectations):
        raise ValidationError(f"{contract.dataset}: GX refused part of the generated suite")
    _SUITES[key] = suite
    return suite


def checked_columns(contract: Contract) -> list[str]:
    """The fields the suite has an expectation on (GX is given only these, plus ``_row``)."""
    today = date.today()
    return [cf.name for cf in contract.fields if expectations_for(cf, today)]


def _rows_of(unexpected_index_list: Iterable[Any]) -> list[int]:
    """Row numbers from GX's index list: [{'_row': [1, 5]}] (values excluded) or [{'_row': 1}, ...]."""
    rows: list[int] = []
    for item in unexpected_index_list or ():
        value = item[ROW] if isinstance(item, dict) else item
        if isinstance(value, list | tuple | np.ndarray):
            rows.extend(int(v) for v in value)
        else:
            rows.append(int(value))
    return rows


def _raised(info: Any) -> bool:
    """Whether GX hit an exception: flat ``{"raised_exception": ...}`` or nested per metric (GX 1.x)."""
    if not isinstance(info, dict):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and bool(v.get("raised_exception")) for v in info.values())


def _scrub(node: Any) -> Any:
    """A copy of a GX result with every key that could hold a value removed."""
    if isinstance(node, dict):
        return {k: _scrub(v) for k, v in node.items() if k not in _VALUE_KEYS}
    if isinstance(node, list):
        return [_scrub(v) for v in node]
    return node


def _write_json(path: Path, payload: Any) -> None:
    """JSON written atomically and owner-only, so readers never see half a file."""
    write_atomic(path, json.dumps(payload, ensure_ascii=False, indent=1, default=str).encode("utf-8"))


def gx_frame(data: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The columns the suite reads, dates in nanoseconds (GX's vectorised range check), plus ``_row``.

    Columns no expectation reads are left out: GX copies and fingerprints every column it is given.
    """
    columns = checked_columns(contract)
    frame = data[columns].copy(deep=False)
    for cf in contract.fields:
        if cf.name not in frame.columns:
            continue
        stamps = frame[cf.name]
        if cf.type in ("date", "datetime") and pd.api.types.is_datetime64_dtype(stamps.dtype):
            representable = stamps.isna() | ((stamps >= _NS_MIN) & (stamps <= _NS_MAX))
            # a date beyond the nanosecond range (a year like 0201) becomes one the range check rejects
            frame[cf.name] = stamps.where(representable, _NS_MIN).astype("datetime64[ns]")
    frame[ROW] = np.arange(len(frame), dtype=np.int64)
    return frame


def run_suite(frame: pd.DataFrame, suite: ExpectationSuite) -> Any:
    """Validate a frame (holding the ``_row`` column) with GX on an ephemeral context.

    The context and its validation definition are made once per suite and process, then run per batch.
    """
    cached = _CHECKS.get(id(suite))
    if cached is None or cached[0] is not suite:
        gx = _gx()
        context = ephemeral_context()
        source = context.data_sources.add_pandas(name="hub_batch")
        asset = source.add_dataframe_asset(name="conformed")
        definition = asset.add_batch_definition_whole_dataframe("whole_batch")
        # a validation definition loads the batch once; batch.validate() would load (and fingerprint) it twice
        check = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=definition, suite=context.suites.add(suite))
        )
        cached = _CHECKS[id(suite)] = (suite, check)
    return cached[1].run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT)


def validate(
    conformed: Conformed,
    contract: Contract,
    results_dir: Path | None = None,
    as_of: date | None = None,
) -> Validation:
    """Run the contract's suite over a conformed batch and split it into good rows and reasoned bad rows.

    With ``results_dir``, the GX results (row numbers and counts only) and a summary go there as JSON.
    """
    data = conformed.data
    if ROW in data.columns:
        raise ValueError(f"{contract.dataset}: the batch already has a '{ROW}' column")
    rows = len(data)
    positions: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    required = {cf.name for cf in contract.fields if cf.required}
    softened: dict[str, np.ndarray] = {}  # optional field -> positions GX rejected
    problems = dict(conformed.field_problems)

    issues = conformed.issues
    reported: dict[str, np.ndarray] = {}  # field -> positions conform already gave a reason for
    if not issues.empty:
        at = data.index.get_indexer(pd.Index(issues["row"]))
        positions.append(at)
        found = "conform:" + issues["reason"].astype(str) + ":" + issues["field"].astype(str)
        codes.append(found.to_numpy(dtype=object))
        by_field = pd.Series(at).groupby(issues["field"].astype(str).to_numpy())
        reported = {str(name): group.to_numpy() for name, group in by_field}

    expectation_counts: dict[str, int] = {}
    gx_seconds = 0.0
    result_json: dict[str, Any] | None = None
    if rows:
        suite = build_suite(contract, as_of)
        frame = gx_frame(data, contract)
        started = time.perf_counter()
        result = run_suite(frame, suite)
        gx_seconds = time.perf_counter() - started
        for outcome in result.results:
            config = outcome.expectation_config
            column = config.kwargs.get("column", "")
            code = f"gx:{config.type}:{column}"
            if _raised(outcome.exception_info):
                raise ValidationError(f"{contract.dataset}: {config.type} on field '{column}' could not run")
            failed = np.asarray(_rows_of(outcome.result.get("unexpected_index_list") or []), dtype=np.int64)
            expectation_counts[code] = expectation_counts.get(code, 0) + len(failed)
            # the same field of the same row is one problem: conform's reason names its cause
            failed = failed[~np.isin(failed, reported.get(column, []))]
            if not len(failed):
                continue
            if column not in required:
                key = f"{column}:{config.type}"
                problems[key] = problems.get(key, 0) + len(failed)
                softened[column] = np.union1d(softened.get(column, []), failed).astype(np.int64)
                continue
            positions.append(failed)
            codes.append(np.full(len(failed), code, dtype=object))
        result_json = _scrub(result.to_json_dict())

    reasons = _combine(data.index, positions, codes)
    bad = np.zeros(rows, dtype=bool)
    if len(reasons):
        bad[data.index.get_indexer(reasons.index)] = True
    cleaned = data.copy()
    for column, at in softened.items():  # an optional value that failed is set missing, on every row
        cleaned.loc[data.index[at], column] = None
    good = cleaned.loc[~bad]
    problems = dict(sorted(problems.items()))
    reason_counts = Counter(code for joined in reasons for code in joined.split(";"))
    summary: dict[str, Any] = {
        "dataset": contract.dataset,
        "contract_version": contract.version,
        "rows": rows,
        "good": int(rows - bad.sum()),
        "bad": int(bad.sum()),
        "quarantine_rate": float(bad.sum() / rows) if rows else 0.0,
        "expectations": expectation_counts,
        "conform_issues": {f"conform:{k}": n for k, n in conformed.issue_counts().items()},
        "field_problems": problems,
        "reasons": dict(sorted(reason_counts.items())),
        "unknown_columns": list(conformed.unknown_columns),
        "missing_columns": list(conformed.missing_columns),
        "gx_seconds": round(gx_seconds, 3),
    }
    if results_dir is not None:
        if result_json is not None:
            _write_json(Path(results_dir) / RESULTS_FILE, result_json)
        _write_json(Path(results_dir) / SUMMARY_FILE, summary)
    return Validation(
        good=good, bad_index=data.index[bad], reasons=reasons, summary=summary, field_problems=problems, cleaned=cleaned
    )


def _combine(index: pd.Index, positions: list[np.ndarray], codes: list[np.ndarray]) -> pd.Series:
    """Per bad row (by index label), its reason codes joined with ';' in the order they were found."""
    if not positions:
        return pd.Series([], index=index[:0], dtype=object)
    pos = np.concatenate(positions)
    code = np.concatenate(codes)
    if (pos < 0).any():
        raise ValueError("an issue names a row that is not in the batch")
    order = np.argsort(pos, kind="stable")
    found = pd.DataFrame({"pos": pos[order], "code": code[order]}).drop_duplicates()
    joined = found.groupby("pos", sort=True)["code"].agg(";".join)
    return pd.Series(joined.to_numpy(), index=index[joined.index.to_numpy()], name="reasons", dtype=object)

"""The privacy officer's report: policy, coverage, keys, reveal log, leak scan and re-identification risk.

Written as report.json and report.html. It shows decisions, counts and risks, never a plaintext
value: leak findings name the table, column and how many values matched.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from privacy.audit_log import LogVerification, read_entries, verify_log
from privacy.coverage import CoverageResult, check_coverage
from privacy.keyring import Keyring, KeyringError
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_QI_DOMAIN, Policy
from schemas.base import write_atomic
from schemas.contract import Contract
from schemas.id_number import check_character

ID_PATTERN = re.compile(r"(?<![0-9A-Za-z])([0-9]{17}[0-9Xx])(?![0-9A-Za-z])")
# like ID_PATTERN, a phone is not part of a longer alphanumeric run: hex keys and base64 ciphertexts hold
# eleven-digit runs by chance (about 1 in 200 person keys), which are not phone numbers
MOBILE_PATTERN = re.compile(r"(?<![0-9A-Za-z])(1[3-9][0-9]{9})(?![0-9A-Za-z])")
_DIGIT_RUN = r"[0-9]{11}"  # prefilter run in Arrow: both leak patterns need eleven digits in a row
_CJK = r"[\u4e00-\u9fff]"
_VERSION_PREFIX = r"^([te])([0-9]+)\."
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast"})
STRING = pd.StringDtype()


# -- leak scan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakFinding:
    """Values in one column that look like plaintext personal data (counts only)."""

    table: str
    column: str
    kind: str
    values: int
    rows: int


def load_truth_names(truth: Path | str) -> set[str]:
    """Names from a synthetic ground truth (DIR/truth or DIR/truth/persons.parquet, column 'name').

    Two-character names are kept; they are also ordinary words (孙子, 兄弟), so ``scan_values`` does not look
    for names inside the contracts' code-list values (与户主关系 兄弟姐妹 is not a leak).
    """
    path = Path(truth)
    if path.is_dir():
        path = path / "persons.parquet"
    names = pd.read_parquet(path, columns=["name"])["name"].dropna().astype(str)
    return {n for n in names if len(n) >= 2}


def _ids_with_valid_check(text: str) -> bool:
    return any(m[17].upper() == check_character(m[:17]) for m in ID_PATTERN.findall(text))


def _contains_name(text: str, names: set[str], lengths: tuple[int, ...]) -> bool:
    return any(text[i : i + n] in names for n in lengths for i in range(len(text) - n + 1))


@cache
def code_list_values() -> frozenset[str]:
    """Every value a contract's code list allows or maps (与户主关系, 残疾类别 …): words, not personal data."""
    from schemas.contract import packaged_contracts

    words: set[str] = set()
    for contract in packaged_contracts().values():
        for f in contract.fields:
            words |= set(f.allowed or ()) | set(f.value_map) | set(f.value_map.values())
    return frozenset(words)


def scan_values(distinct: pd.DataFrame, names: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """Leak kinds found among distinct values (columns 'value', 'n'): kind -> (distinct values, rows)."""
    found: dict[str, tuple[int, int]] = {}
    values = distinct["value"].astype(STRING)
    counts = distinct["n"].astype("int64")
    digits = values.str.contains(_DIGIT_RUN, regex=True).fillna(False).astype(bool)
    if digits.any():
        cand = values[digits].astype(str)
        for kind, test in (
            ("id_number", _ids_with_valid_check),
            ("phone", lambda t: MOBILE_PATTERN.search(t) is not None),
        ):
            hit = cand.map(test).astype(bool)
            if hit.any():
                found[kind] = (int(hit.sum()), int(counts.loc[hit[hit].index].sum()))
    if names:
        lengths = tuple(sorted({len(n) for n in names}))
        cjk = values.str.contains(_CJK, regex=True).fillna(False).astype(bool)
        if cjk.any():
            cand = values[cjk].astype(str)
            vocabulary = code_list_values()
            hit = cand.map(lambda t: t not in vocabulary and _contains_name(t, names, lengths)).astype(bool)
            if hit.any():
                found["name"] = (int(hit.sum()), int(counts.loc[hit[hit].index].sum()))
    return found


def _tables(engine: Engine) -> list[sa.Table]:
    """Every user table in every schema of the database, reflected."""
    inspector = sa.inspect(engine)
    schemas: list[str | None] = [None]
    if engine.dialect.name == "postgresql":
        default = inspector.default_schema_name
        schemas += [s for s in inspector.get_schema_names() if s not in _SYSTEM_SCHEMAS and s != default]
    tables = []
    for schema in schemas:
        meta = sa.MetaData()
        for name in inspector.get_table_names(schema=schema):
            tables.append(sa.Table(name, meta, autoload_with=engine, schema=schema))
    return tables


def _is_text(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.String | sa.types.NullType)


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


@dataclass
class DatabaseScan:
    """What scanning the published database found."""

    database: str
    tables: int
    columns: int
    findings: list[LeakFinding]
    versions_in_use: dict[str, dict[str, int]]
    reidentification: list[dict[str, Any]]

    @property
    def clean(self) -> bool:
        """No plaintext ID number, phone or known name anywhere."""
        return not self.findings


def _distinct(conn: sa.Connection, column: sa.Column[Any]) -> pd.DataFrame:
    """Distinct values of a column with their row counts: the database does the de-duplication."""
    query = sa.select(column.label("value"), sa.func.count().label("n")).where(column.is_not(None)).group_by(column)
    return pd.DataFrame(conn.execute(query).all(), columns=["value", "n"])


def _tier(table: sa.Table) -> str:
    """The published tier of a table: its schema, or on SQLite (no schemas) the model's tier of that name."""
    if table.schema:
        return table.schema
    from schemas.unified import published_tables

    return next((str(t.schema) for t in published_tables() if t.name == table.name), "")


def reidentification_risk(
    conn: sa.Connection,
    table: sa.Table,
    quasi_identifiers: Iterable[str],
    threshold_k: int,
    sensitive: Iterable[str] = (),
    threshold_l: int = 2,
) -> dict[str, Any]:
    """k-anonymity, uniqueness and prosecutor risk of one table over one quasi-identifier set, and the
    distinct l-diversity of its sensitive columns (the release tier's gate)."""
    cols = [table.c[c] for c in quasi_identifiers]
    sensitive = [c for c in sensitive if c in table.c]
    diversity = [sa.func.count(sa.distinct(table.c[c])) for c in sensitive]
    query = sa.select(sa.func.count().label("n"), *diversity).select_from(table).group_by(*cols)
    fetched = conn.execute(query).all()
    sizes = pd.Series([r[0] for r in fetched], dtype="int64")
    l_min = min((min(r[1:]) for r in fetched), default=None) if sensitive else None
    rows = int(sizes.sum())
    result: dict[str, Any] = {
        "table": _qualified(table),
        "tier": _tier(table),
        "quasi_identifiers": list(quasi_identifiers),
        "sensitive": list(sensitive),
        "rows": rows,
        "classes": len(sizes),
        "threshold_k": threshold_k,
        "threshold_l": threshold_l if sensitive else None,
        "l_min": l_min,
    }
    if rows == 0:
        return result | {
            "k_min": None,
            "unique_share": 0.0,
            "prosecutor_max": 0.0,
            "prosecutor_avg": 0.0,
            "records_below_k": 0.0,
            "passes": True,
        }
    k_min = int(sizes.min())
    return result | {
        "k_min": k_min,
        "unique_share": float(sizes[sizes == 1].sum() / rows),
        "prosecutor_max": 1.0 / k_min,
        # the average over records of 1/(size of the record's class) is classes/rows
        "prosecutor_avg": len(sizes) / rows,
        "records_below_k": float(sizes[sizes < threshold_k].sum() / rows),
        "passes": k_min >= threshold_k and (l_min is None or l_min >= threshold_l),
    }


def scan_database(
    database_url: str, policy: Policy, names: set[str] | None = None, threshold_k: int | None = None
) -> DatabaseScan:
    """Leak scan of every text column of every table, key versions seen, and re-identification risk."""
    k = threshold_k or policy.threshold_k
    engine = sa.create_engine(database_url)
    findings: list[LeakFinding] = []
    versions: dict[str, dict[str, int]] = {}
    risks: list[dict[str, Any]] = []
    columns = 0
    try:
        tables = _tables(engine)
        with engine.connect() as conn:
            for table in tables:
                for column in table.columns:
                    if not _is_text(column):
                        continue
                    columns += 1
                    distinct = _distinct(conn, column)
                    if distinct.empty:
                        continue
                    for kind, (values, rows) in scan_values(distinct, names).items():
                        findings.append(LeakFinding(_qualified(table), column.name, kind, values, rows))
                    prefix = distinct["value"].astype(STRING).str.extract(_VERSION_PREFIX)
                    seen = prefix.dropna()
                    if not seen.empty:
                        per = distinct.loc[seen.index, "n"].groupby(seen[0] + seen[1]).sum()
                        versions[f"{_qualified(table)}.{column.name}"] = {str(v): int(n) for v, n in per.items()}
                for qi in policy.sets_for(table.name):
                    if all(c in table.c for c in qi):
                        sensitive = policy.sensitive_columns.get(table.name, ())
                        risks.append(reidentification_risk(conn, table, qi, k, sensitive, policy.threshold_l))
    finally:
        engine.dispose()
    return DatabaseScan(
        database=make_url(database_url).render_as_string(hide_password=True),
        tables=len(tables),
        columns=columns,
        findings=findings,
        versions_in_use=versions,
        reidentification=risks,
    )


# -- the report -----------------------------------------------------------------------------------------


def _policy_tables(contracts: Mapping[str, Contract], coverage: CoverageResult) -> list[dict[str, Any]]:
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for f in coverage.fields:
        rule = f.rule
        by_dataset.setdefault(f.dataset, []).append(
            {
                "field": f.field,
                "label": f.label,
                "privacy": f.privacy,
                "type": f.type,
                "unified": f.unified,
                "treatment": str(rule.treatment) if rule else None,
                "display": str(rule.display) if rule and rule.display else None,
                "columns": list(rule.output_columns(f.field)) if rule else [],
                "purpose": rule.purpose if rule else None,
                "legal_basis": rule.legal_basis if rule else None,
                "rule": rule.key if rule else None,
                "problem": f.problem,
            }
        )
    return [
        {
            "dataset": name,
            "title": contracts[name].title,
            "department": contracts[name].department_label,
            "sharing_type": contracts[name].sharing_type,
            "fields": by_dataset.get(name, []),
        }
        for name in sorted(contracts)
    ]


def _keys_section(keyring: Keyring | None, error: str | None) -> dict[str, Any]:
    if keyring is None:
        return {"error": error or "no keyring"}
    return {
        "source": keyring.source,
        "active": keyring.active_version,
        "versions": [asdict(v) for v in keyring.describe()],
    }


def _reveal_section(log_path: Path, engine: Engine | None, keyring: Keyring | None) -> dict[str, Any]:
    if engine is None or keyring is None:
        missing = "hub database (the log's head)" if engine is None else "keyring (the chain's HMAC key)"
        check = LogVerification(False, 0, None, f"cannot verify the log without the {missing}")
    else:
        check = verify_log(log_path, engine, keyring)
    section: dict[str, Any] = {
        "path": str(log_path),
        "entries": check.entries,
        "chain_ok": check.ok,
        "first_broken": check.first_broken,
        "problem": check.reason,
    }
    try:
        entries = read_entries(log_path)
    except ValueError as exc:
        return section | {"read_error": str(exc)}
    outcomes = Counter(
        "revealed" if e.get("outcome") == "revealed" else str(e.get("outcome", "")).split(":")[0] for e in entries
    )
    return section | {
        "by_action": dict(Counter(str(e.get("action")) for e in entries)),
        "by_outcome": dict(outcomes),
        "by_operator": dict(Counter(str(e.get("operator")) for e in entries)),
        "by_domain": dict(Counter(str(e.get("domain")) for e in entries if e.get("domain"))),
        "first": entries[0].get("timestamp") if entries else None,
        "last": entries[-1].get("timestamp") if entries else None,
    }


def build_report(
    policy: Policy,
    contracts: Mapping[str, Contract],
    log_path: Path,
    keyring: Keyring | None = None,
    keyring_error: str | None = None,
    database_url: str | None = None,
    truth: Path | str | None = None,
    threshold_k: int | None = None,
    audit_engine: Engine | None = None,
) -> dict[str, Any]:
    """Everything the privacy officer signs off, as one JSON-ready dict; ``audit_engine`` holds the log's head."""
    coverage = check_coverage(contracts, policy)
    k = threshold_k or policy.threshold_k
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": {
            "path": policy.path,
            "version": policy.version,
            "owner": policy.owner,
            "linkage": {
                "domains": [LINKAGE_DOMAIN, LINKAGE_QI_DOMAIN],
                "purpose": policy.linkage_purpose,
                "legal_basis": policy.linkage_legal_basis,
            },
        },
        "datasets": _policy_tables(contracts, coverage),
        "coverage": coverage.as_dict(),
        "keys": _keys_section(keyring, keyring_error),
        "reveal_log": _reveal_section(log_path, audit_engine, keyring),
        "leak_scan": None,
        "reidentification": {"threshold_k": k, "tables": []},
    }
    if database_url:
        names = load_truth_names(truth) if truth else None
        scan = scan_database(database_url, policy, names, k)
        report["leak_scan"] = {
            "database": scan.database,
            "tables": scan.tables,
            "text_columns": scan.columns,
            "names_checked": len(names) if names else 0,
            "clean": scan.clean,
            "findings": [asdict(f) for f in scan.findings],
        }
        report["keys"]["in_use"] = scan.versions_in_use
        report["reidentification"]["tables"] = scan.reidentification
    return report


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page; every value is escaped."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        "<title>个人信息保护审计报告 Privacy officer's report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 6px;font-size:13px;vertical-align:top}th{background:#eee}"
        ".bad{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}</style></head><body>",
        "<h1>个人信息保护审计报告 (privacy officer's report)</h1>",
        f"<p>Generated {e(str(report['generated_at']))}; policy {e(str(report['policy']['path']))} "
        f"version {e(str(report['policy']['version']))}, owner {e(str(report['policy']['owner']))}.</p>",
    ]
    cov = report["coverage"]
    status = "<span class='ok'>OK</span>" if cov["ok"] else "<span class='bad'>FAILED</span>"
    parts.append(f"<h2>Coverage</h2><p>{status}: {cov['fields']} contract fields.</p>")
    if cov["uncovered"] or cov["invalid"]:
        parts.append(_table(["uncovered field"], [[f] for f in cov["uncovered"]]))
        parts.append(_table(["field", "problem"], [[i["field"], i["problem"]] for i in cov["invalid"]]))
    parts.append("<h2>Policy per dataset</h2>")
    link = report["policy"]["linkage"]
    parts.append(f"<p>Linkage ({e(', '.join(link['domains']))}): {e(link['purpose'])}; {e(link['legal_basis'])}</p>")
    for ds in report["datasets"]:
        parts.append(f"<h3>{e(ds['dataset'])} {e(ds['title'])} ({e(ds['department'])}, {e(ds['sharing_type'])})</h3>")
        parts.append(
            _table(
                ["field", "中文名", "class", "treatment", "display", "purpose", "legal basis"],
                [
                    [
                        f["field"],
                        f["label"],
                        f["privacy"],
                        f["treatment"] or "— NONE —",
                        f["display"],
                        f["purpose"],
                        f["legal_basis"],
                    ]
                    for f in ds["fields"]
                ],
            )
        )
    keys = report["keys"]
    parts.append("<h2>Key versions</h2>")
    if "error" in keys:
        parts.append(f"<p class='bad'>{e(keys['error'])}</p>")
    else:
        parts.append(f"<p>Source {e(str(keys['source']))}; active version {keys['active']}.</p>")
        parts.append(
            _table(
                ["version", "created", "active", "destroyed"],
                [[v["version"], v["created"], v["active"], v["destroyed"]] for v in keys["versions"]],
            )
        )
        if keys.get("in_use"):
            parts.append(
                _table(
                    ["column", "values per key version"],
                    [[c, json.dumps(v)] for c, v in sorted(keys["in_use"].items())],
                )
            )
    log = report["reveal_log"]
    chain = (
        "<span class='ok'>intact</span>"
        if log["chain_ok"]
        else (f"<span class='bad'>BROKEN at entry {log['first_broken']}: {e(str(log['problem']))}</span>")
    )
    parts.append(f"<h2>Reveal log</h2><p>{e(log['path'])}: {log['entries']} entries, chain {chain}.</p>")
    for key in ("by_outcome", "by_operator", "by_domain", "by_action"):
        if log.get(key):
            parts.append(_table([key.removeprefix("by_"), "entries"], sorted(log[key].items())))
    leak = report["leak_scan"]
    parts.append("<h2>Leak scan</h2>")
    if leak is None:
        parts.append("<p>No database given (--database-url).</p>")
    else:
        verdict = "<span class='ok'>clean</span>" if leak["clean"] else "<span class='bad'>PLAINTEXT FOUND</span>"
        parts.append(
            f"<p>{e(leak['database'])}: {leak['tables']} tables, {leak['text_columns']} text columns, "
            f"{leak['names_checked']} ground-truth names checked: {verdict}.</p>"
        )
        if leak["findings"]:
            parts.append(
                _table(
                    ["table", "column", "kind", "distinct values", "rows"],
                    [[f["table"], f["column"], f["kind"], f["values"], f["rows"]] for f in leak["findings"]],
                )
            )
    risk = report["reidentification"]
    parts.append(f"<h2>Re-identification risk (prosecutor model, k ≥ {risk['threshold_k']})</h2>")
    if risk["tables"]:
        parts.append(
            _table(
                [
                    "table",
                    "quasi-identifiers",
                    "rows",
                    "classes",
                    "k-min",
                    "unique share",
                    "max risk",
                    "avg risk",
                    "records below k",
                    "l-min (sensitive)",
                    "verdict",
                ],
                [
                    [
                        r["table"] + (" (release tier)" if r.get("tier") == "release" else ""),
                        ", ".join(r["quasi_identifiers"]),
                        r["rows"],
                        r["classes"],
                        r["k_min"],
                        f"{r['unique_share']:.4f}",
                        f"{r['prosecutor_max']:.4f}",
                        f"{r['prosecutor_avg']:.4f}",
                        f"{r['records_below_k']:.4f}",
                        f"{r['l_min']} ({', '.join(r['sensitive'])})" if r.get("sensitive") else "-",
                        "pass" if r["passes"] else "BELOW THRESHOLD",
                    ]
                    for r in risk["tables"]
                ],
            )
        )
    else:
        parts.append("<p>No published table holds a configured quasi-identifier set.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(report: Mapping[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """Write report.json and report.html into ``out_dir`` (files 0600, folder 0700); return their paths."""
    out = Path(out_dir)
    json_path = write_atomic(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n")
    html_path = write_atomic(out / "report.html", render_html(report))
    return json_path, html_path


def load_keyring_for_report(keyring_json: str | None, keyfile: Path) -> tuple[Keyring | None, str | None]:
    """The hub keyring, or the reason it could not be read (the report still shows everything else)."""
    try:
        return Keyring.load(keyring_json, keyfile), None
    except KeyringError as exc:
        return None, str(exc)

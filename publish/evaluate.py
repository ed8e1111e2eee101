"""How well the cross-department views find the conflicts the simulators planted (synthetic truth only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from publish.checks import UNION_VIEW
from schemas.migrate import prepared


@dataclass(frozen=True)
class RuleFigure:
    """One rule: cases in the truth, rows the view found, and how many of each agree (subject + evidence)."""

    rule_id: str
    planted: int
    found: int
    matched: int

    @property
    def recall(self) -> float:
        """Share of the truth's cases the view found."""
        return self.matched / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        """Share of the view's rows that are true cases."""
        return self.matched / self.found if self.found else 1.0


def compare_conflicts(engine: sa.Engine, truth: Path) -> list[RuleFigure]:
    """Per rule, the view's (subject, evidence) record pairs against ``truth`` (conflicts.parquet)."""
    expected = pd.read_parquet(truth)
    with engine.connect() as raw:
        conn = prepared(raw)
        view = UNION_VIEW if conn.dialect.name == "sqlite" else f"core.{UNION_VIEW}"
        result = conn.exec_driver_sql(f"SELECT rule_id, subject_key, evidence_key FROM {view}")
        found = pd.DataFrame(result.fetchall(), columns=["rule_id", "subject_key", "evidence_key"])
    figures = []
    for rule in sorted(set(expected["rule_id"]) | set(found["rule_id"])):
        want = expected[expected["rule_id"].eq(rule)]
        got = found[found["rule_id"].eq(rule)]
        pairs = set(zip(want["record_id"], want["evidence_record_id"].fillna(""), strict=True))
        have = set(zip(got["subject_key"], got["evidence_key"].fillna(""), strict=True))
        figures.append(RuleFigure(str(rule), len(pairs), len(have), len(pairs & have)))
    return figures

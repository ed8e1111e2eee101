"""Linkage quality against the simulators' ground truth: pairwise precision, recall and F1.

Pairs are counted over every truth record (a record never staged misses all its pairs). Records are
matched to the staged ones by their record id as the privacy policy publishes it (an FPE'd certificate
number, say), so the truth is read here, in the trusted zone, and nothing of it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from linkage import store
from privacy.keyring import Keyring
from privacy.policy import Policy, load_policy
from privacy.protect import protect_field
from schemas.contract import get_contract


@dataclass(frozen=True)
class PairScore:
    """Pairwise counts and the figures derived from them."""

    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Evaluation:
    """Overall and per-kind scores, unkeyed placement figures, and the wrong records by id."""

    overall: PairScore
    by_kind: dict[str, PairScore]
    unkeyed: dict[str, float]
    records: dict[str, int]
    wrong: list[tuple[str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as text lines (figures only)."""
        o = self.overall
        out = [
            f"records: {self.records['truth']:,} in truth, {self.records['linked']:,} linked",
            f"pairwise precision {o.precision:.4f}  recall {o.recall:.4f}  F1 {o.f1:.4f}  "
            f"({o.correct_pairs:,} of {o.predicted_pairs:,} predicted pairs correct; {o.true_pairs:,} true pairs)",
        ]
        for kind, s in sorted(self.by_kind.items()):
            out.append(
                f"  pairs with a {kind:<13} record: precision {s.precision:.4f}  recall {s.recall:.4f}  "
                f"({s.correct_pairs:,}/{s.predicted_pairs:,}; {s.true_pairs:,} true)"
            )
        u = self.unkeyed
        out.append(
            f"unkeyed records (ID missing or invalid): {int(u['records']):,}; whose person has other records "
            f"{int(u['eligible']):,}; placed {int(u['placed']):,}, of them correct {int(u['correct']):,}: "
            f"precision {u['precision']:.4f}  recall {u['recall']:.4f}"
        )
        return out


def _pairs(sizes: pd.Series) -> int:
    return int((sizes * (sizes - 1) // 2).sum())


def score(frame: pd.DataFrame) -> PairScore:
    """Pairwise counts for a frame with ``person_id`` (truth) and ``person_key`` (prediction, may be missing)."""
    linked = frame.dropna(subset=["person_key"])
    return PairScore(
        true_pairs=_pairs(frame.groupby("person_id").size()),
        predicted_pairs=_pairs(linked.groupby("person_key").size()),
        correct_pairs=_pairs(linked.groupby(["person_key", "person_id"]).size()),
    )


def staged_record_ids(truth: pd.DataFrame, keyring: Keyring, policy: Policy) -> pd.Series:
    """Each truth record's id as staged (the policy's treatment of the record id field)."""
    out = truth["record_id"].astype("string").copy()
    for dataset, rows in truth.groupby("dataset"):
        contract = get_contract(str(dataset))
        cf = contract.by_unified(f"{contract.field('record_id').unified_table}.record_id")
        rule = policy.rule_for(contract, cf) if cf is not None else None
        if rule is not None and rule.treatment.kind != "keep":
            out.loc[rows.index] = protect_field(
                rows["record_id"].astype("string"), contract, "record_id", policy, keyring
            )
    return out


def evaluate(engine: sa.Engine, truth_path: Path, keyring: Keyring, policy: Policy | None = None) -> Evaluation:
    """Compare the lineage in the hub database with the simulators' truth records."""
    truth = pd.read_parquet(truth_path, columns=["dataset", "record_id", "person_id"])
    truth["record_id"] = staged_record_ids(truth, keyring, policy or load_policy())
    with engine.connect() as conn:
        lineage = store.read_table(
            conn, store.link_record, ["dataset", "record_id", "person_key", "match_kind", "id_status"]
        )
    frame = truth.merge(lineage, on=["dataset", "record_id"], how="left")
    overall = score(frame)
    by_kind = {}
    for kind in sorted(frame["match_kind"].dropna().unique()):
        without = score(frame[frame["match_kind"] != kind])
        by_kind[str(kind)] = PairScore(
            overall.true_pairs - without.true_pairs,
            overall.predicted_pairs - without.predicted_pairs,
            overall.correct_pairs - without.correct_pairs,
        )
    # the person each key stands for: the truth person of most of its exactly matched records
    exact = frame[frame["match_kind"].eq("exact")]
    owner = exact.groupby(["person_key", "person_id"]).size().reset_index(name="n")
    owner = owner.sort_values("n", ascending=False).drop_duplicates("person_key").set_index("person_key")["person_id"]
    unkeyed = frame[frame["id_status"].isin(["missing", "invalid"])]
    others = frame[frame["person_key"].notna() & ~frame["id_status"].isin(["missing", "invalid"])]
    has_others = unkeyed["person_id"].isin(set(others["person_id"]))
    placed = unkeyed["match_kind"].eq("probabilistic")
    correct = placed & unkeyed["person_key"].map(owner).eq(unkeyed["person_id"]).fillna(False).astype(bool)
    stats = {
        "records": float(len(unkeyed)),
        "eligible": float(has_others.sum()),
        "placed": float(placed.sum()),
        "correct": float(correct.sum()),
        "precision": float(correct.sum() / placed.sum()) if placed.any() else 1.0,
        "recall": float((correct & has_others).sum() / has_others.sum()) if has_others.any() else 1.0,
    }
    wrong_placed = unkeyed[placed & ~correct]
    wrong = [
        (d, r, "placed with another person")
        for d, r in zip(wrong_placed["dataset"], wrong_placed["record_id"], strict=True)
    ]
    mixed = exact.groupby("person_key")["person_id"].nunique()  # one ID number's records, two truth persons
    for key in mixed[mixed > 1].index:
        rows = exact[exact["person_key"].eq(key)]
        wrong += [
            (d, r, "one ID number, two persons in truth")
            for d, r in zip(rows["dataset"], rows["record_id"], strict=True)
        ]
    linked_count = int(frame["person_key"].notna().sum())
    return Evaluation(overall, by_kind, stats, {"truth": len(truth), "linked": linked_count}, wrong)

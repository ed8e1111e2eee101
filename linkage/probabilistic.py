"""The probabilistic pass: Splink (DuckDB, in memory) places records that no valid ID number keys.

Left: the unkeyed records (ID missing or failing its check). Right: one profile row per known person and
name variant, carrying everything the sources say about the person (birth dates, sex, counties,
communities, phone and household tokens). The model is Fellegi-Sunter with term-frequency adjustment on
names; u comes from random sampling, m from EM; the trained model is saved with the run.

Splink's match probability uses the prior of two random records (about one in the number of persons), so
a name alone scores low even when only one person carries it. The decision instead asks how far the best
person stands above the other candidates: its placement probability is its bayes factor's share among all
candidate persons (a softmax over their match weights). A record is placed when that share reaches the
threshold and the best weight is at least ``min_weight`` (so nobody is placed on a shared sex and county).
Decrypted quasi-identifiers live only in these in-memory frames and DuckDB's in-memory database.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

# Splink orders a link_only pair by source name, so the unkeyed record is usually on the left ("a" < "b");
# the comparisons below are written symmetrically all the same.
LEFT = "a_unkeyed"
RIGHT = "b_profiles"
SEP = ";"
#: columns both tables carry (Splink stacks them): one value, and the set of values a person has shown
COLUMNS = (
    "uid", "person_key", "name_s", "name_s_set", "pinyin", "surname", "given_pinyin", "birth_date",
    "birth_date_set", "sex", "sex_set", "county", "county_set", "community", "community_set", "phone", "phone_set",
    "household", "household_set", "swap_person", "swap_persons",
)  # fmt: skip


@dataclass(frozen=True)
class ModelSettings:
    """What a linkage run may tune; saved with the run (with the trained parameters) for reproducibility."""

    threshold: float = 0.95  # placement probability (share among candidates) the best person needs
    min_weight: float = -2.0  # the best person's Splink match weight (log2 odds) must reach this
    u_max_pairs: float = 1e6
    train_persons: int = 50_000  # random persons whose profiles train the model (u sampling, EM)
    em_sample: int = 20_000  # their keyed records that join the unkeyed ones for EM training
    seed: int = 1
    # a run with fewer records to place than this scores them with the newest saved model (trained on this
    # hub's data by an earlier run) instead of training again: a day's changes are placed in seconds
    reuse_below: int = 5_000


def _quiet_splink() -> None:
    """Keep Splink to errors: its INFO is SQL and counts, and its warnings are about levels EM saw too rarely to
    train, which the model's m priors and bounds already cover (it logs no record values either way)."""
    logging.getLogger("splink").setLevel(logging.ERROR)


def _comparisons(persons: int) -> list[Any]:
    """The comparisons; ``persons`` sets the u prior of levels two random records almost never reach (a shared
    phone, household or swapped ID), which random sampling cannot count often enough to estimate."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def missing(column: str) -> Any:
        """The null level: the value is missing on either side, so the comparison says nothing."""
        return cll.CustomLevel(f"{column}_l IS NULL OR {column}_r IS NULL", label_for_charts="missing").configure(
            is_null_level=True
        )

    def contains(column: str) -> str:
        return (
            f"(list_contains(string_split({column}_set_r, '{SEP}'), {column}_l) "
            f"OR list_contains(string_split({column}_set_l, '{SEP}'), {column}_r))"
        )

    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel("name_s"),
            cll.ExactMatchLevel("name_s", term_frequency_adjustments=True),
            cll.CustomLevel(contains("name_s"), label_for_charts="another name of the person"),
            cll.ExactMatchLevel("pinyin").configure(label_for_charts="same pinyin (homophone)"),
            cll.CustomLevel(
                "surname_l = surname_r AND jaro_winkler_similarity(given_pinyin_l, given_pinyin_r) >= 0.85",
                label_for_charts="same surname, similar given name",
            ),
            cll.ElseLevel(),
        ],
    )
    birth = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            missing("birth_date"),
            cll.CustomLevel(contains("birth_date"), label_for_charts="exact"),
            cll.CustomLevel(
                "substr(birth_date_l, 1, 4) = substr(birth_date_r, 1, 4) "
                "AND substr(birth_date_l, 6, 2) = substr(birth_date_r, 9, 2) "
                "AND substr(birth_date_l, 9, 2) = substr(birth_date_r, 6, 2)",
                label_for_charts="day and month swapped",
            ).configure(m_probability=0.002, fix_m_probability=True),  # too rare for EM: it drives m to zero
            cll.CustomLevel(
                "damerau_levenshtein(birth_date_l, birth_date_r) <= 1", label_for_charts="one typo or transposition"
            ).configure(m_probability=0.01, fix_m_probability=True),
            cll.ElseLevel(),
        ],
    )

    rare = 1.0 / max(persons, 2)

    def set_match(column: str, label: str, u_prior: float | None = None) -> Any:
        agree = cll.CustomLevel(contains(column), label_for_charts=label)
        return cl.CustomComparison(
            output_column_name=column,
            comparison_levels=[
                missing(column),
                agree.configure(u_probability=u_prior) if u_prior else agree,
                cll.ElseLevel(),
            ],
        )

    households = cl.CustomComparison(
        output_column_name="household",
        comparison_levels=[
            missing("household_set"),
            cll.CustomLevel(
                f"len(list_intersect(string_split(household_set_l, '{SEP}'), string_split(household_set_r, '{SEP}')))"
                " > 0",
                label_for_charts="same household",
            ).configure(u_probability=3 * rare),
            cll.ElseLevel(),
        ],
    )
    swap = cl.CustomComparison(
        output_column_name="swapped_id",
        comparison_levels=[
            cll.CustomLevel(
                "swap_persons_l IS NULL AND swap_persons_r IS NULL", label_for_charts="no swapped ID"
            ).configure(is_null_level=True),
            cll.CustomLevel(
                f"list_contains(string_split(swap_persons_l, '{SEP}'), person_key_r) "
                f"OR list_contains(string_split(swap_persons_r, '{SEP}'), person_key_l)",
                label_for_charts="the ID with two adjacent digits swapped is this person's",
            ).configure(m_probability=0.95, u_probability=rare, fix_m_probability=True, fix_u_probability=True),
            # fixed, not trained: EM sees too few such pairs, and an m it drives to zero stops the session
            cll.ElseLevel().configure(
                m_probability=0.05, u_probability=1 - rare, fix_m_probability=True, fix_u_probability=True
            ),
        ],
    )
    return [
        name,
        birth,
        set_match("sex", "same sex"),
        set_match("county", "same county"),
        set_match("community", "same community"),
        set_match("phone", "same phone", u_prior=rare),
        households,
        swap,
    ]


def _blocking() -> list[Any]:
    from splink import block_on
    from splink.blocking_rule_library import CustomRule

    return [
        block_on("name_s"),
        block_on("pinyin"),
        block_on("birth_date", "sex", "county"),
        CustomRule("l.phone = r.phone"),
        CustomRule("l.household = r.household"),
        CustomRule("l.swap_person = r.person_key"),
        CustomRule("l.person_key = r.swap_person"),
    ]


def settings_for(persons: int, retain: bool) -> Any:
    """The Splink settings: link the unkeyed table to the profiles, prior = one person among ``persons``."""
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="link_only",
        unique_id_column_name="uid",
        comparisons=_comparisons(persons),
        blocking_rules_to_generate_predictions=_blocking(),
        probability_two_random_records_match=1.0 / max(persons, 2),
        retain_matching_columns=retain,
        retain_intermediate_calculation_columns=retain,
        additional_columns_to_retain=["person_key"],
        max_iterations=20,
        em_convergence=1e-4,
    )


def _api(threads: int) -> Any:
    """Splink's DuckDB backend on a fresh in-memory database that never spills (its tables hold decrypted values)."""
    from splink import DuckDBAPI

    api = DuckDBAPI()
    api.duckdb_con.execute(f"SET threads TO {threads}")
    api.duckdb_con.execute("SET enable_progress_bar = false")
    api.duckdb_con.execute("SET temp_directory = ''")
    return api


def _linker(
    api: Any, left: pd.DataFrame, right: pd.DataFrame | pa.Table, settings: Any, name_tf: pd.DataFrame | None
) -> Any:
    """A Splink linker over the two tables, with the names' term frequencies over every known person."""
    from splink import Linker

    _quiet_splink()
    tables = [api.register(left, dataset_display_name=LEFT), api.register(right, dataset_display_name=RIGHT)]
    linker = Linker(tables, settings, log_level=None)
    if name_tf is not None:
        tf = api.register(name_tf, dataset_display_name="name_tf")
        linker.table_management.register_term_frequency_lookup(tf, "name_s")
    return linker


def train(
    left: pd.DataFrame,
    right: pd.DataFrame | pa.Table,
    persons: int,
    options: ModelSettings,
    name_tf: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Estimate u by random sampling and m by EM; return the model as Splink's JSON dict.

    DuckDB runs on one thread here: EM sums in parallel differ in their last digits from run to run.
    """
    from splink import block_on

    linker = _linker(_api(threads=1), left, right, settings_for(persons, retain=False), name_tf)
    linker.training.estimate_u_using_random_sampling(max_pairs=options.u_max_pairs, seed=options.seed)
    sessions = (("name", block_on("name_s"), True), ("birth date and sex", block_on("birth_date", "sex"), False))
    for label, rule, without_tf in sessions:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, estimate_without_term_frequencies=without_tf
            )
        except ValueError as exc:
            # Splink refuses an m that EM drives below 1e-300 (a level true matches never reach in this block)
            # and stops the session there; the model goes on with the estimates it has, bounded below
            log.warning("EM blocked on %s stopped early: %s", label, str(exc).split(".")[0])
    model: dict[str, Any] = linker.misc.save_model_to_json()
    model["probability_two_random_records_match"] = 1.0 / max(persons, 2)
    return _bounded(model)


#: EM can drive a level it never saw towards zero; Splink refuses to load values below 1e-300
_FLOOR = 1e-9


def _bounded(model: dict[str, Any]) -> dict[str, Any]:
    """The model with every m and u probability kept within [1e-9, 1], so it loads and scores finitely."""
    for comparison in model.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            for key in ("m_probability", "u_probability"):
                if level.get(key) is not None:
                    level[key] = min(1.0, max(_FLOOR, float(level[key])))
    return model


def settings_for_scoring(model: dict[str, Any], retain: bool = False) -> dict[str, Any]:
    """A saved model's settings for scoring: with the matching columns retained (for ``explain``) or not."""
    settings = dict(model)
    settings["retain_matching_columns"] = retain
    settings["retain_intermediate_calculation_columns"] = retain
    return settings


def predict(
    left: pd.DataFrame,
    right: pd.DataFrame | pa.Table,
    model: dict[str, Any],
    name_tf: pd.DataFrame | None = None,
    retain: bool = False,
) -> pd.DataFrame:
    """Scored pairs (uid_l, person_key_r, match_weight, match_probability) for every blocked pair."""
    linker = _linker(_api(threads=2), left, right, settings_for_scoring(model, retain), name_tf)
    frame: pd.DataFrame = linker.inference.predict().as_pandas_dataframe()
    if retain:
        frame.attrs["linker"] = linker
    return frame


def _decision_sql(pairs: str, options: ModelSettings) -> str:
    """The decision over a table of scored pairs, in DuckDB: one row per left uid with its best person (the
    highest weight, then the smallest key), the best person's bayes-factor share among the distinct candidate
    persons (each at its best weight), the best weight, Splink's probability for it, and whether it is placed."""
    left = "source_dataset_l = '" + LEFT + "'"
    return f"""
        WITH scored AS (
            SELECT CASE WHEN {left} THEN uid_l ELSE uid_r END AS uid,
                   CASE WHEN {left} THEN person_key_r ELSE person_key_l END AS person_key,
                   CAST(match_weight AS DOUBLE) AS w, CAST(match_probability AS DOUBLE) AS p
            FROM {pairs}
        ), persons AS (
            SELECT uid, person_key, max(w) AS w, arg_max(p, w) AS p FROM scored GROUP BY uid, person_key
        ), tops AS (
            SELECT uid, max(w) AS top FROM persons GROUP BY uid
        ), best AS (
            SELECT uid, any_value(top) AS top, 1.0 / sum(pow(2.0, greatest(w - top, -1000.0))) AS share,
                   min(person_key) FILTER (WHERE w = top) AS person_key
            FROM persons JOIN tops USING (uid) GROUP BY uid
        )
        SELECT b.uid, b.person_key, b.share AS match_probability, b.top AS match_weight, p.p AS splink_probability,
               b.share >= {float(options.threshold)!r} AND b.top >= {float(options.min_weight)!r} AS placed
        FROM best b JOIN persons p USING (uid, person_key) ORDER BY b.uid
    """


_DECIDED = ["uid", "person_key", "match_probability", "match_weight", "splink_probability", "placed"]


def decide(pairs: pd.DataFrame, options: ModelSettings) -> pd.DataFrame:
    """One row per left uid: best person, its probability and weight, the lead over the next person, placed?"""
    import duckdb

    if pairs.empty:
        return pd.DataFrame(columns=_DECIDED)
    with duckdb.connect() as con:
        con.execute("SET temp_directory = ''")  # the pairs may carry decrypted values: never spill
        con.register("_pairs", pairs)
        return con.sql(_decision_sql("_pairs", options)).df()


def place(
    left: pd.DataFrame,
    right: pd.DataFrame | pa.Table,
    model: dict[str, Any],
    options: ModelSettings,
    name_tf: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, int]:
    """Score every blocked pair and decide in Splink's DuckDB (the pairs never become a pandas frame: at 2.2 M
    residents they cost about 6 GiB and 22 s there); returns ``decide``'s rows and the number of scored pairs."""
    api = _api(threads=2)
    scored = _linker(api, left, right, settings_for_scoring(model), name_tf).inference.predict()
    con = api.duckdb_con
    [(pairs,)] = con.execute(f"SELECT count(*) FROM {scored.physical_name}").fetchall()
    decided: pd.DataFrame = con.sql(_decision_sql(scored.physical_name, options)).df()
    scored.drop_table_from_database_and_remove_from_cache()
    return decided, int(pairs)


def waterfall(pair: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-comparison log2 bayes factors of one scored pair (values blanked by Splink)."""
    linker = pair.attrs["linker"]
    record = pair.iloc[0].to_dict()
    chart = linker.visualisations.waterfall_chart([record], filter_nulls=False, remove_sensitive_data=True)
    return list(chart.raw_records)


def save_model(model: dict[str, Any], path: Path, options: ModelSettings) -> Path:
    """Write the trained model and the run's decision settings (parameters only, no values)."""
    from schemas.base import write_atomic

    payload = {"splink_model": model, "decision": options.__dict__}
    return write_atomic(path, json.dumps(payload, ensure_ascii=False, indent=1, sort_keys=True))


def load_model(path: Path) -> tuple[dict[str, Any], ModelSettings]:
    """A saved model and the decision settings it was run with."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return payload["splink_model"], ModelSettings(**payload["decision"])

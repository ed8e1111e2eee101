"""DuckDB SQL expressions that linkage and publish share."""

from __future__ import annotations


def mode_sql(column: str) -> str:
    """DuckDB aggregate: the most frequent non-null value, the smallest of a tie. DuckDB's ``mode`` breaks a tie
    by the order rows arrive in, which a parallel scan does not fix, so a rebuild could change a household."""
    return f"list_aggregate(list_sort(list({column}) FILTER (WHERE {column} IS NOT NULL)), 'mode')"

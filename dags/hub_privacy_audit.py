"""privacy_audit: the privacy officer's daily checks of the hub.

- ``coverage``: every contract field has a treatment in the privacy policy (``hub privacy check``);
- ``verify_log``: the reveal log's HMAC chain and both its heads are intact (``hub privacy verify-log``);
- ``report``: report.json and report.html under HUB_HOME/reports/privacy/<day>/ (``hub privacy report``),
  with the leak scan of the published database and the k / l figures; it runs even when a check failed,
  so the officer always gets the day's report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

DAY = "%Y-%m-%d"


@dag(
    dag_id="privacy_audit",
    description="Policy coverage, the reveal log's chain, and the privacy officer's report",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["hub", "privacy"],
    doc_md=__doc__,
)
def privacy_audit() -> None:
    @task(multiple_outputs=False)
    def coverage() -> dict[str, Any]:
        """Fail when a contract field has no treatment in the policy."""
        from hub.airflow_tasks import coverage_step

        return coverage_step()

    @task(multiple_outputs=False)
    def verify_log() -> dict[str, Any]:
        """Fail when the reveal log's chain or a head is broken."""
        from hub.airflow_tasks import verify_log_step

        return verify_log_step()

    @task(trigger_rule="all_done", multiple_outputs=False)
    def report() -> dict[str, Any]:
        """Write the day's report; fail on plaintext in the published database or a release below k or l."""
        from hub.airflow_tasks import report_step

        context = get_current_context()
        when = context.get("logical_date") or context["dag_run"].run_after
        return report_step(when.strftime(DAY))

    [coverage(), verify_log()] >> report()


privacy_audit()

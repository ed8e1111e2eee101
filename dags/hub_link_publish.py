"""link_publish: link the newly staged batches, publish core and sensitive, then the release tier behind its gate.

Scheduled on every ingest DAG's Asset (``hub://staged/<dataset>``): it runs when any dataset staged new
batches. Three coarse tasks, each one hub stage (``hub link``, ``hub publish --no-release``, the release
tier with its k-anonymity / l-diversity gate); a refused release fails the last task and leaves the
previous release in place. Each publish updates an Asset platforms can schedule on. A deadline alert
fires when a run is not done 45 minutes after it was queued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import (  # type: ignore[attr-defined]  # the deadline names are missing from airflow/sdk/__init__.pyi
    Asset,
    AssetAny,
    AsyncCallback,
    DeadlineAlert,
    DeadlineReference,
    dag,
    task,
)

from connectors.registry import registry

DEADLINE_MINUTES = 45
STAGED = [Asset(name=f"staged_{d}", uri=f"hub://staged/{d}", group="hub_staged") for d in registry()]
PUBLISHED_CORE = Asset(name="published_core", uri="hub://published/core", group="hub_published")
PUBLISHED_RELEASE = Asset(name="published_release", uri="hub://published/release", group="hub_published")


@dag(
    dag_id="link_publish",
    description="Link staged batches to stable person keys, publish the unified database, then the release tier",
    schedule=AssetAny(*STAGED),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # linkage mints keys: one run at a time (hub link also holds a lock)
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=DEADLINE_MINUTES),
        callback=AsyncCallback("hub.airflow_tasks.link_publish_late", kwargs={"minutes": DEADLINE_MINUTES}),
    ),
    tags=["hub", "link", "publish"],
    doc_md=__doc__,
)
def link_publish() -> None:
    @task(multiple_outputs=False)
    def link() -> dict[str, Any]:
        """Exact pass on link tokens, then Splink for records without a usable ID number."""
        from hub.airflow_tasks import link_step

        return link_step()

    @task(outlets=[PUBLISHED_CORE], multiple_outputs=False)
    def publish() -> dict[str, Any]:
        """Core and sensitive tiers in one transaction; only what changed, with its change-log rows."""
        from hub.airflow_tasks import publish_step

        return publish_step()

    @task(outlets=[PUBLISHED_RELEASE], multiple_outputs=False)
    def release() -> dict[str, Any]:
        """The release tier, published only when every table meets k and l."""
        from hub.airflow_tasks import release_step

        return release_step()

    link() >> publish() >> release()


link_publish()

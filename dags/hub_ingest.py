"""One ingest DAG per source dataset, generated from the source registry (connectors/sources.yaml).

Each DAG maps one task over the dataset's partitions (``.expand``) and, when the task staged new batches,
updates the dataset's Asset ``hub://staged/<dataset>``; link_publish is scheduled on those Assets. A run
that staged nothing is skipped, so it updates no Asset and triggers no link_publish. The work is
``hub.airflow_tasks.ingest_partition`` (the same stage functions as ``hub ingest``).

Parse time: the registry is read from the package's own files; nothing else (no database, no network,
no stage package) is touched until a task runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, dag, task

from connectors.registry import SourceDecl, registry

START = datetime(2026, 1, 1, tzinfo=UTC)
#: a source that is down is tried again after 1, 2, 4 minutes (then the run fails and says why)
RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
}


def dag_id(dataset: str) -> str:
    """``gongan.hukou`` -> ``ingest_gongan_hukou``."""
    return "ingest_" + dataset.replace(".", "_")


def ingest_dag(decl: SourceDecl) -> DAG:
    """The ingest DAG of one registered source dataset."""
    staged = Asset(name=f"staged_{decl.dataset}", uri=f"hub://staged/{decl.dataset}", group="hub_staged")

    @dag(
        dag_id=dag_id(decl.dataset),
        description=f"Ingest {decl.dataset} ({decl.contract.department_label} {decl.contract.title}) "
        f"from {decl.system} ({decl.kind})",
        schedule=decl.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,  # one run at a time: the watermark advances in one direction
        default_args=RETRIES,
        tags=["hub", "ingest", decl.system],
        doc_md=__doc__,
    )
    def ingest() -> None:
        @task(outlets=[staged], max_active_tis_per_dag=1, multiple_outputs=False)
        def ingest_partition(partition: str) -> dict[str, Any]:
            """Extract, conform, validate, quarantine, pseudonymise and stage one partition."""
            from airflow.sdk.exceptions import AirflowSkipException

            from hub.airflow_tasks import ingest_partition as run

            summary = run(decl.dataset, partition)
            if not summary["batches"]:
                raise AirflowSkipException(f"{decl.dataset}: nothing new to stage")
            return summary

        ingest_partition.expand(partition=list(decl.partitions))

    return ingest()


for _decl in registry().values():
    globals()[dag_id(_decl.dataset)] = ingest_dag(_decl)

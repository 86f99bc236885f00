"""engati-etl under Airflow: the nightly export, and a sharded backfill (one task per shard,
by dynamic task mapping).

Each task runs the engati-etl binary (installed on the workers, or use the same command lines in
a KubernetesPodOperator) and returns its last stdout line, the run's one-line JSON summary, as
its XCom: downstream tasks read counts from it instead of the logs. Its JSON logs (stderr) go to
the task log.

Exit codes (README, "Operating it") decide what Airflow does:
  0        success (with --rejects-exit-code 0 a run that dead-lettered messages is green too;
           the summary's messages.rejected says how many)
  2, 3, 4  configuration, authentication, request refused: fail at once, no retry
           (AirflowFailException), a person must fix it
  5, 6     source unavailable, output failure: fail and retry (a retry resumes, no row twice)
  7        another worker commits to the same object-storage output and namespace: retry later
  130      interrupted (the worker stopped the task): retry

The backfill's shards write one output on object storage, which holds its own state (commit
manifests, README "Object storage"): a retried task on another worker rebuilds its shard's state
from it and resumes without a row twice.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
from airflow.exceptions import AirflowException, AirflowFailException

ENGATI_ETL = os.environ.get("ENGATI_ETL_BIN", "engati-etl")
PIPELINE = "/srv/etl/pipelines/nightly.toml"
SHARDS = 8

# Fail at once: a retry cannot fix these.
NO_RETRY_EXIT_CODES = {2, 3, 4}


def engati_etl(args: list[str]) -> dict:
    """Runs engati-etl with `args`; returns its summary line (the XCom) or raises by exit code."""
    proc = subprocess.run(
        [ENGATI_ETL, *args],
        stdout=subprocess.PIPE,
        stderr=None,  # JSON log lines into the task log
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {"exit_code": proc.returncode}
    if proc.returncode == 0:
        return summary
    message = f"engati-etl exited {proc.returncode}: {summary.get('error')}"
    if proc.returncode in NO_RETRY_EXIT_CODES:
        raise AirflowFailException(message)
    raise AirflowException(message)


DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="engati_etl_nightly",
    schedule="30 1 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["engati-etl"],
)
def nightly():
    @task(execution_timeout=timedelta(hours=6))
    def export() -> dict:
        return engati_etl(
            [
                "run",
                PIPELINE,
                "--quiet",
                "--log-format",
                "json",
                "--metrics-file",
                "/var/lib/node_exporter/textfile_collector/engati_etl_nightly.prom",
                "--rejects-exit-code",
                "0",
            ]
        )

    export()


@dag(
    dag_id="engati_etl_backfill",
    schedule=None,  # triggered by hand, with the range as params
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"from": "2025-01-01", "to": "2026-01-01"},
    tags=["engati-etl"],
)
def backfill():
    @task(max_active_tis_per_dagrun=4, execution_timeout=timedelta(hours=12))
    def shard(index: int, params=None) -> dict:
        return engati_etl(
            [
                "backfill",
                PIPELINE,
                "--from",
                params["from"],
                "--to",
                params["to"],
                "--max-rps",
                "10",
                "--shard",
                f"{index}/{SHARDS}",
                "--out",
                "s3://analytics-etl/engati/nightly",
                "--quiet",
                "--log-format",
                "json",
                "--rejects-exit-code",
                "0",
            ]
        )

    shard.expand(index=list(range(SHARDS)))


nightly()
backfill()

"""logpipe's batch jobs scheduled by Airflow: the seed's daily_pipeline,
weekly_pipeline and manual_pipeline, each task one `logpipe jobs run`.

Copy this file into Airflow's dags folder on a host where the `logpipe`
binary runs and reaches the lake (a local data directory, or the same
`lake.root` on S3/HDFS as the pipeline). The tasks read, at run time:

    LOGPIPE_BIN       the binary (default: `logpipe` on PATH)
    LOGPIPE_CONFIG    its configuration file (optional)
    LOGPIPE_DATA_DIR  its data directory (optional)
    LOGPIPE__…        any other setting, as logpipe itself reads them

A re-run of a period replaces that period's output in one commit, so
Airflow's retries, clears and backfills never double a report. logpipe can
also schedule these jobs itself (`logpipe up`, [reports]); run them from
one of the two, not both (docs/deployment.md "Airflow").
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

# The optional config file and data directory, for every command.
WHERE = (
    ' ${LOGPIPE_CONFIG:+--config "$LOGPIPE_CONFIG"}'
    ' ${LOGPIPE_DATA_DIR:+--data-dir "$LOGPIPE_DATA_DIR"}'
)

DEFAULTS = {
    "owner": "logpipe",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def job(job_name: str, date: str) -> BashOperator:
    """One `logpipe jobs run JOB --date DATE` task."""
    return BashOperator(
        task_id=job_name,
        bash_command=f'"${{LOGPIPE_BIN:-logpipe}}" jobs run {job_name} --date {date}{WHERE}',
        # The environment of the worker plus nothing: logpipe's settings
        # come from LOGPIPE_* and LOGPIPE__* there.
        append_env=True,
    )


# Every day at 00:10 UTC, the day before: its daily report, then the
# per-service analysis of the 7 days ending that day. Airflow 3 runs a cron
# schedule at the time it names (logical date = run time), hence ds - 1.
with DAG(
    dag_id="daily_pipeline",
    description="logpipe: yesterday's daily_report and service_analysis",
    schedule="10 0 * * *",
    start_date=START,
    catchup=False,
    default_args=DEFAULTS,
    tags=["logpipe"],
):
    yesterday = "{{ macros.ds_add(ds, -1) }}"
    job("daily_report", yesterday) >> job("service_analysis", yesterday)

# Every Monday at 00:20 UTC, the ISO week that just ended.
with DAG(
    dag_id="weekly_pipeline",
    description="logpipe: last ISO week's weekly_analysis",
    schedule="20 0 * * 1",
    start_date=START,
    catchup=False,
    default_args=DEFAULTS,
    tags=["logpipe"],
):
    job("weekly_analysis", "{{ macros.ds_add(ds, -7) }}")

# By hand, for any day: `airflow dags trigger manual_pipeline --conf
# '{"date": "2026-11-30"}'`, or the form in Airflow's UI.
with DAG(
    dag_id="manual_pipeline",
    description="logpipe: every report for the day given",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={**DEFAULTS, "retries": 0},
    params={
        "date": Param(
            type="string",
            format="date",
            description="The day (YYYY-MM-DD, UTC) whose reports to make; "
            "the weekly analysis covers its ISO week",
        ),
    },
    tags=["logpipe"],
):
    day = "{{ params.date }}"
    job("daily_report", day) >> job("service_analysis", day) >> job("weekly_analysis", day)

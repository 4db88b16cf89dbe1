#!/usr/bin/env python3
"""logpipe's Grafana dashboards, written as data.

Four dashboards (Overview, Bus, Processing, Storage) over the metrics of
docs/METRICS.md. Run it after changing a panel; the JSON files next to it
are its output and are what Grafana's provisioning loads:

    python3 deploy/grafana/dashboards.py          # rewrite dashboards/*.json
    python3 deploy/grafana/dashboards.py --check  # fail if they are stale
    python3 deploy/grafana/dashboards.py --queries  # every panel query, as JSON

The observability test (crates/logpipe-cli/tests/it/observability.rs)
evaluates every query against a real Prometheus scraping a real
`logpipe up` under load and checks the layout (ids unique, panels inside
the 24-column grid, none overlapping).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Panels that show no data on the embedded bus or before a report ran:
# the test does not require data from them. (panel title, why)
MAY_BE_EMPTY = {
    "Kafka transactions /s": "Kafka bus with bus.kafka.transactions = true only",
    "Offsets skipped by the broker /s": "Kafka bus only",
    "Batch job last duration": "after the first report run",
    "Batch jobs: last run succeeded": "after the first report run",
    "Alerts by rule and state /s": "after the first alert",
    "Stream job restarts (1h)": "after the first restart",
    "PostgreSQL rows written /s": "with postgres.url set",
    "Retention: files deleted (1h)": "with lake.retention set, once an hour expired",
    "Compaction: hours and files (1h)": "with lake.compaction.enabled, once an hour closed",
    "Compaction lag": "with lake.compaction.enabled",
    "Compaction backlog (hours)": "with lake.compaction.enabled",
    "CDC changes applied /s": "with [[cdc.sinks]] configured",
    "CDC lag behind the source": "with [cdc] configured",
    "CDC snapshot": "with [[cdc.sources]] configured",
    "Hot store rows written /s": "with [postgres.hot] enabled",
    "Hot store lag (records)": "with [postgres.hot] enabled",
}


def panel(title, exprs, unit="short", kind="timeseries", description=""):
    """A panel; `exprs` is a list of (PromQL, legend)."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for n, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(uid, title, description, panels):
    """Lays the panels out two per row (12 columns each, 8 high)."""
    laid = []
    for n, p in enumerate(panels):
        p = dict(p)
        p["id"] = n + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)}
        laid.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["logpipe"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "links": [
            {"title": t, "type": "link", "url": f"/d/{u}"}
            for u, t in [
                ("logpipe-overview", "Overview"),
                ("logpipe-bus", "Bus"),
                ("logpipe-processing", "Processing"),
                ("logpipe-storage", "Storage"),
            ]
            if u != uid
        ],
        "panels": laid,
    }


def dashboards():
    overview = dashboard(
        "logpipe-overview",
        "logpipe / Overview",
        "Records in, answers, error rate per service, lake progress, roles up.",
        [
            panel("Records accepted /s", [(f"sum by (topic) (rate(logpipe_collector_records_accepted_total[{RATE}]))", "{{topic}}")], "ops"),
            panel("Records rejected /s", [(f"sum by (topic) (rate(logpipe_collector_records_rejected_total[{RATE}]))", "{{topic}}")], "ops"),
            panel("Answers by HTTP status /s", [(f"sum by (code) (rate(logpipe_collector_request_duration_seconds_count[{RATE}]))", "{{code}}")], "reqps"),
            panel(
                "Request latency p50 / p95 / p99",
                [
                    (f"histogram_quantile({q}, sum by (le) (rate(logpipe_collector_request_duration_seconds_bucket[{RATE}])))", f"p{int(q * 100)}")
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
            ),
            panel("Error rate per service (latest window)", [("max by (service) (logpipe_window_error_rate)", "{{service}}")], "percentunit",
                  description="Share of ERROR records; HighErrorRate fires above 5 % for 5 minutes."),
            panel("Response time p95 per service (latest window)", [('max by (service) (logpipe_window_response_time_seconds{percentile="95"})', "{{service}}")], "s"),
            panel("Lake rows committed /s", [(f"sum by (table) (rate(logpipe_lake_rows_committed_total[{RATE}]))", "{{table}}")], "ops"),
            panel("Bus lag (records)", [("sum by (group, topic) (logpipe_bus_consumer_lag_records)", "{{group}} {{topic}}")], "short"),
            panel("Incidents firing", [("sum(logpipe_alerts_firing)", "firing")], "short", kind="stat"),
            panel("Roles up", [('up{job=~"logpipe.*"}', "{{job}} {{instance}}")], "short", kind="stat"),
        ],
    )
    bus = dashboard(
        "logpipe-bus",
        "logpipe / Bus",
        "Appends, consumer lag per group, topic and partition, refusals, Kafka transactions.",
        [
            panel("Records appended /s", [(f"sum by (topic) (rate(logpipe_bus_records_appended_total[{RATE}]))", "{{topic}}")], "ops"),
            panel("Lag by group and topic", [("sum by (group, topic) (logpipe_bus_consumer_lag_records)", "{{group}} {{topic}}")], "short",
                  description="BusLag fires above 10,000 for 10 minutes."),
            panel("Lag by partition", [("max by (group, topic, partition) (logpipe_bus_consumer_lag_records)", "{{topic}}/{{partition}}")], "short"),
            panel("Requests refused /s", [(f"sum by (reason) (rate(logpipe_collector_requests_refused_total[{RATE}]))", "{{reason}}")], "reqps",
                  description="busy: answered 503 because the bus did not take the records."),
            panel("Embedded bus fsyncs /s", [(f"sum(rate(logpipe_bus_fsyncs_total[{RATE}]))", "fsyncs")], "ops"),
            panel("Kafka transactions /s", [(f"sum by (outcome) (rate(logpipe_bus_transactions_total[{RATE}]))", "{{outcome}}")], "ops"),
            panel("Offsets skipped by the broker /s", [(f"sum by (topic) (rate(logpipe_bus_offsets_skipped_total[{RATE}]))", "{{topic}}")], "ops"),
            panel("Bytes received /s", [(f"sum by (topic) (rate(logpipe_collector_bytes_received_total[{RATE}]))", "{{topic}}")], "Bps"),
        ],
    )
    processing = dashboard(
        "logpipe-processing",
        "logpipe / Processing",
        "Stream jobs (windows, alerts, restarts) and batch reports.",
        [
            panel("Windows closed /s", [(f"sum(rate(logpipe_windows_closed_total[{RATE}]))", "windows")], "ops"),
            panel("Late records /s", [(f"sum(rate(logpipe_window_late_records_total[{RATE}]))", "late")], "ops",
                  description="Records that arrived after their window closed: in the lake, not in a window."),
            panel("Records per service (latest window)", [("max by (service) (logpipe_window_records)", "{{service}}")], "short"),
            panel("Alerts by rule and state /s", [(f"sum by (rule, state) (rate(logpipe_alerts_total[{RATE}]))", "{{rule}} {{state}}")], "ops"),
            panel("Stream job restarts (1h)", [("sum by (job_name) (increase(logpipe_stream_job_restarts_total[1h]))", "{{job_name}}")], "short"),
            panel("Batch job runs", [("sum by (job_name, status) (logpipe_batch_runs_total)", "{{job_name}} {{status}}")], "short", kind="stat"),
            panel("Batch jobs: last run succeeded", [("min by (job_name) (logpipe_batch_last_success)", "{{job_name}}")], "bool", kind="stat",
                  description="JobFailed fires when a last run failed."),
            panel("Batch job last duration", [("max by (job_name) (logpipe_batch_last_duration_seconds)", "{{job_name}}")], "s"),
            panel("PostgreSQL rows written /s", [(f"sum(rate(logpipe_postgres_rows_written_total[{RATE}]))", "rows"),
                                                 (f"sum(rate(logpipe_postgres_errors_total[{RATE}]))", "errors")], "ops"),
            panel("CDC changes applied /s", [(f"sum by (sink, table, op) (rate(logpipe_cdc_changes_applied_total[{RATE}]))", "{{sink}} {{table}} {{op}}")], "ops",
                  description="Change events applied to each sink's target (upsert, delete, truncate), docs/cdc.md."),
            panel("CDC lag behind the source", [
                ("max by (sink) (logpipe_cdc_lag_seconds)", "sink {{sink}}"),
                ("max by (source) (logpipe_cdc_source_lag_seconds)", "source {{source}}"),
            ], "s", description="Sink: source commit to target commit of the newest change applied; source: how far behind the binlog it reads."),
            panel("CDC snapshot", [
                ('sum by (source) (logpipe_cdc_snapshot_rows{what="copied"})', "{{source}} copied"),
                ('sum by (source) (logpipe_cdc_snapshot_rows{what="estimated"})', "{{source}} estimated"),
            ], "short", description="Rows copied by a source's snapshot, next to the server's estimate (logpipe_cdc_snapshot_running is 1 meanwhile)."),
            panel("Hot store rows written /s", [
                (f"sum by (table) (rate(logpipe_hot_rows_written_total[{RATE}]))", "{{table}}"),
                (f"sum by (table) (rate(logpipe_hot_records_expired_total[{RATE}]))", "expired {{table}}"),
                (f"sum by (table, reason) (rate(logpipe_hot_records_skipped_total[{RATE}]))", "{{reason}} {{table}}"),
                (f"sum(rate(logpipe_hot_fenced_total[{RATE}]))", "fenced"),
            ], "ops", description="Raw records committed into the PostgreSQL hot store, and those not written (past the retention, invalid, duplicate, lost); fenced: transactions another writer beat (docs/hot-store.md)."),
            panel("Hot store lag (records)", [("max(logpipe_hot_lag_records)", "behind")], "short",
                  description="Records on the raw topics not yet in the hot store; grows while PostgreSQL is down (the job restarts with backoff)."),
            panel("Records the lake will never have /s", [
                (f"sum by (table) (rate(logpipe_lake_records_invalid_total[{RATE}]))", "invalid {{table}}"),
                (f"sum by (table) (rate(logpipe_lake_records_lost_total[{RATE}]))", "lost {{table}}"),
            ], "ops"),
        ],
    )
    storage = dashboard(
        "logpipe-storage",
        "logpipe / Storage",
        "The lake's commits, files and bytes, and each process's disk, memory and CPU.",
        [
            panel("Lake bytes committed /s", [(f"sum by (table) (rate(logpipe_lake_bytes_committed_total[{RATE}]))", "{{table}}")], "Bps"),
            panel("Lake files committed /s", [(f"sum by (table) (rate(logpipe_lake_files_committed_total[{RATE}]))", "{{table}}")], "ops"),
            panel("Bytes per row", [(f"sum by (table) (rate(logpipe_lake_bytes_committed_total[{RATE}])) / sum by (table) (rate(logpipe_lake_rows_committed_total[{RATE}]))", "{{table}}")], "bytes"),
            panel("Commit latency p95", [(f"histogram_quantile(0.95, sum by (le, job_name) (rate(logpipe_lake_commit_duration_seconds_bucket[{RATE}])))", "{{job_name}}")], "s"),
            panel("Commits /s", [(f"sum(rate(logpipe_lake_commits_total[{RATE}]))", "commits")], "ops"),
            panel("Store requests /s", [(f"sum by (operation, outcome) (rate(logpipe_lake_store_requests_total[{RATE}]))", "{{operation}} {{outcome}}")], "reqps",
                  description="Requests to the lake's store (a directory or S3); error: the store failed to answer."),
            panel("Store latency p95", [(f"histogram_quantile(0.95, sum by (le, operation) (rate(logpipe_lake_store_request_duration_seconds_bucket[{RATE}])))", "{{operation}}")], "s"),
            panel("Lake size by table", [("sum by (table) (logpipe_lake_table_bytes)", "{{table}}")], "bytes",
                  description="Bytes of each table's Parquet files (a listing every lake.usage_interval)."),
            panel("Lake files and rows by table", [
                ("sum by (table) (logpipe_lake_table_files)", "{{table}} files"),
                ("sum by (table) (logpipe_lake_table_rows)", "{{table}} rows"),
            ], "short"),
            panel("Files in the open hour", [("max by (table) (logpipe_lake_open_hour_files)", "{{table}}")], "short",
                  description="Small files accumulating in the hour being written; compaction merges them once the hour closed."),
            panel("Compaction: hours and files (1h)", [
                ("sum by (table) (increase(logpipe_lake_compactions_total[1h]))", "{{table}} hours"),
                ("sum by (table) (increase(logpipe_lake_compaction_input_files_total[1h]))", "{{table}} files in"),
                ("sum by (table) (increase(logpipe_lake_compaction_output_files_total[1h]))", "{{table}} files out"),
            ], "short"),
            panel("Compaction lag", [
                ("max by (table) (logpipe_lake_compaction_lag_seconds)", "{{table}} oldest waiting hour ended (s ago)"),
            ], "s",
                  description="How long ago the oldest closed hour still full of small files ended; it grows while steps' commit records are kept or passes fail."),
            panel("Compaction backlog (hours)", [
                ("max by (table) (logpipe_lake_compaction_backlog_hours)", "{{table}}"),
            ], "short",
                  description="Closed hours within lake.compaction.lookback still holding lake.compaction.min_files small files."),
            panel("Retention: files deleted (1h)", [("sum by (table) (increase(logpipe_lake_retention_deleted_files_total[1h]))", "{{table}}")], "short",
                  description="Whole hour partitions past lake.retention, deleted."),
            panel("Data directory disk free", [("logpipe_data_dir_free_bytes / logpipe_data_dir_size_bytes", "{{instance}}")], "percentunit",
                  description="DiskNearlyFull fires below 10 %."),
            panel("Resident memory", [("process_resident_memory_bytes", "{{job}} {{instance}}")], "bytes"),
            panel("CPU (cores)", [(f"rate(process_cpu_seconds_total[{RATE}])", "{{job}} {{instance}}")], "short"),
            panel("Open files", [("process_open_fds", "{{instance}} open"), ("process_max_fds", "{{instance}} limit")], "short"),
        ],
    )
    return {"overview": overview, "bus": bus, "processing": processing, "storage": storage}


def render(d):
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main():
    out = os.path.join(HERE, "dashboards")
    boards = dashboards()
    if "--queries" in sys.argv:
        queries = [
            {"dashboard": name, "panel": p["title"], "expr": t["expr"], "may_be_empty": p["title"] in MAY_BE_EMPTY}
            for name, d in boards.items()
            for p in d["panels"]
            for t in p["targets"]
        ]
        print(json.dumps(queries, indent=1))
        return 0
    stale = []
    for name, d in boards.items():
        path = os.path.join(out, f"{name}.json")
        text = render(d)
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(path)
            if "--check" not in sys.argv:
                with open(path, "w") as f:
                    f.write(text)
    if "--check" in sys.argv and stale:
        print("stale (run python3 deploy/grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

-- name: daily_report
-- period: day
-- output: reports/daily
--
-- Built in: scheduled by [reports] daily_cron. Copy it into your jobs
-- directory under another name to make a job of your own (docs/jobs.md).
--
-- daily_report: one UTC day of logs, one row per (service, level), with the
-- service's figures. {year}, {month}, {day} select the day's partitions.
-- Figures are exact (percentile_cont) and rounded, so a re-run over the same
-- files gives the same bytes whatever order the engine reads them in.
WITH day_logs AS (
    SELECT service, level, response_time_ms, endpoint
    FROM logs
    WHERE year = {year} AND month = {month} AND day = {day}
),
by_level AS (
    SELECT service, level, count(*) AS count
    FROM day_logs
    GROUP BY service, level
),
by_service AS (
    SELECT service,
           count(*) AS service_count,
           sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors,
           round(avg(response_time_ms), 3) AS avg_ms,
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p50_ms,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p95_ms,
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p99_ms,
           max(response_time_ms) AS max_ms
    FROM day_logs
    GROUP BY service
),
endpoint_errors AS (
    SELECT service, endpoint, count(*) AS errors,
           row_number() OVER (PARTITION BY service ORDER BY count(*) DESC, endpoint) AS rank
    FROM day_logs
    WHERE level = 'ERROR' AND endpoint IS NOT NULL
    GROUP BY service, endpoint
),
top_endpoints AS (
    SELECT service,
           string_agg(endpoint || ' (' || CAST(errors AS VARCHAR) || ')', ', ' ORDER BY rank) AS top_error_endpoints
    FROM endpoint_errors
    WHERE rank <= 3
    GROUP BY service
)
SELECT l.service,
       l.level,
       l.count,
       s.service_count,
       s.errors,
       round(CAST(s.errors AS DOUBLE) / s.service_count, 6) AS error_rate,
       s.avg_ms,
       s.p50_ms,
       s.p95_ms,
       s.p99_ms,
       s.max_ms,
       t.top_error_endpoints
FROM by_level l
JOIN by_service s ON l.service = s.service
LEFT JOIN top_endpoints t ON l.service = t.service
ORDER BY l.service, l.level

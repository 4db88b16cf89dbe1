-- name: service_analysis
-- period: range
-- days: 7
-- output: analysis/service
--
-- Built in: scheduled by [reports] service_cron.
--
-- service_analysis: one row per service over [{start}, {end}) (whole UTC
-- days): volume, errors, latency, status classes, its busiest hour of day
-- and the endpoint with the most errors.
WITH range_logs AS (
    SELECT service, level, response_time_ms, status_code, endpoint, hour
    FROM logs
    WHERE year * 10000 + month * 100 + day BETWEEN {start_ymd} AND {end_ymd}
      AND timestamp >= TIMESTAMP '{start}' AND timestamp < TIMESTAMP '{end}'
),
hours AS (
    SELECT service, hour, row_number() OVER (PARTITION BY service ORDER BY count(*) DESC, hour) AS rank
    FROM range_logs
    GROUP BY service, hour
),
endpoints AS (
    SELECT service, endpoint,
           row_number() OVER (PARTITION BY service ORDER BY count(*) DESC, endpoint) AS rank
    FROM range_logs
    WHERE level = 'ERROR' AND endpoint IS NOT NULL
    GROUP BY service, endpoint
),
figures AS (
    SELECT service,
           count(*) AS count,
           sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors,
           sum(CASE WHEN level = 'WARN' THEN 1 ELSE 0 END) AS warnings,
           round(CAST(sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS DOUBLE) / count(*), 6) AS error_rate,
           round(avg(response_time_ms), 3) AS avg_ms,
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p50_ms,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p95_ms,
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p99_ms,
           sum(CASE WHEN status_code >= 400 AND status_code < 500 THEN 1 ELSE 0 END) AS status_4xx,
           sum(CASE WHEN status_code >= 500 THEN 1 ELSE 0 END) AS status_5xx
    FROM range_logs
    GROUP BY service
)
SELECT f.*, h.hour AS busiest_hour_utc, e.endpoint AS top_error_endpoint
FROM figures f
LEFT JOIN hours h ON h.service = f.service AND h.rank = 1
LEFT JOIN endpoints e ON e.service = f.service AND e.rank = 1
ORDER BY f.service

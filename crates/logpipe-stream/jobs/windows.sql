-- kind: stream
--
-- The built-in window job: 5-second aggregates of the logs, one row per
-- window, service and level, each carrying the figures of the whole
-- service in that window. `logpipe up` runs this statement as the job
-- `windows` into the lake table `windows` and PostgreSQL's `window_stats`,
-- with `[windows] size` and `allowed_lateness` in place of the window
-- below and its anomaly detector reading each service's figures
-- (docs/jobs.md). Copy it into your jobs directory under another name to
-- run a variant of your own (another window, more keys).
WITH by_level AS (
    SELECT window_start, window_end, service, level, count(*) AS count
    FROM logs
    GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service, level
), by_service AS (
    SELECT window_start, service,
           count(*) AS service_count,
           avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate,
           approx_percentile_cont(response_time_ms, 0.5) AS p50_ms,
           approx_percentile_cont(response_time_ms, 0.95) AS p95_ms,
           approx_percentile_cont(response_time_ms, 0.99) AS p99_ms,
           count(*) FILTER (WHERE status_code < 200) AS status_1xx,
           count(*) FILTER (WHERE status_code >= 200 AND status_code < 300) AS status_2xx,
           count(*) FILTER (WHERE status_code >= 300 AND status_code < 400) AS status_3xx,
           count(*) FILTER (WHERE status_code >= 400 AND status_code < 500) AS status_4xx,
           count(*) FILTER (WHERE status_code >= 500) AS status_5xx
    FROM logs
    GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service
)
SELECT l.window_start, l.window_end, l.service, l.level, l.count,
       s.service_count, s.error_rate, s.p50_ms, s.p95_ms, s.p99_ms,
       s.status_1xx, s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx
FROM by_level l
JOIN by_service s ON l.window_start = s.window_start AND l.service = s.service

-- name: weekly_analysis
-- period: week
-- output: reports/weekly
--
-- Built in: scheduled by [reports] weekly_cron.
--
-- weekly_analysis: one ISO week (Monday to Sunday, UTC), one row per
-- (date, service). {start_ymd}/{end_ymd} (YYYYMMDD) prune partitions;
-- {start}/{end} bound the timestamps exactly.
SELECT CAST(CAST(timestamp AS DATE) AS VARCHAR) AS date,
       service,
       count(*) AS count,
       sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors,
       sum(CASE WHEN level = 'WARN' THEN 1 ELSE 0 END) AS warnings,
       round(CAST(sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS DOUBLE) / count(*), 6) AS error_rate,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p95_ms,
       count(DISTINCT host) AS hosts
FROM logs
WHERE year * 10000 + month * 100 + day BETWEEN {start_ymd} AND {end_ymd}
  AND timestamp >= TIMESTAMP '{start}' AND timestamp < TIMESTAMP '{end}'
GROUP BY 1, 2
ORDER BY 1, 2

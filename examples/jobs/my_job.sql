-- name: my_job
-- period: day
-- schedule: 0 2 * * *
-- output: results/my_job
--
-- The seed's "adding a new Spark job" (spark-jobs/batch/my_new_job.py) as a
-- logpipe job: one day of logs, counted by level, written to
-- results/my_job/date=YYYY-MM-DD/ (one Parquet file per day, replaced by a
-- re-run). Copy this file into your `[jobs] dir` and restart; run it by hand
-- with `logpipe jobs run my_job --date 2026-01-15`, or a backfill with
-- `--from … --to …`. docs/jobs.md explains every line.
SELECT level, count(*) AS count
FROM logs
WHERE year = {year} AND month = {month} AND day = {day}
GROUP BY level
ORDER BY level

-- kind: stream
-- lateness: 5s
-- idle_close: 10s
--
-- The seed's real-time activity aggregation (data flow 4a) as a streaming
-- job: per event type and minute of event time, the events, the distinct
-- users and the purchases, written to streams/activity_per_minute/ in the
-- lake (hour partitions of window start) as each minute closes. Copy it
-- into your `[jobs] dir` and restart `logpipe up`; docs/jobs.md explains
-- every line and the SQL a streaming job may use.
SELECT window_start, window_end, event_type,
       count(*) AS events,
       count(DISTINCT user_id) AS users,
       count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases
FROM events
GROUP BY tumble(timestamp, INTERVAL '1 minute'), event_type

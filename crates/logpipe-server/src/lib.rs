//! HTTP: the collector API, the query API, /health and /metrics.

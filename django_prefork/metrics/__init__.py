"""Observability: Prometheus metrics, health and readiness, StatsD (docs/observability.md).

- `board`: the shared counters, one slot per worker, in the load board's shared file;
- `recorder`: a worker's record calls, made by the HTTP core around each request;
- `exposition`: the Prometheus text format;
- `endpoint`: the non-blocking HTTP server the master runs inside its loop;
- `master`: the master's side (totals, restart reasons, readiness, the endpoint);
- `statsd`: gunicorn's StatsD metrics.
"""

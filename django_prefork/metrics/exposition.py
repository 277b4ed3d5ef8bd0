"""The Prometheus text exposition format (version 0.0.4) of the master's numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from .board import BUCKETS, Totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Why a worker ended and was replaced (the master knows: arbiter.py, exit_reason).
RESTART_REASONS = ("crash", "timeout", "max_requests", "reload", "ttou")


@dataclass
class MasterNumbers:
    """What only the master knows, next to the workers' totals."""

    workers: int = 0
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    #: {listener URL: connections waiting in its accept queue} where Linux reports it.
    backlog: dict[str, int] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(totals: Totals, master: MasterNumbers) -> bytes:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("prefork_requests_total", "counter",
           "Requests served, by method and response status.")
    for (method, status), count in sorted(totals.requests.items()):
        lines.append(f'prefork_requests_total{{method="{method}",status="{status}"}} {count}')

    name = "prefork_request_duration_seconds"
    family(name, "histogram", "Time from the request head to the end of the response.")
    cumulative = 0
    for bound, count in zip((*BUCKETS, None), totals.buckets, strict=True):
        cumulative += count
        le = "+Inf" if bound is None else repr(bound)
        lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
    lines.append(f"{name}_sum {totals.duration_sum!r}")
    lines.append(f"{name}_count {cumulative}")

    family("prefork_requests_in_flight", "gauge", "Requests being served now.")
    lines.append(f"prefork_requests_in_flight {totals.in_flight}")
    family("prefork_response_bytes_total", "counter", "Response body bytes sent.")
    lines.append(f"prefork_response_bytes_total {totals.response_bytes}")
    family("prefork_workers", "gauge", "Worker processes alive.")
    lines.append(f"prefork_workers {master.workers}")
    family("prefork_workers_busy", "gauge", "Workers serving at least one request now.")
    lines.append(f"prefork_workers_busy {totals.busy_workers}")
    family("prefork_worker_restarts_total", "counter",
           "Workers that ended and were replaced, by reason.")
    for reason in RESTART_REASONS:
        count = master.restarts.get(reason, 0)
        lines.append(f'prefork_worker_restarts_total{{reason="{reason}"}} {count}')
    family("prefork_connections_accepted_total", "counter",
           "Client connections accepted by the workers.")
    lines.append(f"prefork_connections_accepted_total {totals.accepted}")
    if master.backlog:
        family("prefork_listen_backlog", "gauge",
               "Connections waiting in a listening socket's accept queue (Linux TCP_INFO).")
        for listener, queued in sorted(master.backlog.items()):
            lines.append(f'prefork_listen_backlog{{listener="{_escape(listener)}"}} {queued}')
    lines.append("")
    return "\n".join(lines).encode("utf-8")

"""Prometheus metrics of the sinks (the default registry, served by `iscsi-audit run`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_DELIVERED = Counter(
    "iscsi_audit_sink_events_delivered",
    "Events a sink delivered (a batch sent again after a failure counts again).",
    ["sink"],
)
DELIVERY_FAILURES = Counter(
    "iscsi_audit_sink_delivery_failures",
    "Batches a sink failed to deliver (each is retried with backoff).",
    ["sink"],
)
LAG_EVENTS = Gauge(
    "iscsi_audit_sink_lag_events",
    "Committed events a sink has not delivered yet.",
    ["sink"],
)
LAST_DELIVERED_EVENT_ID = Gauge(
    "iscsi_audit_sink_last_delivered_event_id",
    "The last event id a sink delivered (its stored position).",
    ["sink"],
)

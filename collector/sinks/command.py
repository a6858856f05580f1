"""`iscsi-audit sinks status`: how far each sink has delivered, and why it is stuck."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import orjson
from sqlalchemy import Engine

from collector.output import format_option
from collector.sinks.config import SinkConfig
from collector.sinks.positions import all_positions, lag

if TYPE_CHECKING:
    from collector.cli import Context

EXIT_SINK_FAILING = 1


@dataclass(frozen=True, slots=True)
class SinkStatus:
    name: str
    type: str  # "syslog", "webhook", "file", or "removed" for a position left behind
    last_event_id: int
    lag: int
    updated_at: datetime | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sink": self.name,
            "type": self.type,
            "last_event_id": self.last_event_id,
            "lag": self.lag,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "last_error": self.last_error,
        }

    def line(self) -> str:
        when = self.updated_at.strftime("%Y-%m-%dT%H:%M:%S%z") if self.updated_at else "never ran"
        columns = [self.name, self.type, f"at {self.last_event_id}", f"lag {self.lag}", when]
        return "\t".join([*columns, self.last_error or "ok"])


def sink_statuses(engine: Engine, sinks: Sequence[SinkConfig]) -> list[SinkStatus]:
    """Configured sinks first, in config order, then positions of sinks since removed."""
    stored = {p.sink_name: p for p in all_positions(engine)}
    kinds = {s.name: s.type for s in sinks}
    kinds.update({name: "removed" for name in stored if name not in kinds})
    statuses = []
    for name, kind in kinds.items():
        row = stored.get(name)
        position = row.last_event_id if row else 0
        statuses.append(
            SinkStatus(
                name,
                kind,
                position,
                lag(engine, position),
                row.updated_at if row else None,
                row.last_error if row else None,
            )
        )
    return statuses


@click.group("sinks")
def sinks_command() -> None:
    """Event forwarding to syslog, webhooks and files ([[sinks]] in the config)."""


@sinks_command.command("status")
@format_option("table", "json", help="One line per sink for people, or JSON lines.")
@click.pass_obj
def status_command(obj: Context, fmt: str) -> None:
    """Each sink's position, lag in events and last error.

    Exits 1 when any configured sink's latest delivery failed.
    """
    config = obj.config(required=False)
    engine = obj.engine(config)
    try:
        statuses = sink_statuses(engine, config.sinks)
    finally:
        engine.dispose()
    if not statuses:
        click.echo("no sinks configured ([[sinks]] in the config)", err=True)
    for status in statuses:
        click.echo(orjson.dumps(status.as_dict()).decode() if fmt == "json" else status.line())
    if any(s.last_error and s.type != "removed" for s in statuses):
        raise SystemExit(EXIT_SINK_FAILING)

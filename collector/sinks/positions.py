"""Each sink's position in the event log (`iscsi_audit.sink_positions`): its only state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from collector.db.comments import SCHEMA
from collector.db.models import sink_positions_table as positions

# counting a huge backlog exactly is not worth a long scan every few seconds
LAG_COUNT_LIMIT = 1_000_000
_LAG = text(
    f"SELECT count(*) FROM (SELECT 1 FROM {SCHEMA}.events WHERE event_id > :position"
    " LIMIT :limit) AS pending"
)


@dataclass(frozen=True, slots=True)
class SinkPosition:
    sink_name: str
    last_event_id: int
    updated_at: datetime
    last_error: str | None


def load_position(engine: Engine, sink_name: str) -> int:
    """The sink's position; a new sink starts before the first event."""
    with engine.begin() as conn:
        conn.execute(
            insert(positions)
            .values(sink_name=sink_name, last_event_id=0, updated_at=func.now())
            .on_conflict_do_nothing(index_elements=["sink_name"])
        )
        return int(
            conn.scalar(select(positions.c.last_event_id).where(positions.c.sink_name == sink_name))
            or 0
        )


def save_position(engine: Engine, sink_name: str, event_id: int) -> None:
    # greatest(): two collectors running the same sink never move it backwards
    with engine.begin() as conn:
        conn.execute(
            update(positions)
            .where(positions.c.sink_name == sink_name)
            .values(
                last_event_id=func.greatest(positions.c.last_event_id, event_id),
                updated_at=func.now(),
                last_error=None,
            )
        )


def save_error(engine: Engine, sink_name: str, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(positions)
            .where(positions.c.sink_name == sink_name)
            .values(last_error=error, updated_at=func.now())
        )


def lag(engine: Engine, position: int) -> int:
    """Committed events after `position` (at most LAG_COUNT_LIMIT)."""
    with engine.connect() as conn:
        return int(conn.scalar(_LAG, {"position": position, "limit": LAG_COUNT_LIMIT}) or 0)


def all_positions(engine: Engine) -> list[SinkPosition]:
    with engine.connect() as conn:
        rows = conn.execute(select(positions).order_by(positions.c.sink_name)).all()
    return [SinkPosition(**row._mapping) for row in rows]

"""Reads for the command line: one read-only statement, and its rows rendered for output."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, text


def read_only_query(engine: Engine, sql: str) -> tuple[list[str], list[Sequence[Any]]]:
    """Run `sql` in a READ ONLY transaction: a typo cannot change the evidence."""
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        result = conn.exec_driver_sql(sql)
        if not result.returns_rows:
            return [], []
        return list(result.keys()), [tuple(row) for row in result]


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> Iterator[str]:
    if fmt == "json":
        for row in rows:
            yield orjson.dumps(dict(zip(columns, row, strict=True)), default=str).decode()
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
        yield buffer.getvalue().rstrip("\n")
    else:
        yield from _table(columns, rows)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[str]:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    yield "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    yield "  ".join("-" * w for w in widths)
    for row in cells:
        yield "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
    yield f"({len(cells)} row{'s' if len(cells) != 1 else ''})"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)

"""Renders the reference part of docs/schema.md from a migrated database's catalog.

    python -m collector.db.schema_doc DATABASE_URL docs/schema.md

replaces the text between the GENERATED markers with every table and view of schema
`iscsi_audit`, each column with its type and its COMMENT ON text. A test renders it from
the test database and fails when the file is stale, so the documentation cannot drift
from the schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from collector.db.comments import SCHEMA
from collector.db.database import sqlalchemy_url

BEGIN = "<!-- BEGIN GENERATED: python -m collector.db.schema_doc -->"
END = "<!-- END GENERATED -->"

_RELATIONS = text("""
    SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'v', 'p')
      AND c.relname <> 'alembic_version'
    ORDER BY c.relkind DESC, c.relname""")

_COLUMNS = text("""
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           col_description(a.attrelid, a.attnum)
    FROM pg_attribute a
    WHERE a.attrelid = (quote_ident(:schema) || '.' || quote_ident(:relation))::regclass
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum""")


def render(conn: Connection) -> str:
    views: list[str] = []
    tables: list[str] = []
    for name, kind, about in conn.execute(_RELATIONS, {"schema": SCHEMA}):
        section = _relation(conn, name, "view" if kind == "v" else "table", about)
        (views if kind == "v" else tables).append(section)
    return "\n".join(["## Views (the public interface)\n", *views,
                      "## Tables\n", *tables]).rstrip() + "\n"


def _relation(conn: Connection, name: str, kind: str, about: str | None) -> str:
    lines = [f"### `{SCHEMA}.{name}` ({kind})", "", about or "(undocumented)", "",
             "| column | type | description |", "|---|---|---|"]
    for column, type_, not_null, note in conn.execute(
            _COLUMNS, {"schema": SCHEMA, "relation": name}):
        shown = f"{type_} not null" if not_null and kind == "table" else type_
        lines.append(f"| `{column}` | {shown} | {(note or '(undocumented)').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def replace_generated(document: str, generated: str) -> str:
    head, found, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"markers {BEGIN!r} and {END!r} not found")
    return f"{head}{BEGIN}\n\n{generated}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m collector.db.schema_doc DATABASE_URL docs/schema.md",
              file=sys.stderr)
        return 2
    url, path = argv
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        generated = render(conn)
    target = Path(path)
    target.write_text(replace_generated(target.read_text(encoding="utf-8"), generated),
                      encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

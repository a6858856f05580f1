"""The documentation tells the truth: it is generated from, or run against, the real thing."""

from __future__ import annotations

import re
from pathlib import Path

import click
from sqlalchemy import Engine, text

from collector.cli import cli
from collector.db.schema_doc import BEGIN, END, render, replace_generated

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DOC = ROOT / "docs" / "schema.md"


def test_schema_reference_matches_the_migrated_database(engine: Engine) -> None:
    with engine.connect() as conn:
        generated = render(conn)
    document = SCHEMA_DOC.read_text(encoding="utf-8")

    assert replace_generated(document, generated) == document, (
        "docs/schema.md is stale: run python -m collector.db.schema_doc URL docs/schema.md")


def test_every_table_view_and_column_is_documented(engine: Engine) -> None:
    with engine.connect() as conn:
        generated = render(conn)

    assert "(undocumented)" not in generated


def test_every_sql_example_in_the_schema_doc_runs(engine: Engine) -> None:
    document = SCHEMA_DOC.read_text(encoding="utf-8")
    examples = re.findall(r"```sql\n(.*?)```", document, flags=re.S)

    assert len(examples) >= 5
    with engine.connect() as conn:
        for sql in examples:
            conn.execute(text(sql))


def test_generated_markers_are_present() -> None:
    document = SCHEMA_DOC.read_text(encoding="utf-8")

    assert document.count(BEGIN) == 1 and document.count(END) == 1


def _commands(group: click.Group, prefix: str = "iscsi-audit") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def test_every_command_and_option_is_in_the_readme_with_help() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _commands(cli)

    assert len(commands) >= 8
    for path, command in commands:
        assert command.help, f"{path} has no help text"
        assert path in readme, f"{path} is not in the README"
        for param in command.params:
            for option in param.opts:
                if option.startswith("--"):
                    assert option in readme, f"{path} {option} is not in the README"
    for param in cli.params:
        for option in param.opts:
            if option.startswith("--"):
                assert option in readme, f"global option {option} is not in the README"

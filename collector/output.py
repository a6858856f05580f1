"""What the commands share about their output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def format_option(*choices: str, help: str) -> Callable[[Any], Any]:
    """`--format`, the same on every command that prints rows: `table` (for people) first,
    then the formats for machines. The value reaches the command as `fmt`."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help=help,
    )

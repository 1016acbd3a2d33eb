"""One output layer for every listing and get command: ``--output table|json|yaml`` (``-o``), ``--quiet`` (``-q``).

JSON and YAML print the wire (or operator API) shape unchanged, minus botocore's ``ResponseMetadata``, with
timestamps in ISO 8601: that is the stable form scripts read. Tables are for people and fit the terminal: each
column has a priority, the essential ones are always shown and the others join, most important first, while they
fit; what still does not fit wraps (folds) instead of being cut to an ellipsis. ``--quiet`` prints one id or ARN
per line.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import typer
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; safe_dump is all we use
from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    """What ``--output`` accepts."""

    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT = typer.Option(
    Format.table, "--output", "-o", case_sensitive=False, help="table (for people), json or yaml (for scripts)."
)
QUIET = typer.Option(False, "--quiet", "-q", help="Print only ids or ARNs, one per line.")
JSON_ALIAS = typer.Option(False, "--json", hidden=True, help="Same as --output json (kept for old scripts).")

# Rich's default box: one border column per table edge and between columns, one space of padding each side.
_PER_COLUMN = 3
_EDGE = 1
UNLIMITED = 100_000  # a pipe's width: every column, no folding


@dataclass(frozen=True)
class Column:
    """A table column: its header, how a cell is read from an item, and how much it matters (0: always kept;
    higher numbers are dropped first when the terminal is too narrow)."""

    header: str
    value: Callable[[dict[str, Any]], object]
    priority: int = 1


def field(name: str) -> Callable[[dict[str, Any]], object]:
    """A cell that is ``item[name]`` (empty when absent)."""
    return lambda item: item.get(name)


def chosen(output: Format, as_json: bool) -> Format:
    """``--json`` (hidden, older scripts) wins over the default table."""
    return Format.json if as_json else output


def plain(data: object) -> Any:
    """JSON-ready data: ``ResponseMetadata`` removed, datetimes as ISO 8601 strings."""
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items() if k != "ResponseMetadata"}
    if isinstance(data, list | tuple):
        return [plain(v) for v in data]
    if isinstance(data, datetime):
        return data.isoformat()
    if isinstance(data, str | int | float | bool) or data is None:
        return data
    return str(data)


def emit_data(data: object, output: Format) -> None:
    """A document (a get command's answer) as JSON or YAML; a table format falls back to JSON."""
    clean = plain(data)
    if output == Format.yaml:
        typer.echo(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)
    else:
        typer.echo(json.dumps(clean, indent=2, ensure_ascii=False))


def emit(
    items: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    *,
    output: Format,
    quiet: bool,
    ident: Callable[[dict[str, Any]], object],
    title: str | None = None,
) -> None:
    """Print a listing in the chosen form: ids only, JSON/YAML of the items, or a table that fits."""
    if quiet:
        for item in items:
            typer.echo(str(ident(item)))
        return
    if output != Format.table:
        emit_data(list(items), output)
        return
    width = terminal_width()
    console = Console(soft_wrap=False, highlight=False, width=width)
    console.print(fitted_table(items, columns, width, title))


def terminal_width() -> int:
    """``COLUMNS`` when set, else the terminal's width; output to a pipe or file (no terminal) is not cut at all."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return UNLIMITED


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def fitted_table(items: Sequence[dict[str, Any]], columns: Sequence[Column], width: int, title: str | None) -> Table:
    """The essential (priority 0) columns, then every other column that still fits at its natural width, most
    important first; essential cells too long for the width fold onto more lines."""
    rows = [[cell(column.value(item)) for column in columns] for item in items]
    natural = [max([len(column.header), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)]
    kept = [i for i, column in enumerate(columns) if column.priority == 0]
    used = _EDGE + sum(natural[i] + _PER_COLUMN for i in kept)
    for i in sorted((i for i, c in enumerate(columns) if c.priority > 0), key=lambda i: (columns[i].priority, i)):
        if used + natural[i] + _PER_COLUMN <= width:
            kept.append(i)
            used += natural[i] + _PER_COLUMN
    kept.sort()
    table = Table(title=title, title_justify="left")
    for i in kept:
        table.add_column(columns[i].header, overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table

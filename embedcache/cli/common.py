"""What every command shares: the consoles, --data-dir, option parsing, one-line user errors, progress bars."""

from __future__ import annotations

import errno
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from embedcache.errors import UserError
from embedcache.paths import Paths

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 140)  # logs and pipes get whole table rows

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: $EMBEDCACHE_DATA_DIR, else ./data).")
]


def use_data_dir(path: Path | None) -> Path:
    """The data dir of this command: --data-dir, else $EMBEDCACHE_DATA_DIR, else ./data. It is passed down as a
    value to everything the command reads or writes (raw data and stores alike); the environment is not touched."""
    return Paths.resolve(path).data_dir


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@contextmanager
def user_errors():
    """A UserError (embedcache.errors) prints as one red message plus its fix and exits 1; any other error is a
    bug and keeps its traceback (so does a UserError under EMBEDCACHE_DEBUG=1)."""
    try:
        yield
    except UserError as exc:
        if os.environ.get("EMBEDCACHE_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        if exc.fix and not all(part in str(exc) for part in exc.fix.split("; ")):  # not said already
            console.print(f"[bold]fix:[/] {escape(exc.fix)}")
        raise typer.Exit(1) from None
    except OSError as exc:  # a full disk, wherever it strikes: the writers leave no partial files behind
        if os.environ.get("EMBEDCACHE_DEBUG") or exc.errno != errno.ENOSPC:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        console.print(f"[bold red]error:[/] the disk is full{escape(where)}; free space there and rerun the command")
        raise typer.Exit(1) from None


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )


def parse_options(pairs: list[str] | None) -> dict[str, object]:
    """KEY=VALUE strings; values that parse as JSON (numbers, true/false) become those types."""
    options: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options

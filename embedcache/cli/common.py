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

from embedcache.paths import ENV_VAR
from embedcache.paths import data_dir as resolve_data_dir

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 140)  # logs and pipes get whole table rows

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: $EMBEDCACHE_DATA_DIR, else ./data).")
]


def use_data_dir(path: Path | None) -> Path:
    """--data-dir wins over $EMBEDCACHE_DATA_DIR for everything this command reads or writes."""
    if path is not None:
        os.environ[ENV_VAR] = str(path)
    return resolve_data_dir(path)


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@contextmanager
def user_errors():
    """Errors a user can act on print as one red message and exit 1 (EMBEDCACHE_DEBUG=1 keeps the traceback)."""
    try:
        yield
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        if os.environ.get("EMBEDCACHE_DEBUG") or not _is_ours(exc):
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except OSError as exc:  # a full disk, wherever it strikes: the writers leave no partial files behind
        if os.environ.get("EMBEDCACHE_DEBUG") or exc.errno != errno.ENOSPC:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        console.print(f"[bold red]error:[/] the disk is full{escape(where)}; free space there and rerun the command")
        raise typer.Exit(1) from None


def _is_ours(exc: BaseException) -> bool:
    """Raised by embedcache's own code (whose messages say what to do), not deep inside a library."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_in = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return raised_in.startswith("embedcache.")


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

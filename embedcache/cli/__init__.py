"""The `embedcache` command: a thin typer app over the library functions, one module per group of commands."""

from __future__ import annotations

import logging
import sys

import typer

from embedcache.cli import stage_one, stage_two, tables

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
for group in (stage_one, stage_two, tables):
    group.register(app)


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

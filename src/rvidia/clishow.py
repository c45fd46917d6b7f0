"""How the command line shows things: tables and progress on stderr, JSON lines on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rvidia.client.api import Job

Column = tuple[str, "str | Callable[[dict[str, Any]], Any]"]


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def show_table(rows: list[dict[str, Any]], as_json: bool, title: str, columns: list[Column]) -> None:
    """A rich table; with --json the raw rows as one JSON document on stdout instead."""
    if as_json:
        print_json_line(rows)
        return
    cells = [[str(get(row) if callable(get) else row.get(get, "")) for _, get in columns] for row in rows]
    table = Table(title=title)
    for i, (header, _) in enumerate(columns):
        if header == "id":  # ids get copied into the next command: never shorten them to fit a narrow terminal
            table.add_column(header, no_wrap=True, min_width=max((len(r[i]) for r in cells), default=0))
        else:
            table.add_column(header)
    for line in cells:
        table.add_row(*line)
    if not rows:
        Console(stderr=True).print(f"no {title.lower()}")
        return
    Console().print(table)


def progress_wait(job: Job, quiet: bool = False) -> dict[str, Any]:
    """Wait for a job with a progress bar on stderr (chunks done out of total)."""
    console = Console(stderr=True)
    if quiet:
        return job.wait()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(f"{job.id}", total=None)

        def update(view: dict[str, Any]) -> None:
            prog = view["progress"]
            bar.update(task, total=prog["total"] or None, completed=prog["done"],
                       description=f"{job.id} {view['kind']} {view['state']}")

        return job.wait(on_progress=update)

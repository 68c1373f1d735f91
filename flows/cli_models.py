"""``gnnrec models``: every registered recommender with its family, needs, capabilities, defaults and space.

The same registry (``models.MODELS``) feeds the Run form's model choices, so what this lists is what the
pipeline can train.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer


def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
) -> None:
    """List every registered model: family, what it needs from the data, what it can do, its defaults."""
    from rich.console import Console
    from rich.table import Table

    from models import MODELS

    rows = [MODELS[name].describe() for name in sorted(MODELS)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="Registered models")
    for column in ("model", "family", "requires", "new users", "closed form", "searched"):
        table.add_column(column, no_wrap=column == "model")  # a name must stay whole to be copied
    for row in rows:
        table.add_row(
            row["name"],
            row["family"],
            ", ".join(row["requires"]),
            ("network" if row["inductive_users"] else "") or row["new_users"].split(":")[0],
            "yes" if row["closed_form"] else "no",
            ", ".join(row["search_space"]),
        )
    Console().print(table)

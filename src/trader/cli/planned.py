"""Commands that are part of the interface but whose features are not built yet.

Each one explains in ``--help`` what it will do and, when run, says that it is not built yet and exits
with code 3 instead of printing anything that could be mistaken for a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import typer

from trader.errors import NotBuiltError


@dataclass(frozen=True)
class Planned:
    """A command not built yet; ``name`` is its full path after ``trader`` (``"research train"``)."""

    name: str
    help: str
    arrives_with: str


PLANNED: tuple[Planned, ...] = ()


def _not_built(item: Planned) -> NotBuiltError:
    return NotBuiltError(f"'trader {item.name}' is not built yet; it arrives with {item.arrives_with}")


def register(app: typer.Typer, items: Sequence[Planned] = PLANNED) -> None:
    """Add every planned command of ``items`` to ``app`` (a top-level item to the root, a
    ``"group command"`` item to that group's app).

    Each is a plain command that accepts any arguments, so ``trader data ingest --source csv`` answers
    "not built yet" rather than "no such command"; the issue that builds it replaces it with a group.
    """
    accept_anything = {"ignore_unknown_options": True, "allow_extra_args": True}
    for item in items:
        help_text = f"{item.help} [not built yet: arrives with {item.arrives_with}]"

        def handler(ctx: typer.Context, _item: Planned = item) -> None:
            if ctx.resilient_parsing:
                return
            raise _not_built(_item)

        app.command(item.name.split()[-1], help=help_text, context_settings=accept_anything)(handler)

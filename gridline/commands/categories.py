"""``gridline categories sync``: categories.toml (packaged, with GRIDLINE_CATEGORIES over it)
applied to a live database."""

from __future__ import annotations

import typer

from core.actions.categories import sync_categories
from core.errors import DomainError
from core.platform.db import session_scope
from gridline.commands.common import console, fail, open_database

categories_app = typer.Typer(help="Departments and petition categories (categories.toml).", no_args_is_help=True)


@categories_app.command("sync")
def sync(
    dry_run: bool = typer.Option(False, "--dry-run", help="only print what would change"),
) -> None:
    """Add new departments and categories, update changed names, departments, keywords,
    duplicate windows and deadlines, and retire categories no longer in the file (kept for the
    cases that name them, no longer offered). One audit row per run that changes anything."""
    try:
        with session_scope(open_database()) as session:
            plan = sync_categories(session, actor="cli", dry_run=dry_run)
    except DomainError as exc:
        fail(exc.message)
    lines = [("departments added", plan.departments_added), ("departments changed", plan.departments_changed),
             ("categories added", plan.added), ("categories changed", plan.changed),
             ("categories retired", plan.retired), ("categories active again", plan.reactivated)]
    if plan.empty:
        console.print(f"categories are in sync ({plan.unchanged} unchanged); nothing to do", highlight=False)
        return
    console.print("would change:" if dry_run else "changed:", highlight=False)
    for label, codes in lines:
        if codes:
            console.print(f"  {label} ({len(codes)}): {' '.join(codes)}", highlight=False, soft_wrap=True)
    console.print(f"  unchanged: {plan.unchanged}" + ("; nothing written (dry run)" if dry_run else ""),
                  highlight=False)

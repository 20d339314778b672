"""``lsync pipeline run RECIPE.yaml``: run a recipe's stages in order, skipping finished ones."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, verbosity_options
from lsync.package_data import shipped_dir


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in shipped_dir("pipelines").glob("*.yaml"))


@click.group(context_settings=CONTEXT)
def pipeline() -> None:
    """End-to-end recipes that chain stages (see pipelines/)."""


@pipeline.command("run", context_settings=CONTEXT, epilog=f"Shipped recipes: {', '.join(shipped_recipes())}.")
@click.argument("recipe")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Working directory ({workdir} in the recipe); default: the recipe's own.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Override one of the recipe's vars (repeatable).")
@verbosity_options
def run(recipe: str, workdir: Path | None, variables: tuple[str, ...]) -> None:
    """Run RECIPE (a YAML file, or the name of a shipped recipe such as `demo`)."""
    from lsync.pipeline import load_recipe, parse_variables, recipe_path, run_recipe

    loaded = load_recipe(recipe_path(recipe), workdir, parse_variables(variables))
    results = run_recipe(loaded, invoke_lsync)
    print_results(results)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        from lsync.errors import StageFailure

        raise StageFailure(f"step {failed[0].name} failed: {failed[0].error}",
                           f"fix it and rerun `lsync pipeline run {recipe}` to resume")


def invoke_lsync(args: list[str]) -> None:
    """Run one ``lsync`` command line in this process; click usage errors become lsync errors.

    The root group comes from the running click context (this is called from inside ``lsync pipeline run`` or
    ``lsync demo``), so command modules never import :mod:`lsync.cli`, the top of the house.
    """
    from lsync.errors import UsageError

    cli = click.get_current_context().find_root().command
    try:
        cli.main(args=list(args), prog_name="lsync", standalone_mode=False)
    except click.ClickException as exc:
        raise UsageError(f"lsync {' '.join(args)}: {exc.format_message()}", "fix the recipe") from exc


def print_results(results) -> None:
    from rich.table import Table

    from lsync.console import result_console

    table = Table(title="pipeline", title_justify="left")
    for column in ("step", "status", "time", "key metric", "output"):
        table.add_column(column)
    styles = {"done": "green", "skipped": "dim", "failed": "red"}
    for r in results:
        table.add_row(r.name, f"[{styles[r.status]}]{r.status}[/]", f"{r.seconds:.1f} s",
                      "" if r.metric is None else str(r.metric), r.output)
    result_console.print(table)

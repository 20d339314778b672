"""``lsync demo``: the whole chain on synthetic data, offline, on a CPU (runs ``pipelines/demo.yaml``)."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, verbosity_options


@click.command("demo", context_settings=CONTEXT)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("lsync-demo"),
              show_default=True, help="Where every stage writes; a rerun resumes (finished stages are skipped).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Override one of pipelines/demo.yaml's vars, e.g. --var clips=24 (repeatable).")
@verbosity_options
def demo(workdir: Path, variables: tuple[str, ...]) -> None:
    """Synthesise talking faces, preprocess, train a tiny SyncNet and U-Net, lip-sync a held-out clip, evaluate.

    Needs no downloads. Prints where the video, the training charts and the frame strip are.
    """
    from lsync.commands.pipeline import invoke_lsync, print_results
    from lsync.errors import StageFailure
    from lsync.pipeline import load_recipe, parse_variables, recipe_path, run_recipe

    recipe = load_recipe(recipe_path("demo"), workdir, parse_variables(variables))
    results = run_recipe(recipe, invoke_lsync)
    print_results(results)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise StageFailure(f"demo step {failed[0].name} failed: {failed[0].error}",
                           "fix it and rerun `lsync demo` to resume")
    print_artifacts(demo_artifacts([step.output for step in recipe.steps]))


def demo_artifacts(outputs: list[Path]) -> list[tuple[str, Path]]:
    """(what, path) of the files a person looks at: lip-synced videos and frame strips (from inference outputs)
    and training charts (from runs), found by each output directory's manifest kind."""
    from lsync.manifest import read_manifest

    found = []
    for output in outputs:
        kind = read_manifest(output)["kind"]
        if kind == "inference":
            found += [("lip-synced video", path) for path in sorted(output.glob("*.mp4"))]
            found += [("frame strip: input | mask | generated | blended", path)
                      for path in sorted(output.glob("*.strip.png"))]
        elif kind.endswith("-run") and (output / "metrics.png").is_file():
            found.append((f"training chart ({output.name})", output / "metrics.png"))
    return found


def print_artifacts(artifacts: list[tuple[str, Path]]) -> None:
    """One line per file, never wrapped or shortened, so the paths can be copied (and grepped)."""
    from rich.markup import escape

    from lsync.console import result_console

    result_console.print("[bold]look at[/]")
    for what, path in artifacts:
        result_console.print(f"  {what}: {escape(str(path))}", soft_wrap=True, highlight=False)

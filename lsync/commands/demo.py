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
    outputs = [step.output for step in recipe.steps]
    print_artifacts(demo_artifacts(outputs))
    print_figures(demo_figures(outputs))


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
        elif kind.endswith("-run"):
            if (output / "metrics.png").is_file():
                found.append((f"training chart ({output.name})", output / "metrics.png"))
            # Validation renders: the first and the last show what the training changed.
            for pattern, what in (("*.mp4", "validation video"), ("*.png", "validation reconstructions")):
                renders = sorted((output / "val").glob(pattern))
                picks = renders[:1] + renders[-1:] if len(renders) > 1 else renders
                found += [(f"{what} ({output.name}, {path.stem})", path) for path in picks]
    return found


def demo_figures(outputs: list[Path]) -> list[tuple[str, str]]:
    """(what, value) of the result's scores, from the ``eval`` outputs: how well the mouth follows the driving
    audio (``lsync eval mouth``) and the sync under the demo's SyncNet (``lsync eval sync``)."""
    from lsync.manifest import read_manifest

    def number(value, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    figures = []
    for output in outputs:
        manifest = read_manifest(output)
        if manifest["kind"] != "eval":
            continue
        summary = manifest["summary"]
        if summary.get("evaluation") == "mouth":
            figures += [
                ("mouth follows the driving audio, r_drive", number(summary.get("r_drive"))),
                ("mouth follows the source's own audio, r_source", number(summary.get("r_source"))),
                ("r_drive - r_source", number(summary.get("margin"))),
                ("frames with a face found", number(summary.get("face_share"), ".1%")),
            ]
        elif summary.get("evaluation") == "sync":
            figures += [("LSE-C under the demo's SyncNet", number(summary.get("lse_c"), ".4f")),
                        ("sync offset (frames, + = audio late)", number(summary.get("offset"), "+.0f"))]
    return figures


def print_figures(figures: list[tuple[str, str]]) -> None:
    """One line per score (after the paths), so they can be grepped."""
    from lsync.console import result_console

    if not figures:
        return
    result_console.print("[bold]scores[/] (mouth: lip gap / face height vs. loudness per frame, best Pearson r over "
                         "lags -3..3)")
    for what, value in figures:
        result_console.print(f"  {what}: {value}", soft_wrap=True, highlight=False)


def print_artifacts(artifacts: list[tuple[str, Path]]) -> None:
    """One line per file, never wrapped or shortened, so the paths can be copied (and grepped)."""
    from rich.markup import escape

    from lsync.console import result_console

    result_console.print("[bold]look at[/]")
    for what, path in artifacts:
        result_console.print(f"  {what}: {escape(str(path))}", soft_wrap=True, highlight=False)
